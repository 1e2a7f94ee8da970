"""Angular margins on the target-class cosine.

The A-softmax row of Table 1 in Shi et al., Relative Entropic Optimal
Transport: a (Prior-aware) Matching Perspective to (Unbalanced)
Classification, NeurIPS 2023: the inverse RE-OT loss with the cosine cost and
the target cosine replaced by ψ(θ).
"""
import math
from typing import Optional

import torch

from reot_mm.losses.utils import check_choice

#: the ``margin_type`` options (None: no margin)
MARGIN_TYPES = (None, 'multiplicative', 'additive', 'cosine')


def cosine_with_margin(cosine: torch.Tensor, target: torch.Tensor,
                       margin_type: Optional[str], margin: float) -> torch.Tensor:
    """Apply an angular margin to the target-class cosine.

    A-softmax's ψ(θ) = (-1)^k·cos(mθ) - 2k for θ ∈ [kπ/m, (k+1)π/m]
    (Liu et al., SphereFace: Deep Hypersphere Embedding for Face
    Recognition, CVPR 2017; RE-OT Table 1 row "A-softmax") is
    ``'multiplicative'`` with integer m = ``margin``; ``'additive'`` is
    cos(θ + m) (ArcFace) and ``'cosine'`` is cos θ - m (CosFace).

    Args:
        cosine: (B, C) cosines in [-1, 1].
        target: (B,) integer labels, or (B, C) soft targets (the margin is
            then applied to each sample's arg-max class).
        margin_type: one of :data:`MARGIN_TYPES`.
        margin: the margin; a positive integer m for ``'multiplicative'``.

    Raises:
        ValueError: an unknown ``margin_type`` or a non-integer m.
    """
    check_choice('margin_type', margin_type, MARGIN_TYPES)
    if margin_type == 'multiplicative' and (
            margin != int(margin) or margin < 0):
        raise ValueError("margin must be a non-negative integer m for "
                         f"margin_type='multiplicative', got {margin}")
    if margin_type is None or margin == 0:
        return cosine
    labels = target if target.ndim == 1 else target.argmax(-1)
    cos_y = cosine.gather(1, labels[:, None]).clamp(-1.0, 1.0)
    if margin_type == 'cosine':
        adjusted = cos_y - margin
    else:
        theta = torch.acos(cos_y.clamp(-1.0 + 1e-7, 1.0 - 1e-7))
        if margin_type == 'additive':
            adjusted = torch.cos(theta + margin)
        else:
            m = int(margin)
            k = torch.floor(theta * m / math.pi)
            sign = 1.0 - 2.0 * torch.remainder(k, 2.0)
            adjusted = sign * torch.cos(m * theta) - 2.0 * k
    return cosine.scatter(1, labels[:, None], adjusted.to(cosine.dtype))
