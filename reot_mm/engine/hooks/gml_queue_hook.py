"""Life cycle of GML's class-wise queues around the Runner (GML Eq. 6)."""
import time
from typing import List, Optional

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from reot_mm import dist
from reot_mm.engine.hooks.class_stats_hook import unwrap_model
from reot_mm.evaluation import CLASS_COUNTS_INFO_KEY
from reot_mm.models.class_queue import ClassQueue

PREFILL_MODES = ('teacher', 'none')



def one_pass_loader(loader):
    """A loader whose iteration ends after one pass over the training set.

    Epoch-based runs are returned as they are. Iteration-based runs use
    mmengine's ``InfiniteSampler``: iterating their loader never ends, and
    leaving it early closes the sampler's index generator that training then
    reuses (StopIteration at the first training step). For those, the
    pre-fill gets its own loader over the same dataset, batch size, collate
    function and workers, with a ``DefaultSampler`` (this rank's share,
    shuffled with the sampler's seed).
    """
    from mmengine.dataset import DefaultSampler, InfiniteSampler
    sampler = getattr(loader, 'sampler', None)
    if not isinstance(sampler, InfiniteSampler):
        return loader
    from torch.utils.data import DataLoader
    return DataLoader(
        loader.dataset, batch_size=loader.batch_size,
        sampler=DefaultSampler(loader.dataset, shuffle=sampler.shuffle,
                               seed=sampler.seed),
        collate_fn=loader.collate_fn, num_workers=loader.num_workers,
        worker_init_fn=loader.worker_init_fn, drop_last=loader.drop_last)

