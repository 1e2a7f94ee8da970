"""The CIFAR ResNet of He et al. 2016 (ResNet-20/32/44/56/110, depth 6n + 2)."""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.registry import MODELS


class _ShortcutA(nn.Module):
    """Option-A shortcut: stride-2 subsampling and zero channel padding.

    Parameter-free, as in He et al. 2016 Sec. 4.2 (and the ``LambdaLayer`` of
    the CIFAR-LT reference code): ``x[:, :, ::s, ::s]`` padded with zeros to
    ``out_channels``, half of the new channels before and half after.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        extra = out_channels - in_channels
        self.pad = (extra // 2, extra - extra // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H / s, W / s)."""
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad[0], self.pad[1]))


class CifarBasicBlock(nn.Module):
    """3x3-3x3 residual block with a post-activation (ResNet v1) layout.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        stride (int): Stride of the first conv (2 at a stage start).
        shortcut (str): ``'A'`` (zero padding) or ``'B'`` (1x1 conv + norm)
            where the shape changes; identity otherwise.
        norm_cfg (dict): Normalisation layer config.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int,
                 shortcut: str, norm_cfg: dict):
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = build_norm_layer(norm_cfg, out_channels)[1]
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = build_norm_layer(norm_cfg, out_channels)[1]
        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        elif shortcut == 'A':
            self.shortcut = _ShortcutA(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                build_norm_layer(norm_cfg, out_channels)[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H / stride, W / stride)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


@MODELS.register_module()
class CifarResNet(BaseBackbone):
    """ResNet for 32x32 inputs (He et al. 2016, Sec. 4.2).

    A 3x3 stem conv with ``base_channels`` filters, then three stages of ``n``
    basic blocks with ``base_channels * (1, 2, 4)`` channels (16/32/64 by
    default) and strides 1/2/2: ``depth = 6n + 2`` (8, 20, 32, 44, 56, 110...).
    With a linear classifier ResNet-32 has 0.46M parameters, ResNet-56 0.85M.
    This is the backbone of the CIFAR-LT experiments of LDAM, BCL, GML and
    RE-OT (ResNet-32; GML's CIFAR teacher is ResNet-56).

    The shortcut across a shape change defaults to option A (parameter-free
    zero padding), which the paper uses on CIFAR and which the long-tailed
    reference code copies; option B (1x1 conv + norm) is available.

    Args:
        depth (int): ``6n + 2`` with ``n >= 1``. Defaults to 32.
        in_channels (int): Input channels (3 for RGB, 1 for digits).
            Defaults to 3.
        base_channels (int): Width of the first stage. Defaults to 16.
        shortcut (str): ``'A'`` or ``'B'``. Defaults to ``'A'``.
        out_indices (Sequence[int]): Stages (0, 1, 2) whose output is
            returned. Defaults to ``(2,)``, the last stage.
        norm_cfg (dict): Normalisation config. Defaults to ``dict(type='BN')``.
        init_cfg (dict | list[dict], optional): Initialisation; defaults to
            Kaiming-normal convs (as the reference code) and unit-weight norms.

    Inputs / outputs:
        ``forward(x)`` with ``x`` of shape (B, in_channels, H, W) returns a
        tuple with one (B, base_channels * 2**i, H / 2**i, W / 2**i) tensor per
        index ``i`` in ``out_indices``: (B, 64, 8, 8) for a 32x32 input by
        default, ready for ``GlobalAveragePooling`` + ``LinearClsHead``.
    """

    def __init__(self,
                 depth: int = 32,
                 in_channels: int = 3,
                 base_channels: int = 16,
                 shortcut: str = 'A',
                 out_indices: Sequence[int] = (2, ),
                 norm_cfg: dict = dict(type='BN'),
                 init_cfg: Optional[dict] = None):
        if init_cfg is None:
            init_cfg = [
                dict(type='Kaiming', layer='Conv2d', mode='fan_in'),
                dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm'])
            ]
        super().__init__(init_cfg=init_cfg)
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(
                f'depth must be 6n + 2 with n >= 1 (8, 20, 32, 44, 56, 110, '
                f'...), got {depth!r}')
        if shortcut not in ('A', 'B'):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        out_indices = tuple(out_indices)
        if not out_indices or any(i not in (0, 1, 2) for i in out_indices):
            raise ValueError(
                f'out_indices must be a non-empty subset of (0, 1, 2), '
                f'got {out_indices}')
        self.depth = depth
        self.out_indices = out_indices
        blocks_per_stage = (depth - 2) // 6

        self.conv1 = nn.Conv2d(
            in_channels, base_channels, 3, 1, 1, bias=False)
        self.bn1 = build_norm_layer(norm_cfg, base_channels)[1]
        channels = base_channels
        self.stages = nn.ModuleList()
        for stage, stride in enumerate((1, 2, 2)):
            out_channels = base_channels * 2**stage
            blocks = []
            for block in range(blocks_per_stage):
                blocks.append(
                    CifarBasicBlock(channels, out_channels,
                                    stride if block == 0 else 1, shortcut,
                                    norm_cfg))
                channels = out_channels
            self.stages.append(nn.Sequential(*blocks))
        self.out_channels = tuple(base_channels * 2**i for i in out_indices)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Run the network; see the class docstring for shapes."""
        x = F.relu(self.bn1(self.conv1(x)))
        outs = []
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if index in self.out_indices:
                outs.append(x)
        return tuple(outs)
