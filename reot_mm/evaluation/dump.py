"""Prediction dumps for post-hoc tools: a compact writer and the readers.

Writing (layer 3, registered in mmengine's root ``METRICS``):

* :class:`DumpPredictions` — a metric that stacks the test predictions of a
  classifier into ONE compact file (``.npz`` or ``.pt``): ``pred_score``
  (N, K) float32, ``gt_label`` (N,) int64, ``pred_label`` (N,) int64,
  ``sample_idx`` (N,) int64 and, optionally, ``features`` (N, d) float32
  (the head's pre-logit features, see :func:`attach_pre_logits`). Loading
  50k x 1000 takes a fraction of a second, against about 11 s for the upstream
  ``DumpResults`` pickle of 50k per-sample dicts (docs/methods/posthoc.md).
  ``tools/test.py --out preds.npz [--dump-features]`` adds it.
* :func:`attach_pre_logits` — makes a classifier's ``test_step`` attach the
  head's ``pre_logits`` output (the input of the last linear layer) to every
  data sample as the data field ``pre_logits``.

Reading:

* :func:`load_predictions` — classification dumps in the compact format (fast
  path) or the upstream pickle (``tools/test.py --out preds.pkl``: a list of
  per-sample dicts with ``pred_score`` (K,) and ``gt_label`` (1,); slow path).
* :func:`load_seg_dump` — mmseg 1.2.2 ``DumpResults`` pickles: per image a dict
  with ``seg_logits={'data': (C, H, W)}`` and ``gt_sem_seg={'data': (1, H,
  W)}`` (``SegDataSample.to_dict()``).
* :func:`seg_confusion` / :func:`seg_scores` — aAcc / mIoU / mAcc as mmseg's
  ``IoUMetric`` computes them, from a (C, C) confusion matrix.

Malformed input raises :class:`DumpFormatError` (a ``ValueError``) naming the
file, the offending key or sample, and what was expected.
"""
import os.path as osp
import pickle
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from mmengine.registry import METRICS

from reot_mm.evaluation.safe_pickle import safe_pickle_load

__all__ = [
    'DumpFormatError', 'DumpPredictions', 'attach_pre_logits',
    'load_predictions', 'load_seg_dump', 'read_pickle', 'seg_confusion',
    'seg_scores', 'save_predictions', 'COMPACT_SUFFIXES', 'PICKLE_SUFFIXES',
    'FEATURES_FIELD'
]

#: file suffixes of the compact format
COMPACT_SUFFIXES = ('.npz', '.pt')
PICKLE_SUFFIXES = ('.pkl', '.pickle')
#: data-sample field that :func:`attach_pre_logits` fills
FEATURES_FIELD = 'pre_logits'
#: version stored in compact dumps (key ``reot_mm_dump_version``)
DUMP_VERSION = 1


class DumpFormatError(ValueError):
    """A prediction dump does not have the expected format."""


def _suffix(path: str) -> str:
    return osp.splitext(str(path))[1].lower()


def _to_numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


# --------------------------------------------------------------- writing
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
    ``dump_features``), ``reot_mm_dump_version`` () int64. ``.npz`` is an
    uncompressed numpy archive; ``.pt`` a dict of tensors for
    ``torch.load(weights_only=True)``.

    Args:
        out_file_path (str): Output file, ending in ``.npz`` or ``.pt``.
        dump_features (bool): Also store the pre-logit features.
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
        save_predictions(self.out_file_path, arrays)
        print_log(f'{len(results)} predictions written to '
                  f'{self.out_file_path}', logger='current')
        return {}


def save_predictions(path: str, arrays: Dict[str, np.ndarray]) -> None:
    """Write a compact dump (``.npz`` or ``.pt``) from numpy arrays."""
    arrays = dict(arrays)
    arrays['reot_mm_dump_version'] = np.array(DUMP_VERSION, dtype=np.int64)
    suffix = _suffix(path)
    if suffix == '.npz':
        with open(path, 'wb') as handle:  # keep the name as given
            np.savez(handle, **arrays)
    elif suffix == '.pt':
        torch.save({k: torch.from_numpy(np.ascontiguousarray(v))
                    for k, v in arrays.items()}, path)
    else:
        raise ValueError(f'path must end with one of {COMPACT_SUFFIXES}, '
                         f'got {path!r}')


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


