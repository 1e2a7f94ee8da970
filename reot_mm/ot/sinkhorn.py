"""RE-OT Sinkhorn: entropic OT with a prior Q, log-domain, batched.

Plain torch; this module imports nothing from OpenMMLab or from the rest of
``reot_mm`` (layer 1 of docs/DESIGN.md).

Problem (RE-OT Eq. 6 / Prop. 2, Eq. 7-8)::

    P = argmin_{P in U(a, b)}  <C, P> - ε H_Q(P)
      = argmin_{P in U(a, b)}  KL~(P | K),      K_ij = Q_ij exp(-C_ij / ε)

The solution has the form ``P = diag(u) K diag(v)`` (RE-OT §3, Appendix C).
The solver works with the log-potentials ``f = log u`` and ``g = log v``
(these are the dual variables of Eq. 11 divided by ε), so that::

    log P_ij = f_i + log K_ij + g_j,      log K = log Q - C / ε.

Under the relaxed constraint set U(a) (RE-OT Eq. 16) only the row marginal is
enforced and the solution is closed form: ``P_ij = a_i softmax_j(log K_i.)``.

Numerics. The iterations are the log-domain Sinkhorn updates::

    f = log a - logsumexp_j(log K_ij + g_j)
    g = log b - logsumexp_i(log K_ij + f_i)

implemented as *stabilised kernel-domain* scaling (Schmitzer 2019): one n x m
buffer ``W = exp(log K + f0 ⊕ g0)`` is built in place with a max-shift (so
every row or column of W has a largest entry of exactly 1, and nothing
relevant underflows, even for ε = 1e-3), and the cheap updates
``u' = a / (W v')``, ``v' = b / (W^T u')`` run as matrix-vector products on it.
When a scaling leaves ``[e^-τ, e^τ]`` or a denominator under/overflows, the
scalings are absorbed into ``(f0, g0)`` and W is rebuilt with an exact
log-domain half step, so the worst case degrades to plain log-domain Sinkhorn.
Memory (``grad='none'``). ``memory='buffer'`` (default): one n x m buffer (fp32
for fp16/bf16/fp32 input, fp64 for fp64 input) plus O(n + m) vectors; the
checks of the input and every other pass (the U(a) closed form, the feasibility
checks) are reductions or run over row blocks, so no second n x m temporary is
made. ``memory='stream'``: no n x m temporary at all; every pass recomputes
``log K`` from the cost and log Q in blocks of ``chunk_size`` rows (log-domain
Sinkhorn with a streamed column logsumexp), which costs an ``exp`` per entry
and pass instead of a matrix-vector product (see docs/methods/ot.md for the
measured trade-off). :meth:`SinkhornResult.log_plan` and
:meth:`SinkhornResult.plan` write their n x m output in place, without
temporaries, unless autograd needs the graph.
"""
import math
import warnings
from dataclasses import dataclass, field
from typing import Optional, Tuple

import torch

from .checks import (check_choice, check_cost, check_iteration_args,
                     check_log_prior, check_marginal, check_positive,
                     check_positive_int)

__all__ = ['SinkhornResult', 'log_kernel', 'reot_sinkhorn']

_CONSTRAINTS = ('ab', 'a')
_GRADS = ('none', 'unrolled', 'implicit')
_MEMORY = ('buffer', 'stream')
#: elements of one row block when ``chunk_size`` is None (4 MiB in fp32)
_AUTO_BLOCK_ELEMENTS = 1 << 20


