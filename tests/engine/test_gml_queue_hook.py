"""GMLQueueHook on a real mmengine Runner (digits-LT GML config)."""
import os
import os.path as osp
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.logging import MessageHub
from mmengine.registry import HOOKS, MODELS, init_default_scope
from mmengine.runner import Runner

from launch import free_port

import reot_mm  # noqa: F401
from reot_mm.cls.datasets.long_tail import exponential_profile
from reot_mm.engine.hooks import GMLQueueHook
from reot_mm.models import ClassQueue
from reot_mm.models.class_queue import segment_bounds

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'gml', 'gml_resnet8_100e_digitslt.py')
COUNTS = exponential_profile(100, 10, 60)


@HOOKS.register_module()
class QueueProbe(Hook):
    """Records the queue right after GMLQueueHook.before_train."""
    priority = 'LOW'
    records = []

    def before_train(self, runner):
        queue, = [m for m in runner.model.modules() if isinstance(m, ClassQueue)]
        QueueProbe.records.append({k: v.clone() for k, v in
                                   queue.state_dict().items()})


@pytest.fixture(scope='module')
def teacher_checkpoint(tmp_path_factory):
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(CONFIG)
    torch.manual_seed(0)
    teacher = MODELS.build(cfg.model.teacher)
    path = tmp_path_factory.mktemp('teacher') / 'teacher.pth'
    torch.save({'state_dict': teacher.state_dict()}, path)
    return str(path)


def small_cfg(work_dir, teacher_checkpoint, max_epochs=1, hook=None):
    cfg = Config.fromfile(CONFIG)
    cfg.work_dir = str(work_dir)
    cfg.model.teacher_checkpoint = teacher_checkpoint
    cfg.train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=100)
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=True)]
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.train_dataloader.batch_size = 128  # 2 iterations per epoch
    cfg.log_level = 'WARNING'
    cfg.custom_hooks = [
        dict(type='ClassStatisticsHook'),
        dict(type='GMLQueueHook', many_threshold=40, few_threshold=10,
             **(hook or {})),
        dict(type='QueueProbe'),
    ]
    return cfg


def test_prefill_then_resume_keeps_the_checkpoint_queue(tmp_path,
                                                        teacher_checkpoint):
    QueueProbe.records.clear()
    runner = Runner.from_cfg(small_cfg(
        tmp_path, teacher_checkpoint,
        # 4 passes: the tail class has 1 training image and k_m = 4 slots
        hook=dict(max_prefill_passes=4, check_ranks=True, check_interval=1)))
    runner.train()
    start, = QueueProbe.records
    sizes = start['segment_sizes']
    assert int(sizes.sum()) == 256 and int(sizes.min()) >= 4
    # segment sizes follow the dataset's class counts (Eq. 6)
    assert torch.equal(sizes, segment_bounds(COUNTS, 256, 4)[1])
    assert sizes[0] > sizes[-1]
    # every slot holds a teacher feature of a training image of its class
    assert (start['indices'] >= 0).all()
    labels = torch.tensor(runner.train_dataloader.dataset.get_gt_labels())
    assert torch.equal(labels[start['indices']], start['labels'])
    hub = runner.message_hub
    for group in ('many', 'medium', 'few'):
        assert hub.get_scalar(f'train/gml_queue_fill_{group}').current() == 1.0

    # the checkpoint holds the queue (and not the teacher) ...
    saved = torch.load(osp.join(tmp_path, 'epoch_1.pth'), map_location='cpu',
                       weights_only=False)['state_dict']
    queue_state = {k.split('queue.')[-1]: v for k, v in saved.items()
                   if '.queue.' in k}
    assert set(queue_state) >= {'features', 'labels', 'indices', 'pointers',
                                'segment_starts', 'segment_sizes'}
    assert not any(k.startswith('teacher.') for k in saved)
    # ... and a resumed run starts from it instead of re-filling
    QueueProbe.records.clear()
    cfg = small_cfg(tmp_path, teacher_checkpoint, max_epochs=2)
    cfg.resume = True
    runner = Runner.from_cfg(cfg)
    runner.train()
    restored = QueueProbe.records[0]
    for key, value in queue_state.items():
        assert torch.equal(restored[key], value), key
    assert runner.epoch == 2


def test_without_prefill_the_queue_starts_random(tmp_path, teacher_checkpoint):
    QueueProbe.records.clear()
    runner = Runner.from_cfg(small_cfg(tmp_path, teacher_checkpoint,
                                       hook=dict(prefill='none')))
    runner.train()
    start, = QueueProbe.records
    assert (start['indices'] < 0).all()
    torch.testing.assert_close(start['features'].norm(dim=1), torch.ones(256))
    # one epoch of enqueues replaced part of the rare classes' entries
    fill = runner.message_hub.get_scalar('train/gml_queue_fill_few').current()
    assert 0 < fill < 1


def test_missing_class_counts_is_a_clear_error():
    model = torch.nn.Module()
    model.queue = ClassQueue(num_classes=3, feat_dim=2, size=6)
    runner = SimpleNamespace(model=model,
                             message_hub=MessageHub.get_instance('gml_no_counts'))
    with pytest.raises(RuntimeError, match='ClassStatisticsHook'):
        GMLQueueHook().before_train(runner)
    with pytest.raises(RuntimeError, match='no ClassQueue'):
        GMLQueueHook().before_train(SimpleNamespace(model=torch.nn.Linear(1, 1)))


