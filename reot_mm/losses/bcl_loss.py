"""BCL's training objective, the registered module ``BCLLoss`` (BCL Eq. 10-11).

Zhu et al., Balanced Contrastive Learning for Long-Tailed Visual Recognition,
CVPR 2022: L = λ·L_LC + μ·L_BCL (Eq. 11), with the logit-compensated
cross-entropy L_LC of Eq. 10 (α_y = 1, δ_y = log π_y by default) on the
classifier branch and the balanced contrastive loss L_BCL of Eq. 9 (or the
ablation forms Eq. 6-8) on the contrastive branch; its maths is
:func:`reot_mm.losses.balanced_contrastive.balanced_contrastive_loss`.
"""
import math
from typing import Dict, Optional, Sequence

import torch
from mmengine.registry import MODELS

from reot_mm import dist
from reot_mm.losses.balanced_contrastive import (FORMS,  # noqa: F401
                                                 balanced_contrastive_loss)
from reot_mm.losses.class_counts import CountAwareModule
from reot_mm.losses.finite import normalize_rows, raise_if_non_finite
from reot_mm.losses.prior_cross_entropy import prior_shifted_cross_entropy
from reot_mm.losses.utils import check_choice, weight_reduce_loss

__all__ = ['BCLLoss', 'balanced_contrastive_loss',
           'logit_compensated_cross_entropy']


def logit_compensated_cross_entropy(
        cls_score: torch.Tensor,
        target: torch.Tensor,
        log_prior: torch.Tensor,
        class_weight: Optional[torch.Tensor] = None,
        prior_scale: float = 1.0) -> torch.Tensor:
    """Per-sample logit-compensated cross-entropy (BCL Eq. 10).

    L_LC(y, φ(x)) = −α_y · log softmax_y(φ(x) + δ),  δ_y = s·log π_y.

    With α = 1 and s = 1 (the paper's choice, after Menon et al.) this is
    CE(φ(x) + log π, y), i.e. logit-adjusted / Balanced Softmax training;
    predictions use the raw logits φ(x).

    Args:
        cls_score: (B, C) logits φ(x).
        target: (B,) integer labels.
        log_prior: (C,) log π_y (log class ratio of the training set).
        class_weight: (C,) α_y, or None for α = 1.
        prior_scale: s, the multiplier of log π (LogitAdjust's τ in the
            official code, 1 there and here).

    Returns:
        (B,) float32 losses (float64 for float64 logits).
    """
    if cls_score.ndim != 2:
        raise ValueError(f'cls_score must have shape (B, C), got '
                         f'{tuple(cls_score.shape)}')
    return prior_shifted_cross_entropy(cls_score, target, log_prior,
                                       prior_scale=prior_scale,
                                       class_weights=class_weight)


