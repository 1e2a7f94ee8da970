"""Fill per-class training counts once, identically on every rank."""
import warnings
from typing import Optional, Sequence

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import DATASETS, HOOKS
from mmengine.runner import BaseLoop

from reot_mm import dist
from reot_mm import counts_file
from reot_mm.engine import class_stats
from reot_mm.evaluation import CLASS_COUNTS_INFO_KEY
from reot_mm.losses.class_counts import CountAwareModule, ScheduledPriorModule
from reot_mm.losses.priors import validate_class_counts

CHECKPOINT_KEY = 'reot_mm_class_counts'


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if is_model_wrapper(model) else model


def count_aware_modules(model: torch.nn.Module) -> list:
    """Every sub-module that takes the class counts (``CountAwareModule``)."""
    return [m for m in unwrap_model(model).modules()
            if isinstance(m, CountAwareModule)]


def scheduled_prior_modules(model: torch.nn.Module) -> list:
    """Every sub-module whose prior follows λ(t) (``ScheduledPriorModule``)."""
    return [m for m in unwrap_model(model).modules()
            if isinstance(m, ScheduledPriorModule)]


def modules_with(model: torch.nn.Module, method: str) -> list:
    """``count_aware_modules`` for ``'set_class_counts'``,
    ``scheduled_prior_modules`` for ``'set_prior_schedule'`` (kept name)."""
    selectors = {'set_class_counts': count_aware_modules,
                 'set_prior_schedule': scheduled_prior_modules}
    if method not in selectors:
        raise ValueError(f'method must be one of {tuple(selectors)}, got '
                         f'{method!r}')
    return selectors[method](model)


