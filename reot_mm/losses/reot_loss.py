"""The inverse RE-OT loss module (``REOTLoss``): options and buffers, no maths.

Shi et al., Relative Entropic Optimal Transport: a (Prior-aware) Matching
Perspective to (Unbalanced) Classification, NeurIPS 2023 (RE-OT below).
Under U(a) the loss is Eq. 16, L_i = -Σ_j P̃_ij·log softmax_j(-C_ij/ε + log Q_ij)
(:func:`~reot_mm.losses.prior_cross_entropy.prior_shifted_cross_entropy`);
under U(a, b) log Q gains the column log-potentials of the batch plan (Eq. 14,
:func:`~reot_mm.losses.reot_loss_ab.inverse_reot_loss_ab`). Every row of
RE-OT Table 1 is a choice of (P̃, C, Q, ε):

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

With ``cost='logits'`` (C = c - l) the constant c cancels in the softmax.
Test-time U(a, b) (RE-OT §5) is :func:`reot_mm.ot.test_time.sinkhorn_prediction`;
RoIs and pixels go through the adapters ``REOTRoILoss`` / ``REOTPixelLoss``.
"""
import math
import warnings
from typing import Optional, Sequence

import torch
from mmengine.registry import MODELS

from reot_mm.losses import priors
from reot_mm.losses.finite import raise_if_non_finite
from reot_mm.losses.margins import MARGIN_TYPES, cosine_with_margin
from reot_mm.losses.prior_cross_entropy import (inverse_reot_loss,
                                                prior_shifted_cross_entropy,
                                                soft_labels)
from reot_mm.losses.reot_loss_ab import (CONSTRAINTS, SINKHORN_GRADS,
                                         inverse_reot_loss_ab)
from reot_mm.losses.reot_prior import PRIORS, REOTPriorModule
from reot_mm.losses.utils import (at_least_fp32, check_choice, check_labels,
                                  check_soft_target, weight_reduce_loss)

# inverse_reot_loss, cosine_with_margin, check_class_distribution and
# reot_column_potentials lived here before the maths moved out: kept for
# their importers
from reot_mm.losses.reot_loss_ab import (  # noqa: F401
    check_class_distribution, reot_column_potentials)

__all__ = ['REOTLoss', 'inverse_reot_loss']

COSTS = ('logits', 'cosine', 'distance')
SUPERVISIONS = ('label', 'focal', 'class_balanced')
COLUMN_MARGINALS = ('prior', 'batch_ratio', 'class_ratio', 'uniform')
#: what is wrong when the loss is NaN / inf but every input is finite
NON_FINITE_CAUSE = ('class_counts with a zero count and a tiny min_count, or '
                    'a soft target on a class whose prior Q is zero; expected '
                    'positive prior mass on every target class')