@HOOKS.register_module()
class GMLQueueHook(Hook):
    """Build, pre-fill, monitor and (in debug mode) rank-check GML queues.

    ``before_train`` (after ``ClassStatisticsHook``'s ``before_run`` and after
    the Runner has loaded or resumed a checkpoint):

    1. reads the per-class training counts from the MessageHub
       (``'reot_mm/class_counts'``, published by ``ClassStatisticsHook``) or,
       failing that, from a module's non-empty ``class_counts`` buffer;
       missing counts are an error;
    2. for every :class:`~reot_mm.models.ClassQueue` of the model: if its
       segments were restored from a checkpoint (resume / ``load_from``) it is
       kept as it is (never re-filled; a warning if the counts now give other
       segment sizes); otherwise the segments are built (Eq. 6) and
    3. pre-filled (``prefill='teacher'``): the training dataloader is run
       through the frozen teacher (``model.prefill_step``, e.g.
       ``TeacherStudent``) and the features enqueued, until every slot holds a
       real entry or ``max_prefill_passes`` passes are done. A class with fewer
       training images than slots keeps some initial random unit vectors
       (indices < 0) until training enqueues more of its images; this is
       logged. With ``prefill='none'`` all slots start as those random vectors
       (the authors' code): they act as spurious mixture centres of their
       class until replaced, which takes about |Z_c| / n_c epochs for class c.

    During training the fill of the queues (share of slots holding real
    entries) is logged per frequency group (many / medium / few, by training
    counts, thresholds as ``ShotAccuracy``) after every epoch and put in the
    MessageHub as ``train/gml_queue_fill_{group}``. With ``check_ranks=True``
    (debug mode) the queue state is compared across ranks after the pre-fill
    and every ``check_interval`` iterations; a difference raises.

    Args:
        prefill: ``'teacher'`` (default) or ``'none'``.
        max_prefill_passes: passes over the training set at most (>= 1).
        many_threshold: classes with more training images are "many".
        few_threshold: classes with fewer training images are "few".
        check_ranks: verify that all ranks hold identical queues.
        check_interval: iterations between checks in debug mode.
    """

    priority = 'HIGH'

    def __init__(self,
                 prefill: str = 'teacher',
                 max_prefill_passes: int = 1,
                 many_threshold: float = 100,
                 few_threshold: float = 20,
                 check_ranks: bool = False,
                 check_interval: int = 50):
        if prefill not in PREFILL_MODES:
            raise ValueError(f'prefill must be one of {PREFILL_MODES}, got {prefill!r}')
        if int(max_prefill_passes) != max_prefill_passes or max_prefill_passes < 1:
            raise ValueError('max_prefill_passes must be an integer >= 1, got '
                             f'{max_prefill_passes!r}')
        if few_threshold > many_threshold:
            raise ValueError(f'few_threshold ({few_threshold}) must not exceed '
                             f'many_threshold ({many_threshold})')
        if check_interval < 1:
            raise ValueError(f'check_interval must be >= 1, got {check_interval}')
        self.prefill = prefill
        self.max_prefill_passes = int(max_prefill_passes)
        self.many_threshold = many_threshold
        self.few_threshold = few_threshold
        self.check_ranks = check_ranks
        self.check_interval = check_interval
        self.class_counts: Optional[torch.Tensor] = None

    # -------------------------------------------------------------- helpers
    @staticmethod
    def queues(model) -> List[ClassQueue]:
        return [m for m in unwrap_model(model).modules()
                if isinstance(m, ClassQueue)]

    @staticmethod
    def resolve_counts(runner) -> torch.Tensor:
        counts = runner.message_hub.get_info(CLASS_COUNTS_INFO_KEY)
        if counts is None:
            for module in unwrap_model(runner.model).modules():
                buffer = getattr(module, 'class_counts', None)
                if isinstance(buffer, torch.Tensor) and buffer.numel() > 0:
                    counts = buffer
                    break
        if counts is None:
            raise RuntimeError(
                'GMLQueueHook needs per-class training counts to size the '
                "class-wise queues (GML Eq. 6), but found none: add "
                "dict(type='ClassStatisticsHook') to custom_hooks (it runs "
                'first) or give class_counts to the loss')
        return torch.as_tensor(counts, dtype=torch.float64).detach().cpu()

    def group_fill(self, queue: ClassQueue) -> dict:
        """Mean fill per frequency group, e.g. {'many': 1.0, 'few': 0.5}."""
        fill = queue.class_fill().cpu().double()
        counts = self.class_counts
        groups = dict(many=counts > self.many_threshold,
                      few=counts < self.few_threshold)
        groups['medium'] = ~(groups['many'] | groups['few'])
        return {name: float(fill[mask].mean())
                for name, mask in groups.items() if mask.any()}

    def _log_fill(self, runner, queues, when: str) -> None:
        for number, queue in enumerate(queues):
            fills = self.group_fill(queue)
            suffix = '' if len(queues) == 1 else f'_{number}'
            for name, value in fills.items():
                runner.message_hub.update_scalar(
                    f'train/gml_queue_fill_{name}{suffix}', value)
            text = ', '.join(f'{k} {v:.3f}' for k, v in fills.items())
            runner.logger.info(f'GMLQueueHook ({when}): queue{suffix} fill '
                               f'(share of slots with real entries): {text}')

    def check_same_across_ranks(self, queues) -> None:
        for number, queue in enumerate(queues):
            dist.assert_same_across_ranks(queue.fingerprint(),
                                          f'GML queue {number} state')

    # ----------------------------------------------------------------- hooks
    def before_train(self, runner) -> None:
        queues = self.queues(runner.model)
        if not queues:
            raise RuntimeError('GMLQueueHook: the model has no ClassQueue')
        self.class_counts = self.resolve_counts(runner)
        to_fill = []
        for queue in queues:
            if queue.is_built:
                expected = queue.expected_sizes(self.class_counts)
                if not torch.equal(expected, queue.segment_sizes.cpu()):
                    runner.logger.warning(
                        'GMLQueueHook: the queue restored from the checkpoint '
                        'has other segment sizes than the current class counts '
                        "give; keeping the checkpoint's queue")
                runner.logger.info('GMLQueueHook: queue restored from the '
                                   'checkpoint (not re-filled)')
            else:
                queue.build_segments(self.class_counts)
                to_fill.append(queue)
        if to_fill and self.prefill == 'teacher':
            self._prefill(runner, to_fill)
        self._log_fill(runner, queues, 'start')
        if self.check_ranks:
            self.check_same_across_ranks(queues)

    def _prefill(self, runner, queues) -> None:
        model = unwrap_model(runner.model)
        step = getattr(model, 'prefill_step', None)
        if not callable(step):
            raise RuntimeError(
                f'GMLQueueHook(prefill=\'teacher\') needs model.prefill_step '
                f'(e.g. TeacherStudent); {type(model).__name__} has none. Use '
                "prefill='none' to start from random entries")
        start, batches, full = time.time(), 0, False
        loader = one_pass_loader(runner.train_dataloader)
        for _ in range(self.max_prefill_passes):
            for data_batch in loader:
                step(data_batch)
                batches += 1
                # the queue is identical on all ranks, so is this decision
                if all(bool((q.indices >= 0).all()) for q in queues):
                    full = True
                    break
            if full:
                break
        runner.logger.info(f'GMLQueueHook: pre-filled the queues from the teacher '
                           f'with {batches} batches in {time.time() - start:.1f} s')
        if not full:
            for queue in queues:
                fill = queue.class_fill()
                partial = torch.nonzero(fill < 1).flatten().tolist()
                if partial:
                    runner.logger.warning(
                        f'GMLQueueHook: after {self.max_prefill_passes} pass(es) '
                        f'{len(partial)} classes (e.g. {partial[:10]}) still hold '
                        'initial random entries: they have fewer training images '
                        'than slots; training replaces them as it enqueues')

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        if self.check_ranks and self.every_n_train_iters(runner,
                                                         self.check_interval):
            self.check_same_across_ranks(self.queues(runner.model))

    def after_train_epoch(self, runner) -> None:
        if self.class_counts is not None:
            self._log_fill(runner, self.queues(runner.model),
                           f'epoch {runner.epoch + 1}')
