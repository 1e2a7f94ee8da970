"""Finite-value guards of the contrastive losses (BCL, GML, RE-OT contrastive).

* :func:`raise_if_non_finite` turns a NaN / inf loss into an error that names
  the input at fault. The losses check their result once (one device sync on
  the loss, none on the inputs while all is well) and only then look for the
  cause, so a bad batch stops training with the argument's name instead of a
  ``nan`` in the log.
* :func:`normalize_rows` is ``F.normalize`` for rows of any finite magnitude:
  the plain one squares the entries, so in float32 rows above ~1e19 become
  zero vectors (the norm overflows), and rows whose norm is below its eps
  (1e-12) are not normalised at all (or lose their direction when the norm
  underflows).
"""
from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ['normalize_rows', 'raise_if_non_finite']


def normalize_rows(rows: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """L2-normalise along ``dim``, exact for any finite magnitude.

    Rows whose largest entry lies outside [1e-6, max^¼] of their dtype are
    first divided by that entry (detached: x/‖x‖ does not depend on the
    scale, so neither does its gradient); all other rows go through
    ``F.normalize`` unchanged, bit for bit. Zero rows stay zero.
    """
    largest = rows.detach().abs().amax(dim, keepdim=True)
    # above max^¼ the squares can overflow; below 1e-6 the norm can fall
    # under F.normalize's eps (1e-12), which would leave the row unscaled
    extreme = (largest > torch.finfo(rows.dtype).max ** 0.25) | (
        (largest < 1e-6) & (largest > 0))
    # x / 1 is exact, so ordinary rows are untouched (no device sync needed)
    rows = rows / torch.where(extreme, largest, torch.ones_like(largest))
    return F.normalize(rows, dim=dim)


def raise_if_non_finite(loss: torch.Tensor, what: str, cause: str,
                        **inputs: Optional[torch.Tensor]) -> None:
    """Raise if ``loss`` holds a NaN or inf; do nothing otherwise.

    Args:
        loss: the computed loss (any shape).
        what: the loss's name, for the message (e.g. ``'L_GML'``).
        cause: what is wrong when every input is finite (e.g. similarities
            that overflow), stated with the expected value.
        **inputs: the tensors the loss was computed from, by argument name,
            checked in the given order; None entries are skipped.

    Raises:
        ValueError: an input holds non-finite values (named, with its
            number of bad values and the first bad rows).
        FloatingPointError: every input is finite (then ``cause``).
    """
    if bool(torch.isfinite(loss).all()):
        return
    for name, tensor in inputs.items():
        if tensor is None or not tensor.dtype.is_floating_point:
            continue
        bad = ~torch.isfinite(tensor.detach())
        if bad.any():
            rows = torch.nonzero(
                bad.reshape(bad.shape[0] if bad.ndim else 1, -1).any(1))
            raise ValueError(
                f'{name} contains {int(bad.sum())} non-finite values (rows '
                f'{rows.flatten().tolist()[:10]}); expected finite values, '
                f'{what} is undefined otherwise')
    raise FloatingPointError(f'{what} is non-finite although its inputs are '
                             f'finite: {cause}')
