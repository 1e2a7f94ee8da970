"""The result of the RE-OT Sinkhorn solver and the plan it describes.

Shi et al., Relative Entropic Optimal Transport: a (Prior-aware) Matching
Perspective to (Unbalanced) Classification, NeurIPS 2023, Eq. 8: the plan is
``P = diag(u) K diag(v)``, i.e. ``log P_ij = f_i + log K_ij + g_j`` with the
log-potentials ``f = log u``, ``g = log v`` (the duals of Eq. 11 over ε).
Plain torch (layer 1).
"""
from dataclasses import dataclass, field
from typing import Optional, Tuple

import torch

from .kernel import KernelBlocks, log_kernel

__all__ = ['SinkhornResult']


@dataclass
class SinkhornResult:
    """Result of :func:`~reot_mm.ot.sinkhorn.reot_sinkhorn`.

    Attributes:
        f: (..., n) row log-potentials ``log u`` (dual f of Eq. 11 over ε),
            in the working dtype (fp32 for fp16/bf16/fp32 costs).
        g: (..., m) column log-potentials ``log v``; zeros for U(a).
        iterations: number of full (row + column) Sinkhorn iterations run
            (fp32 and fp64 passes together); 1 for the closed-form U(a).
        marginal_error: (...,) L1 marginal mismatch
            ``|P 1 - a|_1 + |P^T 1 - b|_1`` (only the row term for U(a)) of
            the plan :meth:`plan` returns, recomputed from it after the
            iterations, in the working dtype.
        converged: True when ``marginal_error < tol`` for every problem of
            the batch, i.e. the returned plan meets its marginals.
        potentials_fp64: None, or ``(f, g)`` in fp64 when the fp32 values
            of f and g are too coarse to give the plan to ``tol`` (large
            |C| / ε: the plan needs ``f_i + log K_ij`` to cancel to better
            than fp32 resolution). :meth:`log_plan` then combines these in
            fp64 and rounds the result to the working dtype.
    """
    f: torch.Tensor
    g: torch.Tensor
    iterations: int
    marginal_error: torch.Tensor
    converged: bool
    cost: torch.Tensor = field(repr=False, default=None)
    epsilon: float = field(repr=False, default=1.0)
    log_prior: Optional[torch.Tensor] = field(repr=False, default=None)
    potentials_fp64: Optional[Tuple[torch.Tensor, torch.Tensor]] = field(
        repr=False, default=None)

    def log_plan(self) -> torch.Tensor:
        """log P = f_i + log K_ij + g_j, shape of the cost (RE-OT Eq. 8).

        Entries where Q_ij = 0 (``log_prior = -inf``) or C_ij = +inf are
        ``-inf``, i.e. the plan is exactly zero there. Differentiable w.r.t.
        the cost and prior through log K (and through f, g when
        ``grad='unrolled'`` or ``'implicit'``); with ``grad='none'`` f and g
        are constants. Without autograd the n x m output is the only n x m
        tensor made.
        """
        return self._combine(exp=False)

    def plan(self) -> torch.Tensor:
        """P = exp(log P), shape of the cost: the plan ``marginal_error``
        and ``converged`` describe. With ``potentials_fp64`` the exponent is
        taken in fp64 and P rounded to the working dtype."""
        return self._combine(exp=True)

    def _combine(self, exp: bool) -> torch.Tensor:
        out_dtype = self.f.dtype
        f, g = self.potentials_fp64 or (self.f, self.g)
        dtype = f.dtype
        if self._needs_graph() or (
                self.log_prior is not None and torch.promote_types(
                    out_dtype, self.log_prior.dtype) != out_dtype):
            out = log_kernel(self.cost.to(dtype), self.epsilon,
                             self.log_prior)
            out = out + f.unsqueeze(-1) + g.unsqueeze(-2)
            out = out.exp() if exp else out
            return out if self.potentials_fp64 is None else out.to(out_dtype)
        if dtype != out_dtype:
            return self._combine_in_blocks(f, g, out_dtype, exp)
        # no autograd: build the output in place (one n x m tensor, no
        # temporaries); the same operations in the same order as above
        if self.cost.dtype == dtype:
            out = torch.mul(self.cost, -1.0 / self.epsilon)
        else:
            out = self.cost.to(dtype, copy=True).mul_(-1.0 / self.epsilon)
        if self.log_prior is not None:
            out.add_(self.log_prior)
        out.add_(f.unsqueeze(-1)).add_(g.unsqueeze(-2))
        return out.exp_() if exp else out

    def _combine_in_blocks(self, f, g, out_dtype, exp) -> torch.Tensor:
        """log P (or P) computed in the dtype of (f, g), written to
        ``out_dtype`` a block of rows at a time."""
        batched = self.cost.ndim == 3
        cost3 = self.cost if batched else self.cost.unsqueeze(0)
        f3, g3 = (f, g) if batched else (f.unsqueeze(0), g.unsqueeze(0))
        blocks = KernelBlocks(cost3, self.epsilon, self.log_prior, f.dtype)
        out = torch.empty(cost3.shape, dtype=out_dtype,
                          device=self.cost.device)
        for start, stop in blocks.rows:
            part = blocks.block(start, stop, row_add=f3, col_add=g3)
            out[:, start:stop] = part.exp_() if exp else part
        return out if batched else out[0]

    def _needs_graph(self) -> bool:
        if not torch.is_grad_enabled():
            return False
        f, g = self.potentials_fp64 or (self.f, self.g)
        return any(t is not None and t.requires_grad
                   for t in (self.cost, self.log_prior, f, g))
