"""Inverse RE-OT loss under the full constraint set U(a, b) over the batch.

Shi et al., Relative Entropic Optimal Transport: a (Prior-aware) Matching
Perspective to (Unbalanced) Classification, NeurIPS 2023, Eq. 14 with the plan
P = diag(u)·K·diag(v), K_ij = Q_ij·exp(-C_ij/ε) (Eq. 6-8), found by Sinkhorn.
With a_i = 1/B and u from the last row update,
B·P_ij = softmax_j(-C_ij/ε + log Q_ij + g_j), g = log v: the loss is the U(a)
loss (Eq. 16, :func:`prior_shifted_cross_entropy`) with log Q replaced by
log Q + g, where the column log-potentials g depend on the whole batch and are
differentiated through. Dropping the column constraint gives g = 0, i.e.
Eq. 16 again.
"""
import math
from typing import Optional, Tuple

import torch

from reot_mm.losses import priors
from reot_mm.losses.prior_cross_entropy import prior_shifted_cross_entropy
from reot_mm.losses.utils import at_least_fp32, check_choice, check_positive
from reot_mm.ot.sinkhorn import SinkhornResult, reot_sinkhorn
from reot_mm.ot.test_prior import class_distribution

CONSTRAINTS = ('a', 'ab')
SINKHORN_GRADS = ('implicit', 'unrolled')


def check_class_distribution(values, num_classes: Optional[int] = None,
                             name: str = 'b') -> torch.Tensor:
    """A user-given column marginal b as a float64 (C,) tensor summing to 1
    (the one validator of class distributions, in :mod:`reot_mm.ot`)."""
    return class_distribution(values, num_classes, name)


def _select_columns(x: Optional[torch.Tensor], index: torch.Tensor):
    if x is None:
        return None
    if x.ndim == 0 or x.shape[-1] == 1:
        return x  # broadcasts over the columns
    return x.index_select(-1, index)


def reot_column_potentials(similarity: torch.Tensor,
                           column_marginal: torch.Tensor,
                           epsilon: float = 1.0,
                           log_prior: Optional[torch.Tensor] = None,
                           *,
                           grad: str = 'none',
                           max_iter: int = 1000,
                           tol: float = 1e-6,
                           check_every: int = 10,
                           warn: bool = True
                           ) -> Tuple[torch.Tensor, SinkhornResult]:
    """Column log-potentials g of the batch plan in U(a, b) (RE-OT Eq. 6-8, 14).

    Solves P = argmin_{P ∈ U(a, b)} <C, P> - ε·H_Q(P) over the B rows of the
    batch with a_i = 1/B and b = ``column_marginal``, C = -similarity, by
    :func:`reot_sinkhorn` (log-domain). The plan is
    ``log P_ij = f_i + similarity_ij/ε + log Q_ij + g_j``.

    Columns with b_j = 0 are removed from the problem (their plan is exactly
    zero, g_j = -inf): an all-zero column would make the implicit gradient's
    Schur complement singular, and smaller problems are cheaper.

    Args:
        similarity: (B, C) -C up to a constant (logits, scaled cosines, ...).
        column_marginal: (C,) b, non-negative, summing to 1 (renormalised to
            the total mass of a).
        epsilon: ε > 0.
        log_prior: log Q, (C,) or (B, C), or None (Q = 1). A class-wise Q is
            absorbed by v under U(a, b) (Prop. 1(2)) and changes nothing but g.
        grad: ``'none'``, ``'unrolled'`` or ``'implicit'`` (see
            :func:`reot_sinkhorn`); ``'none'`` also when autograd is off.
        max_iter, tol, check_every, warn: Sinkhorn stopping rule.

    Returns:
        ``(g, result)``: g of shape (C,) in the working dtype (fp32 or fp64;
        -inf where b_j = 0), differentiable w.r.t. ``similarity`` for
        ``grad != 'none'``; the solver's :class:`SinkhornResult` on the kept
        columns.

    Raises:
        ValueError: ε <= 0, shapes, or an infeasible U(a, b): b puts mass on
            a class whose prior Q is zero for every sample.
    """
    epsilon = check_positive(epsilon)
    if similarity.ndim != 2 or min(similarity.shape) == 0:
        raise ValueError('similarity must have shape (B, C) with B, C >= 1, '
                         f'got {tuple(similarity.shape)}')
    num_classes = similarity.shape[1]
    b = torch.as_tensor(column_marginal).to(similarity.device)
    if b.ndim != 1 or b.shape[0] != num_classes:
        raise ValueError(f'column_marginal must have shape ({num_classes},), '
                         f'got {tuple(b.shape)}')
    dtype = torch.float64 if similarity.dtype == torch.float64 \
        else torch.float32
    b = b.detach().to(torch.float64)
    if not torch.isfinite(b).all() or (b < 0).any() or b.sum() <= 0:
        raise ValueError('column_marginal must be finite, non-negative and '
                         f'have positive mass, got {b.tolist()[:20]}')
    keep = b > 0
    if log_prior is not None:
        zero_q = torch.isneginf(log_prior.detach())
        if zero_q.ndim == 2:
            zero_q = zero_q.all(0)
        if zero_q.ndim == 1 and zero_q.shape[0] == num_classes:
            bad = zero_q & keep
            if bad.any():
                raise ValueError(
                    'infeasible U(a, b): the column marginal b gives mass to '
                    f'classes {bad.nonzero().flatten().tolist()[:20]} whose '
                    'prior Q is zero for every sample (log Q = -inf, e.g. '
                    'classes absent from the batch under the batch ratio '
                    'prior); give b no mass there (column_marginal='
                    "'prior' or 'batch_ratio') or use a prior without zeros")
    index = None
    if not bool(keep.all()):
        index = keep.nonzero().flatten()
        similarity = similarity.index_select(1, index)
        log_prior = _select_columns(log_prior, index)
        b = b[index]
    b = (b / b.sum()).to(dtype)
    if not (torch.is_grad_enabled() and (
            similarity.requires_grad
            or (log_prior is not None and log_prior.requires_grad))):
        grad = 'none'
    result = reot_sinkhorn(-similarity, epsilon, None, b, log_prior,
                           constraints='ab', max_iter=max_iter, tol=tol,
                           check_every=check_every, grad=grad, warn=warn)
    g = result.g
    if index is not None:
        g = g.new_full((num_classes, ), -math.inf).index_copy(0, index, g)
    return g, result


