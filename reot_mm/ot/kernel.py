"""The RE-OT kernel log K = log Q - C / ε, whole or in row blocks.

Shi et al., Relative Entropic Optimal Transport: a (Prior-aware) Matching
Perspective to (Unbalanced) Classification, NeurIPS 2023, Prop. 2:
``K_ij = Q_ij exp(-C_ij / ε)``. Plain torch (layer 1).

:class:`KernelBlocks` produces ``log K (+ f ⊕ g)`` a block of rows at a time,
so a pass over an n x m problem never holds a second n x m tensor: the
streamed solver and :func:`plan_marginal_error` (the error of the plan a
:class:`~reot_mm.ot.sinkhorn_result.SinkhornResult` returns) use it. A block
is computed with the same operations, in the same order, as
``SinkhornResult.log_plan()``, so both give bit-identical values.
"""
import math
from typing import Optional

import torch

__all__ = ['log_kernel', 'KernelBlocks', 'plan_marginal_error']

#: elements of one row block when ``chunk_size`` is None (4 MiB in fp32)
AUTO_BLOCK_ELEMENTS = 1 << 20


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


class KernelBlocks:
    """log K = log Q - C / ε of a (B, n, m) problem, produced in row blocks.

    Each block is a fresh (B, rows, m) tensor in ``dtype`` (fp16/bf16 costs
    are upcast before the division by ε), so a pass over the kernel never
    holds more than one block besides the cost and the prior.
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
            chunk_size = max(1, AUTO_BLOCK_ELEMENTS // max(1, nb * m))
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


def plan_marginal_error(blocks: KernelBlocks, f: torch.Tensor,
                        g: torch.Tensor, a: torch.Tensor,
                        b: Optional[torch.Tensor],
                        out_dtype) -> torch.Tensor:
    """L1 marginal error of ``P = exp(log K + f ⊕ g)`` as returned to users.

    Each block of P is computed in ``blocks.dtype`` (the dtype of f and g)
    and rounded to ``out_dtype`` (the dtype ``plan()`` returns), as
    ``SinkhornResult.plan()`` does; the row and column sums accumulate in
    fp64. Returns the (B,) error ``|P 1 - a|_1 (+ |P^T 1 - b|_1 when b is
    given)``.
    """
    nb, n, m = blocks.cost.shape
    device = blocks.cost.device
    rows = torch.empty(nb, n, dtype=torch.float64, device=device)
    cols = torch.zeros(nb, m, dtype=torch.float64, device=device)
    for start, stop in blocks.rows:
        # as SinkhornResult.plan(): exp in the potentials' dtype, P rounded
        part = blocks.block(start, stop, row_add=f, col_add=g).exp_()
        part = part.to(out_dtype)
        rows[:, start:stop] = part.sum(-1, dtype=torch.float64)
        if b is not None:
            cols.add_(part.sum(-2, dtype=torch.float64))
    err = (rows - a.double()).abs().sum(-1)
    if b is not None:
        err = err + (cols - b.double()).abs().sum(-1)
    return err