@dataclass
class SinkhornResult:
    """Result of :func:`reot_sinkhorn`.

    Attributes:
        f: (..., n) row log-potentials ``log u`` (dual f of Eq. 11 over ε).
        g: (..., m) column log-potentials ``log v``; zeros for U(a).
        iterations: number of full (row + column) Sinkhorn iterations run;
            1 for the closed-form U(a) solution.
        marginal_error: (...,) L1 marginal mismatch
            ``|P 1 - a|_1 + |P^T 1 - b|_1`` at the last check (only the row
            term for U(a)), in the working dtype.
        converged: True when every problem of the batch reached ``tol``.
    """
    f: torch.Tensor
    g: torch.Tensor
    iterations: int
    marginal_error: torch.Tensor
    converged: bool
    cost: torch.Tensor = field(repr=False, default=None)
    epsilon: float = field(repr=False, default=1.0)
    log_prior: Optional[torch.Tensor] = field(repr=False, default=None)

    def log_plan(self) -> torch.Tensor:
        """log P = f_i + log K_ij + g_j, shape of the cost (RE-OT Eq. 8).

        Entries where Q_ij = 0 (``log_prior = -inf``) or C_ij = +inf are
        ``-inf``, i.e. the plan is exactly zero there. Differentiable w.r.t.
        the cost and prior through log K (and through f, g when
        ``grad='unrolled'``); with ``grad='none'`` f and g are constants.
        """
        dtype = self.f.dtype
        f = self.f.unsqueeze(-1).to(dtype)
        g = self.g.unsqueeze(-2).to(dtype)
        if self._needs_graph() or (
                self.log_prior is not None and torch.promote_types(
                    dtype, self.log_prior.dtype) != dtype):
            out = log_kernel(self.cost.to(dtype), self.epsilon,
                             self.log_prior)
            return out + f + g
        # no autograd: build the output in place (one n x m tensor, no
        # temporaries); the same operations in the same order as above
        if self.cost.dtype == dtype:
            out = torch.mul(self.cost, -1.0 / self.epsilon)
        else:
            out = self.cost.to(dtype, copy=True).mul_(-1.0 / self.epsilon)
        if self.log_prior is not None:
            out.add_(self.log_prior)
        return out.add_(f).add_(g)

    def plan(self) -> torch.Tensor:
        """P = exp(log P), shape of the cost."""
        log_p = self.log_plan()
        return log_p.exp() if log_p.requires_grad else log_p.exp_()

    def _needs_graph(self) -> bool:
        if not torch.is_grad_enabled():
            return False
        return any(t is not None and t.requires_grad
                   for t in (self.cost, self.log_prior, self.f, self.g))


def log_kernel(cost: torch.Tensor, epsilon: float,
               log_prior: Optional[torch.Tensor] = None) -> torch.Tensor:
    """log K = log Q - C / ε (RE-OT Prop. 2, K_ij = Q_ij e^{-C_ij/ε}).

    Args:
        cost: (..., n, m) cost C.
        epsilon: ε > 0.
        log_prior: log Q broadcastable to the cost, or None (Q = 1).
    """
    out = cost * (-1.0 / epsilon)
    if log_prior is not None:
        out = out + log_prior
    return out


