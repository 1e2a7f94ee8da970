"""Inverse RE-OT loss under the relaxed constraint set U(a) (RE-OT Eq. 14 / 16).

With U(a) = {P : P·1 = a}, a_i = 1/n, the inner RE-OT problem has the
closed form P_ij = a_i·Q_ij·exp(-C_ij/ε) / Σ_k Q_ik·exp(-C_ik/ε), and the outer
KL(P̃ ‖ P) becomes (Eq. 16, up to the constant log n and the 1/n scaling that
the 'mean' reduction takes care of)::

    L_i = - Σ_j P̃_ij · log softmax_j( -C_ij/ε + log Q_ij )

Every row of RE-OT Table 1 is a choice of (P̃, C, Q, ε):

============================  ===========================================
Table 1 row                   config
============================  ===========================================
Vanilla softmax               ``prior='uniform'``
Focal loss                    ``supervision='focal', focal_gamma=γ``
A-softmax                     ``cost='cosine', margin_type='multiplicative'``
Triplet (ε → 0⁺)              ``cost='distance'``, small ``epsilon``
Class-balanced loss           ``supervision='class_balanced', cb_beta=β``
LDAM                          ``prior='ldam'``
Balanced Softmax              ``prior='class_ratio'`` (λ = 1)
Ours (epoch-varying)          any class-wise ``prior`` + ``REOTPriorHook``
============================  ===========================================

The cost C = c - l (``cost='logits'``) makes -C/ε = (l - c)/ε and the
constant c cancels in the softmax, so it is not a parameter.
"""
import math
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS

from reot_mm import dist
from reot_mm.losses import priors
from reot_mm.losses.utils import (check_labels, check_soft_target,
                                  raise_non_finite, weight_reduce_loss)

COSTS = ('logits', 'cosine', 'distance')
MARGIN_TYPES = (None, 'multiplicative', 'additive', 'cosine')
PRIORS = ('uniform', 'class_ratio', 'batch_ratio', 'interpolated',
          'sample_wise', 'teacher', 'ldam')
# priors that need per-class training counts
COUNT_PRIORS = ('class_ratio', 'interpolated', 'sample_wise', 'ldam')
SUPERVISIONS = ('label', 'focal', 'class_balanced')


def cosine_with_margin(cosine: torch.Tensor, target: torch.Tensor,
                       margin_type: Optional[str], margin: float) -> torch.Tensor:
    """Apply an angular margin to the target-class cosine.

    A-softmax's ψ(θ) = (-1)^k·cos(mθ) - 2k for θ ∈ [kπ/m, (k+1)π/m]
    (SphereFace, Liu et al. 2017; RE-OT Table 1 row "A-softmax") is
    ``'multiplicative'`` with integer m = ``margin``; ``'additive'`` is
    cos(θ + m) (ArcFace) and ``'cosine'`` is cos θ - m (CosFace).

    Args:
        cosine: (B, C) cosines in [-1, 1].
        target: (B,) integer labels, or (B, C) soft targets (the margin is
            then applied to each sample's arg-max class).
    """
    if margin_type is None or margin == 0:
        return cosine
    labels = target if target.ndim == 1 else target.argmax(-1)
    cos_y = cosine.gather(1, labels[:, None]).clamp(-1.0, 1.0)
    if margin_type == 'cosine':
        adjusted = cos_y - margin
    else:
        theta = torch.acos(cos_y.clamp(-1.0 + 1e-7, 1.0 - 1e-7))
        if margin_type == 'additive':
            adjusted = torch.cos(theta + margin)
        else:
            m = int(margin)
            k = torch.floor(theta * m / math.pi)
            sign = 1.0 - 2.0 * torch.remainder(k, 2.0)
            adjusted = sign * torch.cos(m * theta) - 2.0 * k
    return cosine.scatter(1, labels[:, None], adjusted.to(cosine.dtype))


# From about a million scores on, the fused kernel is faster than
# F.cross_entropy on shifted scores (benchmarks/bench_reot_loss.py).
_FUSED_MIN_NUMEL = 1 << 20


