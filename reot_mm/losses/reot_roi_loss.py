"""RE-OT adapter for the classification branch of two-stage detectors.

Shi et al., Relative Entropic Optimal Transport: a (Prior-aware) Matching
Perspective to (Unbalanced) Classification, NeurIPS 2023 (RE-OT below).

mmdet's softmax bbox heads score every sampled RoI with C + 1 logits, the last
one being background (label C). Each RoI is one row of the U(a) problem of
RE-OT Eq. 14/16, so the loss per RoI is

    L_i = -log softmax_j(s_ij / ε + log Q_j)  at j = y_i,   j = 0..C,

with the epoch-varying prior Q = (1 - λ)·Uniform + λ·r of RE-OT Eq. 15 and r
from the per-class *instance* counts of the training annotations (Eq. 35). The
detection-specific question is what Q does on the background column. Two
choices are offered (the paper has no detection code to follow):

``background='foreground_only'`` (default)
    Q is mixed over the C foreground classes only and the background keeps its
    uniform share::

        log Q = [log(C·Q_fg), 0],  Q_fg = (1 - λ)/C + λ·r,   Σ_j Q_fg,j = 1,

    i.e. Q ∝ [C/(C + 1)·Q_fg, 1/(C + 1)] (any row scaling cancels under U(a),
    RE-OT Eq. 16). The background logit is untouched and the foreground
    logits are shifted by log(C·Q_fg,j), which is 0 for a uniform Q_fg: the
    prior re-balances the foreground classes among themselves and leaves the
    foreground-versus-background decision — whose ratio the RoI sampler
    already fixes (1:3 in Mask R-CNN) — as plain CE would learn it. This is
    the detection lineage closest to the RE-OT paper (Balanced Meta-Softmax
    for LVIS shifted foreground RoIs by class priors and had no background
    logit), and it keeps test-time scores (plain softmax of the raw logits,
    the RE-OT default inference) calibrated between foreground and
    background.

``background='batch_fraction'``
    The background is treated as class C + 1 of Eq. 35 with its ratio taken
    from the batch: r_C = f_bg, the fraction of sampled RoIs whose label is
    background (over the global batch under DDP), and the foreground classes
    share the rest by their instance ratio, r_j = (1 - f_bg)·n_j / Σn. Q is
    then mixed over all C + 1 columns. At λ = 1 and constant logits the
    plan's background column sum equals f_bg, the background fraction of the
    labels: the U(a) column-marginal identity of Eq. 16. The background
    logit, trained with a prior of ~0.75 instead of 1/(C + 1), is pushed
    down, so raw test-time scores favour foreground much more than plain CE
    does — offered for experiments, not the default.

With λ = 0 (before t1 of the schedule) both choices are exactly plain CE.
"""
import math
from typing import Optional, Sequence

import torch
from mmengine.registry import MODELS

from reot_mm import dist
from reot_mm.losses import priors
from reot_mm.losses.class_counts import ScheduledPriorModule
from reot_mm.losses.finite import raise_if_non_finite
from reot_mm.losses.prior_cross_entropy import prior_shifted_cross_entropy
from reot_mm.losses.utils import (at_least_fp32, check_choice, check_labels,
                                  weight_reduce_loss)

BACKGROUND_MODES = ('foreground_only', 'batch_fraction')
# class-wise priors that have a RoI meaning
ROI_PRIORS = ('uniform', 'class_ratio', 'batch_ratio', 'interpolated')
ROI_SUPERVISIONS = ('label', 'focal')


