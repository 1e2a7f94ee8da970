"""Reduction and input checks shared by the loss modules (plain torch)."""
import functools
import itertools
from typing import Optional

import torch

# one positive-number check for the whole package (ε, τ, ...)
from reot_mm.ot.checks import check_positive  # noqa: F401

REDUCTIONS = ('none', 'mean', 'sum')


def at_least_fp32(tensor: torch.Tensor) -> torch.Tensor:
    """Half-precision inputs are reduced in float32; float64 stays float64."""
    if tensor.dtype in (torch.float16, torch.bfloat16):
        return tensor.float()
    return tensor


def check_choice(name: str, value, choices) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f'{name} must be one of {choices}, got {value!r}')


def take_checkpoint_shape(module: torch.nn.Module, state_dict: dict,
                          prefix: str, name: str = 'class_counts') -> None:
    """Before ``_load_from_state_dict``: give the variable-size buffer ``name``
    (e.g. class counts, empty until the counts are known) the checkpoint's shape."""
    key = prefix + name
    if key in state_dict:
        setattr(module, name, torch.empty_like(
            state_dict[key], device=getattr(module, name).device))


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


def raise_non_finite(scores: torch.Tensor, name: str = 'cls_score') -> None:
    """Explain a non-finite loss: name the offending input if it is the cause."""
    bad = ~torch.isfinite(scores)
    if bad.any():
        rows = torch.nonzero(bad.reshape(bad.shape[0], -1).any(-1)).flatten()
        raise ValueError(
            f'{name} contains {int(bad.sum())} non-finite values (rows '
            f'{rows.tolist()[:10]}); the loss is undefined for inf/NaN logits')
    raise FloatingPointError(
        'the loss is non-finite although the scores are finite; check the '
        'prior (class counts) and the targets')


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

