"""Projection MLP for contrastive heads (BCL g and g_c, GML's projector).

BCL (Zhu et al., CVPR 2022, Sec. 4 "Framework") projects backbone features with
``g = Linear(d, d) - BN - ReLU - Linear(d, D)`` and maps the raw classifier
weights to prototypes with a second MLP ``g_c`` of the same shape; the output
is L2-normalised by the caller (the loss), not here.
"""
from typing import Optional

import torch
import torch.nn as nn
from mmengine.registry import MODELS


@MODELS.register_module()
class ProjectionMLP(nn.Module):
    """Two-layer projection ``Linear(in, hidden) [- BN] - ReLU - Linear(hidden, out)``.

    Args:
        in_channels: Input feature dimension d.
        hidden_channels: Hidden dimension; defaults to ``in_channels``.
        out_channels: Output (embedding) dimension D. Defaults to 128.
        norm: Whether to put a ``BatchNorm1d`` after the first linear layer
            (the BCL/SupCon head does). Defaults to True.

    Shapes:
        input: (N, in_channels) or (N, in_channels, 1, 1) (pooled maps are
            flattened); output: (N, out_channels), *not* normalised.
    """

    def __init__(self,
                 in_channels: int,
                 hidden_channels: Optional[int] = None,
                 out_channels: int = 128,
                 norm: bool = True) -> None:
        super().__init__()
        for name, value in (('in_channels', in_channels),
                            ('out_channels', out_channels)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(
                    f'ProjectionMLP: {name} must be a positive int, got {value!r}')
        if hidden_channels is None:
            hidden_channels = in_channels
        if not isinstance(hidden_channels, int) or hidden_channels <= 0:
            raise ValueError('ProjectionMLP: hidden_channels must be a positive '
                             f'int or None, got {hidden_channels!r}')
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.out_channels = out_channels
        layers = [nn.Linear(in_channels, hidden_channels)]
        if norm:
            layers.append(nn.BatchNorm1d(hidden_channels))
        layers += [nn.ReLU(inplace=True),
                   nn.Linear(hidden_channels, out_channels)]
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project features.

        Args:
            x: (N, in_channels) features, or (N, in_channels, 1, 1).

        Returns:
            (N, out_channels) un-normalised projections.
        """
        if x.ndim == 4 and x.shape[2:] == (1, 1):
            x = x.flatten(1)
        if x.ndim != 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f'ProjectionMLP: x must have shape (N, {self.in_channels}), '
                f'got {tuple(x.shape)}')
        return self.mlp(x)
