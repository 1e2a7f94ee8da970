"""RE-OT adapter for dense (per-pixel) prediction (RE-OT Eq. 16 per pixel).

Shi et al., Relative Entropic Optimal Transport: a (Prior-aware) Matching
Perspective to (Unbalanced) Classification, NeurIPS 2023 (RE-OT below).
Every labelled pixel is one row of the U(a) problem of RE-OT Eq. 14/16: with
the pixel's scores s (its C logits, or scaled cosines) and the prior Q
(Eq. 15: Q = (1 - λ)·Uniform + λ·r, r from per-class pixel or image counts),

    L_p = -log softmax_j(s_pj / ε + α·log Q_j)  evaluated at j = y_p,

which is plain cross-entropy for a uniform Q and the Balanced-Softmax /
logit-adjusted CE(s + log π) for Q = π (λ = 1). α (``prior_scale``) is the
logit-adjustment strength of GML Eq. 11 (Suh and Seo, Long-Tailed Recognition
by Mutual Information Maximization between Latent Features and Ground-Truth
Labels, ICML 2023): α·η_c with η_c = log p(c); 1 leaves RE-OT unchanged.

The adapter handles the ignore label and mmseg's averaging; the prior is
formed as in ``REOTLoss`` (:class:`~reot_mm.losses.reot_prior.REOTPriorModule`)
and the loss is the same
:func:`~reot_mm.losses.prior_cross_entropy.prior_shifted_cross_entropy`, run
on the (B, C, H, W) scores in place (no (B·H·W, C) permute). Only the U(a)
loss (Eq. 16) is offered per pixel: the U(a, b) plan would couple every pixel
of a batch through one Sinkhorn problem.
"""
import math
from typing import Optional, Sequence

import torch
from mmengine.registry import MODELS

from reot_mm.losses.finite import raise_if_non_finite
from reot_mm.losses.prior_cross_entropy import prior_shifted_cross_entropy
from reot_mm.losses.reot_prior import REOTPriorModule
from reot_mm.losses.utils import (at_least_fp32, check_choice,
                                  weight_reduce_loss)

# priors that have a per-pixel meaning; 'teacher' needs dense teacher maps
# and 'ldam' a per-sample margin, neither of which a decode head provides
PIXEL_PRIORS = ('uniform', 'class_ratio', 'batch_ratio', 'interpolated',
                'sample_wise')
PIXEL_SUPERVISIONS = ('label', 'focal')


