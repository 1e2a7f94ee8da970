"""Checkpoints that survive a kill at any moment (mmengine 0.10.7).

mmengine's ``CheckpointHook`` with ``max_keep_ckpts=N`` deletes the oldest kept
checkpoint *before* it writes the new one, and ``save_checkpoint`` writes the
final file in place. A process killed in that window leaves no complete
checkpoint (with ``max_keep_ckpts=1``: none at all), and ``--resume`` then
fails on a missing or truncated file (``FileNotFoundError: .../epoch_22.pth``,
``failed finding central directory``). Three narrow fixes, applied by
:func:`install` (``reot_mm.engine.compat.install`` calls it on import):

1. :func:`atomic_save_checkpoint` replaces mmengine's ``save_checkpoint`` for
   local paths: the checkpoint is written to a hidden temporary file in the
   same directory, flushed and fsynced, then ``os.replace``-d over the final
   name (and the directory fsynced), so the final name only ever holds a
   complete file. Other backends (``pavi://``, ``s3://`` ...) keep mmengine's
   code.
2. ``CheckpointHook._save_checkpoint_with_step`` / ``_save_best_checkpoint``
   run with their deletions deferred until the new checkpoint is complete and
   ``last_checkpoint`` (written atomically) points at it. Which files are kept
   does not change; for a moment there are ``max_keep_ckpts + 1`` on disk.
3. Auto-resume (``resume=True`` without a path, ``tools/train.py --resume``)
   uses :func:`find_latest_intact_checkpoint`: the newest checkpoint of the work
   dir that opens, skipping (with a warning naming the file) missing,
   truncated or corrupt ones.
"""
import functools
import glob
import os
import os.path as osp
import re
import zipfile
from typing import Callable, List, Optional, Tuple

import torch
from mmengine.logging import print_log

__all__ = ['atomic_save_checkpoint', 'atomic_write_text', 'checkpoint_problem',
           'find_latest_intact_checkpoint', 'install']

_TMP_MARK = '.tmp-'
_STEP_NAME = re.compile(r'^(?:epoch|iter)_(\d+)\.pth$')


def _fsync_directory(directory: str) -> None:
    """Make a rename in ``directory`` durable (no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temporary_path(path: str) -> str:
    directory, name = osp.split(osp.abspath(path))
    return osp.join(directory, f'.{name}{_TMP_MARK}{os.getpid()}')


def _atomic_write(path: str, write: Callable) -> None:
    """Call ``write(file)`` on a temporary file, then rename it to ``path``."""
    directory = osp.dirname(osp.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = _temporary_path(path)
    try:
        with open(tmp, 'wb') as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_directory(directory)


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees the old or the new file."""
    _atomic_write(path, lambda handle: handle.write(text.encode('utf-8')))


def _is_local(filename: str, file_client_args, backend_args) -> bool:
    if file_client_args is not None or (backend_args or {}).get('backend') not in (None, 'local'):
        return False
    return '://' not in filename


_ORIGINALS: dict = {}


def atomic_save_checkpoint(checkpoint: dict, filename: str, file_client_args=None,
                           backend_args=None) -> None:
    """mmengine's ``save_checkpoint`` with write-then-rename for local files.

    Same arguments as :func:`mmengine.runner.checkpoint.save_checkpoint`; remote
    destinations are passed on to it unchanged.
    """
    if not _is_local(filename, file_client_args, backend_args):
        return _ORIGINALS['save_checkpoint'](checkpoint, filename, file_client_args,
                                             backend_args)
    _atomic_write(filename, lambda handle: torch.save(checkpoint, handle))


