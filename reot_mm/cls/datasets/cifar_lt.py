"""CIFAR-10-LT and CIFAR-100-LT: long-tailed train subsets of the original CIFAR."""
from typing import List, Optional

import numpy as np
from mmengine.fileio import exists, join_path
from mmpretrain.datasets import CIFAR10, CIFAR100
from mmpretrain.registry import DATASETS

from .long_tail import exponential_profile, subsample_long_tailed


class _LongTailedCIFARMixin:
    """Keeps a long-tailed subset of the train split after the CIFAR load.

    Shared by :class:`CIFAR10LT` and :class:`CIFAR100LT`; see their docstring.
    """

    def __init__(self,
                 data_root: str = '',
                 split: str = 'train',
                 imbalance_factor: float = 100,
                 max_per_class: Optional[int] = None,
                 seed: int = 0,
                 check_integrity: bool = True,
                 **kwargs):
        self._init_long_tail(imbalance_factor, max_per_class, seed,
                             check_integrity)
        # next in the MRO: mmpretrain's CIFAR10 / CIFAR100
        super().__init__(data_root=data_root, split=split, **kwargs)

    def _init_long_tail(self, imbalance_factor: float,
                        max_per_class: Optional[int], seed: int,
                        check_integrity: bool) -> None:
        if not float(imbalance_factor) >= 1.0:
            raise ValueError(
                f'imbalance_factor must be a number >= 1 (1 = balanced), '
                f'got {imbalance_factor!r}')
        if max_per_class is not None and (int(max_per_class) != max_per_class
                                          or max_per_class < 1):
            raise ValueError(
                f'max_per_class must be None or an integer >= 1, '
                f'got {max_per_class!r}')
        self.imbalance_factor = imbalance_factor
        self.max_per_class = max_per_class
        self.seed = seed
        self.check_integrity = check_integrity
        self.class_counts = None  # filled for the train split by the load

    def load_data_list(self) -> List[dict]:
        """Load CIFAR, then subsample the train split to the long tail.

        Returns:
            list[dict]: ``{'img': uint8 (32, 32, 3), 'gt_label': int}`` items.
        """
        data_list = super().load_data_list()
        if self.split != 'train':
            return data_list
        labels = np.fromiter((info['gt_label'] for info in data_list),
                             dtype=np.int64, count=len(data_list))
        num_classes = len(self.CLASSES)
        if labels.size and labels.max() >= num_classes:
            raise ValueError(
                f'{type(self).__name__}: labels must be < {num_classes} '
                f'(number of classes), got {labels.max()}')
        available = np.bincount(labels, minlength=num_classes)
        # The real CIFAR train splits are balanced; with unequal generated
        # data the smallest class bounds what every class can supply.
        n_max = (int(available.min())
                 if self.max_per_class is None else int(self.max_per_class))
        counts = exponential_profile(n_max, num_classes, self.imbalance_factor)
        keep = subsample_long_tailed(labels, counts, seed=self.seed)
        self.class_counts = counts
        return [data_list[i] for i in keep]

    def _check_integrity(self) -> bool:
        """md5 check of the original pickles, or existence only if disabled."""
        if self.check_integrity:
            return super()._check_integrity()
        root = self.data_prefix['root']
        return all(
            exists(join_path(root, self.base_folder, filename))
            for filename, _ in self.train_list + self.test_list)

    def extra_repr(self) -> List[str]:
        """Extra lines for ``repr``."""
        body = super().extra_repr()
        body.append(f'Imbalance factor: \t{self.imbalance_factor}')
        return body


@DATASETS.register_module()
class CIFAR10LT(_LongTailedCIFARMixin, CIFAR10):
    """CIFAR-10-LT: the long-tailed train split of CIFAR-10 (Cao et al. 2019).

    Only the ``'train'`` split changes: after the original pickles are loaded,
    class ``i`` keeps ``floor(n_max * imbalance_factor ** (-i / (C - 1)))``
    images (:func:`~reot_mm.cls.datasets.exponential_profile`; class 0 is the
    head), chosen without replacement with ``seed`` and kept in the original
    order. The ``'test'`` split is the original balanced one.

    Args:
        data_root (str): Folder holding ``cifar-10-batches-py``.
        split (str): ``'train'`` or ``'test'``. Defaults to ``'train'``.
        imbalance_factor (float): ``n_max / n_min``, >= 1. Defaults to 100;
            the shipped configs use 200 (as RE-OT).
        max_per_class (int, optional): Head class count ``n_max``. None
            (default) takes the smallest class count of the loaded train
            split (5000 for the real data, 500 for CIFAR-100).
        seed (int): Seed of the subsampling. Defaults to 0.
        check_integrity (bool): Verify the md5 sums of the original pickles,
            as mmpretrain does. False only checks that the files exist, so
            generated pickles in the CIFAR format load (tests). Defaults to
            True.
        **kwargs: Other arguments of :class:`mmpretrain.datasets.CIFAR10`
            (``download``, ``pipeline``, ``test_mode`` ...).

    Attributes:
        class_counts (list[int] | None): Train images per class after the
            subsampling; None for the test split or before loading.
    """


@DATASETS.register_module()
class CIFAR100LT(_LongTailedCIFARMixin, CIFAR100):
    """CIFAR-100-LT: the long-tailed train split of CIFAR-100 (Cao et al. 2019).

    Same recipe and arguments as :class:`CIFAR10LT`; ``data_root`` holds
    ``cifar-100-python`` and the head class has 500 images by default.
    """
