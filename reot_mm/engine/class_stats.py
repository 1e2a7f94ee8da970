"""Per-class training counts from OpenMMLab datasets (or from a config value/file).

Counting reads annotations only (no image decoding): mmpretrain datasets via
``get_gt_labels()``, mmdet datasets via ``get_cat_ids(i)`` (one count per
instance), and dataset wrappers are unwrapped: ``ClassBalancedDataset`` and
``RepeatDataset`` count their original dataset once (the prior describes the
annotated distribution, not the re-sampled one), ``ConcatDataset`` sums its
parts.
"""
from typing import Optional

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


def dataset_num_classes(dataset) -> Optional[int]:
    """Number of classes from ``metainfo['classes']`` if the dataset has it."""
    leaves = unwrap_datasets(dataset)
    metainfo = getattr(leaves[0], 'metainfo', None) or {}
    classes = metainfo.get('classes')
    return None if classes is None else len(classes)
