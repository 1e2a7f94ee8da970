"""RE-OT Sinkhorn: entropic OT with a prior Q, log-domain, batched.

Shi et al., Relative Entropic Optimal Transport: a (Prior-aware) Matching
Perspective to (Unbalanced) Classification, NeurIPS 2023. Plain torch; this
package imports nothing from OpenMMLab or from the rest of ``reot_mm``.

Problem (RE-OT Eq. 6 / Prop. 2, Eq. 7-8)::

    P = argmin_{P in U(a, b)}  <C, P> - ε H_Q(P)
      = argmin_{P in U(a, b)}  KL~(P | K),      K_ij = Q_ij exp(-C_ij / ε)

The solution is ``P = diag(u) K diag(v)`` (RE-OT §3, Appendix C); the solver
works with the log-potentials ``f = log u``, ``g = log v`` (the duals of
Eq. 11 over ε), ``log P_ij = f_i + log K_ij + g_j``. Under the relaxed
constraint set U(a) (RE-OT Eq. 16) only the row marginal is enforced and the
solution is closed form: ``P_ij = a_i softmax_j(log K_ij)``.

Where the pieces live: :mod:`.kernel` (log K, row blocks, the error of a
returned plan), :mod:`.sinkhorn_buffer` (the default iterations on one
n x m buffer), :mod:`.sinkhorn_stream` (no n x m buffer),
:mod:`.sinkhorn_grad` (unrolled and implicit gradients),
:mod:`.sinkhorn_result` (:class:`SinkhornResult`, ``log_plan()``).

Honest convergence. After the iterations the marginal error is recomputed
from the plan :meth:`SinkhornResult.plan` returns (row blocks, fp64 sums),
and ``converged`` / ``marginal_error`` describe that plan. In fp32 the plan
needs ``f_i + log K_ij`` to cancel to ~tol although both are of size |C|/ε;
from |C|/ε of about 1e3 (tol 1e-6) the fp32 potentials are too coarse. Then
the fp64 sums of the potentials are kept (``potentials_fp64``) and, if the
fp32 iterate itself was too coarse (|C|/ε ≳ 1e5: the fp32 kernel entries
carry errors of 1% and more), the problem is re-solved in fp64 from the
fp32 potentials. ``log_plan()`` stays in the working dtype either way.
"""
import math
import warnings
from typing import Optional, Tuple

import torch

from .checks import (check_choice, check_cost, check_feasible,
                     check_iteration_args, check_log_prior, check_marginal,
                     check_positive, check_positive_int)
from .kernel import KernelBlocks, log_kernel, plan_marginal_error
from .sinkhorn_buffer import sinkhorn_buffer
from .sinkhorn_grad import ImplicitPotentials, sinkhorn_unrolled
from .sinkhorn_result import SinkhornResult
from .sinkhorn_stream import sinkhorn_stream

# check_positive / check_iteration_args are re-exported for older imports
__all__ = [
    'SinkhornResult', 'log_kernel', 'reot_sinkhorn', 'check_positive',
    'check_iteration_args'
]