def log_detection_prior(log_fg_ratio: torch.Tensor,
                        prior_weight: float,
                        prior_power: float = 1.0,
                        background: str = 'foreground_only',
                        log_background_fraction: Optional[torch.Tensor] = None
                        ) -> torch.Tensor:
    """log Q over C foreground classes plus background (last), shape (C + 1,).

    RE-OT Eq. 15 (Q = (1 - λ)·Uniform + λ·r) with the background handled as
    described in the module docstring.

    Args:
        log_fg_ratio: (C,) log r over the foreground classes (rows sum to one
            in linear space; -inf entries allowed, e.g. Eq. 36 classes absent
            from the batch).
        prior_weight: λ in [0, 1].
        prior_power: element-wise exponent of Q (1.03 after t3 in the authors'
            code). For ``'foreground_only'`` it applies to C·Q_fg, so that the
            background column stays 0.
        background: ``'foreground_only'`` or ``'batch_fraction'``.
        log_background_fraction: 0-dim log f_bg, the log fraction of background
            RoIs in the (global) batch; required for ``'batch_fraction'``.

    Returns:
        (C + 1,) float32 log Q, background last, shifted so that a uniform Q
        is all zeros (the shift cancels in Eq. 16): λ = 0 gives plain CE.
    """
    check_choice('background', background, BACKGROUND_MODES)
    if log_fg_ratio.ndim != 1:
        raise ValueError('log_fg_ratio must be a 1-D (C,) log-ratio, got shape '
                         f'{tuple(log_fg_ratio.shape)}')
    log_fg_ratio = log_fg_ratio.to(torch.float32)
    num_fg = log_fg_ratio.numel()
    if background == 'foreground_only':
        log_q_fg = priors.log_epoch_varying_prior(log_fg_ratio, prior_weight)
        log_q_fg = prior_power * (log_q_fg + math.log(num_fg))
        return torch.cat([log_q_fg, log_q_fg.new_zeros(1)])
    if log_background_fraction is None:
        raise ValueError("background='batch_fraction' needs "
                         'log_background_fraction (log of the fraction of '
                         'background RoIs in the batch)')
    log_bg = log_background_fraction.to(log_fg_ratio).reshape(1)
    # log(1 - f) from log f, exact near f = 0 and f = 1 (log1p(-exp))
    log_fg_mass = torch.log1p(-log_bg.exp().clamp_max(1.0))
    log_r = torch.cat([log_fg_ratio + log_fg_mass, log_bg])
    # uniform over C + 1 columns when λ = 0: a constant shift, i.e. plain CE
    log_q = priors.log_epoch_varying_prior(log_r, prior_weight, prior_power)
    return log_q + math.log(num_fg + 1) * prior_power


def roi_label_mass(labels: torch.Tensor, num_fg_classes: int) -> torch.Tensor:
    """Number of RoIs per label, (C + 1,) float32, summed over ranks.

    One collective serves both the foreground batch ratio (RE-OT Eq. 36 over
    the foreground RoIs) and the background fraction f_bg.

    Args:
        labels: (N,) RoI labels in [0, C], C = background.
        num_fg_classes: C.
    """
    mass = torch.bincount(labels, minlength=num_fg_classes + 1)
    return dist.all_reduce_sum(mass.to(torch.float32))