@MODELS.register_module()
class REOTLoss(REOTPriorModule):
    """Inverse RE-OT loss (RE-OT Eq. 14/16), registered as ``REOTLoss``.

    Drop-in for ``model.head.loss`` of mmpretrain heads (called as
    ``loss(cls_score, target, avg_factor=B)``, integer or soft targets);
    dense (B, C, *spatial) scores with ``ignore_index`` are rows too.

    Args:
        cost: ``'logits'`` — C = c - l from the head's logits (default);
            ``'cosine'`` — ``cls_score`` holds cosines, C = c - scale·ψ(θ);
            ``'distance'`` — ``cls_score`` is the cost matrix itself (e.g.
            squared distances to class embeddings; the triplet row).
        epsilon: ε, the entropic weight (= softmax temperature), > 0.
        scale: similarity scale for ``cost='cosine'`` (e.g. 30).
        margin_type: None, ``'multiplicative'`` (A-softmax ψ), ``'additive'``
            (ArcFace) or ``'cosine'`` (CosFace); only with ``cost='cosine'``.
        margin: the margin (integer m for ``'multiplicative'``).
        prior: which r (or Q) to use — ``'uniform'`` (vanilla softmax),
            ``'class_ratio'`` (Eq. 35, Balanced Softmax at λ = 1),
            ``'batch_ratio'`` (Eq. 36, global batch under DDP),
            ``'interpolated'`` (Eq. 37), ``'sample_wise'`` (Eq. 38 / the
            authors' code), ``'teacher'`` (r from a frozen teacher's
            predictions, passed as ``teacher_probs``; the teacher-student
            wrapper does this), ``'ldam'`` (Table 1 LDAM row; not scheduled).
        prior_weight: λ of Eq. 15 (1: a fixed r); set by ``REOTPriorHook``.
        prior_power: exponent of Q (1.03 after t3 in the authors' code).
        interpolation_gamma: γ of Eq. 37 (the authors' ``lamb``).
        sample_wise_g: g of the sample-wise prior (1 → Eq. 38).
        sample_wise_base: r that the sample-wise prior multiplies:
            ``'class_ratio'`` (Eq. 38) or ``'interpolated'``.
        sample_wise_form: ``'normalized'`` (default; paper-style rows
            r_j·[(1 - g)/C + g·softmax(s_i)_j], renormalised) or
            ``'official'`` (the authors' code: U = 1/(B·C) per entry, rows
            not renormalised, so for 0 < g < 1 the mix depends on B).
        supervision: ``'label'`` (P̃ = y), ``'focal'`` (P̃ = y·(1 - P)^γ) or
            ``'class_balanced'`` (P̃ = y·(1 - β)/(1 - β^{n_y})).
        focal_gamma: γ of the focal row.
        cb_beta: β of the class-balanced row.
        cb_normalize: rescale class-balanced weights to sum to C.
        ldam_max_margin: LDAM's largest margin (in logit units before 1/ε).
        ldam_power: LDAM's exponent (1/4).
        class_counts: raw per-class training counts (a buffer), or None
            (``ClassStatisticsHook`` fills them).
        num_classes: expected number of classes (validates counts and scores).
        min_count: pseudo-count of empty classes where the prior is formed.
        reduction: 'mean' | 'sum' | 'none'.
        loss_weight: multiplier of the loss.
        loss_name: key under which OpenMMLab dense heads log the loss.
        constraints: ``'a'`` — U(a), Eq. 16 in closed form (default; what the
            authors trained with); ``'ab'`` — U(a, b) over the (non-ignored)
            rows of this rank's batch (Eq. 14), a_i = 1/B, b from
            ``column_marginal``.
        column_marginal: b for ``constraints='ab'``: ``'prior'`` (default) —
            the mass the prior Q gives each class, b_j = mean_i Q_ij/Σ_k Q_ik,
            so the prior keeps its role (a class-wise Q alone is absorbed by
            the column scaling under U(a, b), Prop. 1(2)); ``'batch_ratio'``
            — the label ratio of this rank's batch (Eq. 36, local; then
            P̃ ∈ U(a, b)); ``'class_ratio'`` (Eq. 35, needs counts);
            ``'uniform'``. b with mass on a class whose Q is zero for every
            row is infeasible and raises; ``'prior'`` is undefined for
            ``prior='ldam'``.
        sinkhorn_grad: ``'implicit'`` (default) or ``'unrolled'``.
        sinkhorn_max_iter, sinkhorn_tol: Sinkhorn stopping rule (L1
            marginal error); the first non-converged batch warns once.
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
                 sample_wise_form: str = 'normalized',
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
        check_choice('supervision', supervision, SUPERVISIONS)
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
        self.cost = cost
        self.epsilon = float(epsilon)
        self.scale = float(scale)
        self.margin_type = margin_type
        self.margin = float(margin)
        self.supervision = supervision
        self.focal_gamma = float(focal_gamma)
        self.cb_beta = float(cb_beta)
        self.cb_normalize = cb_normalize
        self.ldam_max_margin = float(ldam_max_margin)
        self.ldam_power = float(ldam_power)
        self.reduction = reduction
        self.loss_weight = float(loss_weight)
        self._loss_name = loss_name
        self.constraints = constraints
        self.column_marginal = column_marginal
        self.sinkhorn_grad = sinkhorn_grad
        self.sinkhorn_max_iter = int(sinkhorn_max_iter)
        self.sinkhorn_tol = float(sinkhorn_tol)
        self._warned_sinkhorn = False
        self.init_reot_prior(prior, PRIORS, interpolation_gamma, sample_wise_g,
                             sample_wise_base, sample_wise_form)
        self.init_class_counts(class_counts, num_classes, min_count)
        self.init_prior_schedule(prior_weight, prior_power)

    @property
    def loss_name(self) -> str:
        return self._loss_name

    @property
    def needs_class_counts(self) -> bool:
        return (self.prior in ('class_ratio', 'interpolated', 'sample_wise',
                               'ldam')
                or self.supervision == 'class_balanced'
                or (self.constraints == 'ab'
                    and self.column_marginal == 'class_ratio'))

    # ------------------------------------------------- (P̃, C, Q) of Table 1
    def log_prior(self, cls_score: torch.Tensor, target: torch.Tensor,
                  teacher_probs: Optional[torch.Tensor] = None
                  ) -> Optional[torch.Tensor]:
        """log Q for these rows, shape (C,) or (B, C); None for uniform."""
        num_classes = cls_score.shape[-1]
        if self.prior == 'ldam':
            # Table 1 LDAM row: Q_ij = exp(-1[j = y_i]·m_j / ε), not scheduled
            margins = priors.ldam_margins(
                self.require_class_counts(num_classes), self.ldam_max_margin,
                self.ldam_power, self.min_count).to(cls_score.device)
            return -soft_labels(target, num_classes) * margins / self.epsilon
        return self.reot_log_prior(target, num_classes, cls_score,
                                   teacher_probs)

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
            self.require_class_counts(num_classes), self.cb_beta,
            self.cb_normalize, self.min_count)

    # --------------------------------------------------------------- forward
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

        Raises:
            ValueError: naming the argument at fault (shapes, labels, an empty
                batch under 'mean', non-finite scores / weights / teacher
                probabilities).
        """
        reduction = reduction_override or self.reduction
        if cls_score.ndim > 2:
            # dense scores (B, C, H, W) -> rows (B·H·W, C)
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
        if cls_score.shape[0] == 0 and reduction == 'mean' \
                and avg_factor is None:
            raise ValueError(
                f'cls_score is empty (shape {tuple(cls_score.shape)}): the '
                "mean loss of an empty batch is undefined; expected at least "
                "one sample (or pass avg_factor, or reduction 'sum')")
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
        rows = slice(None) if valid is None else valid
        log_prior = self.log_prior(cls_score[rows], target[rows],
                                   teacher_probs)
        focal = self.focal_gamma if self.supervision == 'focal' else 0.0
        if self.constraints == 'ab':
            loss = self._loss_ab(similarity, target, log_prior, valid, focal)
        else:
            if log_prior is not None and log_prior.ndim == 2 \
                    and valid is not None:
                full = similarity.new_zeros(similarity.shape)
                full[valid] = log_prior.to(full.dtype)
                log_prior = full
            loss = prior_shifted_cross_entropy(
                similarity, target, log_prior, epsilon=self.epsilon,
                focal_gamma=focal,
                class_weights=self.class_weights(num_classes))
        if valid is not None:
            loss = torch.where(valid, loss, torch.zeros_like(loss))
            if avg_factor is None and reduction == 'mean':
                avg_factor = valid.sum().clamp_min(1).item()
        loss = weight_reduce_loss(loss, weight, reduction, avg_factor)
        # one scalar check (one device sync); diagnose only on failure
        if not torch.isfinite(loss if loss.ndim == 0 else loss.sum()):
            raise_if_non_finite(
                loss, 'REOTLoss', NON_FINITE_CAUSE, cls_score=cls_score,
                weight=weight, teacher_probs=teacher_probs)
        return loss if self.loss_weight == 1.0 else self.loss_weight * loss

    # ------------------------------------------------------------- U(a, b)
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
            ratio = self.log_class_ratio(num_classes).to(torch.float64).exp()
            return ratio / ratio.sum()
        mass = priors.batch_label_ratio(target, num_classes).to(torch.float64)
        return mass / mass.sum()

    def _loss_ab(self, similarity, target, log_prior, valid, focal):
        """Per-sample losses under U(a, b) over the valid rows (zeros
        elsewhere): the U(a) loss with log Q + g (RE-OT Eq. 14)."""
        num_classes = similarity.shape[-1]
        rows_sim = similarity if valid is None else similarity[valid]
        rows_target = target if valid is None else target[valid]
        if rows_sim.shape[0] == 0:
            return similarity.new_zeros(similarity.shape[0])
        b = self.column_marginal_vector(rows_target, log_prior, num_classes)
        loss, result = inverse_reot_loss_ab(
            rows_sim, rows_target, b.to(rows_sim.device), log_prior,
            self.epsilon, focal, self.class_weights(num_classes),
            grad=self.sinkhorn_grad, max_iter=self.sinkhorn_max_iter,
            tol=self.sinkhorn_tol, warn=False, return_result=True)
        if not result.converged and not self._warned_sinkhorn:
            self._warned_sinkhorn = True
            warnings.warn(
                f'REOTLoss(constraints=\'ab\'): Sinkhorn did not reach '
                f'sinkhorn_tol={self.sinkhorn_tol:g} in {result.iterations} '
                f'iterations (marginal error '
                f'{float(result.marginal_error):.3g}); the loss uses that '
                'plan. Raise sinkhorn_max_iter or epsilon (warned once)',
                UserWarning, stacklevel=3)
        if valid is None:
            return loss
        full = loss.new_zeros(similarity.shape[0])
        return full.masked_scatter(valid, loss)

    def extra_repr(self) -> str:
        extra = '' if self.constraints == 'a' else (
            f', constraints=ab, column_marginal={self.column_marginal}')
        return (f'cost={self.cost}, epsilon={self.epsilon}, prior={self.prior}, '
                f'supervision={self.supervision}{extra}')
