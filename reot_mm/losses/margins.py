"""Angular margins on the target-class cosine (RE-OT Table 1 row "A-softmax")."""
import math
from typing import Optional

import torch


def cosine_with_margin(cosine: torch.Tensor, target: torch.Tensor,
                       margin_type: Optional[str], margin: float) -> torch.Tensor:
    """Apply an angular margin to the target-class cosine.

    A-softmax's ψ(θ) = (-1)^k·cos(mθ) - 2k for θ ∈ [kπ/m, (k+1)π/m]
    (SphereFace, Liu et al. 2017; RE-OT Table 1 row "A-softmax") is
    ``'multiplicative'`` with integer m = ``margin``; ``'additive'`` is
    cos(θ + m) (ArcFace) and ``'cosine'`` is cos θ - m (CosFace).

    Args:
        cosine: (B, C) cosines in [-1, 1].
        target: (B,) integer labels, or (B, C) soft targets (the margin is
            then applied to each sample's arg-max class).
    """
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
