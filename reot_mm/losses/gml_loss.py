"""Gaussian-mixture-likelihood (GML) loss of Suh & Seo, ICML 2023 (seed 003).

Notation (seed 003): q = z_x is the L2-normalised query of a sample, Z_c the
L2-normalised contrast features (queue entries) of class c, τ_g the GML
temperature, η_c = log p(c) the log class prior and α its weight.

* Eq. 3: s(x|c) = (1/|Z_c|)·Σ_{z∈Z_c} exp(q·z/τ_g), a Gaussian mixture with one
  component per contrast feature (Eq. 4: the dot product equals minus half the
  squared distance up to a constant that cancels).
* Eq. 5 / 11: L_GML = -log softmax_c[log s(x|c) + α·η_c]_y, i.e. cross-entropy
  over classes of the per-class log-MEAN-exp plus the scaled log prior
  (α = 1 is Eq. 5).
* Eq. 10: with a balanced dataset (equal |Z_c| and η_c) the loss is
  -log(Σ_{Z_y} e / Σ_Z e), which bounds the supervised-contrastive loss.
* Eq. 7: L_cls = CE(m_x·m_c/τ_s + η_c, y), the cosine classifier with logit
  adjustment (Balanced Softmax with a cosine classifier, Eq. 9).
* Sec. 3.3 "Trainable temperature": τ_g = exp(θ) is trained by a separate
  term L_τ, the same loss with the similarities detached and with the queue
  entries of the query's own sample excluded (otherwise the optimal τ_g is
  too small and the mixture spiky). In L_GML τ_g is detached, so θ gets its
  gradient from L_τ only.
* Knowledge distillation (used in the CIFAR recipe, Table A.1 "α"):
  L_KD = T²·KL(softmax(t/(τ_s·T)) ‖ softmax(ℓ/(τ_s·T))), T = 4, batch mean,
  with t the teacher's and ℓ the student's cosine scores.

Total (Table A.1): γ·L_cls + β·(L_GML + L_τ) + α_kd·L_KD.

Per-class reductions over the queue are segment reductions on the entries'
labels (``index_add`` for the sums), O(B·K) time and memory, no loop over
classes or samples. Rows are shifted by their maximum; a row in which some
class underflows (its best score ~87 below the row's maximum in float32, i.e.
only when 2/τ_g > 87) is recomputed with one shift per class
(``scatter_reduce``), so the log-mean-exp stays finite for any τ_g > 0.
Classes without entries get a likelihood of -inf (they drop out of the
softmax); a sample whose own class has no entry has an undefined L_GML (an
error) and is left out of L_τ.
"""
import math
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.registry import MODELS

from reot_mm.losses import priors
from reot_mm.losses.utils import (check_labels, take_checkpoint_shape,
                                  without_autocast)

__all__ = ['class_log_mean_exp', 'gml_loss', 'gml_temperature_loss',
           'cosine_classifier_loss', 'distillation_loss', 'GMLLoss']


def _check_queue_inputs(query: torch.Tensor, keys: torch.Tensor,
                        key_labels: torch.Tensor, num_classes: int) -> None:
    if query.ndim != 2 or keys.ndim != 2 or query.shape[1] != keys.shape[1]:
        raise ValueError(
            'query must be (B, D) and keys (K, D) with the same D, got '
            f'query {tuple(query.shape)} and keys {tuple(keys.shape)}')
    if key_labels.shape != (keys.shape[0], ):
        raise ValueError(f'key_labels must have shape ({keys.shape[0]},) '
                         f'(one label per key), got {tuple(key_labels.shape)}')
    check_labels(key_labels, num_classes, 'key_labels')


