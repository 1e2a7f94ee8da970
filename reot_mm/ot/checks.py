"""Input checks shared by the optimal-transport layer (``reot_mm.ot``).

Plain torch. Every public function of ``reot_mm.ot`` validates its arguments
with these, so a bad input gives the same clear ``ValueError`` (naming the
argument and the expected value) wherever it enters. The checks over
tensors are reductions (``amin``/``amax``/``sum``), so they do not allocate a
second tensor of the input's size.
"""
import math
from typing import Optional, Sequence

import torch

__all__ = [
    'check_positive', 'check_nonnegative', 'check_positive_int',
    'check_choice', 'check_iteration_args', 'check_matrix', 'check_cost',
    'check_log_prior', 'check_marginal', 'check_distribution',
    'check_histograms', 'check_weights', 'check_feasible'
]


# ------------------------------------------------------------- scalars
def _scalar(value, name: str, expected: str) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f'{name} must be a scalar, got a tensor of shape '
                             f'{tuple(value.shape)}')
        value = value.item()
    if isinstance(value, bool):
        raise ValueError(f'{name} must be {expected}, got {value!r}')
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f'{name} must be {expected}, got {value!r}') \
            from None


def check_positive(value, name: str = 'epsilon') -> float:
    """A positive finite number (a Python scalar or one-element tensor)."""
    value = _scalar(value, name, 'a positive finite number')
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f'{name} must be a positive finite number, got '
                         f'{value}')
    return value


def check_nonnegative(value, name: str, hint: str = '') -> float:
    """A finite number >= 0; ``hint`` is appended to the error message."""
    expected = 'a finite number >= 0' + (f' ({hint})' if hint else '')
    value = _scalar(value, name, expected)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f'{name} must be {expected}, got {value}')
    return value


def check_positive_int(value, name: str, allow_none: bool = False):
    """An integer >= 1 (or None when ``allow_none``); returns an ``int``."""
    if value is None and allow_none:
        return None
    expected = 'a positive integer' + (' or None' if allow_none else '')
    if isinstance(value, bool):
        raise ValueError(f'{name} must be {expected}, got {value!r}')
    try:
        as_int = int(value)
    except (TypeError, ValueError):
        raise ValueError(f'{name} must be {expected}, got {value!r}') \
            from None
    if as_int != value or as_int < 1:
        raise ValueError(f'{name} must be {expected}, got {value!r}')
    return as_int


def check_choice(value, name: str, choices: Sequence):
    """One of ``choices``."""
    if value not in tuple(choices):
        raise ValueError(f'{name} must be one of {tuple(choices)}, got '
                         f'{value!r}')
    return value


def check_iteration_args(max_iter, check_every, tol) -> tuple:
    """The stopping arguments of the iterative solvers.

    Returns ``(max_iter, check_every, tol)`` as ``(int, int, float)``.
    """
    if int(max_iter) < 1:
        raise ValueError(f'max_iter must be >= 1, got {max_iter}')
    if int(check_every) < 1:
        raise ValueError(f'check_every must be >= 1, got {check_every}')
    if not (tol > 0 and math.isfinite(tol)):
        raise ValueError(f'tol must be a positive finite number, got {tol}')
    return int(max_iter), int(check_every), float(tol)


