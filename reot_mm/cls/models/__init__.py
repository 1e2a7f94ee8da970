"""mmpretrain models of reot_mm (backbones; heads and classifiers may join)."""
from .backbones import CifarBasicBlock, CifarResNet, ResNet10

__all__ = ['CifarBasicBlock', 'CifarResNet', 'ResNet10']
