"""Log-domain Sinkhorn without an n x m buffer (``memory='stream'``).

Shi et al., Relative Entropic Optimal Transport: a (Prior-aware) Matching
Perspective to (Unbalanced) Classification, NeurIPS 2023, Eq. 8, with the
updates written for the log-potentials f = log u, g = log v::

    g = log b - logsumexp_i(log K_ij + f_i)     (columns exact)
    f = log a - logsumexp_j(log K_ij + g_j)     (rows exact)

Every half iteration recomputes log K from the cost and log Q in row blocks
(:class:`~reot_mm.ot.kernel.KernelBlocks`, a column logsumexp streamed over
the blocks): an ``exp`` per entry and pass instead of a matrix-vector
product, for problems where a second n x m tensor does not fit in memory.
Plain torch (layer 1).
"""
import math

import torch

from .checks import check_feasible
from .kernel import KernelBlocks

__all__ = ['sinkhorn_stream']


def sinkhorn_stream(cost, epsilon, a, b, log_prior, g_init, max_iter, tol,
                    check_every, dtype, chunk_size=None):
    """Streamed log-domain Sinkhorn; inputs (B, n, m), (B, n), (B, m).

    The row logsumexp of an iteration also gives the row marginal error of
    the pair (f, g) before f is updated (the columns are exact then), so a
    check costs nothing extra; on a check that stops, that pair is returned.

    Returns:
        ``(f, g, iterations, error)`` in ``dtype``.
    """
    blocks = KernelBlocks(cost, epsilon, log_prior, dtype, chunk_size)
    pos_a, pos_b = a > 0, b > 0
    log_a, log_b = a.log(), b.log()
    minus_inf_a = torch.full_like(a, -math.inf)
    minus_inf_b = torch.full_like(b, -math.inf)
    g = torch.zeros_like(b) if g_init is None else g_init
    row = blocks.row_logsumexp(g)
    check_feasible(row, a, 'row')
    f = torch.where(pos_a, log_a - row, minus_inf_a)
    err = torch.full_like(a[:, 0], math.inf)
    it = 0
    while it < max_iter:
        col = blocks.col_logsumexp(f)
        if it == 0:
            check_feasible(col, b, 'column')
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
        check_feasible(row, a, 'row')
        f = torch.where(pos_a, log_a - row, minus_inf_a)
    return f, g, it, err