class _PriorCrossEntropy(torch.autograd.Function):
    """-log softmax(l/ε + log Q)_y per sample, fused for speed and memory.

    Forward keeps one (B, C) buffer, the log-plan log P; backward turns that
    buffer into the gradient in place, (P - onehot)·g/ε with
    P·g/ε = exp(log P + log(g/ε)). ``F.cross_entropy(l/ε + log Q)`` instead
    allocates the shifted scores, the log-probabilities and two (B, C)
    gradients; fresh large buffers cost page faults on the CPU (see
    benchmarks/bench_reot_loss.py). Not twice differentiable: a second
    backward through the same graph is refused by autograd.
    """

    @staticmethod
    def forward(ctx, similarity, log_prior, target, inv_epsilon):
        if log_prior is None:
            scores = similarity if inv_epsilon == 1.0 else \
                similarity * inv_epsilon
        elif inv_epsilon == 1.0:
            scores = similarity + log_prior
        else:
            scores = torch.add(log_prior, similarity, alpha=inv_epsilon)
        log_plan = torch.log_softmax(scores, dim=1)
        del scores
        loss = log_plan.gather(1, target[:, None]).squeeze(1).neg()
        ctx.save_for_backward(log_plan, target)
        ctx.inv_epsilon = inv_epsilon
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        log_plan, target = ctx.saved_tensors
        scale = grad_loss if ctx.inv_epsilon == 1.0 else \
            grad_loss * ctx.inv_epsilon
        if scale.min() < 0:
            grad = log_plan.exp_().mul_(scale[:, None])
        else:
            # one pass fewer: fold the (non-negative) scale into the exponent
            grad = log_plan.add_(scale.log()[:, None]).exp_()
        grad.scatter_add_(1, target[:, None], -scale[:, None])
        return grad, None, None, None


def inverse_reot_loss(similarity: torch.Tensor, target: torch.Tensor,
                      log_prior: Optional[torch.Tensor] = None,
                      epsilon: float = 1.0,
                      focal_gamma: float = 0.0,
                      class_weights: Optional[torch.Tensor] = None
                      ) -> torch.Tensor:
    """Per-sample inverse RE-OT loss under U(a) (RE-OT Eq. 16).

    L_i = -Σ_j P̃_ij·log P_ij with P_ij ∝ Q_ij·exp(-C_ij/ε), C = c - similarity.

    Args:
        similarity: (B, C) -C (up to the constant c): logits, scaled
            cosines, or minus distances.
        target: (B,) integer labels (P̃ one-hot) or (B, C) soft targets.
        log_prior: log Q, shape (C,) or (B, C); None means uniform.
        epsilon: ε > 0.
        focal_gamma: γ of the focal row, P̃ ← P̃·(1 - P)^γ (gradients flow
            through P, as in the focal loss).
        class_weights: (C,) class-balanced factors, P̃_ij ← P̃_ij·w_j.

    Returns:
        (B,) float32 losses.
    """
    similarity = at_least_fp32(similarity)
    if log_prior is not None:
        log_prior = log_prior.to(similarity.dtype)
    if target.ndim == 1 and not focal_gamma:
        if similarity.numel() >= _FUSED_MIN_NUMEL:
            loss = _PriorCrossEntropy.apply(similarity, log_prior, target,
                                            1.0 / epsilon)
        else:
            # small batches: the fused function's fixed Python cost (its own
            # forward/backward) outweighs the memory it saves
            scores = similarity if epsilon == 1.0 else similarity / epsilon
            if log_prior is not None:
                scores = scores + log_prior
            loss = F.cross_entropy(scores, target, reduction='none')
        if class_weights is not None:
            loss = loss * class_weights.to(loss)[target]
        return loss
    scores = similarity / epsilon
    if log_prior is not None:
        scores = scores + log_prior
    log_plan = torch.log_softmax(scores, dim=-1)
    if target.ndim == 1:
        log_p = log_plan.gather(1, target[:, None]).squeeze(1)
        loss = -(-torch.expm1(log_p)).clamp_min(0).pow(focal_gamma) * log_p
        if class_weights is not None:
            loss = loss * class_weights.to(loss)[target]
        return loss
    weights = target.to(similarity.dtype)
    if class_weights is not None:
        weights = weights * class_weights.to(weights)
    if focal_gamma:
        weights = weights * (-torch.expm1(log_plan)).clamp_min(0).pow(focal_gamma)
    # 0·(-inf) must be 0: classes without prior mass carry no supervision.
    terms = torch.where(weights > 0, weights * log_plan,
                        torch.zeros_like(log_plan))
    return -terms.sum(-1)