@MODELS.register_module()
class BCLLoss(CountAwareModule):
    """BCL's training objective L = λ·L_LC + μ·L_BCL (BCL Eq. 11).

    ``forward`` takes the classifier logits of view v1 and the contrastive
    embeddings of views v2, v3 plus the class prototypes, and returns a dict
    ``{'loss_lc': λ·L_LC, 'loss_bcl': μ·L_BCL}`` (mmengine sums every key
    containing ``loss``).

    Recipes (the authors' code): ImageNet-LT / iNat2018 λ = 1, μ = 0.35,
    τ = 0.07 (the defaults); CIFAR-LT λ = 2, μ = 0.6, τ = 0.1.

    Under DDP the embeddings and labels are all-gathered (gradient kept for
    the local rows, ``gather_across_ranks=True``) so n_j counts the global
    batch, as in the authors' DataParallel trainer; each rank's anchors are
    its own rows and the loss is scaled so that the mean over ranks equals the
    single-process loss on the concatenated batch.

    Args:
        temperature: τ of Eq. 9.
        lc_weight: λ (Eq. 11).
        bcl_weight: μ (Eq. 11).
        form: ``'L1'`` (Eq. 9, default), ``'L2'`` (Eq. 7), ``'L3'`` (Eq. 8).
        class_complement: prototypes as candidates (Eq. 9). Default True.
        class_averaging: 1/(n_j − [j = y]) weights. Default True.
        normalize: L2-normalise embeddings and prototypes here. Default True.
        prior_scale: multiplier of log π in Eq. 10 (1 in paper and code).
        class_weight: α_y of Eq. 10 (C,), None for α = 1 (paper and code).
        class_counts: raw training counts per class (C,) for π; usually
            filled by ``ClassStatisticsHook`` through ``set_class_counts``. A
            buffer (saved in checkpoints); zeros are smoothed to
            ``min_count`` where π is formed.
        num_classes: expected C (validates counts, logits and prototypes).
        min_count: pseudo-count for classes without training samples.
        gather_across_ranks: all-gather the contrastive batch under DDP.
        loss_weight: extra multiplier of both terms (OpenMMLab convention).
    """

    def __init__(self,
                 temperature: float = 0.07,
                 lc_weight: float = 1.0,
                 bcl_weight: float = 0.35,
                 form: str = 'L1',
                 class_complement: bool = True,
                 class_averaging: bool = True,
                 normalize: bool = True,
                 prior_scale: float = 1.0,
                 class_weight: Optional[Sequence[float]] = None,
                 class_counts: Optional[Sequence[float]] = None,
                 num_classes: Optional[int] = None,
                 min_count: float = 1.0,
                 gather_across_ranks: bool = True,
                 loss_weight: float = 1.0):
        super().__init__()
        check_choice('form', form, FORMS)
        if not (isinstance(temperature, (int, float)) and temperature > 0
                and math.isfinite(temperature)):
            raise ValueError(f'temperature must be a finite number > 0, got '
                             f'{temperature!r}')
        for name, value in (('lc_weight', lc_weight),
                            ('bcl_weight', bcl_weight),
                            ('loss_weight', loss_weight)):
            if not (isinstance(value, (int, float)) and value >= 0
                    and math.isfinite(value)):
                raise ValueError(f'{name} must be a finite number >= 0, got '
                                 f'{value!r}')
        if not class_averaging and form != 'L1':
            raise ValueError("class_averaging=False needs form='L1', got "
                             f'form={form!r}')
        self.temperature = float(temperature)
        self.lc_weight = float(lc_weight)
        self.bcl_weight = float(bcl_weight)
        self.form = form
        self.class_complement = bool(class_complement)
        self.class_averaging = bool(class_averaging)
        self.normalize = bool(normalize)
        self.prior_scale = float(prior_scale)
        self.gather_across_ranks = bool(gather_across_ranks)
        self.loss_weight = float(loss_weight)
        if class_weight is not None:
            class_weight = torch.as_tensor(class_weight, dtype=torch.float32)
            if class_weight.ndim != 1 or (
                    num_classes is not None
                    and class_weight.numel() != num_classes):
                raise ValueError(
                    f'class_weight must have shape ({num_classes or "C"},), '
                    f'got {tuple(class_weight.shape)}')
            self.register_buffer('class_weight', class_weight)
        else:
            self.class_weight = None
        self.init_class_counts(class_counts, num_classes, min_count)

    @property
    def needs_class_counts(self) -> bool:
        return self.lc_weight > 0

    @property
    def gathers_across_ranks(self) -> bool:
        """Whether ``forward`` all-gathers the contrastive batch now (DDP and
        ``gather_across_ranks``). Then every rank must call it each step,
        a rank without samples too (with zero rows), or the others wait."""
        return self.gather_across_ranks and self.bcl_weight > 0 \
            and dist.is_distributed()

    @property
    def needs_prototypes(self) -> bool:
        return self.bcl_weight > 0 and (self.class_complement
                                        or self.form == 'L3')

    def log_prior(self, num_classes: int) -> torch.Tensor:
        """log π (C,) float32 from the (smoothed) class counts; raises if
        they are missing or of another length."""
        if not self.has_class_counts:
            raise ValueError(
                'BCLLoss needs class_counts for the logit compensation of '
                'Eq. 10: give class_counts=[...] in the loss config or add '
                "dict(type='ClassStatisticsHook') to custom_hooks")
        return self.log_class_ratio(num_classes)

    def forward(self,
                cls_score: torch.Tensor,
                target: torch.Tensor,
                embeddings: torch.Tensor,
                prototypes: Optional[torch.Tensor] = None,
                weight: Optional[torch.Tensor] = None,
                avg_factor: Optional[float] = None) -> Dict[str, torch.Tensor]:
        """Compute λ·L_LC (Eq. 10) and μ·L_BCL (Eq. 9 or its variants).

        Args:
            cls_score: (B, C) classifier logits of view v1.
            target: (B,) integer labels. B = 0 is accepted only while the
                loss gathers across ranks (:attr:`gathers_across_ranks`): a
                rank without samples joins the other ranks' collectives and
                contributes 0 (with a graph, as DDP needs).
            embeddings: (B, V, D) projections of the V ≥ 1 contrastive views
                (V = 2: v2, v3), normalised here if ``normalize``.
            prototypes: (C, D) prototype projections g_c(w_j); required with
                class-complement or form L3.
            weight: (B,) per-sample weights of the L_LC term.
            avg_factor: divisor of the L_LC sum instead of B.

        Returns:
            dict with ``loss_lc`` and ``loss_bcl`` (0-dim tensors).
        """
        if cls_score.ndim != 2:
            raise ValueError(f'cls_score must have shape (B, C), got '
                             f'{tuple(cls_score.shape)}')
        batch, num_classes = cls_score.shape
        if batch == 0 and not self.gathers_across_ranks:
            raise ValueError(
                'cls_score has no rows (an empty batch); expected (B, C) with '
                'B >= 1 samples (B = 0 only under DDP with '
                'gather_across_ranks=True, where the rank joins the gather)')
        if self.num_classes is not None and num_classes != self.num_classes:
            raise ValueError(f'cls_score has {num_classes} classes but '
                             f'num_classes is {self.num_classes}')
        if target.ndim != 1 or target.shape[0] != batch:
            raise ValueError(f'target must have shape ({batch},) integer '
                             f'labels, got {tuple(target.shape)}')
        if embeddings.ndim != 3 or embeddings.shape[0] != batch:
            raise ValueError(
                f'embeddings must have shape ({batch}, V, D) (one row per '
                f'sample, V contrastive views), got {tuple(embeddings.shape)}')
        if self.needs_prototypes and prototypes is None:
            raise ValueError(
                f'BCLLoss(form={self.form!r}, class_complement='
                f'{self.class_complement}) needs prototypes of shape '
                f'({num_classes}, {embeddings.shape[2]})')
        if prototypes is not None and (prototypes.ndim != 2
                                       or prototypes.shape[0] != num_classes):
            raise ValueError(
                f'prototypes must have shape ({num_classes}, D), got '
                f'{tuple(prototypes.shape)}')
        losses = {}
        if self.lc_weight > 0 and batch == 0:
            # a rank without samples under DDP: nothing to average, but the
            # classifier stays in the graph
            losses['loss_lc'] = cls_score.sum() * 0.0
        elif self.lc_weight > 0:
            lc = logit_compensated_cross_entropy(
                cls_score, target, self.log_prior(num_classes),
                class_weight=self.class_weight, prior_scale=self.prior_scale)
            lc = weight_reduce_loss(lc, weight, 'mean', avg_factor)
            raise_if_non_finite(
                lc, 'L_LC (BCL Eq. 10)',
                'expected a finite positive avg_factor', cls_score=cls_score,
                weight=weight)
            losses['loss_lc'] = self.loss_weight * self.lc_weight * lc
        if self.bcl_weight > 0:
            losses['loss_bcl'] = self.loss_weight * self.bcl_weight * \
                self.contrastive(target, embeddings, prototypes, num_classes)
        return losses

    def contrastive(self, target: torch.Tensor, embeddings: torch.Tensor,
                    prototypes: Optional[torch.Tensor],
                    num_classes: int) -> torch.Tensor:
        """L_BCL (mean over the global anchors; see the class docstring).

        Args:
            target: (B,) labels; embeddings: (B, V, D); prototypes: (C, D).
        """
        views = embeddings.shape[1]
        # view-major: all samples of view 1, then view 2 (as the official code)
        local = embeddings.transpose(0, 1).reshape(-1, embeddings.shape[2])
        if self.normalize:
            local = normalize_rows(local.float(), dim=1)
            if prototypes is not None:
                prototypes = normalize_rows(prototypes.float(), dim=1)
        local_labels = target.repeat(views)
        everything, all_labels, offset = local, local_labels, 0
        if self.gather_across_ranks:
            # n_j counts the global batch; gradients flow back to each rank
            everything, offset = dist.gather_rows(local, with_grad=True)
            all_labels = dist.gather_rows(local_labels)[0]
            if everything.shape[0] == 0:
                # no rank has a sample (every rank sees it, so every rank
                # skips the rest alike): zero, with the local graph
                zero = local.sum() * 0.0
                return zero if prototypes is None else \
                    zero + prototypes.sum() * 0.0
        per_anchor, valid = balanced_contrastive_loss(
            everything, all_labels, prototypes, self.temperature,
            form=self.form, class_complement=self.class_complement,
            class_averaging=self.class_averaging, num_classes=num_classes,
            anchor_offset=offset, num_anchors=local.shape[0])
        valid_count = valid.sum().to(torch.float32)
        world = 1
        if self.gather_across_ranks and dist.is_distributed():
            valid_count = dist.all_reduce_sum(valid_count)
            world = dist.get_world_size()
        # mean over all valid anchors of all ranks; rank losses average to it
        return per_anchor.sum() * world / valid_count.clamp(min=1)
