"""Prediction dump files: the compact writer and the classification readers.

* :func:`save_predictions` — a compact dump (``.npz`` or ``.pt``) of stacked
  arrays: ``pred_score`` (N, K) float32, ``gt_label`` / ``pred_label`` /
  ``sample_idx`` (N,) int64, optionally ``features`` (N, d) float32, and the
  run's training ``class_counts`` (K,) and ``shot_thresholds`` (many, few),
  so that post-hoc tools report many / medium / few-shot accuracy without
  being told the counts again.
* :func:`load_predictions` — classification dumps in the compact format (fast
  path) or the upstream pickle (``tools/test.py --out preds.pkl``: a list of
  per-sample dicts with ``pred_score`` (K,) and ``gt_label`` (1,); slow path;
  the counts then come from the side file :func:`meta_path` written next to
  it).
* :func:`read_pickle` — every pickle is read with the restricted unpickler of
  :mod:`reot_mm.evaluation.safe_pickle` (a prediction dump never runs code).

Malformed input raises :class:`DumpFormatError` (a ``ValueError``) naming the
file, the offending key or sample, and what was expected.
"""
import json
import os.path as osp
import pickle
from typing import Dict, Optional, Sequence

import numpy as np
import torch

from reot_mm.evaluation.safe_pickle import safe_pickle_load

__all__ = [
    'COMPACT_SUFFIXES', 'PICKLE_SUFFIXES', 'DumpFormatError', 'load_predictions',
    'meta_path', 'read_dump_meta', 'read_pickle', 'read_side_meta',
    'save_predictions', 'write_dump_meta'
]

#: file suffixes of the compact format
COMPACT_SUFFIXES = ('.npz', '.pt')
PICKLE_SUFFIXES = ('.pkl', '.pickle')
#: version stored in compact dumps (key ``reot_mm_dump_version``)
DUMP_VERSION = 1
#: what a compact dump must be, for error messages
_COMPACT_EXPECTED = ('a prediction dump written by tools/test.py --out '
                     'preds.npz / preds.pt (DumpPredictions)')


class DumpFormatError(ValueError):
    """A prediction dump does not have the expected format."""


def _suffix(path: str) -> str:
    return osp.splitext(str(path))[1].lower()


def _first_line(error: BaseException, limit: int = 160) -> str:
    """A short reason: the first line of an exception, cut to ``limit``."""
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return text if len(text) <= limit else text[:limit] + '...'


# --------------------------------------------------------------- writing
def save_predictions(path: str, arrays: Dict[str, np.ndarray]) -> None:
    """Write a compact dump (``.npz`` or ``.pt``) from numpy arrays.

    ``arrays`` holds the keys listed in the module docstring; the optional
    ``class_counts`` (K,) and ``shot_thresholds`` (2,) are validated by
    :func:`load_predictions` when read back.
    """
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


def meta_path(dump_path: str) -> str:
    """Side file with the class counts of a pickle dump: ``<dump>.counts.json``.

    Its ``"class_counts"`` key makes it a counts file as well
    (:func:`reot_mm.counts_file.load_counts_file`).
    """
    return f'{dump_path}.counts.json'


def write_dump_meta(path: str, class_counts: Optional[Sequence[float]],
                    shot_thresholds: Sequence[float]) -> None:
    """Write :func:`meta_path` JSON: class counts and (many, few) thresholds."""
    many, few = (float(t) for t in shot_thresholds)
    record = {'class_counts': None if class_counts is None else
              [float(c) for c in class_counts],
              'many_threshold': many, 'few_threshold': few}
    with open(path, 'w') as handle:
        json.dump(record, handle)


def read_dump_meta(raw: dict, num_classes: int, path: str) -> dict:
    """Validate the optional ``class_counts`` / ``shot_thresholds`` of a dump.

    Args:
        raw: the dump's arrays (or the side file's record) as tensors/lists.
        num_classes: K of ``pred_score``.
        path: the file, for messages.

    Returns:
        ``{'class_counts': (K,) float64 tensor or None,
        'shot_thresholds': (many, few) floats or None}``.
    """
    counts = raw.get('class_counts')
    if counts is not None:
        counts = torch.as_tensor(counts, dtype=torch.float64)
        if counts.shape != (num_classes, ) or not torch.isfinite(counts).all() \
                or (counts < 0).any():
            raise DumpFormatError(
                f'{path}: class_counts must be ({num_classes},) finite '
                f'training counts >= 0 (one per class of pred_score), got '
                f'shape {tuple(counts.shape)}')
    thresholds = raw.get('shot_thresholds')
    if thresholds is None and 'many_threshold' in raw:
        thresholds = (raw['many_threshold'], raw.get('few_threshold'))
    if thresholds is not None:
        try:
            many, few = (float(t) for t in
                         torch.as_tensor(thresholds, dtype=torch.float64))
        except (TypeError, ValueError, RuntimeError):
            raise DumpFormatError(
                f'{path}: shot_thresholds must be two numbers (many, few), '
                f'got {thresholds!r}') from None
        if not few <= many:
            raise DumpFormatError(f'{path}: shot_thresholds (many, few) must '
                                  f'have few <= many, got ({many}, {few})')
        thresholds = (many, few)
    return {'class_counts': counts, 'shot_thresholds': thresholds}


