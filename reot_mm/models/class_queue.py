"""Class-wise FIFO queues of contrast features (GML Eq. 6; Suh and Seo, ICML 2023).

One tensor of K slots is cut into C contiguous segments, one ring buffer per
class. Segment sizes follow GML Eq. 6, |Z_c| = k_m + (K - C·k_m)·p(c), made
integral as in the authors' code: the segment of class c (1-based) ends at

    end_c = min(K, ceil(c·k_m + (K - C·k_m)·Σ_{c' <= c} p(c'))),

so the sizes sum to K and each is at least k_m (the ceilings of two cumulative
positions that differ by at least the integer k_m differ by at least k_m).

Every slot stores a raw teacher feature (d), the class of its segment and the
dataset index of the image it came from. Before anything is written, slot i
holds a random unit vector with index i - K (negative, never a dataset index).
Enqueueing is vectorised and costs O(N·d + C) for N new items, independently
of K: each item's slot is its class's pointer plus its rank among the batch's
items of that class, modulo the segment size. Under DDP the items are first
gathered from all ranks (in rank order), so every rank writes the same slots
and holds the same queue.

All state (features, labels, indices, pointers, segment bounds, counters) is in
registered buffers of fixed shape, so it is saved in checkpoints and restored
on resume.
"""
import hashlib
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.registry import MODELS

from reot_mm import dist
from reot_mm.losses.priors import validate_class_counts

__all__ = ['segment_bounds', 'ClassQueue']


