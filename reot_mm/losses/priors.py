"""Priors Q for the inverse RE-OT loss and the epoch-varying schedule λ(t).

Pure tensor functions (no OpenMMLab import). Everything is in the log domain:
a prior enters the loss only as ``log Q`` added to the scores, and under the
relaxed constraint set U(a) any per-row scaling of Q cancels (Eq. 16), so
class-wise priors are returned as normalised log-ratios of shape (C,) or (B, C).

Equations of Shi et al., Relative Entropic Optimal Transport: a (Prior-aware)
Matching Perspective to (Unbalanced) Classification, NeurIPS 2023:

* Eq. 15 / 33: Q = (1 - λ(t))·Uniform + λ(t)·r
* Eq. 34: λ(t) piecewise linear in the epoch t with milestones t1 < t2 (< t3)
* Eq. 35: r_j = n_j / Σ_k n_k (class ratio; Balanced Softmax)
* Eq. 36: r_j = n_j^b / n (batch label ratio)
* Eq. 37: r = γ·(class ratio) + (1 - γ)·(batch ratio)
* Eq. 38: r_ij = softmax(l_i)_j · n_j / Σ_k n_k (sample-wise)
* Table 1, LDAM row: Q_ij = exp(-1[j = y_i]·m_j) with m_j ∝ n_j^(-γ)
* Table 1, class-balanced row: P̃_ij = y_ij·(1 - β)/(1 - β^(n_j))

Functions of per-class counts take the raw counts (what the modules store)
and replace zeros by a pseudo-count ``min_count`` themselves: a class without
training samples would otherwise get log r = -inf (an unreachable logit), an
infinite LDAM margin or an infinite class-balanced weight.
"""
import math
import warnings
from typing import Optional, Sequence, Tuple

import torch

# validated where counts enter; importers use priors.validate_class_counts
from reot_mm.losses.utils import validate_class_counts  # noqa: F401


def smooth_zero_counts(counts: torch.Tensor, min_count: float = 1.0,
                       name: str = 'class_counts') -> torch.Tensor:
    """Replace zero counts by ``min_count`` and warn with the affected classes.

    A class without training samples would otherwise get log r = -inf and
    make its logit unreachable (or NaN under some reductions).
    """
    zero = counts <= 0
    if zero.any():
        classes = torch.nonzero(zero).flatten().tolist()
        shown = classes[:20]
        more = '' if len(classes) <= 20 else f' (+{len(classes) - 20} more)'
        warnings.warn(
            f'{name}: classes {shown}{more} have zero training samples; '
            f'their prior uses a pseudo-count of {min_count} instead of 0',
            stacklevel=2)
        counts = torch.where(zero, torch.full_like(counts, min_count), counts)
    return counts


def _smoothed(class_counts: torch.Tensor, min_count: float) -> torch.Tensor:
    """float64 counts with zeros replaced by ``min_count`` (> 0)."""
    if not min_count > 0:
        raise ValueError(f'min_count must be > 0, got {min_count}')
    counts = class_counts.to(torch.float64)
    return torch.where(counts > 0, counts, torch.full_like(counts, min_count))


def log_class_ratio(class_counts: torch.Tensor,
                    min_count: float = 1.0) -> torch.Tensor:
    """log r_j = log(n_j / Σ_k n_k) (RE-OT Eq. 35), shape (C,), float32.

    Zero counts count as ``min_count``.
    """
    counts = _smoothed(class_counts, min_count)
    return (counts.log() - counts.sum().log()).to(torch.float32)


def batch_label_ratio(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-class label mass of the local batch, shape (C,) (un-normalised).

    Args:
        target: (B,) integer labels or (B, C) soft targets.
    """
    if target.ndim == 1:
        return torch.bincount(target, minlength=num_classes).to(torch.float32)
    return target.detach().to(torch.float32).sum(0)


def log_batch_ratio(global_label_mass: torch.Tensor) -> torch.Tensor:
    """log r_j = log(n_j^b / n) (RE-OT Eq. 36), shape (C,).

    ``global_label_mass`` must already be summed over ranks (the whole global
    batch). Classes absent from the batch get -inf: they receive no prior mass,
    exactly as in Eq. 36.
    """
    mass = global_label_mass.to(torch.float32)
    return mass.log() - mass.sum().log()


def log_interpolated_ratio(log_class: torch.Tensor, log_batch: torch.Tensor,
                           gamma: float) -> torch.Tensor:
    """log of r = γ·class ratio + (1 - γ)·batch ratio (RE-OT Eq. 37).

    The authors' code calls γ ``lamb`` (0.74; 0.7593 for CIFAR-10).
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f'interpolation_gamma must be in [0, 1], got {gamma}')
    return _log_mix(log_batch, log_class, gamma)


