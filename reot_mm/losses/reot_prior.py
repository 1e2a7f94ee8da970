"""Which r (and so which Q) an RE-OT loss uses: the ``prior`` option, resolved.

RE-OT's prior is Q = (1 - λ)·Uniform + λ·r (Shi et al., Relative Entropic
Optimal Transport: a (Prior-aware) Matching Perspective to (Unbalanced)
Classification, NeurIPS 2023, Eq. 15 / 33), with r one of Eq. 35-38 or a
frozen teacher's predictions. The formulas live in :mod:`reot_mm.losses.priors`;
this module only picks them for an option name and gathers the batch label
mass over ranks. :class:`REOTPriorModule` holds the options, so that
``REOTLoss`` (rows) and ``REOTPixelLoss`` (pixels) form their priors
identically.
"""
from typing import Optional, Sequence

import torch

from reot_mm import dist
from reot_mm.losses import priors
from reot_mm.losses.class_counts import ScheduledPriorModule
from reot_mm.losses.utils import check_choice

#: every ``prior`` option of the RE-OT losses
PRIORS = ('uniform', 'class_ratio', 'batch_ratio', 'interpolated',
          'sample_wise', 'teacher', 'ldam')
#: priors whose r is formed from the per-class training counts
CLASS_RATIO_PRIORS = ('class_ratio', 'interpolated', 'sample_wise')
#: r multiplied by the sample-wise prior (Eq. 38 uses the class ratio)
SAMPLE_WISE_BASES = ('class_ratio', 'interpolated')
#: the sample-wise mix: rows renormalised with 1/C per entry (paper-style,
#: default) or the authors' code, 1/(B·C) per entry and rows not renormalised
SAMPLE_WISE_FORMS = ('normalized', 'official')


def uses_batch_labels(prior: str, sample_wise_base: str = 'class_ratio'
                      ) -> bool:
    """Whether r depends on the labels of the (global) batch (Eq. 36/37)."""
    return prior in ('batch_ratio', 'interpolated') or (
        prior == 'sample_wise' and sample_wise_base == 'interpolated')


def log_teacher_ratio(teacher_probs: Optional[torch.Tensor],
                      scores: torch.Tensor) -> torch.Tensor:
    """log r_ij from a frozen teacher's class probabilities, (B, C).

    Args:
        teacher_probs: (B, C) non-negative teacher predictions (rows are
            renormalised); detached.
        scores: (B, C) the student's scores, for the shape check.

    Raises:
        ValueError: missing, or of another shape.
    """
    if teacher_probs is None:
        raise ValueError(
            "prior='teacher' needs teacher_probs (B, C) from a frozen "
            'teacher; pass them to the loss (the teacher-student wrapper '
            'does this)')
    if teacher_probs.shape != scores.shape:
        raise ValueError('teacher_probs must have the shape of the scores '
                         f'{tuple(scores.shape)}, got '
                         f'{tuple(teacher_probs.shape)}')
    # NaN probabilities are named by the loss's non-finite diagnosis
    probs = teacher_probs.detach().to(torch.float32)
    return probs.clamp_min(0).log() - probs.sum(-1, keepdim=True).log()


def log_batch_ratio_global(labels: torch.Tensor,
                           num_classes: int) -> torch.Tensor:
    """log r of Eq. 36 over the global batch (label mass summed over ranks).

    Args:
        labels: (N,) integer labels or (N, C) soft targets of this rank.
    """
    local = priors.batch_label_ratio(labels, num_classes)
    return priors.log_batch_ratio(dist.all_reduce_sum(local))