def checkpoint_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be resumed from, or None if it is a complete checkpoint.

    A torch zip checkpoint must have its central directory and pass the CRC
    check of every member (a truncated file has no central directory; a torn
    one fails a CRC). Files in torch's legacy (non-zip) format must load.
    """
    if not osp.isfile(path):
        return 'file does not exist'
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        return None if bad is None else f'corrupt member {bad!r} (CRC mismatch)'
    except zipfile.BadZipFile as error:
        zip_error = f'not a complete zip archive ({error})'
    except (OSError, EOFError) as error:
        return f'unreadable ({error})'
    from .compat import safe_checkpoint_globals
    try:
        with safe_checkpoint_globals():
            torch.load(path, map_location='cpu', weights_only=True)
    except Exception:  # noqa: BLE001  (any load failure: not resumable)
        return zip_error
    return None


def _candidates(work_dir: str, pointer: Optional[str]) -> List[Tuple[float, str]]:
    """(rank, path) of every checkpoint worth trying, highest rank first."""
    directories = {osp.abspath(work_dir)}
    if pointer:
        directories.add(osp.dirname(osp.abspath(pointer)))
    found = {}
    for directory in directories:
        for path in glob.glob(osp.join(directory, '*.pth')):
            match = _STEP_NAME.match(osp.basename(path))
            if match:
                found[osp.abspath(path)] = float(match.group(1))
    if pointer:
        # mmengine's choice comes first; the others are the fallback
        found[osp.abspath(pointer)] = float('inf')
    return sorted(((rank, path) for path, rank in found.items()), reverse=True)


def _remove_stale_temporaries(work_dir: str) -> None:
    for path in glob.glob(osp.join(work_dir, f'.*.pth{_TMP_MARK}*')):
        print_log(f'Removing {path}: the partial file of an interrupted checkpoint save.',
                  logger='current')
        os.remove(path)


def find_latest_intact_checkpoint(work_dir: str) -> Optional[str]:
    """The newest complete checkpoint in ``work_dir``, or None if there is none.

    Candidates are the file ``last_checkpoint`` names (mmengine's choice), then
    every ``epoch_N.pth`` / ``iter_N.pth`` beside it, newest step first; each
    one that is missing, truncated or corrupt is skipped with a warning naming
    it. A ``last_checkpoint`` pointing to another storage backend is returned
    unchanged (as mmengine does).
    """
    pointer_file = osp.join(work_dir, 'last_checkpoint')
    pointer = None
    if osp.exists(pointer_file):
        with open(pointer_file) as handle:
            pointer = handle.read().strip() or None
        if pointer and '://' in pointer:
            return pointer
    if osp.isdir(work_dir):
        _remove_stale_temporaries(work_dir)
    for _, path in _candidates(work_dir, pointer):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        print_log(f'Skipping checkpoint {path}: {problem}. Trying the previous one.',
                  logger='current', level=30)
    print_log(f'Found no complete checkpoint to resume from in {work_dir}.',
              logger='current', level=30)
    return None


class _DeferredRemoval:
    """A file backend whose ``remove``/``rmtree`` are queued instead of done."""

    def __init__(self, backend):
        self._backend = backend
        self.queued: List[Tuple[Callable, str]] = []

    def remove(self, path):
        self.queued.append((self._backend.remove, path))

    def rmtree(self, path):
        self.queued.append((self._backend.rmtree, path))

    def __getattr__(self, name):
        return getattr(self._backend, name)


def _defer_removals(method: Callable) -> Callable:
    """Run a ``CheckpointHook`` save method, deleting old files only afterwards."""

    @functools.wraps(method)
    def wrapper(self, runner, *args, **kwargs):
        backend = getattr(self, 'file_backend', None)
        if backend is None or isinstance(backend, _DeferredRemoval):
            return method(self, runner, *args, **kwargs)
        deferred = _DeferredRemoval(backend)
        self.file_backend = deferred
        try:
            result = method(self, runner, *args, **kwargs)
        finally:
            self.file_backend = backend
        # the new checkpoint is complete; make the pointer durable before the
        # old files go (mmengine writes it with a plain open())
        pointer = osp.join(runner.work_dir, 'last_checkpoint')
        last = getattr(self, 'last_ckpt', None)
        if last and osp.exists(pointer):
            atomic_write_text(pointer, last)
        for remove, path in deferred.queued:
            remove(path)
        return result

    wrapper._reot_mm_deferred = True
    return wrapper


def install() -> None:
    """Apply the three fixes of this module to mmengine (idempotent)."""
    import mmengine.runner.checkpoint as checkpoint_module
    import mmengine.runner.runner as runner_module
    from mmengine.hooks import CheckpointHook
    _ORIGINALS.setdefault('save_checkpoint', checkpoint_module.save_checkpoint)
    checkpoint_module.save_checkpoint = atomic_save_checkpoint
    runner_module.save_checkpoint = atomic_save_checkpoint
    checkpoint_module.find_latest_checkpoint = find_latest_intact_checkpoint
    runner_module.find_latest_checkpoint = find_latest_intact_checkpoint
    for name in ('_save_checkpoint_with_step', '_save_best_checkpoint'):
        method = getattr(CheckpointHook, name)
        if not getattr(method, '_reot_mm_deferred', False):
            setattr(CheckpointHook, name, _defer_removals(method))