def reot_sinkhorn(cost: torch.Tensor,
                  epsilon: float,
                  a: Optional[torch.Tensor] = None,
                  b: Optional[torch.Tensor] = None,
                  log_prior: Optional[torch.Tensor] = None,
                  *,
                  constraints: str = 'ab',
                  max_iter: int = 1000,
                  tol: float = 1e-6,
                  check_every: int = 10,
                  init: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
                  grad: str = 'none',
                  warn: bool = True,
                  memory: str = 'buffer',
                  chunk_size: Optional[int] = None) -> SinkhornResult:
    """Solve RE-OT (RE-OT Eq. 6-8) by log-domain Sinkhorn.

    Args:
        cost: (n, m) or (B, n, m) cost C. ``+inf`` entries forbid transport
            (K_ij = 0). fp16/bf16 input is computed in fp32.
        epsilon: ε > 0, finite. Stable down to about 1e-3 (log-domain).
        a: (n,) or (B, n) row marginal, non-negative; uniform 1/n if None.
        b: (m,) or (B, m) column marginal; uniform 1/m if None. Must have the
            same total mass as ``a`` (relative tolerance 1e-6). Not used for
            ``constraints='a'``.
        log_prior: log Q, broadcastable to the cost shape (e.g. (m,) for a
            class-wise prior, (n, m), (B, n, m)); None means Q = 1, i.e. plain
            entropic OT (RE-OT Eq. 3). ``-inf`` entries (Q_ij = 0) give a plan
            that is exactly zero there (K_ij = 0 stays 0 under diagonal
            scaling). Any diagonal rescaling of Q leaves the plan unchanged
            (Prop. 1(2)).
        constraints: ``'ab'`` for U(a, b); ``'a'`` for the relaxation U(a)
            (RE-OT Eq. 16): closed form, ``P_ij = a_i softmax_j(log K_ij)``.
        max_iter: maximum number of full (row + column) iterations.
        tol: stop when the L1 marginal error is below ``tol`` for every
            problem of the batch.
        check_every: check the marginal error every this many iterations.
        init: optional warm start ``(f, g)`` of shapes (..., n), (..., m),
            e.g. the potentials of a previous result. The first update is the
            row update, so only ``g`` matters.
        grad: ``'none'``: run without autograd, f and g are detached (memory:
            one n x m buffer). ``'unrolled'``: backpropagate through every
            iteration of an out-of-place log-domain loop (memory: about two
            n x m tensors saved per iteration; for small problems).
            ``'implicit'``: solve without autograd, then differentiate the
            optimality conditions ``P 1 = a, P^T 1 = b`` (implicit function
            theorem) w.r.t. cost, log_prior, a and b in the backward pass
            (memory: log K and P, n x m each, plus an m x m Schur complement
            solved densely, O(n m^2) time). Exact at convergence; defined for
            outputs invariant to the gauge (f + c, g - c), such as
            ``log_plan()``, ``plan()`` or the dual objective.
        warn: warn (``UserWarning`` with the achieved error) when ``tol`` is
            not reached within ``max_iter``.
        memory: how the iterations of ``grad='none'`` / ``'implicit'`` hold
            the kernel. ``'buffer'`` (default, fastest): one n x m buffer
            ``W = exp(log K + f0 ⊕ g0)`` and matrix-vector products.
            ``'stream'``: no n x m temporary; each half iteration recomputes
            ``log K`` from ``cost`` and ``log_prior`` in row blocks (exact
            log-domain updates, a column logsumexp streamed over the blocks);
            slower per iteration (an ``exp`` per entry and pass), for
            problems where a second n x m tensor does not fit. Both give the
            same potentials (tested to 1e-6 in fp32). Ignored by
            ``grad='unrolled'``, which keeps its autograd graph.
        chunk_size: rows per block for the blocked passes (``memory='stream'``
            and the U(a) closed form without gradient); None picks about
            2^20 elements per block (4 MiB in fp32).

    Returns:
        SinkhornResult with f (..., n), g (..., m), iterations,
        marginal_error (...,), converged; ``result.log_plan()`` gives
        log P = f_i + log K_ij + g_j.

    Raises:
        ValueError: invalid ε, shapes, marginals, prior or cost; a row
            (column) whose kernel is entirely zero while its marginal is
            positive (infeasible problem).
        RuntimeError: a non-finite value appeared in the potentials.
    """
    epsilon = check_positive(epsilon)
    check_choice(constraints, 'constraints', _CONSTRAINTS)
    check_choice(grad, 'grad', _GRADS)
    max_iter, check_every, tol = check_iteration_args(max_iter, check_every,
                                                      tol)
    check_choice(memory, 'memory', _MEMORY)
    chunk_size = check_positive_int(chunk_size, 'chunk_size', allow_none=True)

    cost = check_cost(cost)
    batched = cost.ndim == 3
    cost3 = cost if batched else cost.unsqueeze(0)
    nb, n, m = cost3.shape
    dtype = torch.float64 if cost.dtype == torch.float64 else torch.float32
    device = cost.device
    log_prior = check_log_prior(log_prior, cost.shape, cost.device)
    lp3 = log_prior  # broadcasts against cost3 (1, n, m) or (B, n, m)
    a3 = check_marginal(a, 'a', nb, n, batched, dtype, device)
    if constraints == 'ab':
        b3 = check_marginal(b, 'b', nb, m, batched, dtype, device)
        mass_a, mass_b = a3.sum(-1), b3.sum(-1)
        gap = (mass_a - mass_b).abs() / torch.maximum(mass_a, mass_b)
        if (gap > 1e-6).any():
            k = int(gap.argmax())
            raise ValueError(
                f'a and b must have the same total mass (relative tolerance '
                f'1e-6), got sum(a)={mass_a[k].item():.8g} and '
                f'sum(b)={mass_b[k].item():.8g} (relative gap '
                f'{gap[k].item():.3g})')
    else:
        b3 = None

    g_init = None
    if init is not None:
        if not (isinstance(init, (tuple, list)) and len(init) == 2):
            raise ValueError('init must be a pair (f, g) of log-potentials')
        g_init = torch.as_tensor(init[1], device=device).detach().to(dtype)
        if g_init.shape[-1:] != (m, ) or g_init.ndim > 2 or (
                g_init.ndim == 2 and g_init.shape[0] != nb):
            raise ValueError(f'init g must have shape (m,) or (B, m) = '
                             f'({nb}, {m}), got {tuple(g_init.shape)}')
        g_init = g_init.expand(nb, m).clone()
        if not torch.isfinite(g_init).all():
            raise ValueError('init g must be finite')

    if constraints == 'a' and not (grad != 'none'
                                   and torch.is_grad_enabled()):
        # closed form without autograd, in row blocks (no n x m temporary)
        with torch.no_grad():
            blocks = _KernelBlocks(cost3, epsilon, lp3, dtype, chunk_size)
            lse = blocks.row_logsumexp(None)
            _raise_if_infeasible(lse, a3, 'row')
            f = torch.where(a3 > 0, a3.log() - lse,
                            torch.full_like(lse, -math.inf))
            g = torch.zeros(nb, m, dtype=dtype, device=device)
            err = ((f + lse).exp() - a3).abs().sum(-1)
        iterations, converged = 1, True
    elif constraints == 'a':
        # closed form: 'unrolled' and 'implicit' are both exact here
        with torch.enable_grad():
            logk = log_kernel(cost3.to(dtype), epsilon,
                              None if lp3 is None else lp3.to(dtype))
            lse = torch.logsumexp(logk, -1)
            _raise_if_infeasible(lse, a3, 'row')
            f = a3.log() - lse
            f = torch.where(a3 > 0, f, torch.full_like(f, -math.inf))
            g = torch.zeros(nb, m, dtype=dtype, device=device)
            err = ((f.detach() + lse.detach()).exp() - a3.detach()).abs() \
                .sum(-1)
        iterations, converged = 1, True
    elif grad == 'unrolled':
        f, g, iterations, err = _sinkhorn_unrolled(cost3, epsilon, a3, b3,
                                                   lp3, g_init, max_iter, tol,
                                                   check_every, dtype)
        converged = bool((err < tol).all())
    else:
        solver = _sinkhorn_stabilised if memory == 'buffer' \
            else _sinkhorn_streamed
        with torch.no_grad():
            f, g, iterations, err = solver(
                cost3.detach(), epsilon, a3, b3,
                None if lp3 is None else lp3.detach(), g_init, max_iter, tol,
                check_every, dtype, chunk_size)
        converged = bool((err < tol).all())
        if grad == 'implicit' and torch.is_grad_enabled():
            logk = log_kernel(cost3.to(dtype), epsilon,
                              None if lp3 is None else lp3.to(dtype))
            f, g = _ImplicitPotentials.apply(logk, a3, b3, f, g)

    _raise_if_nonfinite(f, a3, 'f')
    if b3 is not None:
        _raise_if_nonfinite(g, b3, 'g')
    if not converged and warn:
        warnings.warn(
            f'reot_sinkhorn did not converge in {iterations} iterations: '
            f'marginal error {err.max().item():.3g} > tol {tol:g} '
            f'(epsilon={epsilon:g}); increase max_iter or epsilon',
            UserWarning, stacklevel=2)
    if not batched:
        f, g, err = f[0], g[0], err[0]
    return SinkhornResult(f=f, g=g, iterations=iterations,
                          marginal_error=err, converged=converged, cost=cost,
                          epsilon=epsilon, log_prior=log_prior)


