"""The test label distribution b of the Sinkhorn prediction, never from labels.

Plain torch (layer 1): imports only torch and :mod:`reot_mm.ot`.

* :func:`parse_target_prior` — a user option: ``'uniform'``, ``'estimated'``,
  C probabilities or a file holding them.
* :func:`resolve_target_prior` — the option turned into b for a set of test
  scores; ``'estimated'`` runs :func:`estimate_test_prior_em`, the EM (and
  MAP-EM) of Saerens, Latinne and Decaestecker, Adjusting the Outputs of a
  Classifier to New a Priori Probabilities: A Simple Procedure, Neural
  Computation 14(1), 2002, Eq. 2.9-2.10. RE-OT (Shi et al., NeurIPS 2023,
  §5) names the unknown test prior as the limit of its Sinkhorn inference;
  its authors' code took b from the test labels, which this module never
  does.
"""
import os.path as osp
import warnings
from typing import Callable, Optional

import torch

from .checks import (check_choice, check_distribution, check_matrix,
                     check_nonnegative, check_positive_int, check_weights)

__all__ = [
    'TARGET_PRIOR_OPTIONS', 'CALIBRATION_PRIORS', 'check_em_smoothing',
    'estimate_test_prior_em', 'parse_target_prior', 'resolve_target_prior',
    'train_prior_from_counts'
]

TARGET_PRIOR_OPTIONS = ('uniform', 'estimated')
CALIBRATION_PRIORS = ('train', 'uniform')


def check_em_smoothing(smoothing, name: str = 'smoothing') -> float:
    """The Dirichlet pseudo-count α of :func:`estimate_test_prior_em`."""
    return check_nonnegative(smoothing, name, 'a Dirichlet pseudo-count per '
                             'class; 0 = maximum likelihood')


def estimate_test_prior_em(probs: torch.Tensor,
                           train_prior,
                           max_iter: int = 1000,
                           tol: float = 1e-8,
                           smoothing: float = 0.0) -> torch.Tensor:
    """EM estimate of the test label distribution (Saerens et al. 2002).

    With calibrated posteriors p_tr(k|x_n) under the training prior π_tr, the
    test prior π is the fixed point of::

        p(k|x_n) ∝ p_tr(k|x_n) π_k / π_tr,k          (E step, Saerens Eq. 2.9)
        π_k = 1/N Σ_n p(k|x_n)                          (M step, Eq. 2.10)

    starting from π = π_tr; this is maximum likelihood for π. With
    ``smoothing`` α > 0 the M step is the MAP one under a symmetric
    Dirichlet(1 + α) prior on π, π_k = (Σ_n p(k|x_n) + α) / (N + K·α), which
    keeps every class's mass above α / (N + K·α): on a small test set ML-EM
    can drive a class to π_k ≈ 0, after which the Sinkhorn prediction never
    predicts it. α → ∞ gives the uniform prior.

    Args:
        probs: (N, K) posteriors p_tr(k|x), rows sum to 1.
        train_prior: (K,) distribution π_tr the posteriors are calibrated
            for (positive).
        max_iter: maximum EM iterations.
        tol: stop when the L1 change of π is below ``tol``.
        smoothing: α >= 0, Dirichlet pseudo-count per class (0: ML).

    Returns:
        (K,) estimated test prior, sums to 1.
    """
    probs = check_matrix(probs, 'probs')
    n, k = probs.shape
    dtype = torch.float64 if probs.dtype == torch.float64 else torch.float32
    probs = probs.detach().to(dtype)
    if not torch.isfinite(probs).all() or (probs < 0).any():
        raise ValueError('probs must be finite and non-negative')
    rows = probs.sum(1)
    if ((rows - 1).abs() > 1e-3).any():
        raise ValueError(f'probs rows must sum to 1 (tolerance 1e-3), got a '
                         f'row summing to {rows[(rows - 1).abs().argmax()]:.6g}')
    pi_tr = check_distribution(train_prior, 'train_prior', k, dtype,
                               probs.device, allow_zero=False)
    max_iter = check_positive_int(max_iter, 'max_iter')
    smoothing = check_em_smoothing(smoothing)
    pi = pi_tr.clone()
    for _ in range(max_iter):
        post = probs * (pi / pi_tr)
        post = post / post.sum(1, keepdim=True).clamp_min(1e-300)
        new = (post.sum(0) + smoothing) / (n + k * smoothing)
        done = (new - pi).abs().sum().item() < tol
        pi = new
        if done:
            break
    return pi / pi.sum()


def class_distribution(values, num_classes: Optional[int],
                        name: str) -> torch.Tensor:
    """A user-given class distribution as a float64 (C,) CPU tensor."""
    try:
        p = torch.as_tensor(values, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f'{name} must be a list of C class probabilities, '
                         f'got {values!r}') from None
    if p.ndim != 1 or p.numel() == 0:
        raise ValueError(f'{name} must be a 1-D list of class probabilities, '
                         f'got shape {tuple(p.shape)}')
    if num_classes is not None and p.numel() != num_classes:
        raise ValueError(f'{name} has {p.numel()} entries but there are '
                         f'{num_classes} classes; expected shape '
                         f'({num_classes},): one probability per class')
    return check_distribution(p, name, p.numel(), torch.float64, 'cpu')


