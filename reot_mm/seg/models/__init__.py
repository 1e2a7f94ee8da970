"""mmseg decode heads (registered in mmseg's ``MODELS``)."""
from .bcl_head import BCLFCNHead, check_pixel_labels
from .gml_head import CosineConv2d, CosineFCNHead, GMLFCNHead
from .pixel_sampling import labels_at, sample_pixels_per_class

__all__ = ['BCLFCNHead', 'CosineConv2d', 'CosineFCNHead', 'GMLFCNHead',
           'check_pixel_labels', 'labels_at', 'sample_pixels_per_class']
