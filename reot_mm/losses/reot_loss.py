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

Full constraints U(a, b) (``REOTLoss(constraints='ab')``). Eq. 14 also allows
the full matching set U(a, b) over the batch. Its plan is
P = diag(u)·K·diag(v) with K_ij = Q_ij·exp(-C_ij/ε) (Eq. 8), found by
Sinkhorn; with a_i = 1/B and u from the last row update,
B·P_ij = softmax_j(-C_ij/ε + log Q_ij + g_j) with g = log v. The loss is
therefore the U(a) loss with log Q replaced by log Q + g, where the column
log-potentials g depend on the whole batch and are differentiated through
(:func:`reot_column_potentials`, :func:`inverse_reot_loss_ab`). Dropping the
column constraint gives g = 0, i.e. Eq. 16 again.

The same U(a, b) problem solved at test time over a set of test samples
(RE-OT §5, "new inference") is :func:`reot_mm.ot.test_time.sinkhorn_prediction`.
"""
import math
import warnings
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS

from reot_mm import dist
from reot_mm.losses import priors
from reot_mm.losses.utils import (check_choice, check_labels,
                                  check_soft_target, raise_non_finite,
                                  take_checkpoint_shape, weight_reduce_loss)
from reot_mm.losses.margins import cosine_with_margin  # noqa: F401
from reot_mm.losses.prior_cross_entropy import (  # noqa: F401
    _FUSED_MIN_NUMEL, _PriorCrossEntropy, _soft_labels, at_least_fp32,
    inverse_reot_loss)
from reot_mm.losses.reot_loss_ab import (  # noqa: F401
    CONSTRAINTS, DISTRIBUTION_TOL, SINKHORN_GRADS, _check_target_support,
    _select_columns, check_class_distribution, inverse_reot_loss_ab,
    reot_column_potentials)

COSTS = ('logits', 'cosine', 'distance')
MARGIN_TYPES = (None, 'multiplicative', 'additive', 'cosine')
PRIORS = ('uniform', 'class_ratio', 'batch_ratio', 'interpolated',
          'sample_wise', 'teacher', 'ldam')
# priors that need per-class training counts
COUNT_PRIORS = ('class_ratio', 'interpolated', 'sample_wise', 'ldam')
SUPERVISIONS = ('label', 'focal', 'class_balanced')
COLUMN_MARGINALS = ('prior', 'batch_ratio', 'class_ratio', 'uniform')


@MODELS.register_module()
class REOTLoss(torch.nn.Module):
    """Inverse RE-OT loss (RE-OT Eq. 14/16), registered as ``REOTLoss``.

    Under U(a) (default) the closed form of Eq. 16; with ``constraints='ab'``
    the full matching set U(a, b) over the batch, solved by a differentiable
    log-domain Sinkhorn (see :func:`inverse_reot_loss_ab`).

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
        constraints: ``'a'`` — U(a), Eq. 16 in closed form (default; what the
            authors trained with); ``'ab'`` — U(a, b) over the batch (Eq. 14
            with both marginals): a_i = 1/B over the (non-ignored) rows of
            this rank's batch, b from ``column_marginal``.
        column_marginal: b for ``constraints='ab'``:
            ``'prior'`` (default) — the mass the prior Q gives each class,
            b_j = mean_i Q_ij/Σ_k Q_ik: the batch ratio for
            ``prior='batch_ratio'``, the (λ-scheduled) class ratio for
            ``'class_ratio'``, uniform for ``'uniform'``, so the prior keeps
            its role (a class-wise Q itself is absorbed by the column scaling
            under U(a, b), Prop. 1(2)); ``'batch_ratio'`` — the label ratio
            of this rank's batch (Eq. 36, local: the plan couples local rows;
            then P̃ ∈ U(a, b)); ``'class_ratio'`` — the training class ratio
            (Eq. 35, needs counts); ``'uniform'``. Classes with b_j = 0 (e.g.
            absent from the batch under the batch ratio) get no plan mass; b
            with mass on a class whose Q is zero for every row is infeasible
            and raises. Not available with ``prior='ldam'`` (its Q is a
            margin, not a distribution) unless given explicitly.
        sinkhorn_grad: ``'implicit'`` (default; memory: log K and P, B x C'
            each, plus a C' x C' solve, C' = classes with b_j > 0) or
            ``'unrolled'`` (autograd through every iteration: about two
            B x C' tensors per iteration).
        sinkhorn_max_iter: Sinkhorn iterations at most (``'ab'``).
        sinkhorn_tol: stop at this L1 marginal error of the batch plan. The
            first non-converged batch warns with the achieved error.
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
                 loss_name: str = 'loss_reot',
                 constraints: str = 'a',
                 column_marginal: str = 'prior',
                 sinkhorn_grad: str = 'implicit',
                 sinkhorn_max_iter: int = 1000,
                 sinkhorn_tol: float = 1e-6):
        super().__init__()
        check_choice('cost', cost, COSTS)
        check_choice('margin_type', margin_type, MARGIN_TYPES)
        check_choice('prior', prior, PRIORS)
        check_choice('supervision', supervision, SUPERVISIONS)
        check_choice('sample_wise_base', sample_wise_base,
                      ('class_ratio', 'interpolated'))
        check_choice('reduction', reduction, ('none', 'mean', 'sum'))
        check_choice('constraints', constraints, CONSTRAINTS)
        check_choice('column_marginal', column_marginal, COLUMN_MARGINALS)
        check_choice('sinkhorn_grad', sinkhorn_grad, SINKHORN_GRADS)
        if constraints == 'ab' and column_marginal == 'prior' \
                and prior == 'ldam':
            raise ValueError(
                "column_marginal='prior' is undefined for prior='ldam' (its Q "
                "is a margin, not a class distribution); choose "
                "column_marginal='batch_ratio', 'class_ratio' or 'uniform'")
        if int(sinkhorn_max_iter) < 1:
            raise ValueError(f'sinkhorn_max_iter must be >= 1, got '
                             f'{sinkhorn_max_iter}')
        if not (sinkhorn_tol > 0 and math.isfinite(sinkhorn_tol)):
            raise ValueError(f'sinkhorn_tol must be a finite number > 0, got '
                             f'{sinkhorn_tol}')
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
        self.constraints = constraints
        self.column_marginal = column_marginal
        self.sinkhorn_grad = sinkhorn_grad
        self.sinkhorn_max_iter = int(sinkhorn_max_iter)
        self.sinkhorn_tol = float(sinkhorn_tol)
        self._warned_sinkhorn = False
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
                or self.supervision == 'class_balanced'
                or (self.constraints == 'ab'
                    and self.column_marginal == 'class_ratio'))

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
        take_checkpoint_shape(self, state_dict, prefix)
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
        focal = self.focal_gamma if self.supervision == 'focal' else 0.0
        if self.constraints == 'ab':
            loss = self._loss_ab(similarity, target, log_prior, valid, focal)
        else:
            if log_prior is not None and log_prior.ndim == 2 \
                    and valid is not None:
                full = similarity.new_zeros(similarity.shape)
                full[valid] = log_prior
                log_prior = full
            loss = inverse_reot_loss(similarity, target, log_prior,
                                     self.epsilon, focal,
                                     self.class_weights(num_classes))
        if valid is not None:
            loss = loss * valid
            if avg_factor is None and reduction == 'mean':
                avg_factor = valid.sum().clamp_min(1).item()
        loss = weight_reduce_loss(loss, weight, reduction, avg_factor)
        # one scalar check (one device sync); diagnose only on failure
        if not torch.isfinite(loss if loss.ndim == 0 else loss.sum()):
            raise_non_finite(cls_score)
        return loss if self.loss_weight == 1.0 else self.loss_weight * loss

    def column_marginal_vector(self, target: torch.Tensor,
                               log_prior: Optional[torch.Tensor],
                               num_classes: int) -> torch.Tensor:
        """b of the U(a, b) batch plan, (C,) float64 summing to 1 (see
        ``column_marginal``).

        Args:
            target: (B', C) soft or (B',) labels of the rows in the plan.
            log_prior: log Q of those rows, (C,) or (B', C), or None.
            num_classes: C.
        """
        choice = self.column_marginal
        if choice == 'prior' and log_prior is not None:
            mass = torch.softmax(log_prior.detach().to(torch.float64), -1)
            return mass if mass.ndim == 1 else mass.mean(0)
        if choice in ('prior', 'uniform'):
            return torch.full((num_classes, ), 1.0 / num_classes,
                              dtype=torch.float64)
        if choice == 'class_ratio':
            counts = self._counts(num_classes).to(torch.float64)
            return counts / counts.sum()
        mass = priors.batch_label_ratio(target, num_classes).to(torch.float64)
        return mass / mass.sum()

    def _loss_ab(self, similarity, target, log_prior, valid, focal):
        """Per-sample losses under U(a, b) over the valid rows (zeros
        elsewhere)."""
        num_classes = similarity.shape[-1]
        rows_sim = similarity if valid is None else similarity[valid]
        rows_target = target if valid is None else target[valid]
        if rows_sim.shape[0] == 0:
            return similarity.new_zeros(similarity.shape[0])
        b = self.column_marginal_vector(rows_target, log_prior, num_classes)
        g, result = reot_column_potentials(
            rows_sim, b.to(rows_sim.device), self.epsilon, log_prior,
            grad=self.sinkhorn_grad, max_iter=self.sinkhorn_max_iter,
            tol=self.sinkhorn_tol, warn=False)
        if not result.converged and not self._warned_sinkhorn:
            self._warned_sinkhorn = True
            warnings.warn(
                f'REOTLoss(constraints=\'ab\'): Sinkhorn did not reach '
                f'sinkhorn_tol={self.sinkhorn_tol:g} in {result.iterations} '
                f'iterations (marginal error '
                f'{float(result.marginal_error):.3g}); the loss uses that '
                'plan. Raise sinkhorn_max_iter or epsilon (warned once)',
                UserWarning, stacklevel=3)
        _check_target_support(rows_target, g)
        shifted = g if log_prior is None else log_prior.to(g.dtype) + g
        loss = inverse_reot_loss(rows_sim, rows_target, shifted, self.epsilon,
                                 focal, self.class_weights(num_classes))
        if valid is None:
            return loss
        full = loss.new_zeros(similarity.shape[0])
        return full.masked_scatter(valid, loss)

    def extra_repr(self) -> str:
        extra = '' if self.constraints == 'a' else (
            f', constraints=ab, column_marginal={self.column_marginal}')
        return (f'cost={self.cost}, epsilon={self.epsilon}, prior={self.prior}, '
                f'supervision={self.supervision}{extra}')
