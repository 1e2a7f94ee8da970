"""Gradients of the RE-OT Sinkhorn potentials: unrolled and implicit.

Shi et al., Relative Entropic Optimal Transport: a (Prior-aware) Matching
Perspective to (Unbalanced) Classification, NeurIPS 2023, Eq. 8 and 11:
the potentials (f, g) satisfy ``P 1 = a, P^T 1 = b`` for
``P = exp(f ⊕ log K ⊕ g)``. ``grad='unrolled'`` backpropagates through the
log-domain iterations (the loop of Peng et al., Optimal Transport for
Long-Tailed Recognition with Learnable Cost Matrix, ICLR 2022, Eq. 13-14);
``grad='implicit'`` differentiates those optimality conditions instead.
Plain torch (layer 1).
"""
import math

import torch

from .checks import check_feasible
from .kernel import log_kernel

__all__ = ['sinkhorn_unrolled', 'ImplicitPotentials']


def sinkhorn_unrolled(cost, epsilon, a, b, log_prior, g_init, max_iter, tol,
                      check_every, dtype, chunk_size=None):
    """Out-of-place log-domain loop, differentiable by autograd.

    Memory: about two n x m tensors saved per iteration (small problems).
    Inputs (B, n, m), (B, n), (B, m); ``chunk_size`` is unused.

    Returns:
        ``(f, g, iterations, error)`` in ``dtype``; f and g carry the graph.
    """
    logk = log_kernel(cost.to(dtype), epsilon,
                      None if log_prior is None else log_prior.to(dtype))
    log_a = a.log()
    log_b = b.log()
    g = torch.zeros_like(b) if g_init is None else g_init
    with torch.no_grad():
        check_feasible(torch.logsumexp(logk, -1), a, 'row')
        check_feasible(torch.logsumexp(logk, -2), b, 'column')
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


class ImplicitPotentials(torch.autograd.Function):
    """Identity on converged (f, g); backward by the implicit function theorem.

    With Φ(f, g; L, a, b) = (P 1 - a, P^T 1 - b), P = exp(f ⊕ L ⊕ g), and
    H = [[diag(a), P], [P^T, diag(b)]] (its null vector (1, -1) is the gauge),
    the adjoint w = (w_f, w_g) solves H w = (∂/∂f, ∂/∂g) and then
    ∂/∂L = -P ⊙ (w_f ⊕ w_g), ∂/∂a = w_f, ∂/∂b = w_g. H is solved through the
    Schur complement S = diag(b) - P^T diag(1/a) P, with the gauge fixed by
    adding a multiple of 1 1^T (exact for gauge-consistent right-hand sides).
    Memory: log K and P (n x m each) and S (m x m); O(n m^2) time.

    ``apply(logk, a, b, f, g)`` with logk (B, n, m) the log kernel, which
    carries the graph to the cost and the prior.
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
