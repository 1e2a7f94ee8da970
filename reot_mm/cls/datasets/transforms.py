"""Small-image augmentations for the multi-view (contrastive) pipelines.

The stock mmpretrain transforms target natural RGB images of at least 32
pixels; on the 8x8 grayscale digits a crop of a few pixels or a colour jitter
either destroys the digit or does nothing. These three transforms work on
(H, W) or (H, W, C) uint8/float arrays of any size, keep the input's shape and
dtype, and draw their randomness from numpy's global generator, as mmcv's and
mmpretrain's transforms do: mmengine seeds it (per DataLoader worker when there
are workers) and ``reot_mm.engine.random_state.RandomStateHook`` saves it in
every checkpoint and restores it on resume, so a resumed run draws the same
augmentations as one that was never interrupted.

* :class:`RandomSmallAffine`: rotation, scaling and sub-image translation
  about the image centre, zero (background) fill.
* :class:`RandomGaussianNoise`: additive pixel noise.
* :class:`RandomContrast`: intensity scaling about the image mean.
"""
from typing import Sequence, Tuple

import cv2
import numpy as np
from mmcv.transforms import BaseTransform
from mmpretrain.registry import TRANSFORMS


def _check_prob(prob: float) -> float:
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f'prob must be in [0, 1], got {prob!r}')
    return float(prob)


def _restore_dtype(img: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast a float image back to ``dtype``, clipping integers to their range."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        img = np.clip(np.rint(img), info.min, info.max)
    return img.astype(dtype, copy=False)


@TRANSFORMS.register_module()
class RandomSmallAffine(BaseTransform):
    """Random rotation + scale + translation with zero fill.

    Required keys: ``img``. Modified keys: ``img`` (same shape and dtype).

    Args:
        max_rotate (float): Rotation angle drawn from U(-max_rotate,
            max_rotate), degrees. Defaults to 10.
        max_translate (float): Shift in pixels, each axis drawn from
            U(-max_translate, max_translate). Defaults to 1.
        scale_range (tuple[float, float]): Isotropic scale drawn uniformly
            from this range. Defaults to (0.9, 1.1).
        prob (float): Probability of applying the transform. Defaults to 1.
        interpolation (str): ``'bilinear'`` or ``'nearest'``.
            Defaults to ``'bilinear'``.
    """

    _INTERPOLATIONS = {'bilinear': cv2.INTER_LINEAR,
                       'nearest': cv2.INTER_NEAREST}

    def __init__(self,
                 max_rotate: float = 10.0,
                 max_translate: float = 1.0,
                 scale_range: Tuple[float, float] = (0.9, 1.1),
                 prob: float = 1.0,
                 interpolation: str = 'bilinear') -> None:
        if max_rotate < 0:
            raise ValueError(f'max_rotate must be >= 0, got {max_rotate!r}')
        if max_translate < 0:
            raise ValueError(
                f'max_translate must be >= 0, got {max_translate!r}')
        if (len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]):
            raise ValueError('scale_range must be (low, high) with '
                             f'0 < low <= high, got {scale_range!r}')
        if interpolation not in self._INTERPOLATIONS:
            raise ValueError(
                "interpolation must be 'bilinear' or 'nearest', got "
                f'{interpolation!r}')
        self.max_rotate = float(max_rotate)
        self.max_translate = float(max_translate)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.prob = _check_prob(prob)
        self.interpolation = interpolation

    def transform(self, results: dict) -> dict:
        if np.random.rand() >= self.prob:
            return results
        img = results['img']
        h, w = img.shape[:2]
        angle = np.random.uniform(-self.max_rotate, self.max_rotate)
        scale = np.random.uniform(*self.scale_range)
        shift = np.random.uniform(-self.max_translate, self.max_translate, 2)
        matrix = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0),
                                         angle, scale)
        matrix[:, 2] += shift
        src = img.astype(np.float32)
        out = cv2.warpAffine(src, matrix, (w, h),
                             flags=self._INTERPOLATIONS[self.interpolation],
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        # cv2 drops a trailing channel axis of size 1
        out = out.reshape(img.shape)
        results['img'] = _restore_dtype(out, img.dtype)
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(max_rotate={self.max_rotate}, '
                f'max_translate={self.max_translate}, '
                f'scale_range={self.scale_range}, prob={self.prob})')


@TRANSFORMS.register_module()
class RandomGaussianNoise(BaseTransform):
    """Add N(0, std²) noise to every pixel (in the image's value units).

    Required keys: ``img``. Modified keys: ``img`` (same shape and dtype;
    integer images are rounded and clipped to their dtype's range).

    Args:
        std (float | Sequence[float]): Noise standard deviation, or a
            (low, high) range it is drawn from per image. Defaults to 8
            (about 3 % of the 0..255 range).
        prob (float): Probability of applying the transform. Defaults to 0.5.
    """

    def __init__(self, std=8.0, prob: float = 0.5) -> None:
        if isinstance(std, Sequence):
            if len(std) != 2 or not 0 <= std[0] <= std[1]:
                raise ValueError('std must be >= 0 or a range (low, high) with '
                                 f'0 <= low <= high, got {std!r}')
            self.std = (float(std[0]), float(std[1]))
        else:
            if std < 0:
                raise ValueError(f'std must be >= 0, got {std!r}')
            self.std = (float(std), float(std))
        self.prob = _check_prob(prob)

    def transform(self, results: dict) -> dict:
        if np.random.rand() >= self.prob:
            return results
        img = results['img']
        std = np.random.uniform(*self.std)
        noisy = img.astype(np.float32) + np.random.normal(
            0.0, std, img.shape).astype(np.float32)
        results['img'] = _restore_dtype(noisy, img.dtype)
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(std={self.std}, prob={self.prob})'


@TRANSFORMS.register_module()
class RandomContrast(BaseTransform):
    """Scale intensities about the image mean: ``x' = m + α·(x − m)``.

    Required keys: ``img``. Modified keys: ``img`` (same shape and dtype).

    Args:
        contrast_range (tuple[float, float]): α ~ U(low, high).
            Defaults to (0.6, 1.4).
        prob (float): Probability of applying the transform. Defaults to 0.5.
    """

    def __init__(self,
                 contrast_range: Tuple[float, float] = (0.6, 1.4),
                 prob: float = 0.5) -> None:
        if (len(contrast_range) != 2
                or not 0 <= contrast_range[0] <= contrast_range[1]):
            raise ValueError('contrast_range must be (low, high) with '
                             f'0 <= low <= high, got {contrast_range!r}')
        self.contrast_range = (float(contrast_range[0]),
                               float(contrast_range[1]))
        self.prob = _check_prob(prob)

    def transform(self, results: dict) -> dict:
        if np.random.rand() >= self.prob:
            return results
        img = results['img']
        alpha = np.random.uniform(*self.contrast_range)
        src = img.astype(np.float32)
        mean = src.mean()
        results['img'] = _restore_dtype(mean + alpha * (src - mean), img.dtype)
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}('
                f'contrast_range={self.contrast_range}, prob={self.prob})')
