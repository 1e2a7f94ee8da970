"""Per-class training counts from OpenMMLab datasets (or from a config value/file).

Counting reads annotations only (no image decoding): mmpretrain datasets via
``get_gt_labels()``, mmdet datasets via ``get_cat_ids(i)`` (one count per
instance), and dataset wrappers are unwrapped: ``ClassBalancedDataset`` and
``RepeatDataset`` count their original dataset once (the prior describes the
annotated distribution, not the re-sampled one), ``ConcatDataset`` sums its
parts.
"""
import json
import os.path as osp
from typing import List, Optional, Sequence

import numpy as np


def unwrap_datasets(dataset) -> list:
    """Return the leaf datasets below mmengine dataset wrappers."""
    from mmengine.dataset import (ClassBalancedDataset, ConcatDataset,
                                  RepeatDataset)
    if isinstance(dataset, ConcatDataset):
        leaves = []
        for part in dataset.datasets:
            leaves.extend(unwrap_datasets(part))
        return leaves
    if isinstance(dataset, (ClassBalancedDataset, RepeatDataset)):
        return unwrap_datasets(dataset.dataset)
    return [dataset]


def count_dataset_classes(dataset, num_classes: int) -> np.ndarray:
    """Count training labels per class, shape (num_classes,), int64.

    Raises:
        TypeError: the dataset exposes neither ``get_gt_labels`` nor
            ``get_cat_ids``.
        ValueError: a label falls outside [0, num_classes).
    """
    total = np.zeros(num_classes, dtype=np.int64)
    for leaf in unwrap_datasets(dataset):
        labels = _leaf_labels(leaf)
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(
                f'{type(leaf).__name__} has labels in [{labels.min()}, '
                f'{labels.max()}] but num_classes is {num_classes}')
        total += np.bincount(labels, minlength=num_classes)[:num_classes]
    return total


def _leaf_labels(leaf) -> np.ndarray:
    """All training labels of one (unwrapped) dataset, flat int64."""
    if hasattr(leaf, 'get_gt_labels'):
        return np.asarray(leaf.get_gt_labels(), dtype=np.int64).reshape(-1)
    unsupported = TypeError(
        f'cannot count classes of {type(leaf).__name__}: it implements neither '
        'get_gt_labels() nor get_cat_ids(); give class_counts or '
        'class_counts_file to ClassStatisticsHook instead')
    if not hasattr(leaf, 'get_cat_ids'):
        raise unsupported
    if hasattr(leaf, 'full_init'):
        leaf.full_init()
    try:
        per_item = [np.asarray(leaf.get_cat_ids(i), dtype=np.int64).reshape(-1)
                    for i in range(len(leaf))]
    except NotImplementedError:  # mmengine's BaseDataset default
        raise unsupported from None
    return np.concatenate(per_item) if per_item else np.zeros(0, np.int64)


def load_counts_file(path: str) -> List[float]:
    """Read counts from a JSON list (or ``{"class_counts": [...]}``) or a text
    file with whitespace-separated numbers."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'class_counts_file {path!r} does not exist')
    with open(path) as handle:
        text = handle.read()
    if path.endswith('.json'):
        data = json.loads(text)
        if isinstance(data, dict):
            if 'class_counts' not in data:
                raise ValueError(f'class_counts_file {path!r} is a JSON object '
                                 'without a "class_counts" key')
            data = data['class_counts']
        return [float(v) for v in data]
    try:
        return [float(v) for v in text.split()]
    except ValueError as error:
        raise ValueError(f'class_counts_file {path!r} must hold numbers: '
                         f'{error}') from None


def dataset_num_classes(dataset) -> Optional[int]:
    """Number of classes from ``metainfo['classes']`` if the dataset has it."""
    leaves = unwrap_datasets(dataset)
    metainfo = getattr(leaves[0], 'metainfo', None) or {}
    classes = metainfo.get('classes')
    return None if classes is None else len(classes)


def save_counts_file(path: str, counts: Sequence[float]) -> None:
    with open(path, 'w') as handle:
        json.dump({'class_counts': [float(c) for c in counts]}, handle)
