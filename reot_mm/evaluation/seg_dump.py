"""Semantic-segmentation prediction dumps: the reader and aAcc / mIoU / mAcc.

* :func:`load_seg_dump` — mmseg 1.2.2 ``DumpResults`` pickles (``tools/test.py
  --out preds.pkl``): per image ``seg_logits={'data': (C, H, W)}`` and
  ``gt_sem_seg={'data': (1, H, W)}`` (``SegDataSample.to_dict()``), read with
  the restricted unpickler (:func:`reot_mm.evaluation.dump_io.read_pickle`).
* :func:`sample_pixels` / :func:`apply_pixel_map` — the per-pixel post-hoc
  correction of ``tools/posthoc.py --task seg``: fit on sampled labelled
  pixels, then apply a per-pixel map ``argmax_c(logits W + δ)_c`` to every
  pixel.
* :func:`seg_confusion` / :func:`seg_scores` — aAcc / mIoU / mAcc as mmseg's
  ``IoUMetric`` computes them, from a (C, C) confusion matrix.
"""
from typing import Dict, List, Optional, Tuple

import torch

from reot_mm.evaluation.dump_io import DumpFormatError, read_pickle

__all__ = ['apply_pixel_map', 'load_seg_dump', 'sample_pixels',
           'seg_confusion', 'seg_scores']


def load_seg_dump(path: str, ignore_index: int = 255,
                  objects=None) -> List[dict]:
    """Read an mmseg ``DumpResults`` pickle (``tools/test.py --out x.pkl``).

    mmseg 1.2.2 data samples become, through ``SegDataSample.to_dict()``,
    dicts with ``seg_logits = {'data': (C, H, W)}`` (logits at the original
    image size, after ``postprocess_result``), ``gt_sem_seg = {'data': (1, H,
    W)}`` (labels already reduced when ``reduce_zero_label``; ``ignore_index``
    marks unlabelled pixels) and metainfo such as ``img_path``.

    Args:
        path: the pickle.
        ignore_index: label of unlabelled pixels.
        objects: the already unpickled content of ``path``.

    Returns:
        list of dicts ``{'logits': (C, H, W) float tensor, 'gt': (H, W) int64
        tensor, 'img_path': str or None, 'sample': the original dict}``.

    Raises:
        DumpFormatError: not a list of such dicts, missing ``seg_logits`` or
            ``gt_sem_seg``, a single-channel (sigmoid) output, shapes of
            logits and labels that differ, class counts that differ between
            images, labels outside [0, C) other than ``ignore_index``.
    """
    samples = read_pickle(path) if objects is None else objects
    if not isinstance(samples, (list, tuple)) or len(samples) == 0:
        raise DumpFormatError(f'{path}: expected a non-empty list of '
                              f'per-image dicts (mmseg tools/test.py --out '
                              f'x.pkl), got {type(samples).__name__}')
    images, c = [], None
    for i, s in enumerate(samples):
        if not isinstance(s, dict):
            raise DumpFormatError(f'{path}: image {i} is a '
                                  f'{type(s).__name__}, expected a dict')
        for key in ('seg_logits', 'gt_sem_seg'):
            value = s.get(key)
            if not (isinstance(value, dict) and 'data' in value):
                raise DumpFormatError(
                    f"{path}: image {i} lacks {key}={{'data': ...}}; "
                    f'expected mmseg SegDataSample dicts with seg_logits '
                    f'(C, H, W) and gt_sem_seg (1, H, W), got keys '
                    f'{sorted(s)}')
        logits = torch.as_tensor(s['seg_logits']['data'])
        gt = torch.as_tensor(s['gt_sem_seg']['data'])
        if logits.ndim != 3 or not logits.is_floating_point():
            raise DumpFormatError(f'{path}: image {i} seg_logits must be a '
                                  f'floating (C, H, W) tensor, got shape '
                                  f'{tuple(logits.shape)} {logits.dtype}')
        if logits.shape[0] < 2:
            raise DumpFormatError(f'{path}: image {i} has C = '
                                  f'{logits.shape[0]} channel (a sigmoid '
                                  'binary head); post-hoc correction needs '
                                  'C >= 2 class logits')
        if c is None:
            c = logits.shape[0]
        elif logits.shape[0] != c:
            raise DumpFormatError(f'{path}: image {i} has {logits.shape[0]} '
                                  f'classes, expected {c} (image 0)')
        if gt.ndim == 3 and gt.shape[0] == 1:
            gt = gt[0]
        if tuple(gt.shape) != tuple(logits.shape[1:]):
            raise DumpFormatError(f'{path}: image {i} gt_sem_seg has shape '
                                  f'{tuple(gt.shape)}, expected (1, H, W) = '
                                  f'(1, {logits.shape[1]}, {logits.shape[2]})'
                                  ' to match seg_logits')
        gt = gt.long()
        bad = (gt != ignore_index) & ((gt < 0) | (gt >= c))
        if bad.any():
            raise DumpFormatError(f'{path}: image {i} has labels outside '
                                  f'[0, {c}) other than ignore_index '
                                  f'{ignore_index}: {gt[bad].unique()[:5]}')
        if not torch.isfinite(logits).all():
            raise DumpFormatError(f'{path}: image {i} seg_logits has '
                                  'non-finite values')
        images.append({'logits': logits.float(), 'gt': gt,
                       'img_path': s.get('img_path'), 'sample': s})
    return images


