"""GML's training objective, the registered module ``GMLLoss``.

Suh and Seo, Long-Tailed Recognition by Mutual Information Maximization
between Latent Features and Ground-Truth Labels, ICML 2023:

* Eq. 7: L_cls = CE(m_x·m_c/τ_s + η_c, y), the cosine classifier with logit
  adjustment (Balanced Softmax with a cosine classifier, Eq. 9);
* L_GML (Eq. 5 / 11) and L_τ (Sec. 3.3), the class-conditional likelihood
  terms over the class-wise queue: :mod:`reot_mm.losses.gml_likelihood`;
* knowledge distillation (used in the CIFAR recipe, Table A.1 "α"):
  L_KD = T²·KL(softmax(t/(τ_s·T)) ‖ softmax(ℓ/(τ_s·T))), T = 4, batch mean,
  with t the teacher's and ℓ the student's cosine scores.

Total (Table A.1): γ·L_cls + β·(L_GML + L_τ) + α_kd·L_KD.
"""
import math
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.registry import MODELS

from reot_mm.losses.class_counts import CountAwareModule
from reot_mm.losses.finite import raise_if_non_finite
from reot_mm.losses.gml_likelihood import (class_log_mean_exp,  # noqa: F401
                                           gml_loss, gml_temperature_loss)
from reot_mm.losses.prior_cross_entropy import prior_shifted_cross_entropy
from reot_mm.losses.utils import (at_least_fp32, check_labels,
                                  without_autocast)

__all__ = ['class_log_mean_exp', 'gml_loss', 'gml_temperature_loss',
           'cosine_classifier_loss', 'distillation_loss', 'GMLLoss']


def cosine_classifier_loss(cosine: torch.Tensor, target: torch.Tensor,
                           tau_s: float,
                           log_prior: Optional[torch.Tensor] = None
                           ) -> torch.Tensor:
    """Per-sample L_cls = CE(cos/τ_s + η, y) (GML Eq. 7).

    Args:
        cosine: (B, C) cosines m_x·m_c in [-1, 1].
        target: (B,) int64 labels.
        tau_s: τ_s > 0 (1/30 in every GML experiment).
        log_prior: (C,) η_c = log p(c); None gives plain cosine softmax.
    """
    return prior_shifted_cross_entropy(cosine, target, log_prior,
                                       epsilon=tau_s)


def distillation_loss(student_scores: torch.Tensor,
                      teacher_scores: torch.Tensor, tau_s: float,
                      temperature: float = 4.0) -> torch.Tensor:
    """L_KD = T²·KL(softmax(t/(τ_s·T)) ‖ softmax(ℓ/(τ_s·T))), batch mean.

    Args:
        student_scores: (B, C) student cosines ℓ.
        teacher_scores: (B, C) teacher cosines t (no gradient).
        tau_s: τ_s of Eq. 7.
        temperature: T (4 in the CIFAR recipe).

    Returns:
        Scalar loss.
    """
    if student_scores.shape != teacher_scores.shape:
        raise ValueError('teacher_scores must have the shape of the student '
                         f'scores {tuple(student_scores.shape)}, got '
                         f'{tuple(teacher_scores.shape)}')
    scale = 1.0 / (tau_s * temperature)
    log_student = torch.log_softmax(at_least_fp32(student_scores) * scale, dim=-1)
    log_teacher = torch.log_softmax(
        at_least_fp32(teacher_scores).detach() * scale, dim=-1)
    return F.kl_div(log_student, log_teacher, reduction='batchmean',
                    log_target=True) * temperature ** 2


