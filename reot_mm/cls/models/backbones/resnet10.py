"""ResNet-10, the ImageNet-LT backbone of the decoupling line of work."""
from mmpretrain.models.backbones.resnet import BasicBlock, ResNet
from mmpretrain.registry import MODELS


@MODELS.register_module()
class ResNet10(ResNet):
    """mmpretrain's :class:`~mmpretrain.models.backbones.ResNet` plus depth 10.

    ResNet-10 is the ImageNet ResNet with one :class:`BasicBlock` per stage
    (stage blocks ``(1, 1, 1, 1)``), as used on ImageNet-LT by OLTR, the
    decoupling paper and RE-OT. Everything else (stem, strides, ``norm_cfg``,
    ``frozen_stages``, ``zero_init_residual`` ...) is the parent's; the other
    depths (18, 34, 50, 101, 152) stay available.

    Args:
        depth (int): Network depth. Defaults to 10.
        **kwargs: Other arguments of :class:`mmpretrain.models.ResNet`.

    Inputs / outputs:
        ``forward(x)`` with ``x`` of shape (B, 3, H, W) returns a tuple of
        (B, 512, H / 32, W / 32) tensors (one per ``out_indices`` entry; the
        last stage by default), for ``GlobalAveragePooling`` + a 512-d head.
    """

    arch_settings = {10: (BasicBlock, (1, 1, 1, 1)), **ResNet.arch_settings}

    def __init__(self, depth: int = 10, **kwargs):
        if depth not in self.arch_settings:
            raise ValueError(
                f'depth must be one of {sorted(self.arch_settings)}, '
                f'got {depth!r}')
        super().__init__(depth=depth, **kwargs)
