"""Turn a NaN / inf loss into an error that names the input at fault.

The contrastive losses (BCL, GML, RE-OT contrastive) check their result once
(one device sync on the loss, none on the inputs while all is well) and only
then look for the cause, so a bad batch stops training with the argument's
name instead of a ``nan`` in the log.
"""
from typing import Optional

import torch

__all__ = ['raise_if_non_finite']


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
