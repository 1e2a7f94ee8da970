"""The contrastive branch that a dense BCL head adds to its task head.

BCL (Zhu et al., Balanced Contrastive Learning for Long-Tailed Visual
Recognition, CVPR 2022, arXiv:2207.09052) trains the classifier with logit
compensation (Eq. 10, the head's own classification loss) and adds μ·L_BCL
(Eq. 9) on projected features, with class prototypes projected from the
classifier's weight rows. A box head (RoI features) and a decode head (pixel
features) build the same three parts here.
"""
from typing import Optional, Tuple

import torch.nn as nn

from reot_mm.models.projection import ProjectionMLP

# BCL's ImageNet-LT / iNaturalist setting (μ = 0.35, τ = 0.07); L_LC is the
# task head's own loss, so the contrastive loss module carries none of it.
DEFAULT_LOSS_CONTRAST = dict(type='BCLLoss', lc_weight=0.0, bcl_weight=0.35,
                             temperature=0.07)


def build_bcl_branch(owner: str, loss_contrast: Optional[dict],
                     in_channels: int, hidden_channels: Optional[int],
                     out_channels: int, classification_loss: str,
                     registry) -> Tuple[nn.Module, nn.Module, nn.Module]:
    """``(loss_contrast, g, g_c)`` of a dense BCL head.

    Args:
        owner: the head's class name, for messages.
        loss_contrast: config of the ``BCLLoss`` (default
            :data:`DEFAULT_LOSS_CONTRAST`); its ``lc_weight`` must be 0.
        in_channels: width of the features and of the classifier rows.
        hidden_channels, out_channels: the projections' widths.
        classification_loss: the name of the head's own classification loss
            (for the message).
        registry: the task library's ``MODELS`` registry.

    Raises:
        ValueError: ``loss_contrast`` with a non-zero ``lc_weight``.
    """
    if loss_contrast is None:
        loss_contrast = dict(DEFAULT_LOSS_CONTRAST)
    if float(loss_contrast.get('lc_weight', 1.0)) != 0.0:
        raise ValueError(
            f'{owner}: loss_contrast must have lc_weight=0 — the '
            f"classification term is the head's {classification_loss} — got "
            f"lc_weight={loss_contrast.get('lc_weight', 1.0)!r}")
    return (registry.build(loss_contrast),
            ProjectionMLP(in_channels, hidden_channels, out_channels),
            ProjectionMLP(in_channels, hidden_channels, out_channels))