_CONSTRAINTS = ('ab', 'a')
_GRADS = ('none', 'unrolled', 'implicit')
_MEMORY = ('buffer', 'stream')


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
    """Solve RE-OT (RE-OT Eq. 6-8, 16) by log-domain Sinkhorn.

    Args:
        cost: (n, m) or (B, n, m) cost C. ``+inf`` entries forbid transport
            (K_ij = 0). fp16/bf16 input is computed in fp32.
        epsilon: ε > 0, finite. Stable down to about 1e-3 (log-domain); for
            |C| / ε beyond ~1e5 an fp32 problem is finished in fp64.
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
            (RE-OT Eq. 16): closed form, ``P_ij = a_i softmax_j(log K_ij)``
            (memory: log K, n x m).
        max_iter: maximum number of full (row + column) iterations; an
            fp32 problem finished in fp64 may add up to ``check_every``.
        tol: the returned plan must have an L1 marginal error below ``tol``
            for every problem of the batch (``converged``).
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
        warn: warn (``UserWarning`` with the achieved error) when the
            returned plan misses ``tol``.
        memory: how the iterations of ``grad='none'`` / ``'implicit'`` hold
            the kernel. ``'buffer'`` (default, fastest): one n x m buffer
            ``W = exp(log K + f0 ⊕ g0)`` and matrix-vector products.
            ``'stream'``: no n x m temporary; each half iteration recomputes
            ``log K`` from ``cost`` and ``log_prior`` in row blocks; slower
            per iteration (an ``exp`` per entry and pass), for problems
            where a second n x m tensor does not fit. Both give the same
            potentials (tested to 1e-6 in fp32). Ignored by
            ``grad='unrolled'`` and ``constraints='a'``.
        chunk_size: rows per block of the blocked passes (``memory='stream'``
            and the check of the returned plan); None picks about 2^20
            elements per block (4 MiB in fp32).

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
    log_prior = check_log_prior(log_prior, cost.shape, device)
    a3 = check_marginal(a, 'a', nb, n, batched, dtype, device)
    b3 = None
    if constraints == 'ab':
        b3 = check_marginal(b, 'b', nb, m, batched, dtype, device)
        _check_equal_mass(a3, b3)
    g_init = _check_init(init, nb, m, dtype, device)

    problem = _Problem(cost3, epsilon, a3, b3, log_prior, constraints, grad,
                       memory, tol, check_every, chunk_size)
    f_iter, g_iter, iterations, err_iter = problem.solve(dtype, g_init,
                                                         max_iter)
    f, g = f_iter.to(dtype), g_iter.to(dtype)
    err = problem.plan_error(f, g, dtype)
    exact = None  # fp64 potentials, when the fp32 ones are too coarse
    # the returned plan misses tol although the iterate met it (or by far
    # more than the iterate): rounding, not the iterations, is the cause
    limited = (err >= tol) & ((err_iter < tol) | (err > 2 * err_iter))
    if bool(limited.any()):
        if dtype != f_iter.dtype:  # try the fp64 sums of the fp32 iterate
            err64 = problem.plan_error(f_iter, g_iter, dtype)
            if bool((err64 < tol).all()):
                exact, err = (f_iter, g_iter), err64
                f, g = exact
        if exact is None:  # continue in fp64 from the returned potentials
            f, g, extra, _ = problem.solve(
                torch.float64, g_iter.detach().double(),
                max(max_iter - iterations, check_every))
            iterations += extra if constraints == 'ab' else 0
            err = problem.plan_error(f, g, dtype)
            exact = (f, g) if dtype != torch.float64 else None
    if grad == 'implicit' and constraints == 'ab' \
            and torch.is_grad_enabled():
        f, g = problem.implicit(f, g)
        exact = None if exact is None else (f, g)
    converged = bool((err < tol).all())
    err = err.to(dtype)
    if exact is not None:
        f, g = f.to(dtype), g.to(dtype)

    _raise_if_nonfinite(f, a3, 'f')
    if b3 is not None:
        _raise_if_nonfinite(g, b3, 'g')
    if not converged and warn:
        where = ' (finished in fp64)' if exact is not None else ''
        warnings.warn(
            f'reot_sinkhorn did not converge in {iterations} iterations: '
            f'marginal error {err.max().item():.3g} of the returned plan > '
            f'tol {tol:g} (epsilon={epsilon:g}){where}; increase max_iter or '
            f'epsilon', UserWarning, stacklevel=2)
    if not batched:
        f, g, err = f[0], g[0], err[0]
        if exact is not None:
            exact = (exact[0][0], exact[1][0])
    return SinkhornResult(f=f, g=g, iterations=iterations,
                          marginal_error=err, converged=converged, cost=cost,
                          epsilon=epsilon, log_prior=log_prior,
                          potentials_fp64=exact)


class _Problem:
    """A validated batched problem: runs the solvers and checks their plans.

    Shapes: cost (B, n, m), a (B, n), b (B, m) or None for U(a), log_prior
    broadcastable to the (unbatched or batched) cost.
    """

    def __init__(self, cost, epsilon, a, b, log_prior, constraints, grad,
                 memory, tol, check_every, chunk_size):
        self.cost, self.epsilon, self.a, self.b = cost, epsilon, a, b
        self.log_prior, self.constraints, self.grad = log_prior, constraints, \
            grad
        self.memory, self.tol, self.check_every = memory, tol, check_every
        self.chunk_size = chunk_size

    def solve(self, dtype, g_init, max_iter):
        """(f, g, iterations, error of the iterate) in ``dtype`` (or fp64)."""
        a = self.a.to(dtype)
        b = None if self.b is None else self.b.to(dtype)
        differentiable = self.grad != 'none' and torch.is_grad_enabled()
        if self.constraints == 'a':
            with torch.set_grad_enabled(differentiable):
                return self._closed_form_ua(a, dtype)
        if self.grad == 'unrolled' and differentiable:
            return sinkhorn_unrolled(self.cost, self.epsilon, a, b,
                                     self.log_prior, g_init, max_iter,
                                     self.tol, self.check_every, dtype)
        solver = sinkhorn_buffer if self.memory == 'buffer' \
            else sinkhorn_stream
        lp = None if self.log_prior is None else self.log_prior.detach()
        with torch.no_grad():
            return solver(self.cost.detach(), self.epsilon, a, b, lp, g_init,
                          max_iter, self.tol, self.check_every, dtype,
                          self.chunk_size)

    def _closed_form_ua(self, a, dtype):
        """U(a) (RE-OT Eq. 16): f = log a - logsumexp_j log K_ij, g = 0."""
        logk = log_kernel(self.cost.to(dtype), self.epsilon,
                          None if self.log_prior is None
                          else self.log_prior.to(dtype))
        lse = torch.logsumexp(logk, -1)
        check_feasible(lse.detach(), a, 'row')
        f = torch.where(a > 0, a.log() - lse,
                        torch.full_like(lse, -math.inf))
        g = torch.zeros(a.shape[0], self.cost.shape[-1], dtype=dtype,
                        device=a.device)
        return f, g, 1, torch.zeros_like(a[:, 0])

    def plan_error(self, f, g, out_dtype):
        """(B,) L1 marginal error of the plan ``log_plan()`` would return."""
        lp = None if self.log_prior is None else self.log_prior.detach()
        with torch.no_grad():
            blocks = KernelBlocks(self.cost.detach(), self.epsilon, lp,
                                  f.dtype, self.chunk_size)
            return plan_marginal_error(blocks, f.detach(), g.detach(),
                                       self.a, self.b, out_dtype)

    def implicit(self, f, g):
        """Attach the implicit-function-theorem backward to (f, g)."""
        dtype = f.dtype
        logk = log_kernel(self.cost.to(dtype), self.epsilon,
                          None if self.log_prior is None
                          else self.log_prior.to(dtype))
        return ImplicitPotentials.apply(logk, self.a.to(dtype),
                                        self.b.to(dtype), f, g)


def _check_equal_mass(a: torch.Tensor, b: torch.Tensor):
    mass_a, mass_b = a.sum(-1), b.sum(-1)
    gap = (mass_a - mass_b).abs() / torch.maximum(mass_a, mass_b)
    if (gap > 1e-6).any():
        k = int(gap.argmax())
        raise ValueError(
            f'a and b must have the same total mass (relative tolerance '
            f'1e-6), got sum(a)={mass_a[k].item():.8g} and '
            f'sum(b)={mass_b[k].item():.8g} (relative gap '
            f'{gap[k].item():.3g})')


def _check_init(init, nb, m, dtype, device):
    """The warm start's g as a (B, m) tensor, or None."""
    if init is None:
        return None
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
    return g_init


def _raise_if_nonfinite(x: torch.Tensor, marg: torch.Tensor, name: str):
    with torch.no_grad():
        ok = torch.isfinite(x) | (torch.isneginf(x) & (marg == 0))
        if not ok.all():
            raise RuntimeError(
                f'reot_sinkhorn produced non-finite potentials {name}; the '
                'problem is probably infeasible or badly scaled')
