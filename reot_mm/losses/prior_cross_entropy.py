"""Prior-shifted cross-entropy: the one implementation of the inverse RE-OT loss
under U(a) (RE-OT Eq. 16) and of the logit-adjusted cross-entropies built on it.

With U(a) = {P : P·1 = a}, a_i = 1/n, the inner RE-OT problem has the closed
form P_ij = a_i·Q_ij·exp(-C_ij/ε) / Σ_k Q_ik·exp(-C_ik/ε), and the outer
KL(P̃ ‖ P) becomes, up to the constant log n and the 1/n that a 'mean'
reduction takes care of (Shi et al., Relative Entropic Optimal Transport: a
(Prior-aware) Matching Perspective to (Unbalanced) Classification, NeurIPS 2023,
Eq. 16)::

    L_i = - Σ_j P̃_ij · log softmax_j( s_ij/ε + log Q_ij ),   s = -C

The same formula is the logit compensation of balanced contrastive learning,
CE(s + log π, y) (Zhu et al., Balanced Contrastive Learning for Long-Tailed
Visual Recognition, CVPR 2022, Eq. 10-11), and GML's classifier loss,
CE(cos/τ_s + α·log p, y) (Suh and Seo, Long-Tailed Recognition by Mutual
Information Maximization between Latent Features and Ground-Truth Labels, ICML
2023, Eq. 7): ``log_prior`` times ``prior_scale`` is the shift.
"""
from typing import Optional

import torch
import torch.nn.functional as F

from reot_mm.losses.utils import (at_least_fp32, check_labels,
                                  check_positive, weight_reduce_loss)

__all__ = ['prior_shifted_cross_entropy', 'inverse_reot_loss', 'soft_labels']


def prior_shifted_cross_entropy(scores: torch.Tensor,
                                target: torch.Tensor,
                                log_prior: Optional[torch.Tensor] = None,
                                *,
                                epsilon: float = 1.0,
                                prior_scale: float = 1.0,
                                weight: Optional[torch.Tensor] = None,
                                class_weights: Optional[torch.Tensor] = None,
                                ignore_index: Optional[int] = None,
                                focal_gamma: float = 0.0,
                                reduction: str = 'none',
                                avg_factor: Optional[float] = None
                                ) -> torch.Tensor:
    """-Σ_j P̃_ij·log softmax_j(s_ij/ε + α·log Q_ij), reduced (RE-OT Eq. 16).

    Every row of RE-OT Table 1 under U(a) is a call of this function: the
    prior Q (uniform, class or batch ratio, LDAM margins, ...) is
    ``log_prior``, the focal row is ``focal_gamma``, the class-balanced row
    is ``class_weights``.

    Args:
        scores: (N, C) or (N, C, *spatial) scores s = -C (logits, scaled
            cosines, minus distances); the class dimension is dim 1. Half
            precision is computed and returned in float32.
        target: integer labels of shape (N,) / (N, *spatial) (P̃ one-hot), or
            soft targets P̃ of the shape of ``scores`` (mixup, cutmix).
        log_prior: log Q: (C,) class-wise, or any shape that broadcasts to
            ``scores`` ((N, C) sample-wise, (N, C, *spatial) per pixel).
            Entries may be -inf (no prior mass). None means uniform. Gradients
            flow into it when it requires them (U(a, b) column potentials).
        epsilon: ε > 0, the entropic temperature dividing the scores.
        prior_scale: α multiplying ``log_prior`` (BCL's s, GML's α); 0 drops
            the prior.
        weight: per-sample weights, broadcastable to the per-sample loss
            (shape of ``target`` for labels, (N, *spatial) for soft targets).
        class_weights: (C,) w_j, P̃_ij ← P̃_ij·w_j (class-balanced row; BCL's
            α_y).
        ignore_index: label whose samples get zero loss and zero gradient
            (integer labels only). They still count in a 'mean' without
            ``avg_factor`` (OpenMMLab's convention): pass ``avg_factor`` to
            average over the others.
        focal_gamma: γ ≥ 0 of the focal row, P̃ ← P̃·(1 - P)^γ, gradients
            flowing through P as in the focal loss.
        reduction: 'none' | 'mean' | 'sum'.
        avg_factor: divide the sum by this instead ('mean' only).

    Returns:
        Per-sample losses of the shape of the labels (reduction 'none') or a
        scalar; float32, or float64 for float64 scores.

    Raises:
        ValueError: naming the argument, for a non-positive ε, a negative γ,
            labels outside [0, C), or shapes that do not fit the scores.
    """
    scores = at_least_fp32(scores)
    if scores.ndim < 2:
        raise ValueError('scores must have shape (N, C) or (N, C, *spatial), '
                         f'got {tuple(scores.shape)}')
    num_classes = scores.shape[1]
    epsilon = check_positive(epsilon, 'epsilon')
    if focal_gamma < 0:
        raise ValueError(f'focal_gamma must be >= 0, got {focal_gamma}')
    # soft targets have the scores' rank, labels one dimension less
    soft = target.ndim == scores.ndim
    if soft:
        if target.shape != scores.shape:
            raise ValueError('soft target must have the shape of the scores '
                             f'{tuple(scores.shape)}, got {tuple(target.shape)}')
    else:
        expected = scores.shape[:1] + scores.shape[2:]
        if target.shape != expected:
            raise ValueError(f'target labels must have shape {tuple(expected)} '
                             f'for scores {tuple(scores.shape)} (or soft '
                             f'targets of the scores\' shape), got '
                             f'{tuple(target.shape)}')
        if target.dtype.is_floating_point or target.dtype == torch.bool:
            raise ValueError('target labels must be integers, got dtype '
                             f'{target.dtype}')
        check_labels(target, num_classes, 'target', ignore_index)
    if class_weights is not None and class_weights.shape != (num_classes, ):
        raise ValueError(f'class_weights must have shape ({num_classes},), '
                         f'got {tuple(class_weights.shape)}')

    shifted = _shift(scores, log_prior, epsilon, prior_scale)
    if soft:
        loss = _soft_target_loss(shifted, target, class_weights, focal_gamma)
    else:
        loss = _label_loss(shifted, target, class_weights, focal_gamma,
                           ignore_index)
    if weight is None and reduction == 'none':
        return loss
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


