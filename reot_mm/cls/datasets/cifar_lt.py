"""CIFAR-10-LT and CIFAR-100-LT: long-tailed train subsets of the original CIFAR,
and shifted test subsets (the test-agnostic protocol)."""
from typing import List, Optional

import numpy as np
from mmengine.fileio import exists, join_path
from mmpretrain.datasets import CIFAR10, CIFAR100
from mmpretrain.registry import DATASETS

from .long_tail import (TEST_DISTRIBUTIONS, exponential_profile,
                        shifted_test_counts, subsample_long_tailed)


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
                 test_distribution: str = 'uniform',
                 **kwargs):
        self._init_long_tail(imbalance_factor, max_per_class, seed,
                             check_integrity, test_distribution)
        # next in the MRO: mmpretrain's CIFAR10 / CIFAR100
        super().__init__(data_root=data_root, split=split, **kwargs)

    def _init_long_tail(self, imbalance_factor: float,
                        max_per_class: Optional[int], seed: int,
                        check_integrity: bool,
                        test_distribution: str = 'uniform') -> None:
        if not float(imbalance_factor) >= 1.0:
            raise ValueError(
                f'imbalance_factor must be a number >= 1 (1 = balanced), '
                f'got {imbalance_factor!r}')
        if max_per_class is not None and (int(max_per_class) != max_per_class
                                          or max_per_class < 1):
            raise ValueError(
                f'max_per_class must be None or an integer >= 1, '
                f'got {max_per_class!r}')
        if test_distribution not in TEST_DISTRIBUTIONS:
            raise ValueError(
                f'test_distribution must be one of {list(TEST_DISTRIBUTIONS)}, '
                f'got {test_distribution!r}')
        self.imbalance_factor = imbalance_factor
        self.max_per_class = max_per_class
        self.seed = seed
        self.check_integrity = check_integrity
        self.test_distribution = test_distribution
        self.class_counts = None  # filled for the train split by the load
        self.test_counts = None  # filled for a shifted test split

    def load_data_list(self) -> List[dict]:
        """Load CIFAR, then subsample the train split to the long tail.

        Returns:
            list[dict]: ``{'img': uint8 (32, 32, 3), 'gt_label': int}`` items.
        """
        data_list = super().load_data_list()
        if self.split != 'train' and self.test_distribution == 'uniform':
            return data_list
        labels = np.fromiter((info['gt_label'] for info in data_list),
                             dtype=np.int64, count=len(data_list))
        num_classes = len(self.CLASSES)
        if labels.size and labels.max() >= num_classes:
            raise ValueError(
                f'{type(self).__name__}: labels must be < {num_classes} '
                f'(number of classes), got {labels.max()}')
        available = np.bincount(labels, minlength=num_classes)
        if self.split != 'train':
            return self._shifted_test(data_list, labels, available)
        # The real CIFAR train splits are balanced; with unequal generated
        # data the smallest class bounds what every class can supply.
        n_max = (int(available.min())
                 if self.max_per_class is None else int(self.max_per_class))
        counts = exponential_profile(n_max, num_classes, self.imbalance_factor)
        keep = subsample_long_tailed(labels, counts, seed=self.seed)
        self.class_counts = counts
        return [data_list[i] for i in keep]

    def _shifted_test(self, data_list: List[dict], labels: np.ndarray,
                      available: np.ndarray) -> List[dict]:
        """A subset of the balanced test split with a shifted class prior.

        The training order is that of the train profile, class 0 first
        (``exponential_profile`` is non-increasing in the class index), so
        Forward-R gives class 0 the most test images. Every class keeps at
        most the smallest class count of the test split (1000 for CIFAR-10,
        100 for CIFAR-100).
        """
        num_classes = len(self.CLASSES)
        order = list(range(num_classes, 0, -1))  # class 0 = training head
        self.test_counts = shifted_test_counts(
            int(available.min()), order, self.test_distribution)
        keep = subsample_long_tailed(labels, self.test_counts, seed=self.seed)
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
        if self.split != 'train':
            body.append(f'Test distribution: \t{self.test_distribution}')
        return body


@DATASETS.register_module()
class CIFAR10LT(_LongTailedCIFARMixin, CIFAR10):
    """CIFAR-10-LT: the long-tailed train split of CIFAR-10 (Cao et al. 2019).

    Only the ``'train'`` split changes: after the original pickles are loaded,
    class ``i`` keeps ``floor(n_max * imbalance_factor ** (-i / (C - 1)))``
    images (:func:`~reot_mm.cls.datasets.exponential_profile`; class 0 is the
    head), chosen without replacement with ``seed`` and kept in the original
    order. The ``'test'`` split is the original balanced one, or with
    ``test_distribution`` a subset of it with a shifted class prior: the
    test-agnostic protocol of SADE ("Self-Supervised Aggregation of Diverse
    Experts for Test-Agnostic Long-Tailed Recognition", NeurIPS 2022, arXiv
    2107.09249), per-class counts from
    :func:`~reot_mm.cls.datasets.shifted_test_counts` with 1000 (CIFAR-10) /
    100 (CIFAR-100) images for the most frequent class, drawn with ``seed``.

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
        test_distribution (str): Class distribution of the ``'test'``
            split: ``'uniform'`` (default, the original split) or
            ``'forward-R'`` / ``'backward-R'``, R in 2, 5, 10, 25, 50
            (``TEST_DISTRIBUTIONS``): Forward-R follows the training order
            (class 0, the training head, keeps the most test images, the
            last class ``1/R`` of them), Backward-R reverses it. Ignored by
            the train split.
        **kwargs: Other arguments of :class:`mmpretrain.datasets.CIFAR10`
            (``download``, ``pipeline``, ``test_mode`` ...).

    Attributes:
        class_counts (list[int] | None): Train images per class after the
            subsampling; None for the test split or before loading.
        test_counts (list[int] | None): Test images per class of a shifted
            test split; None otherwise or before loading.

    Raises:
        ValueError: On a bad ``imbalance_factor``, ``max_per_class`` or
            ``test_distribution``.
    """


@DATASETS.register_module()
class CIFAR100LT(_LongTailedCIFARMixin, CIFAR100):
    """CIFAR-100-LT: the long-tailed train split of CIFAR-100 (Cao et al. 2019).

    Same recipe and arguments as :class:`CIFAR10LT`; ``data_root`` holds
    ``cifar-100-python`` and the head class has 500 images by default.
    """
