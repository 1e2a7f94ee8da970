"""Test-time corrections of a classifier's scores: one Sinkhorn prediction.

Plain torch (layer 1): imports only torch and :mod:`reot_mm.ot`.

* :func:`sinkhorn_prediction` — the U(a, b) plan of a set of test samples:
  rows a_i = 1/N, columns b = the assumed or estimated test label
  distribution, kernel exp(s_ij/ε). It is RE-OT's "new inference" (Shi et
  al., Relative Entropic Optimal Transport: a (Prior-aware) Matching
  Perspective to (Unbalanced) Classification, NeurIPS 2023, §5, Eq. 6-8) and
  the post-hoc OT correction of OTLM (Peng et al., Optimal Transport for
  Long-Tailed Recognition with Learnable Cost Matrix, ICLR 2022, Algorithm 1,
  Eq. 9-11: cost -log Z, entropic weight λ = ε, column sums μ = b), the same
  problem. The prediction is argmax_j(s_ij/ε + g_j): a transductive logit
  adjustment by the column log-potentials g = log v.
* :func:`logit_adjustment` — the non-transductive shift ``s - τ log π_train``
  (Menon et al., Long-Tail Learning via Logit Adjustment, ICLR 2021, Eq. 3).
* The column marginal b comes from :mod:`reot_mm.ot.test_prior` (an assumed
  prior, or the EM estimate of Saerens et al. 2002), never from test labels.
* :func:`refined_marginal`, :func:`kl_divergence` — OTLM Table 4's
  KL(refined marginal ‖ target).

Convention for the plan: total mass 1 (rows 1/N, columns b). OTLM writes
rows 1 and columns N μ, the same problem scaled by N; row-normalising either
gives the refined per-sample probabilities.
"""
from dataclasses import dataclass
from typing import Optional

import torch

from .checks import (check_distribution, check_matrix, check_nonnegative,
                     check_positive, check_positive_int)
from .sinkhorn import reot_sinkhorn
from .test_prior import class_distribution

__all__ = [
    'SinkhornPrediction', 'sinkhorn_prediction', 'logit_adjustment',
    'refined_marginal', 'kl_divergence'
]

#: elements per row block of the in-place passes (4 MiB in fp32)
_BLOCK_ELEMENTS = 1 << 20


def _working_dtype(x: torch.Tensor):
    return torch.float64 if x.dtype == torch.float64 else torch.float32


# ------------------------------------------------------ Sinkhorn prediction
@dataclass
class SinkhornPrediction:
    """Result of :func:`sinkhorn_prediction`.

    Attributes:
        probs: (N, C) refined probabilities, the row-normalised plan
            softmax_j(s_ij/ε + g_j); rows sum to 1.
        pred_label: (N,) argmax_j(s_ij/ε + g_j).
        f: (N,) row log-potentials log u of the plan diag(u) K diag(v).
        g: (C,) column log-potentials log v (-inf where b_j = 0).
        target_prior: (C,) float64, the column marginal b used.
        iterations: Sinkhorn iterations run.
        marginal_error: L1 marginal error of the mass-1 plan.
        converged: whether the solver reached its tolerance.
    """
    probs: torch.Tensor
    pred_label: torch.Tensor
    f: torch.Tensor
    g: torch.Tensor
    target_prior: torch.Tensor
    iterations: int
    marginal_error: float
    converged: bool


