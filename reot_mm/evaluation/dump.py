"""The metric that writes compact prediction dumps, and the pre-logit hook.

Registered in mmengine's root ``METRICS`` (layer 3):

* :class:`DumpPredictions` — a metric that stacks the test predictions of a
  classifier into ONE compact file (``.npz`` or ``.pt``, see
  :mod:`reot_mm.evaluation.dump_io`): ``pred_score`` (N, K) float32,
  ``gt_label``, ``pred_label``, ``sample_idx`` (N,) int64, optionally
  ``features`` (N, d) float32 (the head's pre-logit features, see
  :func:`attach_pre_logits`), and the training ``class_counts`` (K,) with the
  ``shot_thresholds`` (many, few) of the run's ``ShotAccuracy``. Loading
  50k x 1000 takes a fraction of a second, against about 11 s for the
  upstream ``DumpResults`` pickle of 50k per-sample dicts
  (docs/methods/posthoc.md). ``tools/test.py --out preds.npz
  [--dump-features]`` adds it.
* :func:`attach_pre_logits` — makes a classifier's ``test_step`` attach the
  head's ``pre_logits`` output (the input of the last linear layer) to every
  data sample as the data field ``pre_logits``.
"""
from typing import Optional, Sequence

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import MessageHub, print_log
from mmengine.registry import METRICS

from reot_mm.evaluation.dump_io import (COMPACT_SUFFIXES, _suffix,
                                        save_predictions)
from reot_mm.evaluation.shot_metric import (CLASS_COUNTS_INFO_KEY,
                                            DEFAULT_FEW_THRESHOLD,
                                            DEFAULT_MANY_THRESHOLD)

__all__ = ['DumpPredictions', 'attach_pre_logits', 'FEATURES_FIELD']

#: data-sample field that :func:`attach_pre_logits` fills
FEATURES_FIELD = 'pre_logits'


def _to_numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


@METRICS.register_module()
class DumpPredictions(BaseMetric):
    """Write classification predictions to one compact ``.npz`` / ``.pt``.

    Each data sample (a ``DataSample.to_dict()`` of mmpretrain, or any dict)
    must carry ``pred_score`` (K,); ``gt_label`` (one label), ``pred_label``
    and ``sample_idx`` are stored when present (``gt_label`` -1 and
    ``sample_idx`` = position otherwise). With ``dump_features=True`` every
    sample must carry the ``pre_logits`` field (call
    :func:`attach_pre_logits` on the model, as ``tools/test.py
    --dump-features`` does).

    Arrays written (one row per test sample, in dataset order):
    ``pred_score`` (N, K) float32, ``gt_label`` (N,) int64, ``pred_label``
    (N,) int64, ``sample_idx`` (N,) int64, ``features`` (N, d) float32 (with
    ``dump_features``), ``class_counts`` (K,) float64 (when known),
    ``shot_thresholds`` (2,) float64 (many, few), ``reot_mm_dump_version`` ()
    int64. ``.npz`` is an uncompressed numpy archive; ``.pt`` a dict of
    tensors for ``torch.load(weights_only=True)``.

    Args:
        out_file_path (str): Output file, ending in ``.npz`` or ``.pt``.
        dump_features (bool): Also store the pre-logit features.
        class_counts (Sequence[float], optional): training count per class;
            None takes them at evaluation time from the MessageHub info
            ``'reot_mm/class_counts'`` (published by ``ClassStatisticsHook``,
            from the checkpoint or the training set); without either, the
            dump holds no counts.
        shot_thresholds (Sequence[float]): ``(many, few)`` of the run's
            ``ShotAccuracy`` (``tools/test.py`` copies them from the
            config); default that metric's defaults (100, 20).
        collect_device (str): ``'cpu'`` or ``'gpu'``, as mmengine metrics.
        collect_dir (str, optional): Directory for CPU collection.

    Raises:
        ValueError: A bad ``out_file_path``; while processing, a sample
            without ``pred_score`` (e.g. a segmentation or detection
            sample), with a multi-label ``gt_label``, without features when
            ``dump_features`` is set, or a class count that changes.
    """

    def __init__(self,
                 out_file_path: str,
                 dump_features: bool = False,
                 class_counts: Optional[Sequence[float]] = None,
                 shot_thresholds: Sequence[float] = (DEFAULT_MANY_THRESHOLD,
                                                     DEFAULT_FEW_THRESHOLD),
                 collect_device: str = 'cpu',
                 collect_dir: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device,
                         collect_dir=collect_dir)
        if not isinstance(out_file_path, str) or \
                _suffix(out_file_path) not in COMPACT_SUFFIXES:
            raise ValueError(f'out_file_path must end with one of '
                             f'{COMPACT_SUFFIXES}, got {out_file_path!r}')
        self.out_file_path = out_file_path
        self.dump_features = bool(dump_features)
        self.class_counts = None if class_counts is None else np.asarray(
            class_counts, dtype=np.float64)
        many, few = (float(t) for t in shot_thresholds)
        if not few <= many:
            raise ValueError(f'shot_thresholds must be (many, few) with few '
                             f'<= many, got {tuple(shot_thresholds)}')
        self.shot_thresholds = np.array([many, few], dtype=np.float64)
        self._num_classes = None

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            if not isinstance(sample, dict):
                sample = sample.to_dict()
            if 'pred_score' not in sample:
                raise ValueError(
                    f'DumpPredictions needs classification samples with '
                    f'pred_score (K,); got keys {sorted(sample)} (for '
                    'segmentation or detection use --out preds.pkl)')
            score = _to_numpy(sample['pred_score']).astype(np.float32)
            if score.ndim != 1:
                raise ValueError(f'pred_score must have shape (K,), got '
                                 f'{score.shape}')
            if self._num_classes is None:
                self._num_classes = score.shape[0]
            elif score.shape[0] != self._num_classes:
                raise ValueError(f'pred_score has {score.shape[0]} classes, '
                                 f'expected {self._num_classes} (the first '
                                 'sample)')
            label = -1
            if sample.get('gt_label') is not None:
                gt = _to_numpy(sample['gt_label']).reshape(-1)
                if gt.size != 1:
                    raise ValueError(f'gt_label must hold one label per '
                                     f'sample (single-label '
                                     f'classification), got {gt.size}')
                label = int(gt[0])
            pred = int(score.argmax())
            if sample.get('pred_label') is not None:
                pred = int(_to_numpy(sample['pred_label']).reshape(-1)[0])
            idx = sample.get('sample_idx', -1)
            item = [score, label, pred, -1 if idx is None else int(idx)]
            if self.dump_features:
                if sample.get(FEATURES_FIELD) is None:
                    raise ValueError(
                        f'dump_features=True but the sample has no '
                        f'{FEATURES_FIELD!r} field; attach the head\'s '
                        'features with reot_mm.evaluation.dump.'
                        'attach_pre_logits(model) (tools/test.py '
                        '--dump-features)')
                item.append(_to_numpy(sample[FEATURES_FIELD]).astype(
                    np.float32).reshape(-1))
            self.results.append(tuple(item))

    def compute_metrics(self, results: list) -> dict:
        arrays = {
            'pred_score': np.stack([r[0] for r in results]),
            'gt_label': np.array([r[1] for r in results], dtype=np.int64),
            'pred_label': np.array([r[2] for r in results], dtype=np.int64),
            'sample_idx': np.array([r[3] for r in results], dtype=np.int64),
        }
        if (arrays['sample_idx'] < 0).any():
            arrays['sample_idx'] = np.arange(len(results), dtype=np.int64)
        if self.dump_features:
            arrays['features'] = np.stack([r[4] for r in results])
        counts = self.class_counts
        if counts is None:
            published = MessageHub.get_current_instance().get_info(
                CLASS_COUNTS_INFO_KEY)
            counts = None if published is None else np.asarray(
                published, dtype=np.float64)
        num_classes = arrays['pred_score'].shape[1]
        if counts is not None and counts.shape != (num_classes, ):
            raise ValueError(f'class_counts has shape {counts.shape} but the '
                             f'predictions have {num_classes} classes')
        if counts is not None:
            arrays['class_counts'] = counts
        arrays['shot_thresholds'] = self.shot_thresholds
        save_predictions(self.out_file_path, arrays)
        print_log(f'{len(results)} predictions written to '
                  f'{self.out_file_path}', logger='current')
        return {}