@MODELS.register_module()
class REOTPixelLoss(REOTPriorModule):
    """Inverse RE-OT loss for mmseg decode heads (``loss_decode``).

    Head contract (mmseg ``BaseDecodeHead.loss_by_feat``): called as
    ``loss(seg_logits (B, C, H, W), seg_label (B, H, W), weight=None,
    ignore_index=255)``; the result is logged and summed under ``loss_name``,
    which must start with ``loss_``. Registered in mmengine's root ``MODELS``,
    so ``loss_decode=dict(type='REOTPixelLoss', ...)`` resolves in the mmseg
    scope.

    Per-class counts come from ``class_counts`` or ``ClassStatisticsHook``
    (pixel counts by default; image counts as an option, see
    ``docs/methods/ade20k.md``); λ(t) from ``REOTPriorHook`` (ADE20K schedules
    are iteration-based: give the milestones as fractions of ``max_iters``).
    Ignored pixels get zero loss and zero gradient; an image (or batch)
    without labelled pixels contributes zero.

    Args:
        prior: ``'uniform'``, ``'class_ratio'`` (Eq. 35, default),
            ``'batch_ratio'`` (Eq. 36, labelled pixels of the global batch),
            ``'interpolated'`` (Eq. 37) or ``'sample_wise'`` (Eq. 38 per
            labelled pixel).
        prior_scale: α multiplying log Q (GML Eq. 11). Not touched by the
            prior hook. Defaults to 1.
        cost: ``'logits'`` (default) or ``'cosine'`` (scores are cosines of a
            cosine classifier, scaled by ``scale`` = 1/τ_s: GML Eq. 7).
        scale: multiplier of the cosines for ``cost='cosine'``.
        epsilon: ε > 0 of Eq. 16.
        avg_non_ignore: ``True`` (default) averages over labelled pixels only,
            like ``F.cross_entropy(ignore_index=...)`` and mmseg's
            ``CrossEntropyLoss(avg_non_ignore=True)``; ``False`` divides by all
            pixels, as mmseg's ``CrossEntropyLoss`` does by default.
        supervision: ``'label'`` (default) or ``'focal'`` (Table 1 focal row).
        focal_gamma: γ of the focal row.
        interpolation_gamma, sample_wise_g, sample_wise_base,
            sample_wise_form: as in ``REOTLoss``.
        class_counts: per-class training counts (raw), or None (the hook).
        num_classes: expected C (validates counts and scores).
        min_count: pseudo-count of classes without labelled pixels.
        prior_weight, prior_power: λ and the exponent of Q (buffers).
        reduction: 'mean' | 'sum' | 'none'.
        loss_weight: multiplier of the loss.
        loss_name: key of the loss in the head's loss dict; must start with
            ``loss_``. Defaults to ``'loss_reot'``.
    """

    def __init__(self,
                 prior: str = 'class_ratio',
                 prior_scale: float = 1.0,
                 cost: str = 'logits',
                 scale: float = 1.0,
                 epsilon: float = 1.0,
                 avg_non_ignore: bool = True,
                 supervision: str = 'label',
                 focal_gamma: float = 2.0,
                 interpolation_gamma: float = 0.74,
                 sample_wise_g: float = 1.0,
                 sample_wise_base: str = 'class_ratio',
                 sample_wise_form: str = 'normalized',
                 class_counts: Optional[Sequence[float]] = None,
                 num_classes: Optional[int] = None,
                 min_count: float = 1.0,
                 prior_weight: float = 1.0,
                 prior_power: float = 1.0,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0,
                 loss_name: str = 'loss_reot'):
        super().__init__()
        if cost not in ('logits', 'cosine'):
            raise ValueError("REOTPixelLoss: cost must be 'logits' or "
                             f"'cosine', got {cost!r}")
        check_choice('REOTPixelLoss: supervision', supervision,
                     PIXEL_SUPERVISIONS)
        check_choice('REOTPixelLoss: reduction', reduction,
                     ('none', 'mean', 'sum'))
        if not isinstance(loss_name, str) or not loss_name.startswith('loss_'):
            raise ValueError("REOTPixelLoss: loss_name must start with 'loss_' "
                             f'(mmseg sums only such keys), got {loss_name!r}')
        if not (isinstance(prior_scale, (int, float)) and prior_scale >= 0):
            raise ValueError('REOTPixelLoss: prior_scale (α) must be a number '
                             f'>= 0, got {prior_scale!r}')
        if not (epsilon > 0 and math.isfinite(epsilon)):
            raise ValueError('REOTPixelLoss: epsilon must be a finite number '
                             f'> 0, got {epsilon}')
        if focal_gamma < 0:
            raise ValueError(f'REOTPixelLoss: focal_gamma must be >= 0, got '
                             f'{focal_gamma}')
        self.prior_scale = float(prior_scale)
        self.cost = cost
        self.scale = float(scale)
        self.epsilon = float(epsilon)
        self.avg_non_ignore = bool(avg_non_ignore)
        self.supervision = supervision
        self.focal_gamma = float(focal_gamma)
        self.reduction = reduction
        self.loss_weight = float(loss_weight)
        self._loss_name = loss_name
        self.init_reot_prior(prior, PIXEL_PRIORS, interpolation_gamma,
                             sample_wise_g, sample_wise_base, sample_wise_form)
        self.init_class_counts(class_counts, num_classes, min_count)
        self.init_prior_schedule(prior_weight, prior_power)

    @property
    def loss_name(self) -> str:
        return self._loss_name

    @property
    def needs_class_counts(self) -> bool:
        return self.prior in ('class_ratio', 'interpolated', 'sample_wise')

    def forward(self,
                seg_logits: torch.Tensor,
                seg_label: torch.Tensor,
                weight: Optional[torch.Tensor] = None,
                ignore_index: Optional[int] = 255,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None,
                **kwargs) -> torch.Tensor:
        """Per-pixel inverse RE-OT loss (RE-OT Eq. 16), reduced.

        Args:
            seg_logits: (B, C, H, W) scores (or (B, C, *spatial)).
            seg_label: (B, H, W) integer labels in [0, C) or ``ignore_index``.
            weight: optional per-pixel weights, (B, H, W).
            ignore_index: label of unlabelled pixels (255 in mmseg; ADE20K's
                "other" after ``reduce_zero_label``). None: every pixel counts.
            avg_factor: normaliser of the summed loss (overrides
                ``avg_non_ignore``).
            reduction_override: 'none' | 'mean' | 'sum'.

        Returns:
            Scalar loss, or (B, H, W) per-pixel losses for reduction 'none'
            (0 at ignored pixels).

        Raises:
            ValueError: shapes disagree, labels are not integers, or a label
                is outside [0, C) and not ``ignore_index``.
        """
        reduction = reduction_override or self.reduction
        if seg_logits.ndim < 3:
            raise ValueError('REOTPixelLoss: seg_logits must be (B, C, H, W), got '
                             f'shape {tuple(seg_logits.shape)}; use REOTLoss '
                             'for (B, C) scores')
        batch, num_classes = seg_logits.shape[:2]
        spatial = tuple(seg_logits.shape[2:])
        if tuple(seg_label.shape) != (batch, ) + spatial:
            raise ValueError(
                f'REOTPixelLoss: seg_label must have shape {(batch, ) + spatial} '
                f'to match seg_logits {tuple(seg_logits.shape)}, got '
                f'{tuple(seg_label.shape)}')
        if seg_label.dtype.is_floating_point or seg_label.dtype == torch.bool:
            raise ValueError('REOTPixelLoss: seg_label must hold integer labels, '
                             f'got dtype {seg_label.dtype}')
        if self.num_classes is not None and num_classes != self.num_classes:
            raise ValueError(f'REOTPixelLoss: seg_logits has {num_classes} classes '
                             f'but the loss was built with num_classes='
                             f'{self.num_classes}')
        target = seg_label.long()
        valid = None if ignore_index is None else target != ignore_index
        if valid is not None:
            # any in-range label keeps the gathers valid; masked below
            target = target.masked_fill(~valid, 0)
        _check_pixel_labels(target, seg_label, num_classes, ignore_index)
        similarity = at_least_fp32(seg_logits)
        if self.cost == 'cosine':
            similarity = self.scale * similarity
        focal = self.focal_gamma if self.supervision == 'focal' else 0.0
        loss = prior_shifted_cross_entropy(
            similarity, target, self._pixel_log_prior(similarity, target, valid),
            epsilon=self.epsilon, prior_scale=self.prior_scale,
            focal_gamma=focal)
        if valid is not None:
            # where, not a product: an ignored pixel's loss may be inf
            loss = torch.where(valid, loss, torch.zeros_like(loss))
        if reduction == 'mean' and avg_factor is None:
            if valid is not None and self.avg_non_ignore:
                avg_factor = valid.sum().item()
            else:
                avg_factor = target.numel()
        loss = weight_reduce_loss(loss, weight, reduction,
                                  avg_factor if reduction == 'mean' else None)
        if not torch.isfinite(loss if loss.ndim == 0 else loss.sum()):
            raise_if_non_finite(
                loss, 'REOTPixelLoss', 'check class_counts (min_count); '
                'expected positive prior mass on every labelled class',
                seg_logits=seg_logits, weight=weight)
        return loss if self.loss_weight == 1.0 else self.loss_weight * loss

    def _pixel_log_prior(self, similarity: torch.Tensor, target: torch.Tensor,
                         valid: Optional[torch.Tensor]
                         ) -> Optional[torch.Tensor]:
        """log Q: (C,) for class-wise priors, (B, C, H, W) per pixel for
        ``'sample_wise'`` (formed on the labelled pixels' rows, 0 elsewhere)."""
        if self.prior == 'uniform' or self.prior_scale == 0.0:
            return None
        num_classes = similarity.shape[1]
        # batch ratios count labelled pixels only (Eq. 36 over the batch);
        # class-wise priors do not look at the labels
        labels = target if valid is None or not (
            self.uses_batch_labels or self.prior == 'sample_wise') \
            else target[valid]
        if self.prior != 'sample_wise':
            return self.reot_log_prior(labels.reshape(-1), num_classes)
        pixels = similarity.movedim(1, -1)
        rows = pixels.reshape(-1, num_classes) if valid is None \
            else pixels[valid]
        log_rows = self.reot_log_prior(labels.reshape(-1), num_classes, rows)
        if log_rows is None:
            return None
        log_q = pixels.new_zeros(pixels.shape)
        if valid is None:
            log_q = log_rows.reshape(pixels.shape)
        else:
            log_q[valid] = log_rows.to(log_q.dtype)
        return log_q.movedim(-1, 1)

    def extra_repr(self) -> str:
        return (f'prior={self.prior}, cost={self.cost}, epsilon={self.epsilon}, '
                f'prior_scale={self.prior_scale}, '
                f'avg_non_ignore={self.avg_non_ignore}')


def _check_pixel_labels(target: torch.Tensor, seg_label: torch.Tensor,
                        num_classes: int, ignore_index: Optional[int]) -> None:
    """Raise if a label map holds values outside [0, C) other than ignore.

    ``target`` is ``seg_label`` with ignored pixels already set to 0, so one
    fused min/max (one device sync) checks the common, valid case.
    """
    if target.numel() == 0:
        return
    low, high = (int(v) for v in torch.aminmax(target))
    if low >= 0 and high < num_classes:
        return
    bad = seg_label[(target < 0) | (target >= num_classes)]
    values = torch.unique(bad).tolist()
    raise ValueError(
        f'seg_label holds values {values[:10]} outside [0, {num_classes}) '
        f'({bad.numel()} pixels); expected class indices in [0, '
        f'{num_classes}) or ignore_index={ignore_index}. Check num_classes, '
        'reduce_zero_label and the label maps')