class _ImplicitPotentials(torch.autograd.Function):
    """Identity on converged (f, g); backward by the implicit function theorem.

    With Φ(f, g; L, a, b) = (P 1 - a, P^T 1 - b), P = exp(f ⊕ L ⊕ g), and
    H = [[diag(a), P], [P^T, diag(b)]] (its null vector (1, -1) is the gauge),
    the adjoint w = (w_f, w_g) solves H w = (∂/∂f, ∂/∂g) and then
    ∂/∂L = -P ⊙ (w_f ⊕ w_g), ∂/∂a = w_f, ∂/∂b = w_g. H is solved through the
    Schur complement S = diag(b) - P^T diag(1/a) P, with the gauge fixed by
    adding a multiple of 1 1^T (exact for gauge-consistent right-hand sides).
    """

    @staticmethod
    def forward(ctx, logk, a, b, f, g):
        ctx.save_for_backward(logk, a, b, f, g)
        return f.clone(), g.clone()

    @staticmethod
    def backward(ctx, grad_f, grad_g):
        logk, a, b, f, g = ctx.saved_tensors
        plan = (logk + f.unsqueeze(-1) + g.unsqueeze(-2)).exp()
        inv_a = torch.where(a > 0, 1.0 / a, torch.zeros_like(a))
        m = b.shape[-1]
        schur = torch.diag_embed(b) - torch.matmul(
            plan.transpose(-1, -2), inv_a.unsqueeze(-1) * plan)
        schur = schur + b.mean(-1, keepdim=True).unsqueeze(-1) / m
        rhs = grad_g - torch.matmul((grad_f * inv_a).unsqueeze(-2),
                                    plan).squeeze(-2)
        w_g = torch.linalg.solve(schur, rhs)
        w_f = (grad_f - torch.matmul(plan, w_g.unsqueeze(-1)).squeeze(-1)) \
            * inv_a
        grad_logk = -plan * (w_f.unsqueeze(-1) + w_g.unsqueeze(-2))
        return grad_logk, w_f, w_g, None, None