# --------------------------------------------------------------- reading
def load_predictions(path: str, need_labels: bool = True,
                     need_features: bool = False, objects=None) -> dict:
    """Read a classification prediction dump.

    Args:
        path: a compact ``.npz`` / ``.pt`` (:class:`DumpPredictions`, fast) or
            an upstream ``DumpResults`` pickle ``.pkl`` / ``.pickle`` (list of
            per-sample dicts with ``pred_score`` (K,) and ``gt_label`` (1,);
            slow: one object per sample).
        need_labels: require ground-truth labels in [0, K) for every sample.
        need_features: require the ``features`` array (compact dumps written
            with ``dump_features``).
        objects: the already unpickled content of a pickle ``path`` (see
            :func:`read_pickle`), to avoid reading it twice.

    Returns:
        dict with ``pred_score`` (N, K) float32 tensor (validated: finite,
        non-negative), ``gt_label`` (N,) int64 tensor (-1 = unknown),
        ``pred_label`` (N,), ``sample_idx`` (N,), ``features`` (N, d) or None,
        ``format`` (``'compact'`` / ``'pickle'``) and, for pickles,
        ``samples`` (the per-sample dicts, for writing a refined pickle).

    Raises:
        DumpFormatError: unknown suffix, missing keys, wrong shapes or dtypes,
            inconsistent class counts, labels out of range, missing features.
        FileNotFoundError: no such file.
    """
    suffix = _suffix(path)
    if objects is None and not osp.isfile(path):
        raise FileNotFoundError(f'dump {path!r} does not exist')
    if suffix in COMPACT_SUFFIXES:
        out = _load_compact(path)
    elif suffix in PICKLE_SUFFIXES:
        out = _load_pickle(path, objects)
    else:
        raise DumpFormatError(
            f'{path}: unknown dump format {suffix!r}; expected a compact '
            f'dump {COMPACT_SUFFIXES} (tools/test.py --out preds.npz) or a '
            f'pickle {PICKLE_SUFFIXES} (tools/test.py --out preds.pkl)')
    scores = out['pred_score']
    n, k = scores.shape
    with torch.no_grad():
        lowest, highest = scores.amin(), scores.amax()  # NaN-propagating
    if not (bool(torch.isfinite(highest)) and bool(torch.isfinite(lowest))
            and lowest >= 0):
        raise DumpFormatError(f'{path}: pred_score must be finite '
                              f'probabilities (softmax scores) >= 0, got '
                              f'min {lowest.item():.4g}, max '
                              f'{highest.item():.4g}')
    labels = out['gt_label']
    if need_labels and (labels < 0).any():
        first = int((labels < 0).nonzero()[0])
        raise DumpFormatError(f'{path}: sample {first} has no gt_label; '
                              'labels are needed for the metrics')
    if ((labels >= k) | (labels < -1)).any():
        raise DumpFormatError(f'{path}: gt_label out of range [0, {k}): '
                              f'{labels.min().item()}..{labels.max().item()}')
    if need_features and out.get('features') is None:
        raise DumpFormatError(
            f'{path}: the dump has no features; write it with tools/test.py '
            '--out preds.npz --dump-features (DumpPredictions with '
            'dump_features=True)')
    return out


