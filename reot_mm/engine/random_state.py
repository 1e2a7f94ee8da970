"""Random generator states in the checkpoint, so that a resumed run is bit-identical.

mmengine 0.10.7 restores the model, optimizer, schedulers, message hub and the
epoch (``DefaultSampler`` reshuffles from ``seed + epoch``, so the sample order
is already reproducible), but not the global generators that augmentations
draw from: Python's ``random``, numpy's legacy global generator (every
``np.random.*`` call of mmcv / mmpretrain transforms and of
``reot_mm.cls.datasets.transforms``) and torch's CPU/CUDA generators. A run
resumed from epoch ``k`` therefore augments epoch ``k + 1`` differently from
the run that was never interrupted (BCL and GML on digits-LT ended 0.4-1.2
balanced-accuracy points apart).

:class:`RandomStateHook` (``tools/train.py`` registers it in every run; other
entry points add ``custom_hooks = [dict(type='RandomStateHook')]``):

* writes every rank's states into ``checkpoint['meta']['reot_mm_random_state']``
  (plain containers and tensors: loadable with ``weights_only=True``);
* after ``--resume``, sets them back at the start of the first epoch;
* runs validation inside a fork of the generators (states saved before, set
  back after). The checkpoint is written before the validation that follows it,
  and a resumed run does not repeat that validation; the fork makes the
  generators at the next epoch's start equal in both runs. A run that is never
  interrupted changes only if something in training draws from torch's global
  generator after a validation (e.g. dropout), because the validation
  DataLoader no longer advances it; no digits-LT config does.

Iteration-based loops (``IterBasedTrainLoop``) replay the data stream on
resume (mmengine advances the DataLoader by the trained iterations), which
reproduces the data generators; only torch's generators (dropout) are set
back, at the first iteration, and only in one-process runs. DataLoader worker
processes are seeded by mmengine at their start (``seed + rank * num_workers + worker_id``): with
``persistent_workers=False`` (new workers each epoch) a resumed epoch gets the
same worker streams as the original one, while persistent workers continue
their streams across epochs, which no checkpoint can hold; a resume then logs
a warning (set ``persistent_workers=False`` for an exact resume).
"""
import functools
import random
from typing import List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import EpochBasedTrainLoop

__all__ = ['capture_random_state', 'restore_random_state', 'RandomStateHook']

META_KEY = 'reot_mm_random_state'


def capture_random_state() -> dict:
    """This process's global generator states, as tensors and plain containers."""
    numpy_state = np.random.get_state(legacy=False)
    state = dict(
        python=random.getstate(),
        numpy=dict(bit_generator=str(numpy_state['bit_generator']),
                   key=torch.from_numpy(numpy_state['state']['key'].astype(np.int64)),
                   pos=int(numpy_state['state']['pos']),
                   has_gauss=int(numpy_state['has_gauss']),
                   gauss=float(numpy_state['gauss'])),
        torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore_random_state(state: dict, torch_only: bool = False) -> None:
    """Set the generators to ``state`` (from :func:`capture_random_state`)."""
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])
    if torch_only:
        return
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state['numpy']
    np.random.set_state(dict(
        bit_generator=numpy_state['bit_generator'],
        state=dict(key=numpy_state['key'].numpy().astype(np.uint32),
                   pos=numpy_state['pos']),
        has_gauss=numpy_state['has_gauss'], gauss=numpy_state['gauss']))


def _forked(run):
    """``run`` (a loop's bound method) with the generators set back afterwards."""

    @functools.wraps(run)
    def run_forked(*args, **kwargs):
        state = capture_random_state()
        try:
            return run(*args, **kwargs)
        finally:
            restore_random_state(state)

    run_forked._reot_mm_forked = True
    return run_forked


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Save the global random states in checkpoints and restore them on resume.

    Priority 89: its ``after_train_epoch`` runs right before ``CheckpointHook``
    (90, ``VERY_LOW``) saves, and its ``before_train_epoch`` after the other
    hooks' (none of which draws random numbers).
    """

    priority = 89

    def __init__(self) -> None:
        self._gathered: Optional[List[dict]] = None
        self._loaded: Optional[dict] = None

    def before_train(self, runner) -> None:
        val_loop = runner.val_loop  # None when training runs without validation
        if val_loop is not None and not getattr(val_loop.run, '_reot_mm_forked', False):
            val_loop.run = _forked(val_loop.run)

    def _epoch_based(self, runner) -> bool:
        return isinstance(runner.train_loop, EpochBasedTrainLoop)

    def after_train_epoch(self, runner) -> None:
        # a collective, so on every rank, right before rank 0 saves
        if self._epoch_based(runner) and get_world_size() > 1:
            self._gathered = all_gather_object(capture_random_state())

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._epoch_based(runner) and get_world_size() > 1:
            ranks = self._gathered
        elif get_world_size() == 1:
            ranks = [capture_random_state()]
        else:
            # iteration-based and distributed: gathering at every iteration that
            # might be saved costs a collective per step; not saved
            return
        checkpoint.setdefault('meta', {})[META_KEY] = dict(
            epoch=runner.epoch + 1 if self._epoch_based(runner) else runner.epoch,
            world_size=get_world_size(), ranks=ranks)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._loaded = checkpoint.get('meta', {}).get(META_KEY)

    def _state_for_this_rank(self, runner) -> Optional[dict]:
        loaded, self._loaded = self._loaded, None
        if loaded is None or (runner.epoch == 0 and runner.iter == 0):
            return None  # nothing saved, or weights loaded with load_from
        world = get_world_size()
        if len(loaded['ranks']) != world:
            runner.logger.warning(
                f'The checkpoint holds the random states of {len(loaded["ranks"])} '
                f'process(es) and this run has {world}: the generators are not '
                'restored, so the resumed run is not bit-identical.')
            return None
        return loaded['ranks'][get_rank()]

    def before_train_epoch(self, runner) -> None:
        if not self._epoch_based(runner):
            return
        state = self._state_for_this_rank(runner)
        if state is None:
            return
        restore_random_state(state)
        loader = runner.train_dataloader
        if getattr(loader, 'num_workers', 0) > 0 and getattr(loader, 'persistent_workers',
                                                             False):
            runner.logger.warning(
                'Resumed with persistent DataLoader workers: their random streams '
                'start afresh, so augmentations differ from the uninterrupted run. '
                'Set train_dataloader.persistent_workers=False for an exact resume.')
        runner.logger.info('Random generator states restored from the checkpoint.')

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self._loaded is None or self._epoch_based(runner):
            return
        state = self._state_for_this_rank(runner)
        if state is not None:
            restore_random_state(state, torch_only=True)
            runner.logger.info('torch random generator states restored from the checkpoint.')