def _raise_if_infeasible(lse: torch.Tensor, marg: torch.Tensor, what: str):
    bad = torch.isneginf(lse) & (marg > 0)
    if bad.any():
        idx = bad.nonzero()[0].tolist()
        raise ValueError(
            f'infeasible problem: the kernel K = Q * exp(-C/epsilon) is '
            f'entirely zero in {what} {idx[-1]} (batch {idx[0]}) whose '
            f'marginal is positive; check log_prior (-inf) and cost (+inf)')


def _raise_if_nonfinite(x: torch.Tensor, marg: torch.Tensor, name: str):
    with torch.no_grad():
        ok = torch.isfinite(x) | (torch.isneginf(x) & (marg == 0))
        if not ok.all():
            raise RuntimeError(
                f'reot_sinkhorn produced non-finite potentials {name}; the '
                'problem is probably infeasible or badly scaled')


def _sinkhorn_unrolled(cost, epsilon, a, b, log_prior, g_init, max_iter, tol,
                       check_every, dtype):
    """Out-of-place log-domain loop, differentiable by autograd."""
    logk = log_kernel(cost.to(dtype), epsilon,
                      None if log_prior is None else log_prior.to(dtype))
    log_a = a.log()
    log_b = b.log()
    g = torch.zeros_like(b) if g_init is None else g_init
    with torch.no_grad():
        _raise_if_infeasible(torch.logsumexp(logk, -1), a, 'row')
        _raise_if_infeasible(torch.logsumexp(logk, -2), b, 'column')
    err = torch.full_like(a[:, 0], math.inf)
    it = 0
    while it < max_iter:
        f = log_a - torch.logsumexp(logk + g.unsqueeze(-2), -1)
        g = log_b - torch.logsumexp(logk + f.unsqueeze(-1), -2)
        it += 1
        if it % check_every == 0 or it == max_iter:
            with torch.no_grad():
                rows = (f + torch.logsumexp(logk + g.unsqueeze(-2), -1)).exp()
                err = (rows - a).abs().sum(-1)
            if (err < tol).all():
                break
    return f, g, it, err.detach()


_ROW_CHUNK = 1024


def _col_matvec(u: torch.Tensor, work: torch.Tensor) -> torch.Tensor:
    """W^T u of shape (B, m) for W (B, n, m), u (B, n).

    BLAS accumulates the n-long sums sequentially in the working precision,
    which at n = 50k in fp32 leaves ~1e-6 relative error in the column
    marginals (the stopping criterion). Summing per-chunk products of
    ``_ROW_CHUNK`` rows in fp64 keeps the error near 1e-7 at no measurable
    cost.
    """
    n = work.shape[-2]
    if n <= _ROW_CHUNK:
        return torch.matmul(u.unsqueeze(-2), work).squeeze(-2)
    acc = torch.zeros(work.shape[0], work.shape[-1], dtype=torch.float64,
                      device=work.device)
    for start in range(0, n, _ROW_CHUNK):
        stop = min(start + _ROW_CHUNK, n)
        acc += torch.matmul(u[:, None, start:stop],
                            work[:, start:stop]).squeeze(-2)
    return acc.to(work.dtype)