@MODELS.register_module()
class REOTLoss(torch.nn.Module):
    """Inverse RE-OT loss (RE-OT Eq. 14/16 under U(a)), registered as ``REOTLoss``.

    Drop-in for ``model.head.loss`` of any mmpretrain classification head
    (called as ``loss(cls_score, target, avg_factor=B)`` with integer or soft
    targets), and usable by mmdet/mmseg adapters through ``weight``,
    ``avg_factor``, ``reduction_override`` and ``ignore_index``.

    Args:
        cost: ``'logits'`` — C = c - l from the head's logits (default);
            ``'cosine'`` — ``cls_score`` holds cosines, C = c - scale·ψ(θ);
            ``'distance'`` — ``cls_score`` is the cost matrix itself (e.g.
            squared distances to class embeddings; the triplet row).
        epsilon: ε, the entropic weight (= softmax temperature). Must be > 0.
        scale: similarity scale for ``cost='cosine'`` (e.g. 30); ignored
            otherwise.
        margin_type: None, ``'multiplicative'`` (A-softmax ψ), ``'additive'``
            (ArcFace) or ``'cosine'`` (CosFace); only with ``cost='cosine'``.
        margin: the margin (integer m for ``'multiplicative'``).
        prior: which r (or Q) to use — ``'uniform'`` (vanilla softmax),
            ``'class_ratio'`` (Eq. 35, Balanced Softmax at λ = 1),
            ``'batch_ratio'`` (Eq. 36, global batch under DDP),
            ``'interpolated'`` (Eq. 37), ``'sample_wise'`` (Eq. 38 / authors'
            code), ``'teacher'`` (r from a frozen teacher's predictions, passed
            as ``teacher_probs``), ``'ldam'`` (Table 1 LDAM row; not scheduled).
        prior_weight: λ of Eq. 15. Defaults to 1 (a fixed prior r); the
            ``REOTPriorHook`` overwrites it during training. Stored as a buffer
            so it is saved in checkpoints.
        prior_power: element-wise exponent of Q (1.03 after t3 in the authors'
            code); set by the hook; a buffer.
        interpolation_gamma: γ of Eq. 37 (the authors' ``lamb``).
        sample_wise_g: g of the sample-wise prior (1 → Eq. 38).
        sample_wise_base: r that the sample-wise prior multiplies:
            ``'class_ratio'`` (Eq. 38) or ``'interpolated'``.
        supervision: ``'label'`` (P̃ = y), ``'focal'`` (P̃ = y·(1 - P)^γ) or
            ``'class_balanced'`` (P̃ = y·(1 - β)/(1 - β^{n_y})).
        focal_gamma: γ of the focal row.
        cb_beta: β of the class-balanced row.
        cb_normalize: rescale class-balanced weights to sum to C.
        ldam_max_margin: LDAM's largest margin (in logit units before 1/ε).
        ldam_power: LDAM's exponent (1/4).
        class_counts: per-class training counts; may instead be filled before
            training by ``ClassStatisticsHook``. A buffer (saved in checkpoints).
        num_classes: expected number of classes (validates counts and scores).
        min_count: pseudo-count used for classes with zero samples (warned).
        reduction: 'mean' | 'sum' | 'none'.
        loss_weight: multiplier of the loss.
        loss_name: key under which OpenMMLab dense heads log the loss.
    """

    def __init__(self,
                 cost: str = 'logits',
                 epsilon: float = 1.0,
                 scale: float = 1.0,
                 margin_type: Optional[str] = None,
                 margin: float = 0.0,
                 prior: str = 'class_ratio',
                 prior_weight: float = 1.0,
                 prior_power: float = 1.0,
                 interpolation_gamma: float = 0.74,
                 sample_wise_g: float = 1.0,
                 sample_wise_base: str = 'class_ratio',
                 supervision: str = 'label',
                 focal_gamma: float = 2.0,
                 cb_beta: float = 0.9999,
                 cb_normalize: bool = True,
                 ldam_max_margin: float = 0.5,
                 ldam_power: float = 0.25,
                 class_counts: Optional[Sequence[float]] = None,
                 num_classes: Optional[int] = None,
                 min_count: float = 1.0,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0,
                 loss_name: str = 'loss_reot'):
        super().__init__()
        _check_choice('cost', cost, COSTS)
        _check_choice('margin_type', margin_type, MARGIN_TYPES)
        _check_choice('prior', prior, PRIORS)
        _check_choice('supervision', supervision, SUPERVISIONS)
        _check_choice('sample_wise_base', sample_wise_base,
                      ('class_ratio', 'interpolated'))
        _check_choice('reduction', reduction, ('none', 'mean', 'sum'))
        if not (isinstance(epsilon, (int, float)) and epsilon > 0
                and math.isfinite(epsilon)):
            raise ValueError(f'epsilon must be a finite number > 0, got {epsilon}')
        if margin_type is not None and cost != 'cosine':
            raise ValueError(f"margin_type={margin_type!r} needs cost='cosine', "
                             f'got cost={cost!r}')
        if margin_type == 'multiplicative' and (margin != int(margin) or margin < 1):
            raise ValueError('margin must be a positive integer m for '
                             f"margin_type='multiplicative', got {margin}")
        if focal_gamma < 0:
            raise ValueError(f'focal_gamma must be >= 0, got {focal_gamma}')
        if min_count <= 0:
            raise ValueError(f'min_count must be > 0, got {min_count}')
        if num_classes is not None and num_classes < 1:
            raise ValueError(f'num_classes must be >= 1, got {num_classes}')
        if not 0.0 <= interpolation_gamma <= 1.0:
            raise ValueError('interpolation_gamma must be in [0, 1], got '
                             f'{interpolation_gamma}')
        if not 0.0 <= sample_wise_g <= 1.0:
            raise ValueError(f'sample_wise_g must be in [0, 1], got {sample_wise_g}')
        self.cost = cost
        self.epsilon = float(epsilon)
        self.scale = float(scale)
        self.margin_type = margin_type
        self.margin = float(margin)
        self.prior = prior
        self.interpolation_gamma = float(interpolation_gamma)
        self.sample_wise_g = float(sample_wise_g)
        self.sample_wise_base = sample_wise_base
        self.supervision = supervision
        self.focal_gamma = float(focal_gamma)
        self.cb_beta = float(cb_beta)
        self.cb_normalize = cb_normalize
        self.ldam_max_margin = float(ldam_max_margin)
        self.ldam_power = float(ldam_power)
        self.num_classes = num_classes
        self.min_count = float(min_count)
        self.reduction = reduction
        self.loss_weight = float(loss_weight)
        self._loss_name = loss_name
        self.register_buffer('prior_weight', torch.tensor(0.0))
        self.register_buffer('prior_power', torch.tensor(1.0))
        self.set_prior_schedule(prior_weight, prior_power)
        # Empty until counts are known; filled from the config or the hook.
        self.register_buffer('class_counts', torch.zeros(0, dtype=torch.float64))
        # log(n_j / Σn): a non-persistent buffer so it follows .to(device)
        self.register_buffer('_log_class_ratio', torch.zeros(0), persistent=False)
        if class_counts is not None:
            self.set_class_counts(class_counts)

    @property
    def loss_name(self) -> str:
        return self._loss_name

    @property
    def needs_class_counts(self) -> bool:
        return (self.prior in COUNT_PRIORS
                or self.supervision == 'class_balanced')

    def set_class_counts(self, class_counts) -> None:
        """Set per-class training counts (validated; zero counts smoothed)."""
        counts = priors.validate_class_counts(class_counts, self.num_classes)
        counts = priors.smooth_zero_counts(counts, self.min_count)
        # Resizing a registered buffer in place keeps state_dict loading simple.
        self.class_counts = counts.to(self.class_counts.device)
        self._refresh_log_ratio()

    def _refresh_log_ratio(self) -> None:
        # derived from class_counts once, not on every forward
        self._log_class_ratio = priors.log_class_ratio(self.class_counts) \
            if self.class_counts.numel() else self.class_counts.float()
        self._class_log_q = None

    def set_prior_schedule(self, prior_weight: float,
                           prior_power: float = 1.0) -> None:
        """Set λ(t) of Eq. 15 and the prior exponent (called by the hook)."""
        if not 0.0 <= float(prior_weight) <= 1.0:
            raise ValueError(f'prior_weight (λ) must be in [0, 1], got {prior_weight}')
        if not float(prior_power) > 0:
            raise ValueError(f'prior_power must be > 0, got {prior_power}')
        self.prior_weight.fill_(float(prior_weight))
        self.prior_power.fill_(float(prior_power))
        # host copies: reading a CUDA buffer in forward would sync the device
        self._schedule = (float(prior_weight), float(prior_power))
        self._class_log_q = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # class_counts has no fixed size: take the checkpoint's shape.
        key = prefix + 'class_counts'
        if key in state_dict:
            self.class_counts = torch.empty_like(state_dict[key],
                                                 device=self.class_counts.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._schedule = (float(self.prior_weight), float(self.prior_power))
        self._refresh_log_ratio()

    # ------------------------------------------------------------------ math
    def _counts(self, num_classes: int) -> torch.Tensor:
        if self.class_counts.numel() == 0:
            raise RuntimeError(
                f"REOTLoss(prior={self.prior!r}, supervision="
                f"{self.supervision!r}) needs class_counts: give them in the "
                'config or add ClassStatisticsHook to custom_hooks')
        if self.class_counts.numel() != num_classes:
            raise ValueError(
                f'class_counts has {self.class_counts.numel()} entries but the '
                f'scores have {num_classes} classes')
        return self.class_counts

    def log_prior(self, cls_score: torch.Tensor, target: torch.Tensor,
                  teacher_probs: Optional[torch.Tensor] = None
                  ) -> Optional[torch.Tensor]:
        """log Q for this batch, shape (C,) or (B, C); None for uniform."""
        num_classes = cls_score.shape[-1]
        if self.prior == 'uniform':
            return None
        if self.prior == 'ldam':
            margins = priors.ldam_margins(self._counts(num_classes),
                                          self.ldam_max_margin, self.ldam_power)
            margins = margins.to(cls_score.device)
            return -_soft_labels(target, num_classes) * margins / self.epsilon
        weight, power = self._schedule
        if weight == 0.0:
            return None
        if self.prior == 'class_ratio':
            # depends only on counts and schedule: computed once per change
            self._counts(num_classes)
            if self._class_log_q is None:
                self._class_log_q = priors.log_epoch_varying_prior(
                    self._log_class_ratio, weight, power)
            return self._class_log_q
        log_r = self._log_ratio(cls_score, target, teacher_probs)
        return priors.log_epoch_varying_prior(log_r, weight, power)

    def _apply(self, fn, *args, **kwargs):
        # .to()/.cuda()/.half() move buffers; drop the derived cache
        self._class_log_q = None
        return super()._apply(fn, *args, **kwargs)

    def _log_ratio(self, cls_score, target, teacher_probs):
        num_classes = cls_score.shape[-1]
        device = cls_score.device
        if self.prior == 'teacher':
            if teacher_probs is None:
                raise ValueError(
                    "prior='teacher' needs teacher_probs (B, C) from a frozen "
                    'teacher; pass them to the loss (the teacher-student '
                    'wrapper does this)')
            if teacher_probs.shape != cls_score.shape:
                raise ValueError('teacher_probs must have the shape of the '
                                 f'scores {tuple(cls_score.shape)}, got '
                                 f'{tuple(teacher_probs.shape)}')
            probs = teacher_probs.detach().to(torch.float32)
            return probs.clamp_min(0).log() - probs.sum(-1, keepdim=True).log()
        if self.prior == 'batch_ratio' or self.prior == 'interpolated' or (
                self.prior == 'sample_wise'
                and self.sample_wise_base == 'interpolated'):
            local = priors.batch_label_ratio(target, num_classes)
            log_batch = priors.log_batch_ratio(dist.all_reduce_sum(local))
            if self.prior == 'batch_ratio':
                return log_batch.to(device)
        self._counts(num_classes)  # validates presence and length
        log_class = self._log_class_ratio
        if self.prior == 'class_ratio':
            return log_class
        if self.prior == 'interpolated' or self.sample_wise_base == 'interpolated':
            log_class = priors.log_interpolated_ratio(
                log_class, log_batch.to(device), self.interpolation_gamma)
            if self.prior == 'interpolated':
                return log_class
        return priors.log_sample_wise_ratio(cls_score, log_class,
                                            self.sample_wise_g)

    def similarity(self, cls_score: torch.Tensor,
                   target: torch.Tensor) -> torch.Tensor:
        """-C (up to the constant c) for the configured cost, (B, C), >= fp32."""
        cls_score = at_least_fp32(cls_score)
        if self.cost == 'logits':
            return cls_score
        if self.cost == 'cosine':
            return self.scale * cosine_with_margin(
                cls_score, target, self.margin_type, self.margin)
        return -cls_score

    def class_weights(self, num_classes: int) -> Optional[torch.Tensor]:
        """Class-balanced factors of P̃ (Table 1 row), (C,), or None."""
        if self.supervision != 'class_balanced':
            return None
        return priors.class_balanced_weights(
            self._counts(num_classes), self.cb_beta, self.cb_normalize)

    def forward(self,
                cls_score: torch.Tensor,
                target: torch.Tensor,
                weight: Optional[torch.Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None,
                ignore_index: Optional[int] = None,
                teacher_probs: Optional[torch.Tensor] = None,
                **kwargs) -> torch.Tensor:
        """Compute the loss.

        Args:
            cls_score: (B, C) logits / cosines / costs (see ``cost``), or
                (B, C, *spatial) dense scores (class dimension second).
            target: (B,) or (B, *spatial) integer labels, or (B, C) soft
                targets (mixup/cutmix).
            weight: per-sample weights, (B,) or (B, *spatial).
            avg_factor: normaliser of the summed loss ('mean' only).
            reduction_override: 'none' | 'mean' | 'sum'.
            ignore_index: label to skip (dense tasks).
            teacher_probs: (B, C) teacher predictions for ``prior='teacher'``.

        Returns:
            Scalar loss (or per-sample losses with reduction 'none').
        """
        reduction = reduction_override or self.reduction
        if cls_score.ndim > 2:
            # dense scores (B, C, H, W) -> (B·H·W, C)
            num_classes = cls_score.shape[1]
            cls_score = cls_score.movedim(1, -1).reshape(-1, num_classes)
            target = target.reshape(-1)
            if weight is not None:
                weight = weight.reshape(-1)
        if cls_score.ndim != 2:
            raise ValueError('cls_score must be (B, C) or (B, C, ...), got '
                             f'shape {tuple(cls_score.shape)}')
        num_classes = cls_score.shape[-1]
        if self.num_classes is not None and num_classes != self.num_classes:
            raise ValueError(f'cls_score has {num_classes} classes but the '
                             f'loss was built with num_classes={self.num_classes}')
        valid = None
        if target.ndim == 1:
            if target.dtype.is_floating_point:
                raise ValueError('integer labels expected for a 1-D target, got '
                                 f'dtype {target.dtype}')
            target = target.long()
            check_labels(target, num_classes, 'target', ignore_index)
            if ignore_index is not None:
                valid = target != ignore_index
                target = torch.where(valid, target, torch.zeros_like(target))
        else:
            check_soft_target(target, cls_score)

        similarity = self.similarity(cls_score, target)
        log_prior_target = target if valid is None else target[valid]
        log_prior = self.log_prior(
            cls_score if valid is None else cls_score[valid],
            log_prior_target, teacher_probs)
        if log_prior is not None and log_prior.ndim == 2 and valid is not None:
            full = similarity.new_zeros(similarity.shape)
            full[valid] = log_prior
            log_prior = full
        focal = self.focal_gamma if self.supervision == 'focal' else 0.0
        loss = inverse_reot_loss(similarity, target, log_prior, self.epsilon,
                                 focal, self.class_weights(num_classes))
        if valid is not None:
            loss = loss * valid
            if avg_factor is None and reduction == 'mean':
                avg_factor = valid.sum().clamp_min(1).item()
        loss = weight_reduce_loss(loss, weight, reduction, avg_factor)
        # one scalar check (one device sync); diagnose only on failure
        if not torch.isfinite(loss if loss.ndim == 0 else loss.sum()):
            raise_non_finite(cls_score)
        return loss if self.loss_weight == 1.0 else self.loss_weight * loss

    def extra_repr(self) -> str:
        return (f'cost={self.cost}, epsilon={self.epsilon}, prior={self.prior}, '
                f'supervision={self.supervision}')


def at_least_fp32(tensor: torch.Tensor) -> torch.Tensor:
    """Half-precision inputs are reduced in float32; float64 stays float64."""
    if tensor.dtype in (torch.float16, torch.bfloat16):
        return tensor.float()
    return tensor


def _soft_labels(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    if target.ndim == 1:
        return F.one_hot(target, num_classes).to(torch.float32)
    return target.to(torch.float32)


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f'{name} must be one of {choices}, got {value!r}')
