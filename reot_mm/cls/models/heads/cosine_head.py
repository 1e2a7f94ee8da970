"""A linear head on the unit sphere: the cost of RE-OT's cosine rows."""
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.models.heads import ClsHead
from mmpretrain.registry import MODELS


@MODELS.register_module()
class CosineClsHead(ClsHead):
    """Outputs cos θ_ij between normalised features and class weights.

    The training scores are the cosines themselves (B, C) in [-1, 1], so the
    loss decides scale and margin: ``REOTLoss(cost='cosine', scale=s,
    margin_type=...)`` gives the A-softmax / ArcFace / CosFace rows of RE-OT
    Table 1. At inference the cosines are multiplied by ``scale`` before the
    softmax so ``pred_score`` is a calibrated-looking distribution; the
    arg-max is unchanged.

    Args:
        num_classes: number of classes.
        in_channels: feature dimension.
        scale: inference-time multiplier of the cosines.
    """

    def __init__(self, num_classes: int, in_channels: int, scale: float = 30.0,
                 init_cfg: Optional[dict] = dict(type='Normal', layer='Linear',
                                                 std=0.01),
                 **kwargs):
        super().__init__(init_cfg=init_cfg, **kwargs)
        if num_classes <= 0:
            raise ValueError(f'num_classes must be a positive integer, got '
                             f'{num_classes}')
        if scale <= 0:
            raise ValueError(f'scale must be > 0, got {scale}')
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.scale = float(scale)
        self.fc = nn.Linear(in_channels, num_classes, bias=False)

    def pre_logits(self, feats: Tuple[torch.Tensor]) -> torch.Tensor:
        return feats[-1]

    def forward(self, feats: Tuple[torch.Tensor]) -> torch.Tensor:
        """(B, in_channels) features -> (B, num_classes) cosines."""
        features = F.normalize(self.pre_logits(feats), dim=-1)
        weights = F.normalize(self.fc.weight, dim=-1)
        return features @ weights.t()

    def predict(self, feats: Tuple[torch.Tensor],
                data_samples: Optional[List] = None) -> List:
        return self._get_predictions(self.scale * self(feats), data_samples)
