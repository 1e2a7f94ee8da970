"""Pixel sampling for dense contrastive losses: a few pixels per class per image."""
from typing import Optional

import torch
import torch.nn.functional as F


def labels_at(seg_label: torch.Tensor, size) -> torch.Tensor:
    """Nearest-neighbour (B, H, W) labels at a feature map's (h, w), int64.

    Nearest keeps the label set (no averaging across class borders) and the
    ignore value.
    """
    if tuple(seg_label.shape[-2:]) == tuple(size):
        return seg_label.long()
    resized = F.interpolate(seg_label[:, None].float(), size=tuple(size),
                            mode='nearest')
    return resized[:, 0].long()


def sample_pixels_per_class(labels: torch.Tensor, num_per_class: int,
                            ignore_index: Optional[int] = 255,
                            generator: Optional[torch.Generator] = None
                            ) -> torch.Tensor:
    """Draw up to ``num_per_class`` labelled pixels of every class of every image.

    Uniformly at random without replacement within each (image, class) group:
    a random permutation of the candidate pixels, stably sorted by group, keeps
    each group's first ``num_per_class`` entries. No loop over images or
    classes; O(M log M) for M labelled pixels.

    Args:
        labels: (B, h, w) integer labels (at the feature resolution).
        num_per_class: n >= 1, pixels kept per class per image (fewer when
            the class covers fewer pixels).
        ignore_index: label of pixels never sampled.
        generator: optional torch.Generator (on ``labels``' device).

    Returns:
        (N,) int64 indices into ``labels.reshape(-1)``, grouped by image and
        class; empty when no pixel is labelled.
    """
    if int(num_per_class) != num_per_class or num_per_class < 1:
        raise ValueError('num_per_class must be an integer >= 1, got '
                         f'{num_per_class!r}')
    if labels.ndim != 3:
        raise ValueError(f'labels must be (B, h, w), got {tuple(labels.shape)}')
    flat = labels.reshape(-1).long()
    valid = flat >= 0 if ignore_index is None else \
        (flat != ignore_index) & (flat >= 0)
    candidates = torch.nonzero(valid).squeeze(1)
    if candidates.numel() == 0:
        return candidates
    pixels_per_image = labels.shape[1] * labels.shape[2]
    num_groups = int(flat[candidates].max()) + 1
    group = (candidates // pixels_per_image) * num_groups + flat[candidates]
    shuffle = torch.randperm(candidates.numel(), generator=generator,
                             device=labels.device)
    order = shuffle[torch.sort(group[shuffle], stable=True).indices]
    sorted_group = group[order]
    _, counts = torch.unique_consecutive(sorted_group, return_counts=True)
    first = torch.repeat_interleave(counts.cumsum(0) - counts, counts)
    rank = torch.arange(order.numel(), device=labels.device) - first
    return candidates[order[rank < num_per_class]]


def check_pixel_labels(labels: torch.Tensor, num_classes: int,
                       ignore_index: Optional[int], owner: str) -> None:
    """Raise if a label map holds a value outside [0, C) that is not ignored.

    Args:
        labels: (B, h, w) integer labels.
        num_classes: C of the head.
        ignore_index: the head's ignore label.
        owner: the head's name, for the message.

    Raises:
        ValueError: naming the values, ``num_classes`` and ``ignore_index``.
    """
    bad = (labels < 0) | (labels >= num_classes)
    if ignore_index is not None:
        bad &= labels != ignore_index
    if bool(bad.any()):
        values = torch.unique(labels[bad]).tolist()
        raise ValueError(
            f'{owner}: pixel labels {values[:10]} are outside the classes '
            f'[0, num_classes={num_classes}) and not ignore_index='
            f'{ignore_index}; check num_classes, reduce_zero_label and the '
            'label maps')


def pixel_rows(features: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B·h·w, C): one row per pixel, image-major (the
    index order of :func:`pick_pixels`)."""
    return features.flatten(2).transpose(1, 2).reshape(-1, features.shape[1])


def pick_pixels(seg_label: torch.Tensor, size, num_per_class: int,
                num_classes: int, ignore_index: Optional[int], owner: str):
    """The pixels a dense contrastive head trains on, at a feature grid.

    Labels at ``size`` (:func:`labels_at`), checked (:func:`check_pixel_labels`),
    then up to ``num_per_class`` pixels of every class of every image
    (:func:`sample_pixels_per_class`).

    Args:
        seg_label: (B, H, W) label maps.
        size: the feature map's (h, w).

    Returns:
        ``(picked (N,) indices into the B·h·w rows of :func:`pixel_rows`,
        labels (B, h, w))``.
    """
    labels = labels_at(seg_label, size)
    check_pixel_labels(labels, num_classes, ignore_index, owner)
    return sample_pixels_per_class(labels, num_per_class, ignore_index), labels