def log_sample_wise_ratio(logits: torch.Tensor, log_r: torch.Tensor,
                          g: float = 1.0) -> torch.Tensor:
    """Sample-wise prior, paper-style form (the default), shape (B, C)::

        R_ij ∝ r_j·[(1 - g)/C + g·softmax(l_i)_j],   rows normalised to 1

    With g = 1 and r the class ratio this is RE-OT Eq. 38; 0 ≤ g < 1 mixes in
    the class-wise r. The softmax is detached (the prior carries no gradient)
    and rows are normalised so the result mixes with the uniform prior on the
    same scale. :func:`log_sample_wise_ratio_official` is the authors' form.
    """
    _check_sample_wise_g(g)
    log_soft = torch.log_softmax(logits.detach().to(torch.float32), dim=-1)
    num_classes = log_soft.shape[-1]
    log_inner = _log_mix(
        torch.full_like(log_soft, -math.log(num_classes)), log_soft, g)
    log_joint = log_r.to(torch.float32) + log_inner
    return log_joint - torch.logsumexp(log_joint, dim=-1, keepdim=True)


def log_sample_wise_ratio_official(logits: torch.Tensor, log_r: torch.Tensor,
                                   g: float = 1.0,
                                   batch_size: Optional[int] = None
                                   ) -> torch.Tensor:
    """Sample-wise prior as the authors' code forms it (their ``gama`` = g)::

        R_ij = r_j·[(1 - g)·U + g·softmax(l_i)_j],   U = 1/(B·C) per entry

    with the softmax detached and rows NOT renormalised, shape (B, C). For
    0 < g < 1 the mix therefore depends on the batch size B: it equals the
    paper-style :func:`log_sample_wise_ratio` with
    g' = g·B/(g·B + 1 - g) up to a per-row constant (which cancels under
    U(a), Eq. 16, but not where Q is mixed with the uniform prior).

    Args:
        logits: (B, C) scores of the batch (detached here).
        log_r: (C,) or (B, C) log r.
        g: weight of the softmax term in [0, 1].
        batch_size: B of U; defaults to the number of rows (pass the global
            batch size when the rows are one rank's share of it).
    """
    _check_sample_wise_g(g)
    log_soft = torch.log_softmax(logits.detach().to(torch.float32), dim=-1)
    num_classes = log_soft.shape[-1]
    batch = log_soft.shape[0] if batch_size is None else int(batch_size)
    if batch < 1:
        raise ValueError(f'batch_size must be >= 1, got {batch_size}')
    log_uniform = torch.full_like(log_soft,
                                  -math.log(batch) - math.log(num_classes))
    return log_r.to(torch.float32) + _log_mix(log_uniform, log_soft, g)


def _check_sample_wise_g(g: float) -> None:
    if not 0.0 <= g <= 1.0:
        raise ValueError(f'sample_wise_g must be in [0, 1], got {g}')


def log_epoch_varying_prior(log_r: torch.Tensor, prior_weight: float,
                            prior_power: float = 1.0) -> torch.Tensor:
    """log Q with Q = [(1 - λ)·Uniform + λ·r]^power (RE-OT Eq. 15 / 33).

    Args:
        log_r: (C,) or (B, C) log-ratio, rows summing to one in linear space
            (entries may be -inf).
        prior_weight: λ in [0, 1].
        prior_power: element-wise exponent applied to Q; 1 in the paper, 1.03
            after t3 in the authors' code.

    Returns:
        Tensor of the shape of ``log_r``.
    """
    if prior_weight >= 1.0:
        log_q = log_r
    else:
        num_classes = log_r.shape[-1]
        log_uniform = torch.full_like(log_r, -math.log(num_classes))
        log_q = _log_mix(log_uniform, log_r, prior_weight)
    return log_q if prior_power == 1.0 else prior_power * log_q


def _log_mix(log_a: torch.Tensor, log_b: torch.Tensor,
             weight: float) -> torch.Tensor:
    """log((1 - w)·a + w·b) computed stably from log a and log b."""
    if weight <= 0.0:
        return log_a.clone()
    if weight >= 1.0:
        return log_b.clone()
    return torch.logaddexp(log_a + math.log1p(-weight),
                           log_b + math.log(weight))


def ldam_margins(class_counts: torch.Tensor, max_margin: float = 0.5,
                 power: float = 0.25, min_count: float = 1.0) -> torch.Tensor:
    """LDAM margins m_j = max_margin·(n_j^(-power) / max_k n_k^(-power)), (C,).

    RE-OT Table 1, LDAM row (Cao et al., Learning Imbalanced Datasets with
    Label-Distribution-Aware Margin Loss, NeurIPS 2019, use power 1/4 and a
    largest margin of 0.5). Zero counts count as ``min_count``.
    """
    raw = _smoothed(class_counts, min_count).pow(-power)
    return (raw * (max_margin / raw.max())).to(torch.float32)


