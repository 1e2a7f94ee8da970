"""mmdet adapter (layer 3): detection heads and LVIS checks speaking mmdet's contracts.

Imported by :mod:`reot_mm.adapters` only when mmdet is installed. Classes here
register into ``mmdet.registry``; the RoI loss itself (``REOTRoILoss``) is
task-agnostic math in :mod:`reot_mm.losses` (mmengine's root ``MODELS``).
"""
from .bbox_heads import BCLShared2FCBBoxHead
from .gml_bbox_head import GMLMaskRCNN, GMLShared2FCBBoxHead  # noqa: F401
from .hooks import LVISAnnotationCheckHook
from .lvis_checks import (check_lvis_categories, check_lvis_dataset,
                          check_lvis_images, model_num_classes)
from .test_time_head import REOTShared2FCBBoxHead

__all__ = ['BCLShared2FCBBoxHead', 'LVISAnnotationCheckHook', 'check_lvis_categories',
           'check_lvis_dataset', 'check_lvis_images', 'model_num_classes',
           'REOTShared2FCBBoxHead']