def inverse_reot_loss_ab(similarity: torch.Tensor,
                         target: torch.Tensor,
                         column_marginal: Optional[torch.Tensor] = None,
                         log_prior: Optional[torch.Tensor] = None,
                         epsilon: float = 1.0,
                         focal_gamma: float = 0.0,
                         class_weights: Optional[torch.Tensor] = None,
                         *,
                         constraints: str = 'ab',
                         grad: str = 'implicit',
                         max_iter: int = 1000,
                         tol: float = 1e-6,
                         check_every: int = 10,
                         warn: bool = True,
                         return_result: bool = False):
    """Per-sample inverse RE-OT loss under U(a, b) over the batch (RE-OT Eq. 14).

    With a_i = 1/B, P̃ = y/B and P the U(a, b) plan of Eq. 14's inner problem,
    KL(P̃ ‖ P) = mean_i L_i + const with::

        L_i = -Σ_j y_ij·log softmax_j(similarity_ij/ε + log Q_ij + g_j)

    where g = log v are the column log-potentials of the plan
    (:func:`reot_column_potentials`), differentiated through the Sinkhorn
    iterations (``grad='unrolled'``) or implicitly (``'implicit'``). With
    ``constraints='a'`` the column constraint is dropped, g = 0 and this is
    exactly the U(a) loss of Eq. 16.

    Args:
        similarity: (B, C) -C up to a constant.
        target: (B,) labels or (B, C) soft targets. A target may not put mass
            on a class with b_j = 0 (the plan is zero there).
        column_marginal: (C,) b; None means the batch label ratio
            (Eq. 36 over this batch), for which P̃ ∈ U(a, b).
        log_prior: log Q, (C,) or (B, C), or None.
        epsilon: ε > 0.
        focal_gamma, class_weights: the focal and class-balanced rows of
            Table 1, as in :func:`prior_shifted_cross_entropy`.
        constraints: ``'ab'`` (default here) or ``'a'``.
        grad: ``'implicit'`` or ``'unrolled'``.
        max_iter, tol, check_every, warn: Sinkhorn stopping rule.
        return_result: also return the solver's :class:`SinkhornResult`
            (None under ``constraints='a'``), e.g. to report convergence.

    Returns:
        (B,) losses (>= fp32), or ``(losses, result)`` with ``return_result``.

    Raises:
        ValueError: bad options, shapes or marginals, or a target on a class
            that b excludes.
    """
    check_choice('constraints', constraints, CONSTRAINTS)
    check_choice('grad', grad, SINKHORN_GRADS)
    similarity = at_least_fp32(similarity)
    result = None
    if constraints == 'ab':
        if column_marginal is None:
            column_marginal = priors.batch_label_ratio(target,
                                                       similarity.shape[-1])
        g, result = reot_column_potentials(
            similarity, column_marginal, epsilon, log_prior, grad=grad,
            max_iter=max_iter, tol=tol, check_every=check_every, warn=warn)
        _check_target_support(target, g)
        log_prior = g if log_prior is None else log_prior.to(g.dtype) + g
    loss = prior_shifted_cross_entropy(
        similarity, target, log_prior, epsilon=epsilon,
        focal_gamma=focal_gamma, class_weights=class_weights)
    return (loss, result) if return_result else loss


def _check_target_support(target: torch.Tensor, g: torch.Tensor) -> None:
    """A target on a class with b_j = 0 has an infinite KL: say so."""
    excluded = torch.isneginf(g.detach())
    if not bool(excluded.any()):
        return
    if target.ndim == 1:
        hit = excluded[target]
    else:
        hit = ((target.detach() > 0) & excluded).any(-1)
    if bool(hit.any()):
        classes = (target if target.ndim == 1 else target.argmax(-1))[hit]
        raise ValueError(
            'target puts mass on classes '
            f'{sorted(set(classes.tolist()))[:20]} to which the column '
            'marginal b gives none: the U(a, b) plan is zero there and '
            'KL(P̃ ‖ P) is infinite')