def log_prior_ratio(prior: str,
                    labels: torch.Tensor,
                    num_classes: int,
                    *,
                    log_class_ratio: Optional[torch.Tensor] = None,
                    scores: Optional[torch.Tensor] = None,
                    teacher_probs: Optional[torch.Tensor] = None,
                    interpolation_gamma: float = 0.74,
                    sample_wise_g: float = 1.0,
                    sample_wise_base: str = 'class_ratio',
                    sample_wise_form: str = 'normalized'
                    ) -> Optional[torch.Tensor]:
    """log r for ``prior``, (C,) class-wise or (B, C) per sample; None for
    ``'uniform'``.

    Args:
        prior: one of :data:`PRIORS` except ``'ldam'`` (a margin, not r).
        labels: labels of the rows (for Eq. 36 / 37), (N,) or (N, C) soft.
        num_classes: C.
        log_class_ratio: (C,) log(n_j / Σn) of the training counts (Eq. 35);
            needed by the count priors.
        scores: (B, C) rows for the sample-wise (Eq. 38) and teacher priors.
        teacher_probs: (B, C) for ``'teacher'``.
        interpolation_gamma: γ of Eq. 37 (the authors' ``lamb``).
        sample_wise_g, sample_wise_base, sample_wise_form: the sample-wise
            prior (see ``REOTLoss``).
    """
    if prior == 'uniform':
        return None
    if prior == 'teacher':
        return log_teacher_ratio(teacher_probs, scores)
    device = labels.device if scores is None else scores.device
    log_batch = None
    if uses_batch_labels(prior, sample_wise_base):
        log_batch = log_batch_ratio_global(labels, num_classes).to(device)
        if prior == 'batch_ratio':
            return log_batch
    log_r = log_class_ratio.to(device)
    if log_batch is not None:
        # Eq. 37, alone or as the base of the sample-wise prior
        log_r = priors.log_interpolated_ratio(log_r, log_batch,
                                              interpolation_gamma)
    if prior != 'sample_wise':
        return log_r
    if sample_wise_form == 'official':
        return priors.log_sample_wise_ratio_official(scores, log_r,
                                                     sample_wise_g)
    return priors.log_sample_wise_ratio(scores, log_r, sample_wise_g)


class REOTPriorModule(ScheduledPriorModule):
    """A loss whose log Q is RE-OT's scheduled prior (Eq. 15 with r of
    Eq. 35-38 or a teacher), formed from the ``prior`` option.

    Subclasses call :meth:`init_reot_prior` (after ``init_class_counts`` and
    ``init_prior_schedule``) with the ``prior`` choices they support, and
    :meth:`reot_log_prior` in forward.
    """

    def init_reot_prior(self, prior: str, choices: Sequence[str] = PRIORS,
                        interpolation_gamma: float = 0.74,
                        sample_wise_g: float = 1.0,
                        sample_wise_base: str = 'class_ratio',
                        sample_wise_form: str = 'normalized') -> None:
        """Validate and store the prior options (see ``REOTLoss``)."""
        name = type(self).__name__
        check_choice(f'{name}: prior', prior, tuple(choices))
        check_choice(f'{name}: sample_wise_base', sample_wise_base,
                     SAMPLE_WISE_BASES)
        check_choice(f'{name}: sample_wise_form', sample_wise_form,
                     SAMPLE_WISE_FORMS)
        if not 0.0 <= interpolation_gamma <= 1.0:
            raise ValueError('interpolation_gamma must be in [0, 1], got '
                             f'{interpolation_gamma}')
        if not 0.0 <= sample_wise_g <= 1.0:
            raise ValueError(
                f'sample_wise_g must be in [0, 1], got {sample_wise_g}')
        self.prior = prior
        self.interpolation_gamma = float(interpolation_gamma)
        self.sample_wise_g = float(sample_wise_g)
        self.sample_wise_base = sample_wise_base
        self.sample_wise_form = sample_wise_form

    @property
    def uses_batch_labels(self) -> bool:
        return uses_batch_labels(self.prior, self.sample_wise_base)

    def reot_log_prior(self, labels: torch.Tensor, num_classes: int,
                       scores: Optional[torch.Tensor] = None,
                       teacher_probs: Optional[torch.Tensor] = None
                       ) -> Optional[torch.Tensor]:
        """log Q = log[(1 - λ)·Uniform + λ·r]^power (Eq. 15), (C,) or (B, C);
        None when Q is uniform (``'uniform'`` or λ = 0).

        Args:
            labels: labels of the rows (Eq. 36/37 count them over ranks).
            num_classes: C.
            scores: (B, C) rows, for the sample-wise and teacher priors.
            teacher_probs: (B, C), for ``'teacher'``.
        """
        if self.prior == 'ldam':
            raise ValueError("prior='ldam' is a margin, not a ratio r: the "
                             'loss forms it (REOTLoss)')
        weight, power = self.prior_schedule
        if self.prior == 'uniform' or weight == 0.0:
            return None
        if self.prior in CLASS_RATIO_PRIORS:
            log_class = self.log_class_ratio(num_classes)
            if self.prior == 'class_ratio':
                # depends on counts and λ only: formed once per change
                return self.cached('log_q', lambda: priors.
                                   log_epoch_varying_prior(log_class, weight,
                                                           power))
        else:
            log_class = None
        log_r = log_prior_ratio(
            self.prior, labels, num_classes, log_class_ratio=log_class,
            scores=scores, teacher_probs=teacher_probs,
            interpolation_gamma=self.interpolation_gamma,
            sample_wise_g=self.sample_wise_g,
            sample_wise_base=self.sample_wise_base,
            sample_wise_form=self.sample_wise_form)
        return priors.log_epoch_varying_prior(log_r, weight, power)
