"""mmseg decode heads (registered in mmseg's ``MODELS``)."""
from .bcl_head import BCLFCNHead
from .gml_head import CosineConv2d, CosineFCNHead, GMLFCNHead
from .gml_segmentor import GMLEncoderDecoder
from .pixel_sampling import (check_pixel_labels, labels_at,
                             sample_pixels_per_class)

__all__ = ['BCLFCNHead', 'CosineConv2d', 'CosineFCNHead', 'GMLEncoderDecoder',
           'GMLFCNHead', 'check_pixel_labels', 'labels_at', 'sample_pixels_per_class']