def sinkhorn_prediction(scores: torch.Tensor,
                        target_prior=None,
                        epsilon: float = 1.0,
                        *,
                        max_iter: int = 1000,
                        tol: float = 1e-6,
                        check_every: int = 10,
                        warn: bool = True,
                        memory: str = 'buffer',
                        chunk_size: Optional[int] = None,
                        sample_weight=None) -> SinkhornPrediction:
    """Sinkhorn prediction over a set of test samples (RE-OT §5, OTLM Alg. 1).

    Replaces the softmax (the plan of the relaxed set U(a)) by the plan of
    U(a, b) over the N test samples: a_i = 1/N, b = ``target_prior``, kernel
    K_ij = exp(s_ij/ε), solved in the log domain by :func:`reot_sinkhorn`
    with cost -s and Q = 1. The plan is diag(u) K diag(v); its rows,
    normalised, are softmax_j(s_ij/ε + g_j) (f cancels since every row has
    mass 1/N) and the prediction is argmax_j(s_ij/ε + g_j).

    With s = log Z (log-softmax predictions) and ε = λ this is OTLM's
    post-hoc OT, min_Y <-log Z, Y> + λ <Y, log Y> over plans with column sums
    μ (Eq. 9-11): kernel Z^{1/λ}. RE-OT's authors used kernel exp(logits),
    reg 1 (ε = 1). Scores that differ by a per-row constant (logits and
    log-softmax) give the same plan.

    Args:
        scores: (N, C) logits or log-probabilities. ``-inf`` forbids a class
            for a sample. fp64 is solved in fp64, other dtypes in fp32.
        target_prior: (C,) b, non-negative, summing to 1 (tolerance 1e-4);
            None means uniform. Never the test labels' histogram: b is
            assumed or estimated (:func:`resolve_target_prior`).
        epsilon: ε > 0, temperature of the kernel (OTLM's λ).
        max_iter, tol, check_every, warn: Sinkhorn stopping rule (L1
            marginal error of the mass-1 plan), see :func:`reot_sinkhorn`.
        memory: ``'buffer'`` or ``'stream'``, see :func:`reot_sinkhorn`.
        chunk_size: rows per block of the blocked passes (None: about 2^20
            elements).
        sample_weight: (N,) non-negative row masses, normalised here to sum
            to 1 (a_i ∝ weight_i, e.g. the foreground probability of a
            detector's RoI); None: a_i = 1/N. A zero-weight row takes no
            part in the column constraint and is still refined,
            softmax_j(s_ij/ε + g_j).

    Memory: besides the input and the (N, C) output ``probs``, one N x C
    temporary with ``memory='buffer'`` and none with ``'stream'``: the cost
    -s is written into the output tensor, the solver reads it there, and the
    refined probabilities then overwrite it in place, block by block.

    Returns:
        :class:`SinkhornPrediction`.

    Raises:
        ValueError: a non-floating or non-(N, C) ``scores``, NaN or +inf
            scores, ε <= 0, or a ``target_prior`` of the wrong length,
            negative or not summing to 1; a ``sample_weight`` not of shape
            (N,), negative, non-finite or summing to 0.
    """
    scores = check_matrix(scores, 'scores', '(N, C)')
    epsilon = check_positive(epsilon, 'epsilon')
    chunk_size = check_positive_int(chunk_size, 'chunk_size', allow_none=True)
    n, num_classes = scores.shape
    dtype = _working_dtype(scores)
    if target_prior is None:
        b = torch.full((num_classes, ), 1.0 / num_classes,
                       dtype=torch.float64)
    else:
        b = class_distribution(target_prior, num_classes, 'target_prior')
    with torch.no_grad():
        highest = scores.amax()  # NaN if any entry is NaN; no temporary
    if torch.isnan(highest) or torch.isposinf(highest):
        raise ValueError('scores must be finite or -inf (a forbidden class); '
                         'got NaN or +inf')
    a = None if sample_weight is None else _row_masses(sample_weight, n,
                                                       scores.device, dtype)
    with torch.no_grad():
        # the output tensor first holds the cost -s ...
        probs = torch.empty((n, num_classes), dtype=dtype,
                            device=scores.device)
        probs.copy_(scores).neg_()
        res = reot_sinkhorn(probs, epsilon, a,
                            b.to(device=scores.device, dtype=dtype),
                            max_iter=max_iter, tol=tol,
                            check_every=check_every, grad='none', warn=warn,
                            memory=memory, chunk_size=chunk_size)
        # ... then the row-normalised plan, in place block by block
        pred = _softmax_rows_(probs, -1.0 / epsilon, res.g, chunk_size)
    return SinkhornPrediction(
        probs=probs, pred_label=pred, f=res.f, g=res.g,
        target_prior=b.to(scores.device), iterations=res.iterations,
        marginal_error=float(res.marginal_error), converged=res.converged)


def _row_masses(weight, n: int, device, dtype) -> torch.Tensor:
    """(N,) row marginal a ∝ ``weight``, summing to 1 (normalised in fp64)."""
    w = torch.as_tensor(weight, dtype=torch.float64, device=device).detach()
    if w.shape != (n, ):
        raise ValueError(f'sample_weight must have shape ({n},), one weight '
                         f'per row of scores, got {tuple(w.shape)}')
    total = w.sum()
    if not torch.isfinite(total) or (w < 0).any() or total <= 0:
        raise ValueError('sample_weight must be finite, non-negative and sum '
                         'to a positive number')
    return (w / total).to(dtype)


