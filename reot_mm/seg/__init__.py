"""mmseg adapter (imported only when mmseg is installed, see reot_mm/adapters.py).

* :class:`FrequencyBinnedIoUMetric` (mmseg ``METRICS``): mIoU/mAcc plus
  head/common/rare bins by training class frequency;
* :mod:`reot_mm.seg.pixel_stats`: per-class pixel and image counts from label
  maps and a dataset checksum (used by ``ClassStatisticsHook`` and
  ``tools/dataset_stats/pixel_class_counts.py``);
* decode heads in :mod:`reot_mm.seg.models` (mmseg ``MODELS``):
  ``CosineFCNHead`` (cosine 1×1 classifier) and ``GMLFCNHead`` (GML: Suh and Seo,
  Long-Tailed Recognition by Mutual Information Maximization between Latent
  Features and Ground-Truth Labels, ICML 2023, arXiv:2305.01160, App. A.2),
  ``BCLFCNHead`` (BCL on pixels sampled per class per image: Zhu et al.,
  Balanced Contrastive Learning for Long-Tailed Visual Recognition, CVPR 2022,
  arXiv:2207.09052) and the segmentor ``GMLEncoderDecoder`` (the student of a
  frozen teacher whose pixel features fill the GML queues).

The losses themselves (``REOTPixelLoss``) live in :mod:`reot_mm.losses` and are
registered in mmengine's root registry.
"""
from . import pixel_stats  # noqa: F401
from .evaluation import FrequencyBinnedIoUMetric
from .models import CosineFCNHead, GMLFCNHead

__all__ = ['CosineFCNHead', 'FrequencyBinnedIoUMetric', 'GMLFCNHead',
           'pixel_stats']