def class_balanced_weights(class_counts: torch.Tensor, beta: float = 0.9999,
                           normalize: bool = True,
                           min_count: float = 1.0) -> torch.Tensor:
    """Class-balanced weights w_j = (1 - β)/(1 - β^(n_j)), (C,).

    RE-OT Table 1, class-balanced row (Cui et al., Class-Balanced Loss Based
    on Effective Number of Samples, CVPR 2019). With ``normalize`` the weights
    are rescaled to sum to C, as in the original implementation, so the loss
    scale matches plain CE on average. Zero counts count as ``min_count``.
    """
    if not 0.0 <= beta < 1.0:
        raise ValueError(f'cb_beta must be in [0, 1), got {beta}')
    counts = _smoothed(class_counts, min_count)
    # 1 - β^n computed as -expm1(n·log β) keeps precision for β close to 1.
    if beta == 0.0:
        weights = torch.ones_like(counts)
    else:
        weights = (1.0 - beta) / (-torch.expm1(counts * math.log(beta)))
    if normalize:
        weights = weights * (counts.numel() / weights.sum())
    return weights.to(torch.float32)


SCHEDULE_MODES = ('paper', 'official')


def resolve_milestones(milestones: Sequence[float], total: int,
                       on_unordered: str = 'error') -> Tuple[float, float, float]:
    """Turn (t1, t2[, t3]) into absolute positions on a run of ``total`` steps.

    Values in (0, 1] written as floats are fractions of the run; everything
    else is an absolute (1-based) epoch or iteration. A missing t3 means "never"
    (no final power).

    Args:
        milestones: (t1, t2) or (t1, t2, t3).
        total: number of epochs (epoch-based loop) or iterations.
        on_unordered: what to do when t2 < t1 — ``'error'`` (default) or
            ``'warn'``, which follows the authors' code: the ramp is empty and
            Q switches to r right after t1 (their CIFAR-10 config has
            t1/t2/t3 = 500/462/650).
    """
    if len(milestones) not in (2, 3):
        raise ValueError('milestones must be (t1, t2) or (t1, t2, t3), got '
                         f'{tuple(milestones)}')
    if on_unordered not in ('error', 'warn'):
        raise ValueError(
            f"on_unordered must be 'error' or 'warn', got {on_unordered!r}")
    resolved = []
    for value in milestones:
        if isinstance(value, float) and 0.0 < value <= 1.0:
            value = value * total
        if value < 0:
            raise ValueError(f'milestones must be non-negative, got '
                             f'{tuple(milestones)}')
        resolved.append(float(value))
    if len(resolved) == 2:
        resolved.append(math.inf)
    t1, t2, t3 = resolved
    if t2 < t1:
        message = (f'milestones t2={t2:g} < t1={t1:g} (given {tuple(milestones)}); '
                   'expected t1 <= t2 <= t3')
        if on_unordered == 'error':
            raise ValueError(message + ". Pass on_unordered='warn' to follow "
                             "the authors' code (a hard switch after t1).")
        warnings.warn(message + '; treating it as a hard switch to r after t1',
                      stacklevel=2)
        t2 = t1
    if t3 < t2:
        raise ValueError(f'milestones t3={t3:g} < t2={t2:g}; expected '
                         't1 <= t2 <= t3')
    return t1, t2, t3


def prior_schedule(t: float, t1: float, t2: float, t3: float = math.inf,
                   mode: str = 'paper', num_classes: Optional[int] = None,
                   final_power: float = 1.0) -> Tuple[float, float]:
    """λ(t) and the prior exponent at (1-based) epoch or iteration ``t``.

    ``'paper'`` (RE-OT Eq. 34, default): λ = 0 for t ≤ t1, (t - t1)/(t2 - t1)
    for t1 < t < t2, 1 for t ≥ t2.

    ``'official'`` (the authors' code): for t1 < t ≤ t2 it mixes
    (t2 - t)·U + (t - t1)·R with U = 1 per entry, i.e. an effective
    λ = (t - t1)/((t - t1) + C·(t2 - t)) — nearly a hard switch at t2.

    In both modes Q is raised to ``final_power`` for t > t3 (the code uses
    1.03; the paper has no such stage, so the default is 1).

    Returns:
        (λ, power).
    """
    if mode not in SCHEDULE_MODES:
        raise ValueError(f'mode must be one of {SCHEDULE_MODES}, got {mode!r}')
    if t <= t1:
        weight = 0.0
    elif t >= t2:
        weight = 1.0
    elif mode == 'paper':
        weight = (t - t1) / (t2 - t1)
    else:
        if num_classes is None:
            raise ValueError("mode='official' needs num_classes")
        weight = (t - t1) / ((t - t1) + num_classes * (t2 - t))
    power = final_power if t > t3 else 1.0
    return float(weight), float(power)
