"""RE-OT barycenters by iterative Bregman projections (RE-OT Eq. 9-10).

Plain torch; imports only torch and other ``reot_mm.ot`` modules (layer 1).

Problem (RE-OT Eq. 9, Benamou et al. 2015 with the RE-OT kernel)::

    min_{P_s, a}  Σ_s ε λ_s KL~(P_s | K_s)
    s.t.  P_s^T 1_n = b_s,   P_1 1_m = ... = P_S 1_m = a,
    K_s = Q_s ∘ exp(-C / ε).

Each P_s = diag(u_s) K_s diag(v_s). Iterative Bregman projections alternate
the KL projections onto the column constraints (exact, one per s) and onto
the common-row-marginal constraint, whose solution is the weighted geometric
mean of the current row marginals::

    g_s   = log b_s - logsumexp_i(log K_s,ij + f_s,i)             (columns)
    r_s   = logsumexp_j(log K_s,ij + g_s,j)
    log a = Σ_s λ_s (f_s + r_s)            (λ normalised to sum 1)  (rows)
    f_s   = log a - r_s

all in the log domain (f = log u, g = log v), so small ε does not underflow.
"""
import math
from dataclasses import dataclass
from typing import Optional

import torch

from .checks import (check_cost, check_histograms, check_iteration_args,
                     check_log_prior, check_positive, check_weights)
from .sinkhorn import log_kernel

__all__ = ['BarycenterResult', 'reot_barycenter', 'deblur_prior']


@dataclass
class BarycenterResult:
    """Result of :func:`reot_barycenter`.

    Attributes:
        barycenter: (n,) barycenter histogram a of Eq. 9, non-negative and
            summing to 1.
        f: (S, n) row log-potentials log u_s.
        g: (S, m) column log-potentials log v_s.
        iterations: number of (column + row) projection sweeps run.
        error: max over s of the L1 mismatch ``|P_s 1 - a|_1`` after the last
            column projection (the column constraints hold exactly there).
        converged: ``error < tol``.
    """
    barycenter: torch.Tensor
    f: torch.Tensor
    g: torch.Tensor
    iterations: int
    error: float
    converged: bool