@MODELS.register_module()
class REOTRoILoss(ScheduledPriorModule):
    """Inverse RE-OT loss (RE-OT Eq. 16, U(a)) for mmdet bbox heads (``loss_cls``).

    An adapter: every sampled RoI is a row of C + 1 scores (background last);
    the adapter forms the detection prior (:func:`log_detection_prior`) and
    calls the same prior-shifted cross-entropy as ``REOTLoss``. Registered in
    mmengine's root ``MODELS``, so ``loss_cls=dict(type='REOTRoILoss', ...)``
    resolves in the mmdet scope.

    Head contract: ``BBoxHead.loss`` calls ``loss_cls(cls_score (N, C + 1),
    labels (N,), label_weights (N,), avg_factor=..., reduction_override=...)``
    with label C for background. The loss keeps C + 1 channels and the
    softmax activation, so it sets none of mmdet's ``custom_cls_channels``,
    ``custom_activation`` or ``custom_accuracy`` flags: the head predicts with
    the softmax of the raw logits (N, C + 1), background last (no prior at
    test time — the RE-OT default inference), and logs mmdet's own ``acc``.
    A Cascade head holds one such loss per stage; the hooks reach all of them.

    The C foreground instance counts (no background entry) come from
    ``class_counts`` or ``ClassStatisticsHook``; λ(t) from ``REOTPriorHook``.
    Both are buffers (in checkpoints).

    Args:
        background: ``'foreground_only'`` (default) or ``'batch_fraction'``;
            see the module docstring.
        prior: ``'class_ratio'`` (Eq. 35 on instance counts, default),
            ``'uniform'`` (plain CE), ``'batch_ratio'`` (Eq. 36 over the
            foreground RoIs of the global batch) or ``'interpolated'``
            (Eq. 37, γ = ``interpolation_gamma``).
        num_classes: C, the number of foreground classes (the head's
            ``num_classes``); validates the counts and the (N, C + 1) scores.
            None: taken from the counts.
        class_counts: C foreground instance counts, or None (the hook).
        supervision: ``'label'`` (default) or ``'focal'`` (Table 1 focal row).
        focal_gamma: γ of the focal row.
        epsilon: ε > 0 of Eq. 16 (softmax temperature).
        prior_weight, prior_power: λ and the exponent of Q (buffers; set by
            ``REOTPriorHook``).
        interpolation_gamma: γ of Eq. 37.
        min_count: pseudo-count of classes without instances.
        reduction: 'mean' | 'sum' | 'none'.
        loss_weight: multiplier of the loss.
        loss_name: key of the loss in the head's loss dict (mmdet stores a
            tensor under ``loss_cls``; the name is informational).
    """

    def __init__(self,
                 background: str = 'foreground_only',
                 prior: str = 'class_ratio',
                 num_classes: Optional[int] = None,
                 class_counts: Optional[Sequence[float]] = None,
                 supervision: str = 'label',
                 focal_gamma: float = 2.0,
                 epsilon: float = 1.0,
                 prior_weight: float = 1.0,
                 prior_power: float = 1.0,
                 interpolation_gamma: float = 0.74,
                 min_count: float = 1.0,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0,
                 loss_name: str = 'loss_cls'):
        super().__init__()
        check_choice('REOTRoILoss: background', background, BACKGROUND_MODES)
        check_choice('REOTRoILoss: prior', prior, ROI_PRIORS)
        check_choice('REOTRoILoss: supervision', supervision, ROI_SUPERVISIONS)
        check_choice('REOTRoILoss: reduction', reduction,
                     ('none', 'mean', 'sum'))
        if not (epsilon > 0 and math.isfinite(epsilon)):
            raise ValueError('REOTRoILoss: epsilon must be a finite number > '
                             f'0, got {epsilon}')
        if focal_gamma < 0:
            raise ValueError(f'REOTRoILoss: focal_gamma must be >= 0, got '
                             f'{focal_gamma}')
        if not 0.0 <= interpolation_gamma <= 1.0:
            raise ValueError('REOTRoILoss: interpolation_gamma must be in '
                             f'[0, 1], got {interpolation_gamma}')
        self.background = background
        self.prior = prior
        self.supervision = supervision
        self.focal_gamma = float(focal_gamma)
        self.epsilon = float(epsilon)
        self.interpolation_gamma = float(interpolation_gamma)
        self.reduction = reduction
        self.loss_weight = float(loss_weight)
        self._loss_name = loss_name
        # num_classes counts the foreground classes, like the counts
        self.init_class_counts(class_counts, num_classes, min_count)
        self.init_prior_schedule(prior_weight, prior_power)

    @property
    def loss_name(self) -> str:
        return self._loss_name

    @property
    def needs_class_counts(self) -> bool:
        return self.prior in ('class_ratio', 'interpolated')

    def log_prior(self, cls_score: torch.Tensor, target: torch.Tensor
                  ) -> Optional[torch.Tensor]:
        """log Q for the RoI batch, (C + 1,) background last; None = uniform."""
        num_fg = cls_score.shape[-1] - 1
        weight, power = self.prior_schedule
        if self.prior == 'uniform' or weight == 0.0:
            return None
        if self.prior in ('class_ratio', 'interpolated'):
            if self.has_class_counts and self.class_counts.numel() != num_fg:
                raise ValueError(
                    f'REOTRoILoss: class_counts has '
                    f'{self.class_counts.numel()} entries but the bbox head '
                    f'scores {num_fg} foreground classes (+ background); the '
                    "counts must match the head's num_classes")
            log_fg = self.log_class_ratio(num_fg).to(cls_score.device)
        if self.prior == 'class_ratio' and self.background == 'foreground_only':
            # depends on counts and λ only: formed once per change
            return self.cached('roi_log_q', lambda: log_detection_prior(
                log_fg, weight, power))
        mass = roi_label_mass(target, num_fg).to(cls_score.device)
        if self.prior in ('batch_ratio', 'interpolated'):
            fg_mass = mass[:num_fg]
            # no foreground RoI in the whole batch: Eq. 36 is undefined
            log_batch = torch.where(
                fg_mass.sum() > 0, priors.log_batch_ratio(fg_mass),
                torch.full_like(fg_mass, -math.log(num_fg)))
            log_fg = log_batch if self.prior == 'batch_ratio' else \
                priors.log_interpolated_ratio(log_fg, log_batch,
                                              self.interpolation_gamma)
        log_bg_fraction = None
        if self.background == 'batch_fraction':
            log_bg_fraction = mass[num_fg].log() - mass.sum().log()
        return log_detection_prior(log_fg, weight, power, self.background,
                                   log_bg_fraction)

    def forward(self,
                cls_score: torch.Tensor,
                target: torch.Tensor,
                weight: Optional[torch.Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None,
                **kwargs) -> torch.Tensor:
        """Compute the loss over the sampled RoIs.

        Args:
            cls_score: (N, C + 1) RoI logits, background last.
            target: (N,) labels in [0, C]; C is background.
            weight: (N,) label weights.
            avg_factor: normaliser of the summed loss (mmdet passes the number
                of RoIs with a positive weight).
            reduction_override: 'none' | 'mean' | 'sum'.

        Returns:
            Scalar loss, or (N,) per-RoI losses for reduction 'none'.
        """
        if cls_score.ndim != 2 or cls_score.shape[-1] < 2:
            raise ValueError('REOTRoILoss: cls_score must be (N, C + 1) with '
                             'the background logit last, got shape '
                             f'{tuple(cls_score.shape)}')
        if self.num_classes is not None and \
                cls_score.shape[-1] != self.num_classes + 1:
            raise ValueError(
                f'REOTRoILoss: cls_score has {cls_score.shape[-1]} columns but '
                f'num_classes={self.num_classes} foreground classes need '
                f'{self.num_classes + 1} (background last)')
        if target.ndim != 1 or target.shape[0] != cls_score.shape[0] \
                or target.dtype.is_floating_point:
            raise ValueError('REOTRoILoss: target must be (N,) integer RoI '
                             f'labels for the {cls_score.shape[0]} RoIs, got '
                             f'shape {tuple(target.shape)}, dtype '
                             f'{target.dtype}')
        target = target.long()
        check_labels(target, cls_score.shape[-1], 'target')
        focal = self.focal_gamma if self.supervision == 'focal' else 0.0
        loss = prior_shifted_cross_entropy(
            at_least_fp32(cls_score), target, self.log_prior(cls_score, target),
            epsilon=self.epsilon, focal_gamma=focal)
        loss = weight_reduce_loss(loss, weight,
                                  reduction_override or self.reduction,
                                  avg_factor)
        if not torch.isfinite(loss if loss.ndim == 0 else loss.sum()):
            raise_if_non_finite(loss, 'REOTRoILoss', 'an empty RoI batch under '
                                "reduction 'mean' without avg_factor; expected "
                                'at least one RoI', cls_score=cls_score,
                                weight=weight)
        return loss if self.loss_weight == 1.0 else self.loss_weight * loss

    def extra_repr(self) -> str:
        return (f'prior={self.prior}, background={self.background}, '
                f'supervision={self.supervision}, epsilon={self.epsilon}')
