"""Backbones registered in mmpretrain's MODELS."""
from .cifar_resnet import CifarBasicBlock, CifarResNet
from .resnet10 import ResNet10

__all__ = ['CifarBasicBlock', 'CifarResNet', 'ResNet10']