@MODELS.register_module()
class GMLLoss(CountAwareModule):
    """GML training objective, registered as ``GMLLoss`` (GML, ICML 2023).

    ``γ·L_cls + β·(L_GML + L_τ) + α_kd·L_KD``, returned as a dict of weighted
    terms (``loss_cls``, ``loss_gml``, ``loss_tau``, ``loss_kd``) plus
    ``tau_g`` for logging (no "loss" in its name, so it is not summed).

    The trainable temperature is ``τ_g = exp(log_tau_g)``; ``log_tau_g`` is a
    parameter that only L_τ trains. Exclude it from weight decay with
    ``optim_wrapper.paramwise_cfg.custom_keys = {'log_tau_g':
    dict(decay_mult=0.0)}`` (the shipped GML configs do).

    Args:
        num_classes: C (validates the counts).
        tau_s: τ_s of Eq. 7 (1/30 in every GML experiment).
        tau_g: initial τ_g (0.1 CIFAR/iNat, 0.07 ImageNet-LT).
        trainable_tau: train τ_g with L_τ (the authors' code and Sec. 4.9,
            default) or keep it fixed (a buffer; "most experiments" of the
            paper); L_τ is then not computed.
        alpha: α of Eq. 11, the weight of log p(c) in L_GML (1 = Eq. 5).
        cls_weight: γ. gml_weight: β (applies to L_GML and L_τ).
        kd_weight: α_kd, weight of L_KD (1 in the CIFAR recipe, else 0).
        kd_temperature: T of L_KD.
        class_counts: raw per-class training counts; usually set before
            training by ``ClassStatisticsHook`` through
            :meth:`set_class_counts`. A buffer, so it is in the checkpoint;
            zeros are smoothed to ``min_count`` where log p(c) is formed.
        min_count: pseudo-count for classes with no training sample (warned).
    """

    def __init__(self,
                 num_classes: Optional[int] = None,
                 tau_s: float = 1.0 / 30,
                 tau_g: float = 0.1,
                 trainable_tau: bool = True,
                 alpha: float = 1.0,
                 cls_weight: float = 1.0,
                 gml_weight: float = 1.0,
                 kd_weight: float = 0.0,
                 kd_temperature: float = 4.0,
                 class_counts: Optional[Sequence[float]] = None,
                 min_count: float = 1.0):
        super().__init__()
        for name, value in (('tau_s', tau_s), ('tau_g', tau_g),
                            ('kd_temperature', kd_temperature)):
            if not (isinstance(value, (int, float)) and value > 0
                    and math.isfinite(value)):
                raise ValueError(f'GMLLoss: {name} must be a finite number > 0, '
                                 f'got {value!r}')
        for name, value in (('alpha', alpha), ('cls_weight', cls_weight),
                            ('gml_weight', gml_weight),
                            ('kd_weight', kd_weight)):
            if not (isinstance(value, (int, float)) and value >= 0):
                raise ValueError(f'GMLLoss: {name} must be a number >= 0, got '
                                 f'{value!r}')
        self.tau_s = float(tau_s)
        self.trainable_tau = bool(trainable_tau)
        self.alpha = float(alpha)
        self.cls_weight = float(cls_weight)
        self.gml_weight = float(gml_weight)
        self.kd_weight = float(kd_weight)
        self.kd_temperature = float(kd_temperature)
        log_tau = torch.tensor(math.log(tau_g), dtype=torch.float32)
        if self.trainable_tau:
            # θ of τ_g = exp(θ): the name is what paramwise_cfg matches
            self.log_tau_g = nn.Parameter(log_tau)
        else:
            self.register_buffer('log_tau_g', log_tau)
        self.init_class_counts(class_counts, num_classes, min_count)

    @property
    def tau_g(self) -> torch.Tensor:
        """τ_g = exp(θ), a scalar tensor (with gradient if trainable)."""
        return self.log_tau_g.exp()

    def log_prior(self, num_classes: int, device) -> torch.Tensor:
        """η = log p(c) (C,) float32 from the (smoothed) class counts."""
        return self.log_class_ratio(num_classes).to(device)

    @without_autocast
    def forward(self,
                cls_score: torch.Tensor,
                target: torch.Tensor,
                query: torch.Tensor,
                keys: torch.Tensor,
                key_labels: torch.Tensor,
                key_indices: Optional[torch.Tensor] = None,
                sample_indices: Optional[torch.Tensor] = None,
                teacher_scores: Optional[torch.Tensor] = None
                ) -> Dict[str, torch.Tensor]:
        """Compute the weighted GML terms.

        Args:
            cls_score: (B, C) student cosines m_x·m_c (Eq. 7).
            target: (B,) int64 labels.
            query: (B, D) L2-normalised queries.
            keys: (K, D) L2-normalised embedded queue.
            key_labels: (K,) int64 labels of the queue entries.
            key_indices: (K,) int64 dataset indices of the queue entries.
            sample_indices: (B,) int64 dataset indices of the queries (for the
                same-sample exclusion of L_τ).
            teacher_scores: (B, C) teacher cosines for L_KD (needed when
                ``kd_weight > 0``).

        Returns:
            dict with ``loss_cls``, ``loss_gml``, ``loss_tau`` (if trainable),
            ``loss_kd`` (if ``kd_weight > 0``) and ``tau_g``.

        Raises:
            ValueError: malformed or empty inputs, an empty queue, or an input
                with NaN / inf values (named).
        """
        if cls_score.ndim != 2:
            raise ValueError(f'cls_score must be (B, C), got {tuple(cls_score.shape)}')
        if target.ndim != 1 or target.dtype.is_floating_point:
            raise ValueError('GMLLoss needs (B,) integer labels, got '
                             f'{tuple(target.shape)} {target.dtype}')
        if query.shape[0] != target.shape[0] or cls_score.shape[0] != target.shape[0]:
            raise ValueError(
                f'cls_score ({cls_score.shape[0]}), query ({query.shape[0]}) and '
                f'target ({target.shape[0]}) must have the same batch size')
        if target.shape[0] == 0:
            raise ValueError('target has no samples (an empty batch); expected '
                             'B >= 1 samples')
        num_classes = cls_score.shape[1]
        log_prior = self.log_prior(num_classes, cls_score.device)
        check_labels(target, num_classes, 'target')
        loss_cls = cosine_classifier_loss(cls_score, target, self.tau_s,
                                          log_prior).mean()
        raise_if_non_finite(loss_cls, 'L_cls (GML Eq. 7)',
                            'expected cosines in [-1, 1]', cls_score=cls_score)
        losses = dict(loss_cls=self.cls_weight * loss_cls)
        losses.update(self.likelihood_terms(query, keys, key_labels, target,
                                            log_prior, key_indices,
                                            sample_indices))
        if self.kd_weight > 0:
            if teacher_scores is None:
                raise ValueError('GMLLoss(kd_weight > 0) needs teacher_scores '
                                 '(B, C): train it inside TeacherStudent')
            loss_kd = distillation_loss(cls_score, teacher_scores, self.tau_s,
                                        self.kd_temperature)
            raise_if_non_finite(loss_kd, 'L_KD', 'expected cosines in [-1, 1]',
                                cls_score=cls_score,
                                teacher_scores=teacher_scores)
            losses['loss_kd'] = self.kd_weight * loss_kd
        losses['tau_g'] = losses.pop('tau_g')  # logged last
        return losses

    @without_autocast  # q·zᵀ in fp32 also when called by a head under --amp
    def likelihood_terms(self, query: torch.Tensor, keys: torch.Tensor,
                         key_labels: torch.Tensor, target: torch.Tensor,
                         log_prior: torch.Tensor,
                         key_indices: Optional[torch.Tensor] = None,
                         sample_indices: Optional[torch.Tensor] = None
                         ) -> Dict[str, torch.Tensor]:
        """β·L_GML (Eq. 5 / 11), β·L_τ (if τ_g is trainable) and ``tau_g``.

        The classification and segmentation GML models both call this (the
        segmentation head has its own L_cls).

        Args:
            query: (B, D), keys: (K, D), key_labels: (K,), target: (B,),
                key_indices: (K,), sample_indices: (B,): as in :meth:`forward`.
            log_prior: (C,) η = log p(c) (:meth:`log_prior`).
        """
        tau = self.tau_g
        similarity = at_least_fp32(query) @ at_least_fp32(keys).t()  # shared by both terms
        losses = dict(loss_gml=self.gml_weight * gml_loss(
            query, keys, key_labels, target, tau, log_prior, self.alpha,
            similarity=similarity).mean())
        if self.trainable_tau:
            per_sample, valid = gml_temperature_loss(
                query, keys, key_labels, target, tau, sample_indices,
                key_indices, log_prior, self.alpha, similarity=similarity)
            # mean over the samples with a defined L_τ; 0 (with a graph to θ)
            # when there is none
            losses['loss_tau'] = self.gml_weight * per_sample.sum() / \
                valid.sum().clamp_min(1)
        losses['tau_g'] = tau.detach()
        return losses

    def extra_repr(self) -> str:
        return (f'tau_s={self.tau_s:.4g}, tau_g={float(self.tau_g):.4g}, '
                f'trainable_tau={self.trainable_tau}, alpha={self.alpha}, '
                f'weights(cls, gml, kd)=({self.cls_weight}, {self.gml_weight}, '
                f'{self.kd_weight})')