def _sinkhorn_stabilised(cost, epsilon, a, b, log_prior, g_init, max_iter, tol,
                         check_every, dtype, chunk_size=None):
    """Stabilised kernel-domain Sinkhorn with log-domain absorption.

    State: ``W = exp(log K + f0 ⊕ g0)`` (one buffer), scalings ``u, v`` with
    ``f = f0 + log u`` and ``g = g0 + log v``.
    """
    nb, n, m = cost.shape
    tau = 30.0 if dtype == torch.float32 else 200.0
    lo, hi = math.exp(-tau), math.exp(tau)
    pos_a, pos_b = a > 0, b > 0
    work = torch.empty((nb, n, m), dtype=dtype, device=cost.device)

    def fill_log_kernel(f_add, g_add):
        if cost.dtype == work.dtype:
            torch.mul(cost, -1.0 / epsilon, out=work)
        else:  # fp16/bf16 input: upcast first, never compute C/ε in half
            work.copy_(cost).mul_(-1.0 / epsilon)
        if log_prior is not None:
            work.add_(log_prior)
        if f_add is not None:
            work.add_(f_add.unsqueeze(-1))
        if g_add is not None:
            work.add_(g_add.unsqueeze(-2))

    def rebuild(f, g, dim, check_other=False):
        """Exact log-domain half step along ``dim`` (-1: rows, -2: cols)."""
        fill_log_kernel(f if dim == -2 else None, g if dim == -1 else None)
        if check_other:
            _raise_if_infeasible(work.amax(-2), b, 'column')
        shift = work.amax(dim)
        marg = a if dim == -1 else b
        _raise_if_infeasible(shift, marg, 'row' if dim == -1 else 'column')
        shift = torch.where(torch.isfinite(shift), shift,
                            torch.zeros_like(shift))
        work.sub_(shift.unsqueeze(dim))
        work.exp_()
        s = work.sum(dim)
        scale = torch.where(marg > 0, marg / s, torch.zeros_like(s))
        return -shift, s, scale

    def bad(x, pos):
        return not bool(((x <= hi) & ((x >= lo) | ~pos)).all())

    g = torch.zeros_like(b) if g_init is None else g_init
    f0, row_den, u = rebuild(None, g, -1, check_other=True)
    g0, v = g, torch.ones_like(b)
    col_den = None  # W^T u for the current u, when already computed
    err = torch.full_like(a[:, 0], math.inf)
    it = 0
    while it < max_iter:
        # column update: v = b / (W^T u)
        if col_den is None:
            col_den = _col_matvec(u, work)
        v_new = b / col_den
        v_new = torch.where(pos_b, v_new, torch.zeros_like(v_new))
        if bad(v_new, pos_b):
            f = f0 + u.log()
            g0, _, v = rebuild(f, None, -2)
            f0, u = f, torch.ones_like(a)
        else:
            v = v_new
        col_den = None
        # row update: u = a / (W v)
        row_den = torch.matmul(work, v.unsqueeze(-1)).squeeze(-1)
        u_new = a / row_den
        u_new = torch.where(pos_a, u_new, torch.zeros_like(u_new))
        if bad(u_new, pos_a):
            g = g0 + v.log()
            f0, row_den, u = rebuild(None, g, -1)
            g0, v = g, torch.ones_like(b)
        else:
            u = u_new
        it += 1
        if it % check_every == 0 or it == max_iter:
            col_den = _col_matvec(u, work)
            err = (u * row_den - a).abs().sum(-1) \
                + (v * col_den - b).abs().sum(-1)
            if not torch.isfinite(err).all():
                raise RuntimeError('reot_sinkhorn: non-finite marginal error '
                                   'in the stabilised iterations')
            if (err < tol).all():
                break
    # one rounding instead of two for fp32 potentials
    f = (f0.double() + u.double().log()).to(dtype)
    g = (g0.double() + v.double().log()).to(dtype)
    return f, g, it, err