def segment_bounds(class_counts, size: int, min_per_class: int
                   ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Start and size of every class's segment (GML Eq. 6).

    Args:
        class_counts: (C,) per-class training counts (p(c) = n_c / Σ n).
        size: K, the total number of slots.
        min_per_class: k_m >= 1, the smallest segment.

    Returns:
        (starts, sizes): two (C,) int64 tensors; ``sizes.sum() == K`` and
        ``sizes.min() >= k_m``.

    Raises:
        ValueError: K < k_m·C (the queue cannot give every class k_m slots),
            k_m < 1 (a class could get no slot, making Eq. 3 undefined), or
            bad counts.
    """
    counts = validate_class_counts(class_counts, name='class_counts')
    num_classes = counts.numel()
    if int(min_per_class) != min_per_class or min_per_class < 1:
        raise ValueError(
            f'min_per_class (k_m) must be an integer >= 1, got {min_per_class!r}: '
            'with k_m = 0 a rare class can get no slot and its GML likelihood '
            '(Eq. 3) is undefined (NaN in the authors\' code)')
    if int(size) != size or size < min_per_class * num_classes:
        raise ValueError(
            f'ClassQueue size (K) = {size} is too small: every one of the '
            f'{num_classes} classes needs min_per_class (k_m) = {min_per_class} '
            f'slots, so size must be at least k_m·C = '
            f'{min_per_class * num_classes} (or lower min_per_class)')
    size, min_per_class = int(size), int(min_per_class)
    ratio = counts / counts.sum()
    position = (torch.arange(1, num_classes + 1, dtype=torch.float64) * min_per_class
                + (size - num_classes * min_per_class) * ratio.cumsum(0))
    # a tolerance so that float round-off does not push an integer up by one
    ends = torch.ceil(position - 1e-9).to(torch.int64).clamp(max=size)
    ends[-1] = size
    starts = torch.cat([ends.new_zeros(1), ends[:-1]])
    return starts, ends - starts


@MODELS.register_module()
class ClassQueue(nn.Module):
    """K slots in C per-class FIFO rings of raw features (GML Eq. 6).

    Args:
        num_classes: C.
        feat_dim: d, the dimension of the stored (teacher) features.
        size: K, the total number of slots.
        min_per_class: k_m, the smallest segment (>= 1).
        class_counts: per-class training counts; when given the segments are
            built right away, otherwise by :meth:`build_segments` (called by
            ``GMLQueueHook`` before training).
        seed: seed of the initial random unit vectors (identical on every rank).

    Buffers (all in the state dict):
        features (K, d) float32, labels (K,) int64 (class of the slot's
        segment), indices (K,) int64 (dataset index, negative for initial
        entries), segment_starts / segment_sizes (C,) int64, pointers (C,)
        int64 (next slot to overwrite = oldest entry, relative to the segment
        start), num_enqueued (C,) int64 (items written since the build).
    """

    def __init__(self,
                 num_classes: int,
                 feat_dim: int,
                 size: int,
                 min_per_class: int = 1,
                 class_counts: Optional[Sequence[float]] = None,
                 seed: int = 0):
        super().__init__()
        for name, value in (('num_classes', num_classes), ('feat_dim', feat_dim),
                            ('size', size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f'ClassQueue: {name} must be a positive int, '
                                 f'got {value!r}')
        if size < min_per_class * num_classes or min_per_class < 1:
            # same message as segment_bounds, raised at build time
            segment_bounds(torch.ones(num_classes), size, min_per_class)
        self.num_classes = num_classes
        self.feat_dim = feat_dim
        self.size = size
        self.min_per_class = int(min_per_class)
        self.seed = seed
        self.register_buffer('features', torch.zeros(size, feat_dim))
        self.register_buffer('labels', torch.full((size, ), -1, dtype=torch.long))
        self.register_buffer('indices', torch.arange(-size, 0, dtype=torch.long))
        self.register_buffer('segment_starts',
                             torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer('segment_sizes',
                             torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer('pointers', torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer('num_enqueued',
                             torch.zeros(num_classes, dtype=torch.long))
        if class_counts is not None:
            self.build_segments(class_counts)

    # ------------------------------------------------------------- building
    @property
    def is_built(self) -> bool:
        """Whether the segments exist (built now or restored from a checkpoint)."""
        return bool(self.segment_sizes.sum() == self.size)

    def build_segments(self, class_counts) -> None:
        """Lay out the segments from class counts and reset every slot.

        Slots get their segment's class, random unit vectors (from ``seed``,
        the same on every rank) and indices -K..-1; pointers and counters are
        zeroed.
        """
        counts = validate_class_counts(class_counts, self.num_classes)
        starts, sizes = segment_bounds(counts, self.size, self.min_per_class)
        device = self.features.device
        self.segment_starts.copy_(starts)
        self.segment_sizes.copy_(sizes)
        self.labels.copy_(torch.repeat_interleave(
            torch.arange(self.num_classes), sizes).to(device))
        generator = torch.Generator().manual_seed(self.seed)
        initial = torch.randn(self.size, self.feat_dim, generator=generator)
        initial = initial / initial.norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.features.copy_(initial.to(self.features))
        self.indices.copy_(torch.arange(-self.size, 0, device=device))
        self.pointers.zero_()
        self.num_enqueued.zero_()

    def expected_sizes(self, class_counts) -> torch.Tensor:
        """Segment sizes that ``class_counts`` would give (for resume checks)."""
        return segment_bounds(class_counts, self.size, self.min_per_class)[1]

    # ------------------------------------------------------------ enqueueing
    @torch.no_grad()
    def enqueue(self, features: torch.Tensor, labels: torch.Tensor,
                indices: torch.Tensor, gather: bool = True) -> None:
        """Write new items into their classes' rings (oldest entries first out).

        Args:
            features: (N, d) raw features (cast to the queue's dtype).
            labels: (N,) int64 classes.
            indices: (N,) int64 dataset indices.
            gather: all-gather the items from every rank first (in rank order)
                so that all ranks write the same items; set False only when
                the caller already did.

        If a batch holds more items of a class than its segment has slots,
        only the newest ``size_c`` are kept, as sequential writes would.
        """
        if not self.is_built:
            raise RuntimeError(
                'ClassQueue segments are not built: add GMLQueueHook to '
                'custom_hooks (after ClassStatisticsHook) or call '
                'build_segments(class_counts)')
        if features.ndim != 2 or features.shape[1] != self.feat_dim:
            raise ValueError(
                f'ClassQueue stores {self.feat_dim}-d features but got features '
                f'of shape {tuple(features.shape)}; the teacher\'s feature '
                'dimension must equal the queue\'s feat_dim (key MLP in_channels)')
        if labels.shape != (features.shape[0], ) or indices.shape != labels.shape:
            raise ValueError(
                f'labels and indices must have shape ({features.shape[0]},), got '
                f'{tuple(labels.shape)} and {tuple(indices.shape)}')
        labels = labels.to(self.labels.device, torch.long)
        indices = indices.to(self.indices.device, torch.long)
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f'labels must be in [0, {self.num_classes}), got '
                             f'[{int(labels.min())}, {int(labels.max())}]')
        features = features.detach().to(self.features)
        if gather:
            features = dist.gather_rows(features)[0]
            labels = dist.gather_rows(labels)[0]
            indices = dist.gather_rows(indices)[0]
        num_items = labels.numel()
        if num_items == 0:
            return
        order = torch.sort(labels, stable=True).indices
        sorted_labels = labels[order]
        batch_counts = torch.bincount(labels, minlength=self.num_classes)
        first = batch_counts.cumsum(0) - batch_counts
        rank = torch.arange(num_items, device=labels.device) - first[sorted_labels]
        sizes = self.segment_sizes[sorted_labels]
        keep = rank >= batch_counts[sorted_labels] - sizes
        slots = self.segment_starts[sorted_labels] + torch.remainder(
            self.pointers[sorted_labels] + rank, sizes)
        source = order[keep]
        slots = slots[keep]
        self.features[slots] = features[source]
        self.indices[slots] = indices[source]
        self.pointers.copy_(torch.remainder(self.pointers + batch_counts,
                                            self.segment_sizes))
        self.num_enqueued.add_(batch_counts)

    # ------------------------------------------------------------ inspection
    def class_entries(self, class_index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Features (size_c, d) and indices (size_c,) of one class, oldest first."""
        start = int(self.segment_starts[class_index])
        size = int(self.segment_sizes[class_index])
        order = start + torch.remainder(
            torch.arange(size, device=self.features.device)
            + self.pointers[class_index], size)
        return self.features[order], self.indices[order]

    def class_fill(self) -> torch.Tensor:
        """(C,) fraction of each segment holding written (non-initial) entries."""
        written = torch.zeros(self.num_classes, device=self.indices.device)
        written.index_add_(0, self.labels.clamp_min(0),
                           (self.indices >= 0).to(written.dtype))
        return written / self.segment_sizes.clamp_min(1)

    def fingerprint(self) -> list:
        """A few float64 checksums of the state (for cross-rank checks)."""
        position = torch.arange(self.size, device=self.features.device,
                                dtype=torch.float64)
        return [float(self.features.double().sum()),
                float((self.features.double().sum(1) * position).sum()),
                float((self.indices.double() * position).sum()),
                float((self.labels.double() * position).sum()),
                float(self.pointers.double().sum()),
                float(self.num_enqueued.double().sum())]

    def extra_repr(self) -> str:
        return (f'num_classes={self.num_classes}, feat_dim={self.feat_dim}, '
                f'size={self.size}, min_per_class={self.min_per_class}')


def image_ids(data_samples) -> List[int]:
    """A non-negative id per image, the same on every rank: the queue's
    sample index for GML's same-sample exclusion in dense tasks.

    The dataset's ``img_id`` where it is a non-negative int (LVIS / COCO),
    else a 62-bit hash of ``img_path`` (ADE20K has no ids).
    """
    ids = []
    for number, sample in enumerate(data_samples):
        img_id = sample.metainfo.get('img_id')
        if isinstance(img_id, int) and img_id >= 0:
            ids.append(img_id)
            continue
        key = sample.metainfo.get('img_path') or f'unnamed-{number}'
        digest = hashlib.blake2b(str(key).encode(), digest_size=8).digest()
        ids.append(int.from_bytes(digest, 'little') & ((1 << 62) - 1))
    return ids
