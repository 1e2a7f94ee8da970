"""Read and write per-class count files (bottom layer: json + mmengine.fileio).

Accepted formats: a JSON list of numbers, a JSON object with a
``"class_counts"`` list (what ``ClassStatisticsHook(save_file=...)`` writes), or
text with numbers separated by whitespace, newlines or commas.
"""
import json
import os.path as osp
from typing import List, Optional, Sequence, Tuple

from mmengine.fileio import exists, get_text


def load_counts_file(path: str, name: str = 'class_counts_file') -> List[float]:
    """Return the counts stored in ``path`` as floats.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the content is not one of the accepted formats.
    """
    if not exists(path):
        raise FileNotFoundError(f'{name} {path!r} does not exist')
    text = get_text(path)
    if osp.splitext(path)[1].lower() == '.json':
        data = json.loads(text)
        if isinstance(data, dict):
            if 'class_counts' not in data:
                raise ValueError(f'{name} {path!r} is a JSON object without '
                                 'a "class_counts" key')
            data = data['class_counts']
        if not isinstance(data, list):
            raise ValueError(f'{name} {path!r} must hold a JSON list of counts')
        try:
            return [float(v) for v in data]
        except (TypeError, ValueError):
            raise ValueError(f'{name} {path!r} must hold numbers') from None
    try:
        return [float(v) for v in text.replace(',', ' ').split()]
    except ValueError as error:
        raise ValueError(f'{name} {path!r} must hold numbers: {error}') from None


def save_counts_file(path: str, counts: Sequence[float]) -> None:
    """Write ``{"class_counts": [...]}`` (readable by :func:`load_counts_file`)."""
    with open(path, 'w') as handle:
        json.dump({'class_counts': [float(c) for c in counts]}, handle)


def load_counts_record(path: str, count_type: Optional[str] = None,
                       name: str = 'class_counts_file') -> Tuple[list, dict]:
    """Counts and their provenance from a counts file.

    A JSON object may carry, besides ``"class_counts"``, statistic-specific
    lists (``"pixel_counts"``, ``"image_counts"``) and the dataset they were
    computed from (``"num_images"``, ``"checksum"``), as written by
    ``tools/dataset_stats/pixel_class_counts.py``. Other formats are read by
    :func:`reot_mm.counts_file.load_counts_file` and have no provenance.

    Args:
        path: the file.
        count_type: read ``"<count_type>_counts"`` instead of
            ``"class_counts"`` (needs a JSON object holding that key).

    Returns:
        (counts, meta) with meta the object's other entries ({} if none).

    Raises:
        FileNotFoundError: ``path`` does not exist ("file not found").
        ValueError: the file exists but lacks the requested entry or is
            malformed.
    """
    if not exists(path):
        # before the format checks: a missing file is not a file without
        # the "<count_type>_counts" entry
        raise FileNotFoundError(f'{name}: file not found: {path!r}')
    record = None
    if osp.splitext(path)[1].lower() == '.json' and osp.isfile(path):
        with open(path) as handle:
            data = json.load(handle)
        if isinstance(data, dict):
            record = data
    if record is None:
        if count_type is not None:
            raise ValueError(
                f'{name} {path!r} has no "{count_type}_counts" entry: '
                f'count_type={count_type!r} needs a JSON counts record as '
                'written by tools/dataset_stats/pixel_class_counts.py')
        return load_counts_file(path, name), {}
    key = 'class_counts' if count_type is None else f'{count_type}_counts'
    if key not in record:
        raise ValueError(f'{name} {path!r} has no {key!r} entry (keys: '
                         f'{sorted(record)})')
    counts = record[key]
    if not isinstance(counts, list):
        raise ValueError(f'{name} {path!r}: {key!r} must be a list of counts')
    meta = {k: v for k, v in record.items() if not k.endswith('_counts')}
    return [float(c) for c in counts], meta