def reot_barycenter(histograms: torch.Tensor,
                    cost: torch.Tensor,
                    epsilon: float,
                    weights: Optional[torch.Tensor] = None,
                    log_prior: Optional[torch.Tensor] = None,
                    *,
                    max_iter: int = 1000,
                    tol: float = 1e-9,
                    check_every: int = 1) -> BarycenterResult:
    """Weighted RE-OT barycenter (RE-OT Eq. 9) by iterative Bregman projections.

    With ``log_prior=None`` (Q = 1) this is the entropic barycenter of
    Benamou et al. (2015), i.e. POT's ``ot.bregman.barycenter(A, M, reg,
    weights)`` with ``A = histograms.T``, ``M = cost``, ``reg = epsilon``.

    Args:
        histograms: (S, m) histograms b_s on a shared support of m points,
            each non-negative and summing to 1.
        cost: (n, m) cost between the n barycenter support points and the m
            histogram support points ((m, m) for a shared support).
            ``+inf`` forbids transport.
        epsilon: ε > 0.
        weights: (S,) non-negative weights λ_s with positive sum; normalised
            to sum 1 (this does not change the minimiser of Eq. 9). Uniform
            if None.
        log_prior: log Q broadcastable to (S, n, m): (n, m) shared by all s
            (as in Eq. 9-10), or (S, n, m) one per histogram; None means
            Q = 1. ``-inf`` entries
            (Q_ij = 0) forbid transport.
        max_iter: maximum number of projection sweeps.
        tol: stop when ``max_s |P_s 1 - a|_1 < tol``.
        check_every: compute the error every this many sweeps.

    Returns:
        BarycenterResult with ``barycenter`` (n,) summing to 1.

    Raises:
        ValueError: invalid ε, shapes, histograms, weights or prior, or a
            histogram with mass where the kernel column is entirely zero.
    """
    epsilon = check_positive(epsilon)
    histograms = check_histograms(histograms)
    cost = check_cost(cost, ndims=(2, ))
    ns, m = histograms.shape
    n = cost.shape[0]
    if cost.shape[1] != m:
        raise ValueError(f'cost must have shape (n, {m}) to match the '
                         f'histograms (S, m) = {tuple(histograms.shape)}, got '
                         f'{tuple(cost.shape)}')
    max_iter, check_every, tol = check_iteration_args(max_iter, check_every,
                                                      tol)
    dtype = torch.float64 if cost.dtype == torch.float64 else torch.float32
    device = cost.device
    if weights is None:
        lam = torch.full((ns, ), 1.0 / ns, dtype=dtype, device=device)
    else:
        lam = check_weights(weights, 'weights', ns, dtype, device)

    logk = log_kernel(cost.to(dtype), epsilon)
    log_prior = check_log_prior(log_prior, (ns, n, m), device)
    if log_prior is not None:
        logk = logk + log_prior.to(dtype)
    logk = logk.expand(ns, n, m)  # (S, n, m)

    b = histograms.to(dtype)
    log_b = b.log()  # -inf where b = 0: those columns carry no mass
    col_max = logk.amax(-2)
    if (torch.isneginf(col_max) & (b > 0)).any():
        s, j = (torch.isneginf(col_max) & (b > 0)).nonzero()[0].tolist()
        raise ValueError(f'infeasible barycenter: kernel column {j} of '
                         f'histogram {s} is entirely zero (cost +inf or '
                         f'log_prior -inf) while b[{s}, {j}] > 0')

    # f_s = 0 (u_s = 1) start, as in POT
    f = torch.zeros(ns, n, dtype=dtype, device=device)
    log_a = None
    err = math.inf
    it = 0
    while it < max_iter:
        # column projections: P_s^T 1 = b_s
        g = log_b - torch.logsumexp(logk + f.unsqueeze(-1), -2)
        g = torch.where(b > 0, g, torch.full_like(g, -math.inf))
        r = torch.logsumexp(logk + g.unsqueeze(-2), -1)  # (S, n)
        row = f + r  # log P_s 1
        # row projection: common marginal = weighted geometric mean
        new_log_a = _weighted_log_mean(row, lam)
        it += 1
        if it % check_every == 0 or it == max_iter:
            err = (row.exp() - new_log_a.exp()).abs().sum(-1).max().item()
        log_a = new_log_a
        f = log_a - r
        f = torch.where(torch.isfinite(f), f, torch.full_like(f, -math.inf))
        if err < tol:
            break
    a = log_a.exp()
    a = a / a.sum()
    return BarycenterResult(barycenter=a, f=f, g=g, iterations=it, error=err,
                            converged=err < tol)


def _weighted_log_mean(row: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Σ_s λ_s row_s with 0 · (-inf) = 0 (zero weights are ignored)."""
    keep = lam > 0
    return (lam[keep].unsqueeze(-1) * row[keep]).sum(0)


def deblur_prior(plan_12: torch.Tensor, lam: float) -> torch.Tensor:
    """log Q for the deblurred barycenter (RE-OT Eq. 10).

    ``Q = (1 - λ) P^T + λ P`` where P = P^ε is the entropic OT plan from
    image b_1 to image b_2 on a shared support; use it with weights
    ``(λ_1, λ_2) = (λ, 1 - λ)`` in :func:`reot_barycenter`.

    Args:
        plan_12: (m, m) non-negative plan P (or any non-negative matrix).
        lam: λ in [0, 1].

    Returns:
        (m, m) log Q; ``-inf`` where Q = 0.

    Raises:
        ValueError: plan not square, negative or non-finite; λ outside [0, 1].
    """
    if not isinstance(plan_12, torch.Tensor) or plan_12.ndim != 2 \
            or plan_12.shape[0] != plan_12.shape[1]:
        raise ValueError(f'plan_12 must be a square torch.Tensor of shape '
                         f'(m, m), got '
                         f'{tuple(getattr(plan_12, "shape", ()))}')
    if not torch.isfinite(plan_12).all() or (plan_12 < 0).any():
        raise ValueError('plan_12 must be finite and non-negative')
    lam = float(lam)
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f'lam must be in [0, 1], got {lam}')
    return ((1.0 - lam) * plan_12.transpose(0, 1) + lam * plan_12).log()
