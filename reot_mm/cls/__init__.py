"""mmpretrain adapters: datasets, backbones, heads (imported only with mmpretrain).

Importing this package registers the long-tailed datasets (``DigitsLT``,
``CIFAR10LT``, ``CIFAR100LT``, ``LongTailedListDataset``, ``ImageNetLT``,
``INat2018``, ``PlacesLT``) in mmpretrain's ``DATASETS`` and the backbones
(``CifarResNet``, ``ResNet10``) in mmpretrain's ``MODELS``.
"""
from . import datasets  # noqa: F401
from . import models  # noqa: F401
