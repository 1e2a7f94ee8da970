"""Read the training class counts that a checkpoint carries in its meta.

``ClassStatisticsHook`` writes the per-class training counts to
``checkpoint['meta']['reot_mm_class_counts']``; post-hoc tools read them back
with :func:`read_checkpoint_counts`, under ``torch.load(weights_only=True)``
and the checkpoint allow-list of :mod:`reot_mm.engine.compat`, so opening a
checkpoint never runs code from it.
"""
from typing import List

import torch

from reot_mm.engine.compat import safe_checkpoint_globals
from reot_mm.engine.hooks.class_stats_hook import CHECKPOINT_KEY

__all__ = ['is_torch_checkpoint', 'read_checkpoint_counts']


def is_torch_checkpoint(path: str) -> bool:
    """Whether ``path`` is a ``torch.save`` file: a zip archive (torch >= 1.6)
    or a raw pickle (legacy format), not a text counts file."""
    with open(path, 'rb') as handle:
        head = handle.read(2)
    return head == b'PK' or head[:1] == b'\x80'


def read_checkpoint_counts(path: str, name: str = 'checkpoint') -> List[float]:
    """``checkpoint['meta']['reot_mm_class_counts']`` of a checkpoint file.

    Args:
        path: the checkpoint (``.pth``).
        name: what the file is called in error messages (an option name).

    Raises:
        ValueError: unreadable file, a checkpoint that would need code to
            load, or one without the counts.
    """
    try:
        with safe_checkpoint_globals():
            checkpoint = torch.load(path, map_location='cpu',
                                    weights_only=True)
    except Exception as error:  # noqa: BLE001 (torch raises many types)
        reason = (str(error).strip().splitlines() or [''])[0][:160]
        raise ValueError(f'{name} {path!r}: not a readable checkpoint '
                         f'({type(error).__name__}: {reason})') from None
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    if not isinstance(meta, dict) or meta.get(CHECKPOINT_KEY) is None:
        raise ValueError(
            f"{name} {path!r}: the checkpoint has no meta['{CHECKPOINT_KEY}'] "
            '(ClassStatisticsHook writes it while training); give a counts '
            'file instead')
    return list(meta[CHECKPOINT_KEY])
