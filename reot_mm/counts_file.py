"""Read and write per-class count files (bottom layer: json + mmengine.fileio).

Accepted formats: a JSON list of numbers, a JSON object with a
``"class_counts"`` list (what ``ClassStatisticsHook(save_file=...)`` writes), or
text with numbers separated by whitespace, newlines or commas.
"""
import json
import os.path as osp
from typing import List, Sequence

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