def sample_pixels(images, per_image, ignore_index, seed):
    """(S, C) logits of up to ``per_image`` labelled pixels per image.

    Pixels are drawn uniformly without replacement among those whose label
    is not ``ignore_index`` (the mask is the only use of the annotation: the
    labels themselves are not read), with one seeded generator over the
    images in dump order.
    """
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for image in images:
        valid = (image['gt'].reshape(-1) != ignore_index).nonzero()[:, 0]
        take = valid[torch.randperm(valid.numel(),
                                    generator=gen)[:per_image]]
        rows.append(image['logits'].reshape(image['logits'].shape[0],
                                            -1)[:, take].T)
    return torch.cat(rows)


def apply_pixel_map(images: List[dict], weight: Optional[torch.Tensor],
                    delta: torch.Tensor, ignore_index: int = 255,
                    keep_maps: bool = False
                    ) -> Tuple[torch.Tensor, torch.Tensor, List[dict]]:
    """Predict ``argmax_c((logits W)_c + δ_c)`` for every pixel of every image.

    Args:
        images: :func:`load_seg_dump` output.
        weight: (C, C) linear map W on the logits (OTLM), or None (identity).
        delta: (C,) per-class shift (logit adjustment: -τ log π; post-hoc OT:
            λ g, since argmax(log Z / λ + g) = argmax(logits + λ g)).
        ignore_index: label of unlabelled pixels (left out of the counts).
        keep_maps: also return the refined label maps.

    Returns:
        ``(confusion before, confusion after, refined)``: (C, C) counts of the
        plain argmax and of the map, and per image ``{'img_path',
        'pred_sem_seg': {'data': (1, H, W)}}`` when ``keep_maps``.
    """
    c = delta.shape[0]
    before = torch.zeros(c, c, dtype=torch.long)
    after = torch.zeros(c, c, dtype=torch.long)
    refined = []
    for image in images:
        z = image['logits']
        if weight is not None:
            z = torch.einsum('chw,cd->dhw', z, weight)
        pred = (z + delta[:, None, None]).argmax(0)
        before += seg_confusion(image['logits'].argmax(0), image['gt'], c,
                                ignore_index)
        after += seg_confusion(pred, image['gt'], c, ignore_index)
        if keep_maps:
            refined.append({'img_path': image['img_path'],
                            'pred_sem_seg': {'data': pred[None].clone()}})
    return before, after, refined


def seg_confusion(pred: torch.Tensor, gt: torch.Tensor, num_classes: int,
                  ignore_index: int = 255) -> torch.Tensor:
    """(C, C) confusion counts ``[gt, pred]`` over pixels with gt != ignore.

    Args:
        pred: (H, W) or (P,) predicted labels in [0, C).
        gt: same shape, labels in [0, C) or ``ignore_index``.
    """
    valid = gt != ignore_index
    index = gt[valid].long() * num_classes + pred[valid].long()
    return torch.bincount(index, minlength=num_classes**2).reshape(
        num_classes, num_classes)


def seg_scores(confusion: torch.Tensor) -> Dict[str, float]:
    """aAcc, mIoU, mAcc (percent) as mmseg's ``IoUMetric``.

    IoU_c = TP / (TP + FP + FN), Acc_c = TP / (TP + FN); classes with a zero
    denominator are NaN and skipped by the means (``nanmean``), as in
    ``IoUMetric.total_area_to_metrics``.
    """
    confusion = confusion.double()
    tp = confusion.diag()
    label_area = confusion.sum(1)
    pred_area = confusion.sum(0)
    union = label_area + pred_area - tp
    iou = tp / union
    acc = tp / label_area
    return {
        'aAcc': (tp.sum() / label_area.sum()).item() * 100,
        'mIoU': torch.nanmean(iou).item() * 100,
        'mAcc': torch.nanmean(acc).item() * 100,
    }
