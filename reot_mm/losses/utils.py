"""Input checks and reductions shared by the loss layer (plain torch): the
one set of validators of ``reot_mm.losses``."""
import functools
import itertools
from typing import Optional

import torch

# the package's scalar / option checks live in reot_mm.ot (the lowest layer
# with validators); the loss layer uses them, argument order of its own
from reot_mm.ot import checks as ot_checks
from reot_mm.ot.checks import check_positive  # noqa: F401

REDUCTIONS = ('none', 'mean', 'sum')


def at_least_fp32(tensor: torch.Tensor) -> torch.Tensor:
    """Half-precision inputs are reduced in float32; float64 stays float64."""
    if tensor.dtype in (torch.float16, torch.bfloat16):
        return tensor.float()
    return tensor


def check_choice(name: str, value, choices) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is one of ``choices``."""
    ot_checks.check_choice(value, name, choices)


def weight_reduce_loss(loss: torch.Tensor,
                       weight: Optional[torch.Tensor] = None,
                       reduction: str = 'mean',
                       avg_factor: Optional[float] = None) -> torch.Tensor:
    """Apply element-wise weights and reduce, with OpenMMLab semantics.

    Args:
        loss: per-element loss, any shape.
        weight: broadcastable to ``loss``.
        reduction: 'none' | 'mean' | 'sum'.
        avg_factor: divide the sum by this instead of the element count
            (only with reduction='mean').
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f'reduction must be one of {REDUCTIONS}, got '
                         f'{reduction!r}')
    if weight is not None:
        try:
            fits = torch.broadcast_shapes(weight.shape,
                                          loss.shape) == loss.shape
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError('weight must broadcast to the per-sample loss of '
                             f'shape {tuple(loss.shape)}, got '
                             f'{tuple(weight.shape)}')
        loss = loss * weight.to(loss.dtype)
    if reduction == 'none':
        return loss
    if avg_factor is None:
        return loss.mean() if reduction == 'mean' else loss.sum()
    if reduction != 'mean':
        raise ValueError('avg_factor can only be used with reduction="mean"')
    # eps keeps an all-ignored batch at zero loss instead of NaN.
    eps = torch.finfo(torch.float32).eps
    return loss.sum() / (avg_factor + eps)


def validate_class_counts(class_counts, num_classes: Optional[int] = None,
                          name: str = 'class_counts') -> torch.Tensor:
    """Check per-class training counts and return them as a float64 tensor.

    Args:
        class_counts: sequence or tensor of shape (C,) with non-negative counts.
        num_classes: expected C; checked when given.
        name: argument name used in error messages.

    Raises:
        ValueError: wrong shape or length, negative or non-finite counts,
            or all counts zero.
    """
    counts = torch.as_tensor(class_counts, dtype=torch.float64).detach().cpu()
    if counts.ndim != 1:
        raise ValueError(f'{name} must be a 1-D sequence of per-class counts, '
                         f'got shape {tuple(counts.shape)}')
    if num_classes is not None and counts.numel() != num_classes:
        raise ValueError(
            f'{name} has {counts.numel()} entries but num_classes is '
            f'{num_classes}; expected one count per class')
    if not torch.isfinite(counts).all() or (counts < 0).any():
        raise ValueError(f'{name} must be finite and non-negative, got '
                         f'{counts.tolist()[:20]}')
    if counts.sum() <= 0:
        raise ValueError(f'{name} sums to zero; expected at least one sample')
    return counts


def check_labels(target: torch.Tensor, num_classes: int,
                 name: str = 'target',
                 ignore_index: Optional[int] = None) -> None:
    """Raise if integer labels fall outside [0, num_classes)."""
    if target.numel() == 0:
        return
    labels = target
    if ignore_index is not None:
        labels = target[target != ignore_index]
        if labels.numel() == 0:
            return
    # one fused reduction and one device sync on the common, valid path
    low, high = torch.aminmax(labels)
    low, high = int(low), int(high)
    if low >= 0 and high < num_classes:
        return
    raise ValueError(
        f'{name} has labels in [{low}, {high}] but the scores have '
        f'{num_classes} classes; expected labels in [0, {num_classes})')


def check_soft_target(target: torch.Tensor, scores: torch.Tensor,
                      name: str = 'target') -> None:
    """Raise if soft targets do not match the scores' shape."""
    if target.shape != scores.shape:
        raise ValueError(f'soft {name} must have the shape of the scores '
                         f'{tuple(scores.shape)}, got {tuple(target.shape)}')


def without_autocast(loss_fn):
    """Run ``loss_fn`` with autocast off on the device of its first tensor
    argument (a no-op when autocast is off there).

    For the contrastive losses, whose similarities reach 1/τ (14 at
    τ = 0.07): under ``--amp`` their matmuls would run in fp16 / bf16, which
    keep 2-3 significant digits there, before an exp. The losses promote
    half-precision inputs to fp32 themselves, so with autocast off every
    product and reduction is fp32, and custom autograd functions see one dtype
    in forward and backward.
    """
    @functools.wraps(loss_fn)
    def wrapper(*args, **kwargs):
        device = next((value.device.type
                       for value in itertools.chain(args, kwargs.values())
                       if isinstance(value, torch.Tensor)), None)
        if device is None or not torch.is_autocast_enabled(device):
            return loss_fn(*args, **kwargs)
        with torch.autocast(device_type=device, enabled=False):
            return loss_fn(*args, **kwargs)
    return wrapper