def parse_target_prior(spec, num_classes: Optional[int] = None,
                       name: str = 'target_prior',
                       read_file: Optional[Callable] = None):
    """Read a test-prior option: ``'uniform'``, ``'estimated'``, values or a file.

    Args:
        spec: None or ``'uniform'`` (b = 1/C); ``'estimated'`` (EM on the
            predictions, see :func:`resolve_target_prior`); a list/tuple/
            tensor of C probabilities; or the path of a file holding them
            (read by ``read_file``), which must sum to 1.
        num_classes: expected C, checked when given.
        name: argument name used in error messages.
        read_file: ``read_file(path, name) -> list of numbers``, e.g.
            :func:`reot_mm.counts_file.load_counts_file` (JSON list,
            ``{"class_counts": [...]}`` or text numbers); None: files are
            not accepted.

    Returns:
        ``'uniform'``, ``'estimated'`` or a float64 (C,) tensor summing to 1.
    """
    if spec is None or (isinstance(spec, str) and spec == 'uniform'):
        return 'uniform'
    if isinstance(spec, str):
        if spec == 'estimated':
            return 'estimated'
        if read_file is None or not osp.isfile(spec):
            raise ValueError(
                f'{name} must be one of {TARGET_PRIOR_OPTIONS}, a list of C '
                f'class probabilities, or a file holding them; got {spec!r}, '
                'which is neither an option nor an existing file')
        return class_distribution(read_file(spec, name), num_classes,
                                   f'{name} ({spec})')
    return class_distribution(spec, num_classes, name)


def train_prior_from_counts(train_counts, num_classes: int,
                            name: str = 'train class counts') -> torch.Tensor:
    """(C,) float64 training label distribution from per-class counts.

    A class without training samples gets a pseudo-count of 1 (with a
    warning): the EM divides by its prior.
    """
    counts = torch.as_tensor(train_counts, dtype=torch.float64).detach().cpu()
    check_weights(counts, name, num_classes, torch.float64, 'cpu')
    zero = counts <= 0
    if zero.any():
        warnings.warn(f'{name}: classes {zero.nonzero().flatten().tolist()[:20]}'
                      ' have zero training samples; their prior uses a '
                      'pseudo-count of 1 instead of 0', stacklevel=2)
        counts = torch.where(zero, torch.ones_like(counts), counts)
    return counts / counts.sum()


def resolve_target_prior(spec, scores: torch.Tensor,
                         train_counts=None,
                         em_iter: int = 1000,
                         name: str = 'target_prior',
                         calibration_prior: str = 'train',
                         em_smoothing: float = 0.0,
                         read_file: Optional[Callable] = None
                         ) -> Optional[torch.Tensor]:
    """The column marginal b of :func:`sinkhorn_prediction`, never from labels.

    ``'estimated'`` runs :func:`estimate_test_prior_em`, which re-weights the
    model's posteriors softmax(scores) from the prior they are calibrated for
    to the estimated test prior. That prior depends on how the model was
    trained (``calibration_prior``): plain cross-entropy gives posteriors
    under the training label distribution (``'train'``, Saerens' setting); a
    prior-corrected loss — Balanced Softmax, RE-OT with λ = 1, logit
    adjustment — trains softmax(s + log r) on the training labels, so the raw
    softmax(s) targets a balanced prior (``'uniform'``). Using ``'train'`` for
    such a model counts the long-tail correction twice and skews the
    estimate towards the tail.

    Args:
        spec: output of :func:`parse_target_prior` (or its input).
        scores: (N, C) logits or log-probabilities of the test samples.
        train_counts: (C,) training counts, needed for ``'estimated'`` with
            ``calibration_prior='train'``.
        em_iter: EM iterations.
        name: argument name used in error messages.
        calibration_prior: ``'train'`` (default) or ``'uniform'``, see above.
        em_smoothing: Dirichlet pseudo-count α per class of the M step (0:
            maximum likelihood).
        read_file: passed to :func:`parse_target_prior`.

    Returns:
        None for uniform, else a (C,) float64 tensor on the scores' device.
    """
    num_classes = scores.shape[-1]
    spec = parse_target_prior(spec, num_classes, name, read_file)
    check_choice(calibration_prior, 'calibration_prior', CALIBRATION_PRIORS)
    if isinstance(spec, str) and spec == 'uniform':
        return None
    if not isinstance(spec, str):
        return spec.to(scores.device)
    # 'estimated'
    if calibration_prior == 'uniform':
        score_prior = torch.full((num_classes, ), 1.0 / num_classes,
                                 dtype=torch.float64)
    elif train_counts is None:
        raise ValueError(
            f"{name}='estimated' needs the training class counts (the EM "
            're-weights posteriors made under the training prior): add '
            'ClassStatisticsHook or give the counts explicitly, or set '
            "calibration_prior='uniform' for a model trained with a "
            'prior-corrected loss')
    else:
        score_prior = train_prior_from_counts(train_counts, num_classes)
    probs = torch.softmax(scores.detach().to(torch.float64), dim=1)
    return estimate_test_prior_em(probs, score_prior.to(probs.device),
                                  max_iter=em_iter, smoothing=em_smoothing)
