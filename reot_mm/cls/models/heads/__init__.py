"""Classification heads registered in mmpretrain's MODELS."""
from .cosine_head import CosineClsHead

__all__ = ['CosineClsHead']
