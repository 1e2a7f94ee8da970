"""A file-free long-tailed dataset built from scikit-learn's digits (for tests)."""
from typing import List, Optional

import numpy as np
from mmpretrain.datasets import BaseDataset
from mmpretrain.registry import DATASETS

from .long_tail import exponential_profile, subsample_long_tailed


@DATASETS.register_module()
class DigitsLT(BaseDataset):
    """Long-tailed 8x8 handwritten digits (``sklearn.datasets.load_digits``).

    The 1797 images (174-183 per class) are split once, with a fixed seed, into

    * ``'test'``: ``test_per_class`` images of every class (balanced), and
    * ``'train'``: a long-tailed subset of the remaining images with the
      exponential profile ``exponential_profile(max_per_class, 10,
      imbalance_factor)``; class 0 is the head. The defaults give
      ``[120, 76, 48, 30, 19, 12, 7, 4, 3, 2]`` images.

    The splits never share an image. Nothing is read from disk, so
    ``data_root`` and ``ann_file`` are ignored. Images are uint8 arrays of
    shape (8 * upscale, 8 * upscale, 1) with values 0..255 (digits' 0..16
    scaled by 255 / 16); ``PackInputs`` turns them into (1, H, W) tensors.

    Args:
        split (str): ``'train'`` or ``'test'``. Defaults to ``'train'``.
        imbalance_factor (float): Head / tail count ratio of the train split,
            >= 1. Defaults to 60.
        max_per_class (int): Train images of the head class. Defaults to 120.
        test_per_class (int): Test images per class. Defaults to 50.
        upscale (int): Integer nearest-neighbour upscaling factor (each pixel
            becomes an ``upscale`` x ``upscale`` block). Defaults to 1.
        seed (int): Seed of the split and of the long-tailed choice.
            Defaults to 0.
        **kwargs: Other arguments of :class:`mmpretrain.datasets.BaseDataset`
            (``pipeline``, ``test_mode``, ``lazy_init``, ``indices`` ...).

    Attributes:
        train_counts (list[int]): Per-class counts of the train split (for
            either split, known before loading).
        source_indices (np.ndarray): Index into ``load_digits()`` of every
            item, shape (len(self),); set when the data is loaded.

    Raises:
        ValueError: On a bad ``split``, ``upscale``, ``test_per_class`` or
            profile, or (at load) if ``test_per_class + max_per_class``
            exceeds the smallest digits class (174 images).
    """

    METAINFO = {'classes': tuple(str(i) for i in range(10))}

    def __init__(self,
                 split: str = 'train',
                 imbalance_factor: float = 60,
                 max_per_class: int = 120,
                 test_per_class: int = 50,
                 upscale: int = 1,
                 seed: int = 0,
                 ann_file: str = '',
                 metainfo: Optional[dict] = None,
                 **kwargs):
        if split not in ('train', 'test'):
            raise ValueError(
                f"split must be 'train' or 'test', got {split!r}")
        if int(upscale) != upscale or upscale < 1:
            raise ValueError(f'upscale must be an integer >= 1, got {upscale!r}')
        if int(test_per_class) != test_per_class or test_per_class < 1:
            raise ValueError(
                f'test_per_class must be an integer >= 1, got {test_per_class!r}')
        # Validate the profile now (not only at full_init) so that a bad
        # config fails at build time even with lazy_init=True.
        self.train_counts = exponential_profile(max_per_class, 10,
                                                imbalance_factor)
        self.split = split
        self.imbalance_factor = imbalance_factor
        self.max_per_class = int(max_per_class)
        self.test_per_class = int(test_per_class)
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
        needed = self.test_per_class + self.max_per_class
        if per_class.min() < needed:
            raise ValueError(
                f'test_per_class + max_per_class must be <= {per_class.min()} '
                f'(the smallest digits class), got {self.test_per_class} + '
                f'{self.max_per_class} = {needed}')

        test_idx = subsample_long_tailed(
            labels, [self.test_per_class] * 10, seed=self.seed)
        rest = np.setdiff1d(np.arange(labels.size), test_idx)
        if self.split == 'test':
            chosen = test_idx
        else:
            # A second stream (seed + 1) keeps the train choice independent
            # of the test draw while staying deterministic.
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
        ]