# ------------------------------------------------------------- tensors
def check_matrix(x, name: str, shape_text: str = '(N, K)',
                 ndims: Sequence[int] = (2, )) -> torch.Tensor:
    """A non-empty floating tensor with ``ndim`` in ``ndims``."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f'{name} must be a torch.Tensor of shape '
                         f'{shape_text}, got {type(x).__name__}')
    if x.ndim not in tuple(ndims) or x.numel() == 0:
        raise ValueError(f'{name} must have shape {shape_text} with every '
                         f'size >= 1, got {tuple(x.shape)}')
    if not x.is_floating_point():
        raise ValueError(f'{name} must be a floating tensor, got {x.dtype}')
    return x


def check_cost(cost, ndims: Sequence[int] = (2, 3),
               name: str = 'cost') -> torch.Tensor:
    """A cost matrix: finite or ``+inf`` (forbidden transport).

    NaN and ``-inf`` are rejected. ``ndims=(2, 3)`` accepts (n, m) and
    (B, n, m).
    """
    shape_text = ' or '.join({2: '(n, m)', 3: '(B, n, m)'}[d] for d in ndims)
    cost = check_matrix(cost, name, shape_text, ndims)
    with torch.no_grad():
        # one reduction, no n x m temporary: amin is NaN if any entry is NaN
        lowest = cost.amin()
    if torch.isnan(lowest):
        raise ValueError(f'{name} contains NaN')
    if torch.isneginf(lowest):
        raise ValueError(f'{name} contains -inf; expected finite values or '
                         f'+inf for forbidden transport')
    return cost


def check_log_prior(log_prior, shape, device=None,
                    name: str = 'log_prior') -> Optional[torch.Tensor]:
    """log Q broadcastable to ``shape``: finite or ``-inf`` (Q_ij = 0).

    None (Q = 1) is returned unchanged.
    """
    if log_prior is None:
        return None
    log_prior = torch.as_tensor(log_prior, device=device)
    shape = tuple(shape)
    try:
        ok = tuple(torch.broadcast_shapes(log_prior.shape, shape)) == shape
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(f'{name} must broadcast to the cost shape {shape}, '
                         f'got {tuple(log_prior.shape)}')
    with torch.no_grad():
        highest = log_prior.amax()  # NaN if any entry is NaN
    if torch.isnan(highest) or torch.isposinf(highest):
        raise ValueError(f'{name} must be finite or -inf (Q_ij = 0); got NaN '
                         f'or +inf')
    return log_prior


def _check_masses(x: torch.Tensor, name: str, allow_zero: bool = True):
    """Finite, non-negative (positive unless ``allow_zero``) entries."""
    with torch.no_grad():
        if not torch.isfinite(x).all():
            raise ValueError(f'{name} must be finite, got non-finite entries')
        if (x < 0).any() or (not allow_zero and (x <= 0).any()):
            bound = 'non-negative' if allow_zero else 'positive'
            raise ValueError(f'{name} must be {bound}, got minimum '
                             f'{x.min().item():.3g}')


def check_marginal(x, name: str, batch: int, size: int, batched: bool,
                   dtype, device) -> torch.Tensor:
    """A marginal of an OT problem as a (batch, size) tensor in ``dtype``.

    Non-negative with positive total mass; any total mass (the solver checks
    that a and b agree). None gives the uniform ``1 / size``.
    """
    if x is None:
        return torch.full((batch, size), 1.0 / size, dtype=dtype,
                          device=device)
    x = torch.as_tensor(x, device=device)
    expected = f'({size},) or ({batch}, {size})' if batched else f'({size},)'
    if x.ndim == 1 and x.shape[0] == size:
        x = x.unsqueeze(0).expand(batch, size)
    elif not (batched and x.ndim == 2 and tuple(x.shape) == (batch, size)):
        raise ValueError(f'{name} must have shape {expected} to match the '
                         f'cost, got {tuple(x.shape)}')
    x = x.to(dtype)
    _check_masses(x, name)
    with torch.no_grad():
        if (x.sum(-1) <= 0).any():
            raise ValueError(f'{name} must have positive total mass, got a '
                             'marginal summing to 0')
    return x


def check_distribution(p, name: str, size: int, dtype, device,
                       allow_zero: bool = True,
                       tol: float = 1e-4) -> torch.Tensor:
    """A (size,) class distribution: finite, >= 0, summing to 1 (``tol``).

    Returned renormalised to sum exactly 1 in ``dtype``.
    """
    p = torch.as_tensor(p, device=device)
    if p.ndim != 1 or p.shape[0] != size:
        raise ValueError(f'{name} must have shape ({size},) to match the '
                         f'number of classes, got {tuple(p.shape)}')
    p = p.to(dtype)
    _check_masses(p, name, allow_zero)
    total = p.sum().item()
    if abs(total - 1.0) > tol:
        raise ValueError(f'{name} must sum to 1 (tolerance {tol:g}), got '
                         f'{total:.8g}')
    return p / p.sum()


def check_histograms(histograms, name: str = 'histograms',
                     tol: float = 1e-6) -> torch.Tensor:
    """(S, m) histograms, each finite, non-negative and summing to 1."""
    histograms = check_matrix(histograms, name, '(S, m)')
    _check_masses(histograms, name)
    mass = histograms.sum(-1)
    if ((mass - 1).abs() > tol).any():
        k = int((mass - 1).abs().argmax())
        raise ValueError(f'{name} must each sum to 1 (tolerance {tol:g}), '
                         f'got sum {mass[k].item():.8g} for histogram {k}')
    return histograms


def check_weights(weights, name: str, size: int, dtype,
                  device) -> torch.Tensor:
    """(size,) non-negative weights with a positive sum, normalised to 1."""
    lam = torch.as_tensor(weights, device=device).to(dtype)
    if lam.shape != (size, ):
        raise ValueError(f'{name} must have shape ({size},), got '
                         f'{tuple(lam.shape)}')
    if not torch.isfinite(lam).all() or (lam < 0).any() or lam.sum() <= 0:
        raise ValueError(f'{name} must be finite, non-negative and have a '
                         f'positive sum, got {lam.tolist()}')
    return lam / lam.sum()


def check_feasible(lse: torch.Tensor, marginal: torch.Tensor, what: str):
    """Each row (column) with positive marginal has some kernel mass.

    ``lse`` is the (B, n) row (or (B, m) column) logsumexp or maximum of
    log K; ``-inf`` there means K is entirely zero on that line.
    """
    bad = torch.isneginf(lse) & (marginal > 0)
    if bad.any():
        idx = bad.nonzero()[0].tolist()
        raise ValueError(
            f'infeasible problem: the kernel K = Q * exp(-C/epsilon) is '
            f'entirely zero in {what} {idx[-1]} (batch {idx[0]}) whose '
            f'marginal is positive; check log_prior (-inf) and cost (+inf)')
