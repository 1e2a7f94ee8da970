"""Barycentric projections of a coupling (RE-OT Definition 1, Eq. 17-18).

Plain torch; imports only torch and ``reot_mm.ot.checks`` (layer 1).

For a coupling P (n x m) between points x_i (simplex a) and y_j (simplex b):

* Eq. 17: ``T(x_i) = (1 / a_i) Σ_j P_ij y_j`` maps each source point to the
  P-weighted mean of the targets. With P in U(a) (so P 1 = a), ``a_i`` is the
  row sum of P; in classification with y_j the one-hot labels, T(x_i) is the
  vector of predicted class probabilities of sample i.
* Eq. 18: ``T'(y_j) = Σ_i P_ij f_i / Σ_i P_ij`` maps each target (label) to
  the P-weighted mean of the source features f_i: the class barycenter in
  feature space, computed from the coupling instead of learnt.

Both accept a plan or a log-plan (``log=True``; computed by a softmax, so
log-plans with very negative entries are safe) and a leading batch dimension.
"""
import torch

from .checks import check_matrix

__all__ = ['barycentric_projection', 'label_barycenters']


def _check(plan, points, name, along, log):
    if not isinstance(plan, torch.Tensor) or plan.ndim not in (2, 3):
        raise ValueError(f'plan must be a torch.Tensor of shape (n, m) or '
                         f'(B, n, m), got '
                         f'{tuple(getattr(plan, "shape", ()))}')
    check_matrix(points, name, '(k, d) or (B, k, d)', (2, 3))
    size = plan.shape[along]
    if points.shape[-2] != size:
        which = 'm (plan columns)' if along == -1 else 'n (plan rows)'
        raise ValueError(f'{name} must have {size} points = {which} to match '
                         f'the plan {tuple(plan.shape)}, got '
                         f'{tuple(points.shape)}')
    if points.ndim == 3 and (plan.ndim != 3
                             or points.shape[0] != plan.shape[0]):
        raise ValueError(f'batched {name} {tuple(points.shape)} needs a plan '
                         f'with the same batch size, got '
                         f'{tuple(plan.shape)}')
    if torch.isnan(plan).any():
        raise ValueError('plan contains NaN')
    if log:
        if torch.isposinf(plan).any():
            raise ValueError('log-plan must be finite or -inf, got +inf')
    elif (plan < 0).any() or torch.isinf(plan).any():
        raise ValueError('plan must be finite and non-negative (pass '
                         'log=True for a log-plan)')


def _normalised(plan, dim, log):
    """Plan normalised to sum 1 along ``dim``; raises on zero-mass lines."""
    if log:
        mass = torch.logsumexp(plan, dim)
        empty = torch.isneginf(mass)
    else:
        mass = plan.sum(dim)
        empty = mass <= 0
    if empty.any():
        idx = empty.nonzero()[0].tolist()
        what = 'row' if dim == -1 else 'column'
        raise ValueError(f'plan {what} {idx[-1]} has zero mass; its '
                         f'barycentric projection is undefined')
    if log:
        return torch.softmax(plan, dim)
    return plan / mass.unsqueeze(dim)


def barycentric_projection(plan: torch.Tensor, y: torch.Tensor, *,
                           log: bool = False) -> torch.Tensor:
    """T(x_i) = (1 / a_i) Σ_j P_ij y_j (RE-OT Eq. 17).

    Args:
        plan: (n, m) or (B, n, m) coupling P (``log=False``) or log P
            (``log=True``). ``a_i`` is taken as the row sum Σ_j P_ij, which
            is a_i for any P in U(a) or U(a, b).
        y: (m, d) or (B, m, d) target locations y_j.
        log: whether ``plan`` is a log-plan.

    Returns:
        (n, d) or (B, n, d) images T(x_i), in the promoted dtype.

    Raises:
        ValueError: shape mismatch, negative/NaN plan, or a zero-mass row.
    """
    _check(plan, y, 'y', -1, log)
    dtype = torch.promote_types(plan.dtype, y.dtype)
    weights = _normalised(plan.to(dtype), -1, log)
    return torch.matmul(weights, y.to(dtype))


def label_barycenters(plan: torch.Tensor, features: torch.Tensor, *,
                      log: bool = False) -> torch.Tensor:
    """T'(y_j) = Σ_i P_ij f_i / Σ_i P_ij (RE-OT Eq. 18).

    With the U(a) plan of a classifier (``P_ij = a_i softmax_j(logits_i)``)
    and uniform a, this is the probability-weighted mean of the sample
    features for each class: the class barycenters of RE-OT Fig. 4.

    Args:
        plan: (n, m) or (B, n, m) coupling P (``log=False``) or log P
            (``log=True``), n samples by m labels.
        features: (n, d) or (B, n, d) source features f_i.
        log: whether ``plan`` is a log-plan.

    Returns:
        (m, d) or (B, m, d) label barycenters T'(y_j).

    Raises:
        ValueError: shape mismatch, negative/NaN plan, or a zero-mass column.
    """
    _check(plan, features, 'features', -2, log)
    dtype = torch.promote_types(plan.dtype, features.dtype)
    weights = _normalised(plan.to(dtype), -2, log)
    return torch.matmul(weights.transpose(-1, -2), features.to(dtype))