def _shift(scores: torch.Tensor, log_prior: Optional[torch.Tensor],
           epsilon: float, prior_scale: float) -> torch.Tensor:
    """s/ε + α·log Q, with a class-wise log Q laid along dim 1."""
    shifted = scores if epsilon == 1.0 else scores / epsilon
    if log_prior is None or prior_scale == 0:
        return shifted
    num_classes = scores.shape[1]
    if log_prior.ndim == 1:
        if log_prior.shape[0] != num_classes:
            raise ValueError(f'log_prior must have {num_classes} entries (one '
                             f'per class), got shape {tuple(log_prior.shape)}')
        # (C, 1, ..., 1) broadcasts along the class dimension of dense scores
        log_prior = log_prior.reshape((-1, ) + (1, ) * (scores.ndim - 2))
    else:
        try:
            fits = torch.broadcast_shapes(log_prior.shape,
                                          scores.shape) == scores.shape
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError('log_prior must have shape (C,) or broadcast to '
                             f'the scores {tuple(scores.shape)}, got '
                             f'{tuple(log_prior.shape)}')
    log_prior = log_prior.to(shifted)
    if prior_scale != 1.0:
        log_prior = prior_scale * log_prior
    return shifted + log_prior


def _label_loss(shifted, target, class_weights, focal_gamma, ignore_index):
    """One-hot P̃: -w_y·(1 - P_y)^γ·log P_y per sample."""
    valid = None if ignore_index is None else target != ignore_index
    if valid is not None:
        # any in-range label keeps the gathers valid; masked out below
        target = target.masked_fill(~valid, 0)
    if focal_gamma:
        log_p = torch.log_softmax(shifted, dim=1).gather(
            1, target.unsqueeze(1)).squeeze(1)
        if valid is not None:
            # the focal factor's derivative at log P = -inf is 0·inf = NaN
            log_p = torch.where(valid, log_p, torch.zeros_like(log_p))
        loss = -(-torch.expm1(log_p)).clamp_min(0).pow(focal_gamma) * log_p
    else:
        loss = F.cross_entropy(shifted, target, reduction='none')
    if class_weights is not None:
        loss = loss * class_weights.to(loss)[target]
    if valid is not None:
        # where, not a product: an ignored sample's loss may be inf (its
        # dummy class can have log Q = -inf) and inf·0 is NaN
        loss = torch.where(valid, loss, torch.zeros_like(loss))
    return loss


def _soft_target_loss(shifted, target, class_weights, focal_gamma):
    """Soft P̃: -Σ_j P̃_ij·w_j·(1 - P_ij)^γ·log P_ij."""
    log_plan = torch.log_softmax(shifted, dim=1)
    weights = target.to(shifted.dtype)
    if class_weights is not None:
        weights = weights * class_weights.to(weights).reshape(
            (-1, ) + (1, ) * (shifted.ndim - 2))
    if focal_gamma:
        weights = weights * (-torch.expm1(log_plan)).clamp_min(0).pow(
            focal_gamma)
    # 0·(-inf) must be 0: classes without prior mass carry no supervision.
    terms = torch.where(weights > 0, weights * log_plan,
                        torch.zeros_like(log_plan))
    return -terms.sum(1)


def inverse_reot_loss(similarity: torch.Tensor, target: torch.Tensor,
                      log_prior: Optional[torch.Tensor] = None,
                      epsilon: float = 1.0,
                      focal_gamma: float = 0.0,
                      class_weights: Optional[torch.Tensor] = None
                      ) -> torch.Tensor:
    """Per-sample inverse RE-OT loss under U(a) (RE-OT Eq. 16).

    L_i = -Σ_j P̃_ij·log P_ij with P_ij ∝ Q_ij·exp(-C_ij/ε), C = c - similarity:
    :func:`prior_shifted_cross_entropy` with reduction 'none', kept under the
    paper's name and argument order.

    Args:
        similarity: (B, C) -C (up to the constant c): logits, scaled
            cosines, or minus distances.
        target: (B,) integer labels (P̃ one-hot) or (B, C) soft targets.
        log_prior: log Q, shape (C,) or (B, C); None means uniform.
        epsilon: ε > 0.
        focal_gamma: γ of the focal row, P̃ ← P̃·(1 - P)^γ.
        class_weights: (C,) class-balanced factors, P̃_ij ← P̃_ij·w_j.

    Returns:
        (B,) float32 (float64 for float64 input) losses.
    """
    return prior_shifted_cross_entropy(
        similarity, target, log_prior, epsilon=epsilon,
        focal_gamma=focal_gamma, class_weights=class_weights)


def soft_labels(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """P̃ as a float32 (B, C) matrix: one-hot for integer labels."""
    if target.ndim == 1:
        return F.one_hot(target, num_classes).to(torch.float32)
    return target.to(torch.float32)