def class_log_mean_exp(scores: torch.Tensor, key_labels: torch.Tensor,
                       num_classes: int,
                       exclude: Optional[torch.Tensor] = None
                       ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-class log-mean-exp of scores over each class's entries (GML Eq. 3).

    out_bc = log((1/|Z_c^b|)·Σ_{k: label_k = c, not excluded_bk} exp(scores_bk))

    Args:
        scores: (B, K) scores q·z_k/τ_g (any float dtype; reduced in >= fp32).
        key_labels: (K,) int64 class of every entry, in [0, num_classes).
        num_classes: C.
        exclude: optional (B, K) bool, True where entry k must not count for
            row b (GML's same-sample exclusion for L_τ).

    Returns:
        (log_mean, counts): (B, C) log-mean-exp, -inf where a class has no
        (non-excluded) entry, and the (B, C) float numbers of entries |Z_c^b|.
    """
    if scores.dtype in (torch.float16, torch.bfloat16):
        scores = scores.float()
    batch = scores.shape[0]
    if exclude is not None:
        scores = scores.masked_fill(exclude, -math.inf)
    counts = torch.bincount(key_labels, minlength=num_classes).to(scores.dtype)
    counts = counts.expand(batch, -1)
    if exclude is not None:
        counts = counts - scores.new_zeros(batch, num_classes).index_add(
            1, key_labels, exclude.to(scores.dtype))
    present = counts > 0
    # Fast path: shift every row by its maximum (no gradient needed: the
    # shift cancels analytically).
    shift = scores.detach().amax(1, keepdim=True)
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    sums = scores.new_zeros(batch, num_classes).index_add(
        1, key_labels, (scores - shift).exp())
    shift = shift.expand(batch, num_classes)
    # A class whose best score lies ~87 (float32) below its row's maximum
    # underflows; those rows are redone with one shift per class.
    dtype = torch.finfo(scores.dtype)
    low = present & (sums < dtype.tiny / dtype.eps)
    if bool(low.any()):
        rows = torch.nonzero(low.any(1)).flatten()
        sub = scores.index_select(0, rows)
        index = key_labels.view(1, -1).expand(rows.numel(), -1)
        class_max = torch.full((rows.numel(), num_classes), -math.inf,
                               dtype=scores.dtype, device=scores.device)
        class_max = class_max.scatter_reduce(1, index, sub.detach(), 'amax')
        class_max = torch.where(torch.isfinite(class_max), class_max,
                                torch.zeros_like(class_max))
        sub_sums = sub.new_zeros(rows.numel(), num_classes).index_add(
            1, key_labels, (sub - class_max.gather(1, index)).exp())
        sums = sums.index_copy(0, rows, sub_sums)
        shift = shift.index_copy(0, rows, class_max)
    # where() on the inputs too, so empty classes give no NaN gradient
    safe_sums = torch.where(present, sums, torch.ones_like(sums))
    safe_counts = torch.where(present, counts, torch.ones_like(counts))
    log_mean = safe_sums.log() + shift - safe_counts.log()
    log_mean = torch.where(present, log_mean,
                           torch.full_like(log_mean, -math.inf))
    return log_mean, counts


def _similarity(query, keys, similarity):
    """q·z for every query and key, (B, K), or the given precomputed one."""
    if similarity is None:
        return _fp32(query) @ _fp32(keys).t()
    if similarity.shape != (query.shape[0], keys.shape[0]):
        raise ValueError(f'similarity must have shape ({query.shape[0]}, '
                         f'{keys.shape[0]}), got {tuple(similarity.shape)}')
    return _fp32(similarity)


def _class_scores(similarity, key_labels, num_classes, log_prior, alpha,
                  scale, exclude=None):
    """(B, C) [log s(x|c) + α·η_c] and the per-class entry counts."""
    log_like, counts = class_log_mean_exp(similarity * scale, key_labels,
                                          num_classes, exclude)
    if log_prior is not None and alpha != 0:
        log_like = log_like + alpha * log_prior.to(log_like)
    return log_like, counts


@without_autocast
def gml_loss(query: torch.Tensor, keys: torch.Tensor, key_labels: torch.Tensor,
             target: torch.Tensor, tau: torch.Tensor,
             log_prior: Optional[torch.Tensor] = None,
             alpha: float = 1.0,
             num_classes: Optional[int] = None,
             similarity: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-sample GML loss (GML Eq. 5; Eq. 11 with α), τ_g detached.

    Args:
        query: (B, D) L2-normalised queries z_x.
        keys: (K, D) L2-normalised contrast features (the embedded queue).
        key_labels: (K,) int64 class of each key.
        target: (B,) int64 labels y.
        tau: τ_g, a positive scalar tensor or float; detached here.
        log_prior: (C,) η_c = log p(c); None means a uniform prior.
        alpha: α of Eq. 11 (1 gives Eq. 5, 0 no logit adjustment).
        num_classes: C; defaults to the length of ``log_prior``.
        similarity: optional precomputed (B, K) ``query @ keys.T`` (with its
            graph), so that L_GML and L_τ share one matrix product.

    Returns:
        (B,) float32 (or float64) losses.

    Raises:
        ValueError: a sample's own class has no key (only possible with
            k_m = 0 or an unbuilt queue), or malformed inputs.
    """
    num_classes = _num_classes(log_prior, num_classes)
    _check_queue_inputs(query, keys, key_labels, num_classes)
    check_labels(target, num_classes, 'target')
    similarity = _similarity(query, keys, similarity)
    inv_tau = 1.0 / torch.as_tensor(tau).detach().to(similarity.device)
    logits, counts = _class_scores(similarity, key_labels, num_classes,
                                   log_prior, alpha, inv_tau.to(similarity.dtype))
    empty = counts[0].gather(0, target) <= 0
    if empty.any():
        classes = sorted(set(target[empty].tolist()))
        raise ValueError(
            f'GML loss: classes {classes[:20]} of the batch have no queue '
            'entries, so their likelihood (Eq. 3) is undefined; use a queue '
            'with min_per_class (k_m) >= 1 whose segments are built')
    return F.cross_entropy(logits, target, reduction='none')


@without_autocast
def gml_temperature_loss(query: torch.Tensor, keys: torch.Tensor,
                         key_labels: torch.Tensor, target: torch.Tensor,
                         tau: torch.Tensor,
                         sample_indices: Optional[torch.Tensor] = None,
                         key_indices: Optional[torch.Tensor] = None,
                         log_prior: Optional[torch.Tensor] = None,
                         alpha: float = 1.0,
                         num_classes: Optional[int] = None,
                         similarity: Optional[torch.Tensor] = None
                         ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-sample L_τ: trains only τ_g (GML Sec. 3.3, "Trainable Temperature").

    The GML loss of Eq. 11 with the similarities q·z detached (so only τ_g
    receives a gradient) and with every key whose dataset index equals the
    query's excluded (entries of the same image, from this or earlier
    augmentations). A sample whose class has no other entry left has no
    defined loss and is marked invalid instead of producing inf/NaN.

    Args:
        query, keys, key_labels, target, log_prior, alpha, num_classes,
            similarity: as in :func:`gml_loss` (the similarity is detached
            here).
        tau: τ_g = exp(θ), a scalar tensor that requires grad.
        sample_indices: (B,) int64 dataset index of each query; None disables
            the exclusion.
        key_indices: (K,) int64 dataset index of each key (negative for the
            queue's initial random entries, which never match).

    Returns:
        (losses, valid): (B,) losses (0 where invalid) and (B,) bool mask.
    """
    num_classes = _num_classes(log_prior, num_classes)
    _check_queue_inputs(query, keys, key_labels, num_classes)
    check_labels(target, num_classes, 'target')
    exclude = None
    if sample_indices is not None:
        if key_indices is None or key_indices.shape != key_labels.shape:
            raise ValueError('key_indices must be given with shape '
                             f'{tuple(key_labels.shape)} to exclude same-sample '
                             'keys')
        if sample_indices.shape != target.shape:
            raise ValueError(f'sample_indices must have shape {tuple(target.shape)}'
                             f', got {tuple(sample_indices.shape)}')
        exclude = sample_indices.view(-1, 1) == key_indices.view(1, -1)
    with torch.no_grad():
        similarity = _similarity(query, keys, similarity).detach()
    tau = torch.as_tensor(tau, device=query.device).to(similarity.dtype)
    log_like, counts = class_log_mean_exp(similarity / tau, key_labels,
                                          num_classes, exclude)
    if log_prior is not None and alpha != 0:
        log_like = log_like + alpha * log_prior.to(log_like)
    valid = counts.gather(1, target.view(-1, 1)).squeeze(1) > 0
    # invalid rows: a finite dummy target keeps the CE (and its gradient) finite
    safe_logits = torch.where(valid.view(-1, 1), log_like,
                              torch.zeros_like(log_like))
    losses = F.cross_entropy(safe_logits, target, reduction='none')
    return losses * valid, valid


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
    scores = _fp32(cosine) / tau_s
    if log_prior is not None:
        scores = scores + log_prior.to(scores)
    return F.cross_entropy(scores, target, reduction='none')


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
    log_student = torch.log_softmax(_fp32(student_scores) * scale, dim=-1)
    log_teacher = torch.log_softmax(
        _fp32(teacher_scores).detach() * scale, dim=-1)
    return F.kl_div(log_student, log_teacher, reduction='batchmean',
                    log_target=True) * temperature ** 2


def _fp32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.float() if tensor.dtype in (torch.float16,
                                              torch.bfloat16) else tensor


def _num_classes(log_prior, num_classes) -> int:
    if log_prior is not None:
        if num_classes is not None and log_prior.shape[-1] != num_classes:
            raise ValueError(f'log_prior has {log_prior.shape[-1]} classes but '
                             f'num_classes is {num_classes}')
        return int(log_prior.shape[-1])
    if num_classes is None:
        raise ValueError('give num_classes or log_prior (C,) to the GML loss')
    return int(num_classes)


@MODELS.register_module()
class GMLLoss(nn.Module):
    """GML training objective, registered as ``GMLLoss`` (seed 003).

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
        class_counts: per-class training counts; usually set before training
            by ``ClassStatisticsHook`` through :meth:`set_class_counts`. A
            buffer, so it is in the checkpoint.
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
                            ('kd_temperature', kd_temperature),
                            ('min_count', min_count)):
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
        if num_classes is not None and num_classes < 1:
            raise ValueError(f'GMLLoss: num_classes must be >= 1, got {num_classes}')
        self.num_classes = num_classes
        self.tau_s = float(tau_s)
        self.trainable_tau = bool(trainable_tau)
        self.alpha = float(alpha)
        self.cls_weight = float(cls_weight)
        self.gml_weight = float(gml_weight)
        self.kd_weight = float(kd_weight)
        self.kd_temperature = float(kd_temperature)
        self.min_count = float(min_count)
        log_tau = torch.tensor(math.log(tau_g), dtype=torch.float32)
        if self.trainable_tau:
            # θ of τ_g = exp(θ): the name is what paramwise_cfg matches
            self.log_tau_g = nn.Parameter(log_tau)
        else:
            self.register_buffer('log_tau_g', log_tau)
        self.register_buffer('class_counts', torch.zeros(0, dtype=torch.float64))
        self.register_buffer('_log_prior', torch.zeros(0), persistent=False)
        if class_counts is not None:
            self.set_class_counts(class_counts)

    @property
    def tau_g(self) -> torch.Tensor:
        """τ_g = exp(θ), a scalar tensor (with gradient if trainable)."""
        return self.log_tau_g.exp()

    def set_class_counts(self, class_counts) -> None:
        """Set the per-class training counts (validated, zeros smoothed)."""
        counts = priors.validate_class_counts(class_counts, self.num_classes)
        counts = priors.smooth_zero_counts(counts, self.min_count)
        self.class_counts = counts.to(self.class_counts.device)
        self._log_prior = priors.log_class_ratio(self.class_counts).to(
            self.class_counts.device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        take_checkpoint_shape(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.class_counts.numel():
            self._log_prior = priors.log_class_ratio(self.class_counts).to(
                self.class_counts.device)

    def log_prior(self, num_classes: int, device) -> torch.Tensor:
        """η = log p(c), shape (C,)."""
        if self.class_counts.numel() == 0:
            raise RuntimeError(
                'GMLLoss needs class_counts for log p(c): give them in the '
                'config or add ClassStatisticsHook to custom_hooks')
        if self.class_counts.numel() != num_classes:
            raise ValueError(f'class_counts has {self.class_counts.numel()} '
                             f'entries but the scores have {num_classes} classes')
        return self._log_prior.to(device)

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
        num_classes = cls_score.shape[1]
        log_prior = self.log_prior(num_classes, cls_score.device)
        check_labels(target, num_classes, 'target')
        losses = dict(
            loss_cls=self.cls_weight * cosine_classifier_loss(
                cls_score, target, self.tau_s, log_prior).mean())
        tau = self.tau_g
        similarity = _fp32(query) @ _fp32(keys).t()  # shared by both terms
        losses['loss_gml'] = self.gml_weight * gml_loss(
            query, keys, key_labels, target, tau, log_prior, self.alpha,
            similarity=similarity).mean()
        if self.trainable_tau:
            per_sample, valid = gml_temperature_loss(
                query, keys, key_labels, target, tau, sample_indices,
                key_indices, log_prior, self.alpha, similarity=similarity)
            # mean over the samples with a defined L_τ; 0 (with a graph to θ)
            # when there is none
            losses['loss_tau'] = self.gml_weight * per_sample.sum() / \
                valid.sum().clamp_min(1)
        if self.kd_weight > 0:
            if teacher_scores is None:
                raise ValueError('GMLLoss(kd_weight > 0) needs teacher_scores '
                                 '(B, C): train it inside TeacherStudent')
            losses['loss_kd'] = self.kd_weight * distillation_loss(
                cls_score, teacher_scores, self.tau_s, self.kd_temperature)
        losses['tau_g'] = tau.detach()
        return losses

    def extra_repr(self) -> str:
        return (f'tau_s={self.tau_s:.4g}, tau_g={float(self.tau_g):.4g}, '
                f'trainable_tau={self.trainable_tau}, alpha={self.alpha}, '
                f'weights(cls, gml, kd)=({self.cls_weight}, {self.gml_weight}, '
                f'{self.kd_weight})')
