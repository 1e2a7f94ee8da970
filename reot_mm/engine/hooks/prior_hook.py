"""Epoch-varying prior λ(t) of RE-OT Eq. 15 / 34, set on every RE-OT loss.

Shi et al., Relative Entropic Optimal Transport: a (Prior-aware) Matching
Perspective to (Unbalanced) Classification, NeurIPS 2023. The hook sets λ on
every ``ScheduledPriorModule`` of the model (``reot_mm.losses.class_counts``).
"""
from typing import Optional, Sequence

from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import IterBasedTrainLoop

from reot_mm import dist
from reot_mm.engine.hooks.class_stats_hook import scheduled_prior_modules
from reot_mm.losses.priors import (SCHEDULE_MODES, prior_schedule,
                                   resolve_milestones)


@HOOKS.register_module()
class REOTPriorHook(Hook):
    """Set λ(t) (and the final prior power) on every RE-OT loss in the model.

    The schedule position t is 1-based: the epoch about to be trained in
    epoch-based loops (or, with ``update='iter'``, the fractional epoch
    ``epoch + (i + 1)/iters_per_epoch``), the iteration in iteration-based
    loops. Milestones written as floats in (0, 1] are fractions of the run
    (max_epochs or max_iters), so a schedule survives a change of length;
    other values are absolute epochs (iterations for iteration-based loops).

    λ and the power live in buffers of the losses, so they are in every
    checkpoint; after a resume the hook recomputes them from the restored
    epoch/iteration before the first step. They are logged to the message hub
    as ``train/reot_lambda`` and ``train/reot_prior_power``.

    Args:
        milestones: (t1, t2) or (t1, t2, t3) — λ = 0 up to t1, the ramp to 1 at
            t2, and the power ``final_power`` after t3.
        mode: ``'paper'`` (Eq. 34 linear ramp, default) or ``'official'``
            (the authors' code: effective λ = (t - t1)/((t - t1) + C(t2 - t))).
        final_power: exponent of Q after t3. Defaults to 1.0 in 'paper' mode
            and 1.03 in 'official' mode.
        update: ``'epoch'`` (default for epoch-based loops) or ``'iter'``.
        on_unordered: ``'error'`` (default) or ``'warn'`` when t2 < t1 (the
            authors' CIFAR-10 config): warn and switch to r right after t1.
    """

    priority = 'HIGH'

    def __init__(self,
                 milestones: Sequence[float] = (0.6, 0.8),
                 mode: str = 'paper',
                 final_power: Optional[float] = None,
                 update: Optional[str] = None,
                 on_unordered: str = 'error'):
        if mode not in SCHEDULE_MODES:
            raise ValueError(f'mode must be one of {SCHEDULE_MODES}, got {mode!r}')
        if update not in (None, 'epoch', 'iter'):
            raise ValueError(f"update must be 'epoch' or 'iter', got {update!r}")
        fractions = [isinstance(v, float) and 0 < v <= 1 for v in milestones]
        if all(fractions) or not any(fractions):
            # same unit throughout: shape and order can be checked right away
            resolve_milestones(milestones, total=1, on_unordered=on_unordered)
        self.milestones = tuple(milestones)
        self.mode = mode
        self.final_power = (1.03 if mode == 'official' else 1.0) \
            if final_power is None else float(final_power)
        self.update = update
        self.on_unordered = on_unordered
        self.prior_weight = 0.0
        self.prior_power = 1.0
        self._resolved = None

    # ------------------------------------------------------------ internals
    @staticmethod
    def _by_epoch(runner) -> bool:
        # IterBasedTrainLoop also has a (dummy) max_epochs attribute
        return not isinstance(runner.train_loop, IterBasedTrainLoop)

    def _losses(self, runner) -> list:
        losses = scheduled_prior_modules(runner.model)
        if not losses:
            raise RuntimeError('REOTPriorHook found no RE-OT loss (no '
                               'ScheduledPriorModule) in the model')
        return losses

    def _num_classes(self, losses) -> Optional[int]:
        # C of 'official' mode: the counts' length, else the configured C
        for loss in losses:
            if loss.has_class_counts:
                return int(loss.class_counts.numel())
            if loss.num_classes:
                return int(loss.num_classes)
        return None

    def _position(self, runner, batch_idx: Optional[int] = None) -> float:
        if not self._by_epoch(runner):
            return float(runner.iter + 1)
        if batch_idx is None or self.update != 'iter':
            return float(runner.epoch + 1)
        iters_per_epoch = len(runner.train_dataloader)
        return runner.epoch + (batch_idx + 1) / iters_per_epoch

    def _set(self, runner, position: float) -> None:
        losses = self._losses(runner)
        num_classes = self._num_classes(losses)
        weight, power = prior_schedule(
            position, *self._resolved, mode=self.mode,
            num_classes=num_classes, final_power=self.final_power)
        self.prior_weight, self.prior_power = weight, power
        for loss in losses:
            loss.set_prior_schedule(weight, power)

    # ---------------------------------------------------------------- hooks
    def before_train(self, runner) -> None:
        total = (runner.train_loop.max_epochs if self._by_epoch(runner)
                 else runner.train_loop.max_iters)
        self._resolved = resolve_milestones(self.milestones, total,
                                            self.on_unordered)
        if self.update is None:
            self.update = 'epoch' if self._by_epoch(runner) else 'iter'
        if self.mode == 'official' and self._num_classes(
                self._losses(runner)) is None:
            raise RuntimeError("mode='official' needs the number of classes: "
                               'set class counts (ClassStatisticsHook) or '
                               'num_classes on the loss')
        self._set(runner, self._position(runner))
        runner.logger.info(
            f'REOTPriorHook: milestones {self.milestones} -> '
            f'{tuple(round(v, 3) for v in self._resolved)} '
            f"({'epochs' if self._by_epoch(runner) else 'iterations'}), "
            f'mode={self.mode}, start λ={self.prior_weight:.4f}')

    def before_train_epoch(self, runner) -> None:
        if self.update == 'epoch' and self._by_epoch(runner):
            self._set(runner, self._position(runner))
            dist.assert_same_across_ranks([self.prior_weight, self.prior_power],
                                          'RE-OT prior λ')

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        if self.update == 'iter':
            self._set(runner, self._position(runner, batch_idx))
        runner.message_hub.update_scalar('train/reot_lambda', self.prior_weight)
        runner.message_hub.update_scalar('train/reot_prior_power',
                                         self.prior_power)