def read_side_meta(dump_path: str, num_classes: int) -> dict:
    """:func:`read_dump_meta` of the side file of a pickle dump (all None
    when there is no :func:`meta_path` file)."""
    side = meta_path(dump_path)
    if not osp.isfile(side):
        return read_dump_meta({}, num_classes, side)
    try:
        with open(side) as handle:
            record = json.load(handle)
    except (OSError, ValueError) as error:
        raise DumpFormatError(f'{side}: not a readable JSON record of class '
                              f'counts ({_first_line(error)})') from None
    if not isinstance(record, dict):
        raise DumpFormatError(f'{side}: expected a JSON object with '
                              f'"class_counts", got {type(record).__name__}')
    return read_dump_meta(record, num_classes, side)


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
        ``format`` (``'compact'`` / ``'pickle'``), ``class_counts`` (K,)
        float64 or None and ``shot_thresholds`` (many, few) or None (from the
        dump, or for pickles from :func:`meta_path` when it exists) and, for
        pickles, ``samples`` (the per-sample dicts, for writing a refined
        pickle).

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
    raw_meta = out.pop('meta', None)
    out.update(read_dump_meta(raw_meta, k, path) if raw_meta is not None
               else read_side_meta(path, k))
    return out


def _read_compact(path: str) -> dict:
    """The arrays of a compact dump as tensors; unreadable files raise
    :class:`DumpFormatError` with a short reason."""
    if osp.getsize(path) == 0:
        raise DumpFormatError(f'{path}: empty file; expected '
                              f'{_COMPACT_EXPECTED}')
    if _suffix(path) == '.npz':
        try:
            # every member is read (and decompressed) inside the try: a
            # truncated archive can fail at any of them
            with np.load(path, allow_pickle=False) as archive:
                raw = {key: archive[key] for key in archive.files}
        except FileNotFoundError:
            raise
        except ValueError as error:
            # numpy's 'Cannot load file containing pickled data when
            # allow_pickle=False': the file is not an .npz archive at all
            reason = ('not a zip archive of arrays' if 'pickle' in str(error)
                      else _first_line(error))
            raise DumpFormatError(f'{path}: not a readable .npz archive '
                                  f'({reason}); expected {_COMPACT_EXPECTED}'
                                  ) from None
        except Exception as error:  # noqa: BLE001 (zipfile, zlib, EOF, OS)
            raise DumpFormatError(
                f'{path}: not a readable .npz archive (truncated or corrupt: '
                f'{type(error).__name__}: {_first_line(error)}); expected '
                f'{_COMPACT_EXPECTED}') from None
        return {key: torch.from_numpy(value) for key, value in raw.items()}
    try:
        raw = torch.load(path, map_location='cpu', weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # noqa: BLE001 (torch raises many types)
        raise DumpFormatError(f'{path}: not a readable .pt dump of tensors '
                              f'({type(error).__name__}: '
                              f'{_first_line(error)}); expected '
                              f'{_COMPACT_EXPECTED}') from None
    if not isinstance(raw, dict) or not all(
            isinstance(v, torch.Tensor) for v in raw.values()):
        raise DumpFormatError(f'{path}: expected a dict of tensors '
                              f'(DumpPredictions), got '
                              f'{type(raw).__name__}')
    return raw


def _load_compact(path: str) -> dict:
    raw = _read_compact(path)
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
        'meta': raw,
    }


def read_pickle(path: str):
    """Unpickle a dump without running code from it.

    Only plain containers, numpy arrays / scalars and torch tensors are resolved
    (:class:`~reot_mm.evaluation.safe_pickle.RestrictedUnpickler`); a pickle naming any other
    global, and unreadable content, raise :class:`DumpFormatError`.
    """
    expected = ('expected a list of per-sample dicts written by tools/test.py '
                '--out preds.pkl')
    if osp.isfile(path) and osp.getsize(path) == 0:
        raise DumpFormatError(f'{path}: empty file; {expected}')
    try:
        with open(path, 'rb') as handle:
            return safe_pickle_load(handle)
    except pickle.UnpicklingError as error:
        # a refused global is named in full: it is the security message
        raise DumpFormatError(f'{path}: not a readable pickle ({error}); '
                              f'{expected}') from None
    except (FileNotFoundError, MemoryError):
        raise
    except Exception as error:  # noqa: BLE001 (truncated data: many types)
        raise DumpFormatError(
            f'{path}: not a readable pickle (truncated or corrupt: '
            f'{type(error).__name__}: {_first_line(error)}); {expected}') \
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