def test_group_fill_and_arguments():
    hook = GMLQueueHook(many_threshold=40, few_threshold=10)
    hook.class_counts = torch.tensor([100., 50, 20, 5, 2], dtype=torch.float64)
    queue = ClassQueue(num_classes=5, feat_dim=2, size=20, min_per_class=2,
                       class_counts=hook.class_counts)
    # fill class 0 completely, class 3 half
    size0, size3 = int(queue.segment_sizes[0]), int(queue.segment_sizes[3])
    queue.enqueue(torch.randn(size0, 2), torch.zeros(size0, dtype=torch.long),
                  torch.arange(size0))
    queue.enqueue(torch.randn(1, 2), torch.tensor([3]), torch.tensor([99]))
    fills = hook.group_fill(queue)
    assert fills['many'] == pytest.approx((1.0 + 0.0) / 2)
    assert fills['medium'] == 0.0
    assert fills['few'] == pytest.approx((1 / size3 + 0.0) / 2)
    with pytest.raises(ValueError, match='prefill'):
        GMLQueueHook(prefill='random')
    with pytest.raises(ValueError, match='max_prefill_passes'):
        GMLQueueHook(max_prefill_passes=0)


DUMP_PROBE = textwrap.dedent('''
    import torch
    from mmengine.dist import get_rank
    from mmengine.hooks import Hook
    from mmengine.registry import HOOKS
    from reot_mm.models import ClassQueue


    @HOOKS.register_module()
    class QueueDump(Hook):
        priority = 'LOWEST'

        def after_train(self, runner):
            queue, = [m for m in runner.model.modules()
                      if isinstance(m, ClassQueue)]
            torch.save(queue.state_dict(),
                       f'{runner.work_dir}/queue_rank{get_rank()}.pth')
''')


def test_two_rank_training_keeps_queues_identical(tmp_path, teacher_checkpoint):
    """tools/dist_train.sh (torchrun, gloo, CPUDistributedDataParallel): the
    hook's debug check compares the queues after the pre-fill and every
    iteration (a difference fails the run), and both ranks' final queues are
    dumped and compared."""
    (tmp_path / 'queue_dump.py').write_text(DUMP_PROBE)
    config = tmp_path / 'gml_ddp.py'
    config.write_text(textwrap.dedent(f'''
        _base_ = ['{CONFIG}']
        custom_imports = dict(imports=['reot_mm', 'queue_dump'],
                              allow_failed_imports=False)
        model = dict(teacher_checkpoint='{teacher_checkpoint}')
        train_cfg = dict(max_epochs=2, val_interval=2)
        custom_hooks = [
            dict(type='ClassStatisticsHook'),
            dict(type='GMLQueueHook', many_threshold=40, few_threshold=10,
                 check_ranks=True, check_interval=1,
                 # the tail class: 1 training image, k_m = 4 slots
                 max_prefill_passes=4),
            dict(type='QueueDump'),
        ]
    '''))
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()),
               PYTHONPATH=f'{tmp_path}{os.pathsep}{ROOT}',
               OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    result = subprocess.run(
        ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), str(config), '2',
         '--work-dir', str(tmp_path / 'work')],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert 'CPUDistributedDataParallel' in log
    states = [torch.load(tmp_path / 'work' / f'queue_rank{r}.pth') for r in (0, 1)]
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
    # both ranks' samples went in: every dataset index of the run is a slot's
    assert (states[0]['indices'] >= 0).all()
    assert int(states[0]['num_enqueued'].sum()) > 267


def test_prefill_of_an_iteration_based_run_ends_and_keeps_the_loader():
    """An InfiniteSampler loader (iteration-based runs): the pre-fill makes one
    pass over its own loader, and the training loader still yields batches
    afterwards (leaving an InfiniteSampler loop early closes its generator)."""
    from mmengine.dataset import InfiniteSampler
    from torch.utils.data import DataLoader

    from reot_mm.engine.hooks.gml_queue_hook import one_pass_loader

    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2, 1])
    dataset = [(torch.full((2, ), float(i)), int(y)) for i, y in enumerate(labels)]
    model = torch.nn.Module()
    model.queue = ClassQueue(num_classes=3, feat_dim=2, size=60, min_per_class=2,
                             class_counts=torch.tensor([4., 3, 3]))
    seen = []

    def prefill_step(batch):
        features, targets = batch
        seen.extend(features[:, 0].long().tolist())
        model.queue.enqueue(features, targets, features[:, 0].long())
    model.prefill_step = prefill_step
    loader = DataLoader(dataset, batch_size=3,
                        sampler=InfiniteSampler(dataset, shuffle=True, seed=3))
    hook = GMLQueueHook(max_prefill_passes=2, many_threshold=4, few_threshold=2)
    hook.class_counts = torch.tensor([4., 3, 3], dtype=torch.float64)
    logs = []
    runner = SimpleNamespace(
        model=model, train_dataloader=loader,
        logger=SimpleNamespace(info=logs.append, warning=logs.append))
    import threading
    worker = threading.Thread(target=hook._prefill, args=(runner, [model.queue]),
                              daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), 'the pre-fill never ends on an InfiniteSampler'
    # the queue (60 slots) cannot fill from 10 images: two full passes ran
    assert sorted(seen) == sorted(list(range(10)) * 2)
    assert any('still hold initial random entries' in str(m) for m in logs)
    batch = next(iter(loader))  # the training loader is intact
    assert batch[0].shape == (3, 2)
    # epoch-based loaders are used as they are
    plain = DataLoader(dataset, batch_size=3)
    assert one_pass_loader(plain) is plain