@HOOKS.register_module()
class ClassStatisticsHook(Hook):
    """Give every count-aware module the per-class training counts.

    Before the run (train or test) the counts are resolved, in this order,
    from ``class_counts``, ``class_counts_file``, or by counting the training
    dataset (``train_dataloader.dataset``, unwrapping dataset wrappers). A
    run that only tests a checkpoint takes them from the checkpoint's meta
    (written by this hook in training) and builds the training dataset only
    when the checkpoint has none. Rank 0's counts are
    broadcast so every rank holds the same values, which are then checked
    across ranks. The counts are

    * set on every ``CountAwareModule`` of the model (``set_class_counts``;
      the losses hold the raw counts as a buffer, so they are in the
      checkpoint),
    * published as MessageHub runtime info ``'reot_mm/class_counts'`` (read by
      ``ShotAccuracy``),
    * stored in the checkpoint meta and restored from it on load/resume
      (the checkpoint wins, with a warning, if it disagrees).

    Args:
        class_counts: explicit per-class counts.
        class_counts_file: JSON list / ``{"class_counts": [...]}`` or text file.
        num_classes: expected number of classes; defaults to the length of the
            training dataset's ``metainfo['classes']``.
        save_file: if given, rank 0 writes the resolved counts there (JSON).
        check_ranks: verify after broadcasting that all ranks agree.
        count_type: which statistic, for datasets with a registered counter
            and for JSON count records: mmseg datasets count ``'pixel'``
            (default) or ``'image'`` (images containing the class); a record
            file is read at ``"<count_type>_counts"``. None: the dataset's
            default statistic / the file's ``"class_counts"``.
        verify_file: when ``class_counts_file`` records the dataset it was
            computed from (number of label maps and checksum, as
            ``tools/dataset_stats/pixel_class_counts.py`` writes), check it
            against the training dataset and raise on a mismatch.
    """

    priority = 'VERY_HIGH'

    def __init__(self,
                 class_counts: Optional[Sequence[float]] = None,
                 class_counts_file: Optional[str] = None,
                 num_classes: Optional[int] = None,
                 save_file: Optional[str] = None,
                 check_ranks: bool = True,
                 count_type: Optional[str] = None,
                 verify_file: bool = True):
        if class_counts is not None and class_counts_file is not None:
            raise ValueError('give class_counts or class_counts_file, not both')
        self.explicit_counts = class_counts
        self.class_counts_file = class_counts_file
        self.num_classes = num_classes
        self.save_file = save_file
        self.check_ranks = check_ranks
        self.count_type = count_type
        self.verify_file = verify_file
        self.class_counts: Optional[torch.Tensor] = None

    # ------------------------------------------------------------- resolving
    def _training_dataset(self, runner):
        # Training: the loop, and with it the dataset, is built before
        # before_run. Testing: build only the dataset, not a train loop.
        if isinstance(runner._train_loop, BaseLoop):
            return runner.train_loop.dataloader.dataset
        cfg = runner.cfg.get('train_dataloader')
        if cfg is None:
            raise RuntimeError(
                'ClassStatisticsHook needs a training dataset to count '
                'classes, or class_counts / class_counts_file')
        return DATASETS.build(cfg['dataset'])

    def resolve_counts(self, runner) -> torch.Tensor:
        num_classes = self.num_classes
        if self.explicit_counts is not None:
            counts = list(self.explicit_counts)
        elif self.class_counts_file is not None:
            counts, meta = class_stats.load_counts_record(
                self.class_counts_file, self.count_type)
            if self.verify_file and ('num_images' in meta or 'checksum' in meta):
                class_stats.verify_counts_record(
                    meta, self._training_dataset(runner),
                    self.class_counts_file)
        else:
            dataset = self._training_dataset(runner)
            if num_classes is None:
                num_classes = class_stats.dataset_num_classes(dataset)
            if num_classes is None:
                raise ValueError(
                    'ClassStatisticsHook: the dataset has no metainfo '
                    "['classes']; set num_classes")
            counts = class_stats.count_dataset_classes(dataset, num_classes,
                                                       self.count_type)
        return validate_class_counts(counts, num_classes)

    def _sync(self, counts: torch.Tensor) -> torch.Tensor:
        # Same length on every rank is guaranteed by num_classes validation.
        counts = dist.broadcast_tensor(counts, src=0)
        if self.check_ranks:
            dist.assert_same_across_ranks(counts.tolist(), 'class counts')
        return counts

    def _apply(self, runner, counts: torch.Tensor) -> None:
        self.class_counts = counts
        for module in count_aware_modules(runner.model):
            module.set_class_counts(counts)
        runner.message_hub.update_info(CLASS_COUNTS_INFO_KEY, counts.tolist())

    # ----------------------------------------------------------------- hooks
    def _counts_from_checkpoint(self, runner) -> bool:
        """Test-only run that loads a checkpoint and names no counts: the
        checkpoint's meta will have them (``after_load_checkpoint``), so
        building the training dataset (for LVIS, reading the whole training
        annotation file) is left to ``before_test``, for checkpoints
        without them."""
        return (self.explicit_counts is None
                and self.class_counts_file is None
                and not isinstance(runner._train_loop, BaseLoop)
                and bool(getattr(runner, '_load_from', None)))

    def before_run(self, runner) -> None:
        if self._counts_from_checkpoint(runner):
            runner.logger.info('ClassStatisticsHook: test run, class counts '
                               'from the checkpoint being loaded')
            return
        self._resolve_and_apply(runner)

    def before_test(self, runner) -> None:
        if self.class_counts is None:
            runner.logger.info('ClassStatisticsHook: the checkpoint has no '
                               'class counts; counting the training set')
            self._resolve_and_apply(runner)

    def _resolve_and_apply(self, runner) -> None:
        counts = self._sync(self.resolve_counts(runner))
        self._apply(runner, counts)
        runner.logger.info(
            f'ClassStatisticsHook: {counts.numel()} classes, '
            f'{int(counts.sum())} samples, max/min count '
            f'{counts.max().item():g}/{counts.min().item():g}')
        if self.save_file is not None and dist.get_rank() == 0:
            counts_file.save_counts_file(self.save_file, counts.tolist())

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.class_counts is not None:
            checkpoint.setdefault('meta', {})[CHECKPOINT_KEY] = \
                self.class_counts.tolist()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        saved = checkpoint.get('meta', {}).get(CHECKPOINT_KEY)
        if saved is None:
            return
        saved = torch.as_tensor(saved, dtype=torch.float64)
        if self.class_counts is not None and (
                saved.shape != self.class_counts.shape
                or not torch.equal(saved, self.class_counts)):
            warnings.warn('class counts in the checkpoint differ from the '
                          'ones resolved for this run; using the checkpoint\'s')
        self._apply(runner, saved)