def _row_blocks(n: int, k: int, chunk_size: Optional[int]):
    rows = int(chunk_size) if chunk_size else max(1, _BLOCK_ELEMENTS // k)
    return [(start, min(start + rows, n)) for start in range(0, n, rows)]


def _softmax_rows_(x: torch.Tensor, scale: float, shift: torch.Tensor,
                   chunk_size: Optional[int] = None) -> torch.Tensor:
    """In place ``x <- softmax_k(scale * x_nk + shift_k)``; returns the argmax.

    The argmax is taken on the shifted scores (before the exp, where two
    classes cannot round to the same value); row blocks keep the
    temporaries (row maxima, sums) at block size.
    """
    n, k = x.shape
    pred = torch.empty(n, dtype=torch.long, device=x.device)
    for start, stop in _row_blocks(n, k, chunk_size):
        block = x[start:stop]
        block.mul_(scale).add_(shift)
        pred[start:stop] = block.argmax(1)
        block.sub_(block.amax(1, keepdim=True)).exp_()
        block.div_(block.sum(1, keepdim=True))
    return pred


# ------------------------------------------------------- logit adjustment
def logit_adjustment(logits: torch.Tensor, train_prior,
                     tau: float = 1.0) -> torch.Tensor:
    """Post-hoc logit adjustment (Menon et al., ICLR 2021, Eq. 3).

    Args:
        logits: (N, C) logits (or log-probabilities; the argmax and the
            softmax are unchanged by a per-row constant).
        train_prior: (C,) training label distribution π, positive, sums to 1.
        tau: τ >= 0, strength of the adjustment.

    Returns:
        (N, C) adjusted logits ``logits - τ log π``.
    """
    logits = check_matrix(logits, 'logits', '(N, C)')
    tau = check_nonnegative(tau, 'tau')
    prior = check_distribution(train_prior, 'train_prior', logits.shape[1],
                               logits.dtype, logits.device, allow_zero=False)
    return logits - tau * prior.log()


# ------------------------------------------------- marginal of the result
def kl_divergence(p, q, eps: float = 0.0) -> float:
    """KL(p ‖ q) = Σ p_k log(p_k / q_k) for two (K,) distributions.

    Terms with p_k = 0 are 0; ``q_k = 0 < p_k`` gives ``inf``. ``eps`` is
    added to q before the log when a finite value is wanted.
    """
    p = torch.as_tensor(p, dtype=torch.float64)
    q = torch.as_tensor(q, dtype=torch.float64)
    if p.ndim != 1 or p.shape != q.shape:
        raise ValueError(f'p and q must be 1-D of the same shape, got '
                         f'{tuple(p.shape)} and {tuple(q.shape)}')
    if (p < 0).any() or (q < 0).any():
        raise ValueError('p and q must be non-negative')
    p = p / p.sum()
    q = (q + eps) / (q + eps).sum()
    terms = torch.where(p > 0, p * (p.log() - q.log()), torch.zeros_like(p))
    return float(terms.sum())


def refined_marginal(probs: torch.Tensor, hard: bool = False,
                     chunk_size: Optional[int] = None) -> torch.Tensor:
    """Label marginal of refined predictions (OTLM Table 4).

    Args:
        probs: (N, K) row-normalised (refined) probabilities.
        hard: False: mean of the rows, ``1/N Σ_n Ŷ_n`` (= column sums of the
            mass-1 plan, equal to μ at convergence), accumulated in fp64 by
            row blocks (no fp64 copy of the matrix). True: histogram of the
            row argmax divided by N.
        chunk_size: rows per block (None: about 2^20 elements).

    Returns:
        (K,) distribution (fp64).
    """
    probs = check_matrix(probs, 'probs')
    n, k = probs.shape
    if hard:
        counts = torch.bincount(probs.argmax(1), minlength=k)
        return counts.to(torch.float64) / n
    total = torch.zeros(k, dtype=torch.float64, device=probs.device)
    for start, stop in _row_blocks(n, k, chunk_size):
        total += probs[start:stop].sum(0).double()
    return total / n