class _KernelBlocks:
    """log K = log Q - C / ε of a (B, n, m) problem, produced in row blocks.

    Each block is a fresh (B, rows, m) tensor, so a pass over the kernel
    never holds more than one block besides the cost and the prior.
    """

    def __init__(self, cost, epsilon, log_prior, dtype, chunk_size=None):
        nb, n, m = cost.shape
        self.cost, self.scale, self.dtype = cost, -1.0 / epsilon, dtype
        self.log_prior = None
        if log_prior is not None:
            # a broadcast view of shape (1 or B, n, m): sliceable by rows
            lp = log_prior.expand(cost.shape[-2:] if log_prior.ndim <= 2
                                  else log_prior.shape[:1] + cost.shape[-2:])
            self.log_prior = lp if lp.ndim == 3 else lp.unsqueeze(0)
        if chunk_size is None:
            chunk_size = max(1, _AUTO_BLOCK_ELEMENTS // max(1, nb * m))
        self.rows = [(start, min(start + int(chunk_size), n))
                     for start in range(0, n, int(chunk_size))]

    def block(self, start, stop, row_add=None, col_add=None):
        """log K[:, start:stop] (+ row_add[:, start:stop] ⊕ col_add)."""
        part = self.cost[:, start:stop]
        if part.dtype == self.dtype:
            out = torch.mul(part, self.scale)
        else:  # fp16/bf16 cost: upcast before scaling, as the buffer solver
            out = part.to(self.dtype).mul_(self.scale)
        if self.log_prior is not None:
            out.add_(self.log_prior[:, start:stop])
        if row_add is not None:
            out.add_(row_add[:, start:stop].unsqueeze(-1))
        if col_add is not None:
            out.add_(col_add.unsqueeze(-2))
        return out

    def row_logsumexp(self, g):
        """(B, n) logsumexp_j(log K_ij + g_j); g (B, m) or None (g = 0)."""
        nb, n, _ = self.cost.shape
        out = torch.empty(nb, n, dtype=self.dtype, device=self.cost.device)
        for start, stop in self.rows:
            out[:, start:stop] = torch.logsumexp(
                self.block(start, stop, col_add=g), -1)
        return out

    def col_logsumexp(self, f):
        """(B, m) logsumexp_i(log K_ij + f_i), merged over row blocks.

        Keeps a running column maximum and a fp64 running sum of
        ``exp(x - max)`` (rescaled when the maximum grows), the streaming
        form of logsumexp.
        """
        nb, _, m = self.cost.shape
        device = self.cost.device
        run_max = torch.full((nb, m), -math.inf, dtype=self.dtype,
                             device=device)
        run_sum = torch.zeros(nb, m, dtype=torch.float64, device=device)
        shift = torch.zeros_like(run_max)
        for start, stop in self.rows:
            part = self.block(start, stop, row_add=f)
            new_max = torch.maximum(run_max, part.amax(-2))
            # a column still empty (-inf) keeps shift 0 and sum 0
            shift = torch.where(torch.isfinite(new_max), new_max,
                                torch.zeros_like(new_max))
            run_sum.mul_((run_max.double() - shift.double()).exp())
            part.sub_(shift.unsqueeze(-2)).exp_()
            run_sum.add_(part.sum(-2).double())
            run_max = new_max
        return (run_sum.log() + shift.double()).to(self.dtype)


def _sinkhorn_streamed(cost, epsilon, a, b, log_prior, g_init, max_iter, tol,
                       check_every, dtype, chunk_size=None):
    """Log-domain Sinkhorn without an n x m buffer (``memory='stream'``).

    Every half iteration streams the kernel in row blocks::

        g = log b - logsumexp_i(log K_ij + f_i)     (columns exact)
        f = log a - logsumexp_j(log K_ij + g_j)     (rows exact)

    The row logsumexp of an iteration also gives the row marginal error of
    the pair (f, g) before f is updated (the columns are exact then), so a
    check costs nothing extra; on a check that stops, that pair is returned.
    """
    blocks = _KernelBlocks(cost, epsilon, log_prior, dtype, chunk_size)
    pos_a, pos_b = a > 0, b > 0
    log_a, log_b = a.log(), b.log()
    minus_inf_a = torch.full_like(a, -math.inf)
    minus_inf_b = torch.full_like(b, -math.inf)
    g = torch.zeros_like(b) if g_init is None else g_init
    row = blocks.row_logsumexp(g)
    _raise_if_infeasible(row, a, 'row')
    f = torch.where(pos_a, log_a - row, minus_inf_a)
    err = torch.full_like(a[:, 0], math.inf)
    it = 0
    while it < max_iter:
        col = blocks.col_logsumexp(f)
        if it == 0:
            _raise_if_infeasible(col, b, 'column')
        g = torch.where(pos_b, log_b - col, minus_inf_b)
        row = blocks.row_logsumexp(g)
        it += 1
        if it % check_every == 0 or it == max_iter:
            err = ((f + row).exp() - a).abs().sum(-1)
            if not torch.isfinite(err).all():
                raise RuntimeError('reot_sinkhorn: non-finite marginal error '
                                   'in the streamed iterations')
            if (err < tol).all() or it == max_iter:
                break
        _raise_if_infeasible(row, a, 'row')
        f = torch.where(pos_a, log_a - row, minus_inf_a)
    return f, g, it, err