def _load_compact(path: str) -> dict:
    if _suffix(path) == '.npz':
        try:
            with np.load(path, allow_pickle=False) as archive:
                raw = {key: archive[key] for key in archive.files}
        except (ValueError, OSError) as error:
            if not osp.exists(path):
                raise FileNotFoundError(path) from None
            raise DumpFormatError(f'{path}: not a readable .npz archive '
                                  f'({error})') from None
        raw = {key: torch.from_numpy(value) for key, value in raw.items()}
    else:
        try:
            raw = torch.load(path, map_location='cpu', weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as error:  # noqa: BLE001 (torch raises many types)
            raise DumpFormatError(f'{path}: not a readable .pt dump of '
                                  f'tensors ({error})') from None
        if not isinstance(raw, dict) or not all(
                isinstance(v, torch.Tensor) for v in raw.values()):
            raise DumpFormatError(f'{path}: expected a dict of tensors '
                                  f'(DumpPredictions), got '
                                  f'{type(raw).__name__}')
    if 'pred_score' not in raw:
        raise DumpFormatError(f'{path}: missing key pred_score; expected '
                              f'pred_score (N, K) and gt_label (N,), got '
                              f'keys {sorted(raw)}')
    scores = raw['pred_score']
    if scores.ndim != 2 or min(scores.shape) == 0 or \
            not scores.is_floating_point():
        raise DumpFormatError(f'{path}: pred_score must be a non-empty '
                              f'floating (N, K) array, got shape '
                              f'{tuple(scores.shape)} {scores.dtype}')
    scores = scores.float()
    n = scores.shape[0]

    def vector(key, default):
        if key not in raw:
            return default()
        value = raw[key]
        if value.ndim != 1 or value.shape[0] != n or \
                value.is_floating_point() or value.dtype == torch.bool:
            raise DumpFormatError(f'{path}: {key} must be an integer array '
                                  f'of shape ({n},) to match pred_score, got '
                                  f'shape {tuple(value.shape)} {value.dtype}')
        return value.long()

    if 'gt_label' not in raw:
        raise DumpFormatError(f'{path}: missing key gt_label; expected '
                              f'gt_label ({n},) (-1 for unlabelled), got keys '
                              f'{sorted(raw)}')
    features = raw.get('features')
    if features is not None and (features.ndim != 2 or features.shape[0] != n
                                 or not features.is_floating_point()):
        raise DumpFormatError(f'{path}: features must be a floating ({n}, d) '
                              f'array to match pred_score, got shape '
                              f'{tuple(features.shape)} {features.dtype}')
    return {
        'format': 'compact',
        'pred_score': scores,
        'gt_label': vector('gt_label', None),
        'pred_label': vector('pred_label', lambda: scores.argmax(1)),
        'sample_idx': vector('sample_idx', lambda: torch.arange(n)),
        'features': None if features is None else features.float(),
    }


def read_pickle(path: str):
    """Unpickle a dump without running code from it.

    Only plain containers, numpy arrays / scalars and torch tensors are resolved
    (:class:`~reot_mm.evaluation.safe_pickle.RestrictedUnpickler`); a pickle naming any other
    global, and unreadable content, raise :class:`DumpFormatError`.
    """
    try:
        with open(path, 'rb') as handle:
            return safe_pickle_load(handle)
    except (pickle.UnpicklingError, EOFError, AttributeError,
            ImportError) as error:
        raise DumpFormatError(f'{path}: not a readable pickle ({error})') \
            from None


def _load_pickle(path: str, samples=None) -> dict:
    if samples is None:
        samples = read_pickle(path)
    if not isinstance(samples, (list, tuple)) or len(samples) == 0:
        raise DumpFormatError(f'{path}: expected a non-empty list of '
                              f'per-sample dicts (tools/test.py --out), got '
                              f'{type(samples).__name__}')
    scores, labels, indices = [], [], []
    k = None
    for i, s in enumerate(samples):
        if not isinstance(s, dict):
            raise DumpFormatError(f'{path}: sample {i} is a '
                                  f'{type(s).__name__}, expected a dict')
        missing = {'pred_score', 'gt_label'} - set(s)
        if missing:
            hint = (' (a segmentation dump: use --task seg)'
                    if 'seg_logits' in s else '')
            raise DumpFormatError(
                f'{path}: sample {i} lacks key(s) {sorted(missing)}; '
                f'expected pred_score (K,) and gt_label (1,), got keys '
                f'{sorted(s)}{hint}')
        score = torch.as_tensor(s['pred_score'])
        if score.ndim != 1:
            raise DumpFormatError(f'{path}: sample {i} pred_score must have '
                                  f'shape (K,), got {tuple(score.shape)}')
        if k is None:
            k = score.shape[0]
        elif score.shape[0] != k:
            raise DumpFormatError(f'{path}: sample {i} has {score.shape[0]} '
                                  f'class scores, expected {k} (class count '
                                  'of sample 0)')
        label = torch.as_tensor(s['gt_label']).reshape(-1)
        if label.numel() != 1:
            raise DumpFormatError(f'{path}: sample {i} gt_label must have '
                                  f'shape (1,), got {tuple(label.shape)}')
        scores.append(score)
        labels.append(label)
        indices.append(int(s.get('sample_idx', i)))
    scores = torch.stack(scores).float()
    return {
        'format': 'pickle',
        'samples': list(samples),
        'pred_score': scores,
        'gt_label': torch.cat(labels).long(),
        'pred_label': scores.argmax(1),
        'sample_idx': torch.tensor(indices, dtype=torch.long),
        'features': None,
    }


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


# --------------------------------------------------------- seg metrics
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