class _PreLogitsHandle:
    """Undo :func:`attach_pre_logits` with :meth:`remove`."""

    def __init__(self, model, head):
        self._model, self._head = model, head

    def remove(self):
        for obj, name in ((self._model, 'test_step'),
                          (self._head, 'pre_logits')):
            obj.__dict__.pop(name, None)


def attach_pre_logits(model) -> _PreLogitsHandle:
    """Attach the head's pre-logit features to the test outputs.

    Wraps ``model.head.pre_logits`` (mmpretrain heads compute
    ``fc(pre_logits(feats))``; for ``LinearClsHead`` it is the neck output,
    the input of the last linear layer) to remember its output, and
    ``model.test_step`` to store row i of it in the data field
    ``pre_logits`` of output sample i. Instance attributes shadow the class
    methods, so a model wrapper that calls ``module.test_step`` (DDP) uses
    them too. Test-time-augmentation models are not supported (their head
    runs once per augmentation).

    Args:
        model: an mmpretrain classifier, or a model wrapper around one.

    Returns:
        A handle whose ``remove()`` restores the model.

    Raises:
        ValueError: the model has no ``head`` with a ``pre_logits`` method.
    """
    module = getattr(model, 'module', model)  # unwrap DDP-style wrappers
    head = getattr(module, 'head', None)
    if head is None or not callable(getattr(head, 'pre_logits', None)):
        raise ValueError(
            f'attach_pre_logits needs a classifier whose head has a '
            f'pre_logits method (mmpretrain ClsHead), got '
            f'{type(module).__name__} with head {type(head).__name__}')
    state = {}
    pre_logits, test_step = head.pre_logits, module.test_step

    def recording_pre_logits(*args, **kwargs):
        out = pre_logits(*args, **kwargs)
        state['features'] = out
        return out

    def test_step_with_features(data):
        state['features'] = None
        outputs = test_step(data)
        feats = state.pop('features', None)
        if not isinstance(feats, torch.Tensor):
            raise RuntimeError(
                f'{type(head).__name__}.pre_logits returned '
                f'{type(feats).__name__} during test_step; expected a (B, d) '
                'tensor')
        feats = feats.detach().flatten(1)
        if feats.shape[0] != len(outputs):
            raise RuntimeError(
                f'pre_logits gave {feats.shape[0]} rows for {len(outputs)} '
                'outputs (test-time augmentation is not supported)')
        for sample, row in zip(outputs, feats):
            sample.set_field(row, FEATURES_FIELD)
        return outputs

    head.pre_logits = recording_pre_logits
    module.test_step = test_step_with_features
    return _PreLogitsHandle(module, head)
