"""Many / medium / few-shot accuracy for long-tailed classification."""
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import MessageHub
from mmengine.registry import METRICS

from reot_mm.counts_file import load_counts_file

#: MessageHub runtime-info key under which the class-statistics hook publishes
#: the per-class training counts (a list of C numbers).
CLASS_COUNTS_INFO_KEY = 'reot_mm/class_counts'
#: many-shot: more than this many training images (OLTR's split)
DEFAULT_MANY_THRESHOLD = 100
#: few-shot: fewer than this many training images
DEFAULT_FEW_THRESHOLD = 20


def _as_counts(values, source: str) -> np.ndarray:
    """Validate per-class training counts: 1-D, finite, >= 0; float64 (C,)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        counts = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f'{source} must be a list of per-class training counts, '
            f'got {values!r}') from error
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(
            f'{source} must be a non-empty 1-D list of per-class training '
            f'counts, got shape {counts.shape}')
    if not np.isfinite(counts).all() or (counts < 0).any():
        raise ValueError(
            f'{source} must hold finite counts >= 0, got {counts.tolist()}')
    return counts


def _to_int(value) -> int:
    """A label stored as int, 0-d/1-element tensor or array -> int."""
    if isinstance(value, torch.Tensor):
        return int(value.reshape(-1)[0].item())
    if isinstance(value, np.ndarray):
        return int(value.reshape(-1)[0])
    if isinstance(value, (list, tuple)):
        return int(value[0])
    return int(value)


@METRICS.register_module()
class ShotAccuracy(BaseMetric):
    """Top-1, balanced and many / medium / few-shot accuracy, in percent.

    Classes are grouped by their number of TRAINING images ``n_c``:

    * many: ``n_c > many_threshold`` (default: more than 100),
    * few: ``n_c < few_threshold`` (default: fewer than 20),
    * medium: the rest, ``few_threshold <= n_c <= many_threshold``,

    the split of OLTR (Liu et al. 2019) used by RE-OT, BCL, GML and OTLM.

    With the default ``group_average='class'`` a group's accuracy is the mean
    of the per-class accuracies of its classes, as the reference ``shot_acc``
    of OLTR / decoupling that those papers report. ``'sample'`` instead counts
    correct test samples over all test samples of the group's classes. On a
    class-balanced test set (all the LT benchmarks) the two are identical.

    Only classes that occur in the evaluated set count: a class without test
    samples has no accuracy (``nan`` in the per-class list) and is skipped in
    ``balanced`` and in its group; a group without any such class is OMITTED
    from the results (no key) rather than reported as ``nan``.

    Output keys (prefix ``'shot'`` by default):

    * ``shot/top1``: accuracy over all samples;
    * ``shot/balanced``: mean per-class accuracy (balanced accuracy);
    * ``shot/many``, ``shot/medium``, ``shot/few``: group accuracies;
    * ``shot/per_class`` (if ``per_class=True``): list of C accuracies.

    The prediction of a sample is its ``pred_label`` when present, else the
    argmax of ``pred_score``; ``gt_label`` is the target. These are the keys of
    mmpretrain's ``DataSample``, so the metric works on its outputs without
    importing mmpretrain.

    The training counts come from, in order of priority:

    1. ``class_counts`` (a list of C numbers),
    2. ``class_counts_file`` (a ``.json`` list or ``{"class_counts": [...]}``,
       or text with numbers separated by whitespace, newlines or commas),
       read at construction,
    3. the MessageHub runtime info ``'reot_mm/class_counts'`` at evaluation
       time, published by the class-statistics hook with
       ``MessageHub.get_current_instance().update_info(
       'reot_mm/class_counts', counts)``.

    Their length must equal ``len(dataset_meta['classes'])`` when the dataset
    meta is known, and every ground-truth label must be below it.

    Args:
        class_counts (Sequence[float], optional): Training images per class.
        class_counts_file (str, optional): File with the training counts.
        many_threshold (float): Many-shot means ``n_c > many_threshold``.
            Defaults to 100.
        few_threshold (float): Few-shot means ``n_c < few_threshold``; must be
            ``<= many_threshold``. Defaults to 20.
        group_average (str): ``'class'`` (mean of per-class accuracies) or
            ``'sample'`` (pooled over samples). Defaults to ``'class'``.
        per_class (bool): Also report the per-class accuracies.
            Defaults to False.
        collect_device (str): Device for collecting results across ranks.
            Defaults to ``'cpu'``.
        prefix (str, optional): Key prefix. Defaults to ``'shot'``.

    Raises:
        ValueError: On bad arguments; at evaluation, if no counts are
            available, or their length disagrees with the classes or labels.
    """

    default_prefix: Optional[str] = 'shot'

    def __init__(self,
                 class_counts: Optional[Sequence[float]] = None,
                 class_counts_file: Optional[str] = None,
                 many_threshold: float = DEFAULT_MANY_THRESHOLD,
                 few_threshold: float = DEFAULT_FEW_THRESHOLD,
                 group_average: str = 'class',
                 per_class: bool = False,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if class_counts is not None:
            self.class_counts = _as_counts(class_counts, 'class_counts')
        elif class_counts_file is not None:
            self.class_counts = _as_counts(
                load_counts_file(class_counts_file),
                f'class_counts_file {class_counts_file!r}')
        else:
            self.class_counts = None  # looked up in the MessageHub later
        if not few_threshold <= many_threshold:
            raise ValueError(
                f'few_threshold must be <= many_threshold, got '
                f'few_threshold={few_threshold}, '
                f'many_threshold={many_threshold}')
        if group_average not in ('class', 'sample'):
            raise ValueError(
                f"group_average must be 'class' or 'sample', "
                f'got {group_average!r}')
        self.many_threshold = many_threshold
        self.few_threshold = few_threshold
        self.group_average = group_average
        self.per_class = per_class

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        """Keep the predicted and true label of every sample.

        One result per sample (not per batch): ``BaseMetric.evaluate`` cuts
        the gathered results to the dataset size to drop the samples the
        distributed sampler repeats.

        Args:
            data_batch: Unused.
            data_samples (Sequence[dict]): Model outputs with ``gt_label``
                and ``pred_label`` and/or ``pred_score`` (C,).
        """
        for sample in data_samples:
            if 'pred_label' in sample:
                pred = _to_int(sample['pred_label'])
            elif 'pred_score' in sample:
                pred = int(torch.as_tensor(sample['pred_score']).argmax())
            else:
                raise ValueError(
                    'ShotAccuracy needs pred_label or pred_score in every '
                    f'data sample, got keys {sorted(sample)}')
            self.results.append((pred, _to_int(sample['gt_label'])))

    def _resolve_counts(self) -> np.ndarray:
        """Explicit counts, or the ones published in the MessageHub."""
        counts = self.class_counts
        if counts is None:
            published = MessageHub.get_current_instance().get_info(
                CLASS_COUNTS_INFO_KEY)
            if published is None:
                raise ValueError(
                    'ShotAccuracy needs the training count of every class: '
                    'pass class_counts=[...] or class_counts_file=..., or '
                    'run the class-statistics hook that publishes them in '
                    f'the MessageHub runtime info {CLASS_COUNTS_INFO_KEY!r}')
            counts = _as_counts(
                published, f'MessageHub info {CLASS_COUNTS_INFO_KEY!r}')
        classes = (self.dataset_meta or {}).get('classes')
        if classes is not None and len(classes) != counts.size:
            raise ValueError(
                f'ShotAccuracy got {counts.size} class counts but the dataset '
                f"has {len(classes)} classes (dataset_meta['classes'])")
        return counts

    def compute_metrics(self, results: List) -> Dict[str, Union[float, list]]:
        """Compute the accuracies from ``(pred, gt)`` pairs.

        Args:
            results (list[tuple[int, int]]): One pair per evaluated sample.

        Returns:
            dict: Accuracies in percent; see the class docstring for keys.
        """
        counts = self._resolve_counts()
        pairs = np.asarray(results, dtype=np.int64).reshape(-1, 2)
        return shot_accuracies(pairs[:, 0], pairs[:, 1], counts,
                               self.many_threshold, self.few_threshold,
                               self.group_average, self.per_class)


def shot_accuracies(preds, labels, class_counts=None,
                    many_threshold: float = DEFAULT_MANY_THRESHOLD,
                    few_threshold: float = DEFAULT_FEW_THRESHOLD,
                    group_average: str = 'class', per_class: bool = False,
                    num_classes: Optional[int] = None
                    ) -> Dict[str, Union[float, list]]:
    """Top-1, balanced and many / medium / few-shot accuracy, in percent.

    The computation of :class:`ShotAccuracy` (see there for the groups, the
    averages and why empty groups have no key), on arrays.

    Args:
        preds, labels: (N,) predicted and true labels.
        class_counts: (C,) training counts; None: only ``top1`` and
            ``balanced`` (the groups need the counts).
        many_threshold, few_threshold, group_average, per_class: as in
            :class:`ShotAccuracy`.
        num_classes: C when there are no counts (default: largest label + 1).

    Returns:
        dict with ``top1``, ``balanced`` and, with counts, ``many``,
        ``medium``, ``few`` (groups with a tested class) and ``per_class``.
    """
    preds = np.asarray(preds, dtype=np.int64).reshape(-1)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if labels.size == 0:
        raise ValueError('ShotAccuracy got no sample to evaluate')
    counts = None if class_counts is None else _as_counts(class_counts,
                                                          'class_counts')
    if counts is not None:
        num_classes = counts.size
    elif num_classes is None:
        num_classes = int(labels.max()) + 1
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f'gt_label must lie in [0, {num_classes}) (len of the class '
            f'counts), got range [{labels.min()}, {labels.max()}]')

    correct = (preds == labels).astype(np.float64)
    tested = np.bincount(labels, minlength=num_classes).astype(np.float64)
    hits = np.bincount(labels, weights=correct, minlength=num_classes)
    present = tested > 0
    class_acc = np.full(num_classes, np.nan)
    class_acc[present] = hits[present] / tested[present]

    metrics = {
        'top1': 100.0 * correct.mean(),
        'balanced': 100.0 * class_acc[present].mean(),
    }
    groups = {} if counts is None else {
        'many': counts > many_threshold,
        'medium': (counts >= few_threshold) & (counts <= many_threshold),
        'few': counts < few_threshold,
    }
    for name, members in groups.items():
        members = members & present
        if not members.any():
            continue  # documented: empty groups have no key
        if group_average == 'class':
            value = class_acc[members].mean()
        else:
            value = hits[members].sum() / tested[members].sum()
        metrics[name] = 100.0 * value
    metrics = {key: float(value) for key, value in metrics.items()}
    if per_class:
        metrics['per_class'] = (100.0 * class_acc).tolist()
    return metrics
