"""A file-free long-tailed dataset built from scikit-learn's digits (for tests)."""
from typing import List, Optional

import numpy as np
from mmpretrain.datasets import BaseDataset
from mmpretrain.registry import DATASETS

from .long_tail import (TEST_DISTRIBUTIONS, exponential_profile,
                        shifted_test_counts, subsample_long_tailed)


@DATASETS.register_module()
class DigitsLT(BaseDataset):
    """Long-tailed 8x8 handwritten digits (``sklearn.datasets.load_digits``).

    The 1797 images (174-183 per class) are split once, with a fixed seed, into

    * ``'test'``: ``test_per_class`` images of every class (balanced; or a
      subset of them with a shifted class distribution, ``test_distribution``),
    * ``'val'``: ``val_per_class`` other images of every class (balanced), for
      choosing hyper-parameters without looking at the test split, and
    * ``'train'``: a long-tailed subset of the remaining images with the
      exponential profile ``exponential_profile(max_per_class, 10,
      imbalance_factor)``; class 0 is the head. The defaults give
      ``[100, 63, 40, 25, 16, 10, 6, 4, 2, 1]`` images (267).

    The draws run in that order, each from what the previous ones left and
    with its own random stream (``seed``, ``seed + 2``, ``seed + 1``), so the
    splits never share an image and the test split does not depend on
    ``val_per_class`` or the train profile. Nothing is read from disk, so
    ``data_root`` and ``ann_file`` are ignored. Images are uint8 arrays of
    shape (8 * upscale, 8 * upscale, 1) with values 0..255 (digits' 0..16
    scaled by 255 / 16); ``PackInputs`` turns them into (1, H, W) tensors.

    Args:
        split (str): ``'train'``, ``'val'`` or ``'test'``. Defaults to
            ``'train'``.
        imbalance_factor (float): Head / tail count ratio of the train split,
            >= 1. Defaults to 60.
        max_per_class (int): Train images of the head class. Defaults to 100
            (at most 174 - test_per_class - val_per_class).
        test_per_class (int): Test images per class. Defaults to 50.
        val_per_class (int): Validation images per class. Defaults to 20.
        test_distribution (str): Class distribution of the test split, one of
            ``TEST_DISTRIBUTIONS`` (long_tail.py): ``'uniform'`` (all
            ``test_per_class`` images) or ``'forward-R'`` / ``'backward-R'``
            (R in 2, 5, 10, 25, 50), the test-agnostic protocol of SADE
            ("Self-Supervised Aggregation of Diverse Experts for Test-Agnostic
            Long-Tailed Recognition", NeurIPS 2022, arXiv 2107.09249): per-class
            counts from :func:`shifted_test_counts`, drawn from the uniform
            test split with the stream ``seed + 3``. Only used by
            ``split='test'``. Defaults to ``'uniform'``.
        upscale (int): Integer nearest-neighbour upscaling factor (each pixel
            becomes an ``upscale`` x ``upscale`` block). Defaults to 1.
        seed (int): Seed of the splits and of the long-tailed choice.
            Defaults to 0.
        **kwargs: Other arguments of :class:`mmpretrain.datasets.BaseDataset`
            (``pipeline``, ``test_mode``, ``lazy_init``, ``indices`` ...).

    Attributes:
        train_counts (list[int]): Per-class counts of the train split (for
            every split, known before loading).
        source_indices (np.ndarray): Index into ``load_digits()`` of every
            item, shape (len(self),); set when the data is loaded.

    Raises:
        ValueError: On a bad ``split``, ``upscale``, ``test_per_class``,
            ``val_per_class``, ``test_distribution`` or profile, or (at load)
            if ``test_per_class + val_per_class + max_per_class`` exceeds the
            smallest digits class (174 images).
    """

    METAINFO = {'classes': tuple(str(i) for i in range(10))}

    def __init__(self,
                 split: str = 'train',
                 imbalance_factor: float = 60,
                 max_per_class: int = 100,
                 test_per_class: int = 50,
                 val_per_class: int = 20,
                 test_distribution: str = 'uniform',
                 upscale: int = 1,
                 seed: int = 0,
                 ann_file: str = '',
                 metainfo: Optional[dict] = None,
                 **kwargs):
        if split not in ('train', 'val', 'test'):
            raise ValueError(
                f"split must be 'train', 'val' or 'test', got {split!r}")
        if int(upscale) != upscale or upscale < 1:
            raise ValueError(f'upscale must be an integer >= 1, got {upscale!r}')
        if int(test_per_class) != test_per_class or test_per_class < 1:
            raise ValueError(
                f'test_per_class must be an integer >= 1, got {test_per_class!r}')
        if int(val_per_class) != val_per_class or val_per_class < 1:
            raise ValueError(
                f'val_per_class must be an integer >= 1, got {val_per_class!r}')
        if test_distribution not in TEST_DISTRIBUTIONS:
            raise ValueError(
                f'test_distribution must be one of {list(TEST_DISTRIBUTIONS)}, '
                f'got {test_distribution!r}')
        # Validate the profile now (not only at full_init) so that a bad
        # config fails at build time even with lazy_init=True.
        self.train_counts = exponential_profile(max_per_class, 10,
                                                imbalance_factor)
        self.split = split
        self.imbalance_factor = imbalance_factor
        self.max_per_class = int(max_per_class)
        self.test_per_class = int(test_per_class)
        self.val_per_class = int(val_per_class)
        self.test_distribution = test_distribution
        # checks that per_class / R leaves every class a test image
        self.test_counts = shifted_test_counts(self.test_per_class,
                                               self.train_counts,
                                               test_distribution)
        self.upscale = int(upscale)
        self.seed = seed
        super().__init__(ann_file=ann_file, metainfo=metainfo, **kwargs)

    def load_data_list(self) -> List[dict]:
        """Build the split in memory.

        Returns:
            list[dict]: ``{'img': uint8 (H, W, 1), 'gt_label': int}`` per image.
        """
        try:
            from sklearn.datasets import load_digits
        except ImportError as error:  # pragma: no cover - env dependent
            raise ImportError(
                'DigitsLT needs scikit-learn (pip install scikit-learn)') from error
        digits = load_digits()
        labels = digits.target.astype(np.int64)
        per_class = np.bincount(labels, minlength=10)
        needed = self.test_per_class + self.val_per_class + self.max_per_class
        if per_class.min() < needed:
            raise ValueError(
                f'test_per_class + val_per_class + max_per_class must be <= '
                f'{per_class.min()} (the smallest digits class), got '
                f'{self.test_per_class} + {self.val_per_class} + '
                f'{self.max_per_class} = {needed}')

        # Test first with stream `seed` (the same test images whatever the
        # val size or train profile), then val from the rest (stream
        # seed + 2), then train from what is left (stream seed + 1, the
        # stream it had before the val split existed).
        test_idx = subsample_long_tailed(
            labels, [self.test_per_class] * 10, seed=self.seed)
        rest = np.setdiff1d(np.arange(labels.size), test_idx)
        val_idx = rest[subsample_long_tailed(
            labels[rest], [self.val_per_class] * 10, seed=self.seed + 2)]
        rest = np.setdiff1d(rest, val_idx)
        if self.split == 'test':
            # a shifted test set is a subset of the uniform one
            chosen = test_idx[subsample_long_tailed(
                labels[test_idx], self.test_counts, seed=self.seed + 3)]
        elif self.split == 'val':
            chosen = val_idx
        else:
            chosen = rest[subsample_long_tailed(
                labels[rest], self.train_counts, seed=self.seed + 1)]

        # digits are floats 0..16; 16 maps to 255 exactly.
        images = np.rint(digits.images[chosen] * (255.0 / 16.0))
        images = images.clip(0, 255).astype(np.uint8)
        if self.upscale > 1:
            images = images.repeat(self.upscale, axis=1).repeat(
                self.upscale, axis=2)
        images = np.ascontiguousarray(images[..., None])  # (N, H, W, 1)
        # Indices into load_digits(), e.g. to check that splits are disjoint.
        self.source_indices = chosen
        return [{
            'img': img,
            'gt_label': int(label)
        } for img, label in zip(images, labels[chosen])]

    def extra_repr(self) -> List[str]:
        """Extra lines for ``repr``."""
        return [
            f'Split: \t{self.split}',
            f'Imbalance factor: \t{self.imbalance_factor}',
            f'Train counts: \t{self.train_counts}',
            f'Test distribution: \t{self.test_distribution}',
        ]
