"""Inverse RE-OT contrastive loss, the registered module ``REOTContrastiveLoss``.

Shi et al., Relative Entropic Optimal Transport: a (Prior-aware) Matching
Perspective to (Unbalanced) Classification, NeurIPS 2023, §4.1, Eq. 14-16:
the rows and columns of the coupling are the V·B embeddings of a batch, the
prior Q is over pairs of samples. The maths (supervision, pair priors, the
U(a) / U(a, b) plan) is in :mod:`reot_mm.losses.reot_contrastive`.
"""
import math
from typing import Optional, Sequence

import torch
from mmengine.registry import MODELS

from reot_mm import dist
from reot_mm.losses.class_counts import ScheduledPriorModule
from reot_mm.losses.finite import raise_if_non_finite
from reot_mm.losses.reot_contrastive import (  # noqa: F401
    CONSTRAINTS, GRADS, PAIR_PRIORS, SUPERVISIONS, contrastive_log_plan,
    contrastive_targets, pair_log_prior, reot_contrastive_loss)
from reot_mm.losses.utils import check_choice, check_positive

__all__ = [
    'REOTContrastiveLoss', 'contrastive_log_plan', 'contrastive_targets',
    'pair_log_prior', 'reot_contrastive_loss'
]


@MODELS.register_module()
class REOTContrastiveLoss(ScheduledPriorModule):
    """Inverse RE-OT contrastive loss (RE-OT §4.1, Eq. 14/16), ``REOTContrastiveLoss``.

    Called as ``loss(features, labels)`` with ``features`` of shape (B, V, D)
    (V >= 2 views of each of B images, e.g. projector outputs; normalised
    here) and ``labels`` (B,). Under DDP (``gather=True``) the embeddings and
    labels of all ranks are gathered (with gradient), so the negatives are the
    global batch; each rank's loss is the mean over its own anchors, and the
    DDP average of the ranks' gradients is the gradient of the loss of the
    concatenated batch.

    Special cases: ``prior='uniform'`` + ``supervision='self'`` = SimCLR
    (NT-Xent); ``prior='uniform'`` + ``'supervised'`` = SupCon (L_out);
    see :mod:`reot_mm.losses.reot_contrastive` for the same-class and ratio
    priors.

    Args:
        temperature: τ = ε, > 0. Defaults to 0.1.
        supervision: ``'self'`` or ``'supervised'``. Defaults to ``'self'``.
        prior: ``'uniform'`` | ``'same_class'`` | ``'class_ratio'`` |
            ``'batch_ratio'``. Defaults to ``'uniform'``.
        same_weight: w_s (Fig. 1: 0.7), > 0.
        other_weight: w_o (Fig. 1: 0.3), > 0.
        ratio_power: κ of the ratio priors, Q_ij = r_{y_j}^κ. Defaults to 1.
        prior_weight: λ of Eq. 15 (a buffer, set by ``REOTPriorHook``).
            Defaults to 1 (the prior r as given).
        prior_power: exponent of Q (a buffer, set by the hook). Defaults to 1.
        constraints: ``'a'`` (U(a), default) or ``'ab'`` (U(a, b)).
        grad: U(a, b) gradient, ``'implicit'`` (default) or ``'unrolled'``.
        sinkhorn_max_iter: U(a, b) iterations cap. Defaults to 100.
        sinkhorn_tol: U(a, b) L1 marginal tolerance. Defaults to 1e-5.
        gather: all-gather across ranks under DDP. Defaults to True.
        class_counts: raw per-class training counts for ``'class_ratio'``
            (or filled by ``ClassStatisticsHook``); a buffer, zeros smoothed
            to ``min_count`` where the prior is formed.
        num_classes: expected number of classes (validates the counts).
        min_count: pseudo-count for classes with no training sample.
        loss_weight: multiplier. Defaults to 1.
        loss_name: key of the loss in the model's loss dict.
    """

    def __init__(self,
                 temperature: float = 0.1,
                 supervision: str = 'self',
                 prior: str = 'uniform',
                 same_weight: float = 0.7,
                 other_weight: float = 0.3,
                 ratio_power: float = 1.0,
                 prior_weight: float = 1.0,
                 prior_power: float = 1.0,
                 constraints: str = 'a',
                 grad: str = 'implicit',
                 sinkhorn_max_iter: int = 100,
                 sinkhorn_tol: float = 1e-5,
                 gather: bool = True,
                 class_counts: Optional[Sequence[float]] = None,
                 num_classes: Optional[int] = None,
                 min_count: float = 1.0,
                 loss_weight: float = 1.0,
                 loss_name: str = 'loss_reot_contrastive'):
        super().__init__()
        check_choice('supervision', supervision, SUPERVISIONS)
        check_choice('prior', prior, PAIR_PRIORS)
        check_choice('constraints', constraints, CONSTRAINTS)
        check_choice('grad', grad, GRADS)
        self.temperature = check_positive(temperature, 'temperature')
        self.same_weight = check_positive(same_weight, 'same_weight')
        self.other_weight = check_positive(other_weight, 'other_weight')
        if not math.isfinite(float(ratio_power)):
            raise ValueError(f'ratio_power must be finite, got {ratio_power!r}')
        if int(sinkhorn_max_iter) < 1:
            raise ValueError('sinkhorn_max_iter must be >= 1, got '
                             f'{sinkhorn_max_iter}')
        self.sinkhorn_tol = check_positive(sinkhorn_tol, 'sinkhorn_tol')
        check_positive(min_count, 'min_count')
        self.supervision = supervision
        self.prior = prior
        self.ratio_power = float(ratio_power)
        self.constraints = constraints
        self.grad = grad
        self.sinkhorn_max_iter = int(sinkhorn_max_iter)
        self.gather = bool(gather)
        self.loss_weight = float(loss_weight)
        self._loss_name = loss_name
        self.init_class_counts(class_counts, num_classes, min_count)
        self.init_prior_schedule(prior_weight, prior_power)

    @property
    def loss_name(self) -> str:
        return self._loss_name

    @property
    def needs_labels(self) -> bool:
        return self.supervision == 'supervised' or self.prior != 'uniform'

    @property
    def needs_class_counts(self) -> bool:
        return self.prior == 'class_ratio'

    def log_prior(self, labels: Optional[torch.Tensor],
                  num: int) -> Optional[torch.Tensor]:
        """(N, N) log Q of this (global) batch, or None for uniform."""
        weight, power = self.prior_schedule
        log_ratio = None
        if self.prior == 'class_ratio' and weight > 0:
            if not self.has_class_counts:
                raise RuntimeError(
                    "REOTContrastiveLoss(prior='class_ratio') needs "
                    'class_counts: give them in the config or add '
                    'ClassStatisticsHook to custom_hooks')
            log_ratio = self.log_class_ratio()
        return pair_log_prior(
            labels, self.prior, same_weight=self.same_weight,
            other_weight=self.other_weight, log_class_ratio=log_ratio,
            ratio_power=self.ratio_power, prior_weight=weight,
            prior_power=power, num=num)

    def forward(self, features: torch.Tensor,
                labels: Optional[torch.Tensor] = None,
                **kwargs) -> torch.Tensor:
        """Mean per-anchor loss over this rank's B·V embeddings.

        Args:
            features: (B, V, D) embeddings, V >= 2 views per image.
            labels: (B,) integer labels (needed for ``'supervised'`` or a
                label-based prior).

        Returns:
            Scalar loss (times ``loss_weight``).
        """
        if not isinstance(features, torch.Tensor) or features.ndim != 3:
            shape = tuple(features.shape) if isinstance(
                features, torch.Tensor) else type(features).__name__
            raise ValueError('features must have shape (B, V, D) with V >= 2 '
                             f'views per image, got {shape}')
        batch, views, _ = features.shape
        if batch == 0:
            raise ValueError('features has no rows (an empty batch); expected '
                             '(B, V, D) with B >= 1 images')
        if views < 2:
            raise ValueError(
                f'REOTContrastiveLoss needs at least 2 views per image '
                f'(features of shape (B, V>=2, D)), got V={views}: use a '
                'MultiView pipeline with 2 views')
        if labels is not None:
            labels = torch.as_tensor(labels, device=features.device)
            if labels.shape != (batch, ) or labels.dtype.is_floating_point:
                raise ValueError(f'labels must be ({batch},) integers, got '
                                 f'{tuple(labels.shape)} {labels.dtype}')
            if batch and int(labels.min()) < 0:
                raise ValueError('labels must be >= 0')
        elif self.needs_labels:
            raise ValueError(
                f'REOTContrastiveLoss(supervision={self.supervision!r}, '
                f'prior={self.prior!r}) needs labels (B,)')

        local_ids = torch.arange(batch, device=features.device)
        offset = 0
        if self.gather and dist.is_distributed():
            # negatives are the global batch; gradients flow back to each rank
            features, offset = dist.gather_rows(features, with_grad=True)
            if labels is not None:
                labels = dist.gather_rows(labels)[0]
        total = features.shape[0]
        # view-major flattening: embedding v·B_total + b is view v of image b
        embeddings = features.transpose(0, 1).reshape(total * views, -1)
        sample_ids = torch.arange(total, device=features.device).repeat(views)
        flat_labels = None if labels is None else labels.repeat(views)
        rows = (local_ids + offset)[None, :] + \
            total * torch.arange(views, device=features.device)[:, None]
        rows = rows.reshape(-1)
        log_q = self.log_prior(flat_labels, total * views)
        loss = reot_contrastive_loss(
            embeddings, sample_ids, flat_labels, temperature=self.temperature,
            supervision=self.supervision, log_prior=log_q,
            constraints=self.constraints,
            rows=None if total == batch else rows, grad=self.grad,
            max_iter=self.sinkhorn_max_iter, tol=self.sinkhorn_tol)
        loss = loss.mean()
        raise_if_non_finite(
            loss, 'REOTContrastiveLoss (RE-OT Eq. 14 / 16)',
            'the plan underflows on a positive pair; expected a temperature '
            'that is not tiny (e.g. >= 0.01)',
            features=features)
        return loss if self.loss_weight == 1.0 else self.loss_weight * loss

    def extra_repr(self) -> str:
        return (f'temperature={self.temperature}, supervision='
                f'{self.supervision}, prior={self.prior}, constraints='
                f'{self.constraints}')
