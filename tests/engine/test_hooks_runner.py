"""ClassStatisticsHook and REOTPriorHook on a real mmengine Runner (digits-LT)."""
import json
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

import reot_mm  # noqa: F401
from reot_mm.cls.datasets.long_tail import exponential_profile
from reot_mm.engine.hooks import ClassStatisticsHook, REOTPriorHook
from reot_mm.losses import REOTLoss
from reot_mm.losses.priors import prior_schedule

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
REOT_CONFIG = osp.join(ROOT, 'configs', 'demo', 'reot_resnet8_100e_digitslt.py')
CE_CONFIG = osp.join(ROOT, 'configs', 'demo', 'ce_resnet8_100e_digitslt.py')
DIGITS_COUNTS = exponential_profile(100, 10, 60)


def small_cfg(path, work_dir, max_epochs=4, milestones=(1, 3), **overrides):
    cfg = Config.fromfile(path)
    cfg.work_dir = str(work_dir)
    cfg.train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=100)
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=True)]
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.train_dataloader.batch_size = 128  # 3 iterations per epoch
    cfg.train_dataloader.drop_last = False  # (267 samples: 128 + 128 + 11)
    cfg.log_level = 'WARNING'
    for hook in cfg.custom_hooks:
        if hook['type'] == 'REOTPriorHook':
            hook['milestones'] = milestones
    cfg.merge_from_dict(overrides)
    return cfg


def reot_losses(runner):
    return [m for m in runner.model.modules() if isinstance(m, REOTLoss)]


def lambda_history(runner):
    history = runner.message_hub.get_scalar('train/reot_lambda')
    return history.data[0].tolist()


def test_hooks_fill_counts_and_schedule_lambda(tmp_path):
    runner = Runner.from_cfg(small_cfg(REOT_CONFIG, tmp_path))
    runner.train()
    loss, = reot_losses(runner)
    # counts from the dataset (exponential profile of DigitsLT)
    assert loss.class_counts.tolist() == [float(c) for c in DIGITS_COUNTS]
    assert runner.message_hub.get_info('reot_mm/class_counts') == \
        [float(c) for c in DIGITS_COUNTS]
    # λ per iteration: 3 iterations per epoch, epochs 1..4, milestones (1, 3)
    expected = []
    for epoch in range(1, 5):
        expected += [prior_schedule(epoch, 1, 3)[0]] * 3
    assert lambda_history(runner) == pytest.approx(expected)
    assert expected[-1] == 1.0 and expected[3] == 0.5
    assert float(loss.prior_weight) == 1.0


def test_resume_keeps_lambda_and_counts(tmp_path):
    full = Runner.from_cfg(small_cfg(REOT_CONFIG, tmp_path / 'full'))
    full.train()
    uninterrupted = lambda_history(full)

    first = Runner.from_cfg(small_cfg(REOT_CONFIG, tmp_path / 'part',
                                      max_epochs=2))
    first.train()
    checkpoint = torch.load(osp.join(tmp_path, 'part', 'epoch_2.pth'),
                            map_location='cpu')
    state = checkpoint['state_dict']
    key, = [k for k in state if k.endswith('prior_weight')]
    assert float(state[key]) == 0.5  # λ of epoch 2 with milestones (1, 3)
    assert checkpoint['meta']['reot_mm_class_counts'] == \
        [float(c) for c in DIGITS_COUNTS]

    # resume with other counts in the config: the checkpoint's counts win
    # (the model was trained with them), with a warning
    cfg = small_cfg(REOT_CONFIG, tmp_path / 'part', max_epochs=4,
                    resume=True)
    cfg.custom_hooks[0] = dict(type='ClassStatisticsHook', class_counts=[7] * 10)
    resumed = Runner.from_cfg(cfg)
    with pytest.warns(UserWarning, match='differ from the ones resolved'):
        resumed.train()
    loss, = reot_losses(resumed)
    assert loss.class_counts.tolist() == [float(c) for c in DIGITS_COUNTS]
    # the message hub history continues; the last 6 iterations (epochs 3-4)
    # match the uninterrupted run
    assert lambda_history(resumed)[-6:] == pytest.approx(uninterrupted[-6:])


def test_resume_restores_lambda_before_first_step(tmp_path):
    Runner.from_cfg(small_cfg(REOT_CONFIG, tmp_path, max_epochs=2)).train()
    cfg = small_cfg(REOT_CONFIG, tmp_path, max_epochs=4, resume=True)
    runner = Runner.from_cfg(cfg)
    seen = []

    class Probe(Hook):
        priority = 'LOW'

        def before_train(self, runner):
            seen.append(float(reot_losses(runner)[0].prior_weight))

    runner.register_hook(Probe())
    runner.train()
    # restored from epoch_2 (λ = 0.5), recomputed for epoch 3 (λ = 1)
    assert seen == [prior_schedule(3, 1, 3)[0]]


def test_iteration_based_loop_uses_fraction_milestones(tmp_path):
    cfg = small_cfg(REOT_CONFIG, tmp_path, milestones=(0.25, 0.75))
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=8, val_interval=100)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=100,
                                        by_epoch=False)
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]
    runner = Runner.from_cfg(cfg)
    runner.train()
    expected = [prior_schedule(i, 2, 6)[0] for i in range(1, 9)]
    assert lambda_history(runner) == pytest.approx(expected)


def test_per_iteration_updates_in_epoch_loop(tmp_path):
    cfg = small_cfg(REOT_CONFIG, tmp_path, max_epochs=2, milestones=(0, 2))
    cfg.custom_hooks[1]['update'] = 'iter'
    runner = Runner.from_cfg(cfg)
    runner.train()
    positions = [e + (i + 1) / 3 for e in range(2) for i in range(3)]
    expected = [prior_schedule(t, 0, 2)[0] for t in positions]
    assert lambda_history(runner) == pytest.approx(expected)


def test_official_mode_on_runner(tmp_path):
    cfg = small_cfg(REOT_CONFIG, tmp_path, max_epochs=4, milestones=(1, 4))
    cfg.custom_hooks[1]['mode'] = 'official'
    runner = Runner.from_cfg(cfg)
    runner.train()
    expected = []
    for epoch in range(1, 5):
        expected += [prior_schedule(epoch, 1, 4, mode='official',
                                    num_classes=10)[0]] * 3
    assert lambda_history(runner) == pytest.approx(expected)
    # epoch 2: (2-1)/((2-1) + 10·(4-2)) = 1/21, far below the paper's 1/3
    assert expected[3] == pytest.approx(1 / 21)


def test_counts_from_file_and_length_check(tmp_path):
    counts_file = tmp_path / 'counts.json'
    counts_file.write_text(json.dumps([5] * 10))
    cfg = small_cfg(REOT_CONFIG, tmp_path / 'a', max_epochs=1)
    cfg.custom_hooks[0] = dict(type='ClassStatisticsHook',
                               class_counts_file=str(counts_file))
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert reot_losses(runner)[0].class_counts.tolist() == [5.0] * 10

    cfg = small_cfg(REOT_CONFIG, tmp_path / 'b', max_epochs=1)
    cfg.custom_hooks[0] = dict(type='ClassStatisticsHook',
                               class_counts=[1, 2, 3], num_classes=10)
    with pytest.raises(ValueError, match='3 entries but num_classes is 10'):
        Runner.from_cfg(cfg).train()


def test_loss_config_counts_of_another_size_are_an_error(tmp_path):
    """3 counts in the loss config, 10 classes in the dataset: the hook's
    counts do not silently replace them; the error names the setting and
    both sizes."""
    cfg = small_cfg(REOT_CONFIG, tmp_path, max_epochs=1)
    cfg.model.head.loss.class_counts = [1, 2, 3]
    with pytest.raises(ValueError, match=r'class_counts in the config has 3 '
                       r'entries.*have 10'):
        Runner.from_cfg(cfg).train()


def test_hooks_select_modules_by_contract(tmp_path):
    """Count-aware and scheduled modules are found by their base classes."""
    from reot_mm.engine.hooks.class_stats_hook import (
        count_aware_modules, scheduled_prior_modules)
    from reot_mm.losses.class_counts import (CountAwareModule,
                                             ScheduledPriorModule)
    runner = Runner.from_cfg(small_cfg(REOT_CONFIG, tmp_path, max_epochs=1))
    loss, = reot_losses(runner)
    assert count_aware_modules(runner.model) == [loss]
    assert scheduled_prior_modules(runner.model) == [loss]
    assert isinstance(loss, ScheduledPriorModule)
    assert isinstance(loss, CountAwareModule)


def test_selection_is_by_base_class_not_by_method_name():
    """A module that merely has set_class_counts is not count-aware: the
    contract is the base class (no duck typing)."""
    from reot_mm.engine.hooks.class_stats_hook import (
        count_aware_modules, modules_with, scheduled_prior_modules)
    from reot_mm.losses import BCLLoss

    class LooksCountAware(torch.nn.Module):
        def set_class_counts(self, counts):
            raise AssertionError('must not be called')

        def set_prior_schedule(self, weight, power=1.0):
            raise AssertionError('must not be called')

    reot, bcl = REOTLoss(), BCLLoss()
    model = torch.nn.ModuleList([reot, LooksCountAware(), bcl])
    assert count_aware_modules(model) == [reot, bcl]
    assert scheduled_prior_modules(model) == [reot]
    assert modules_with(model, 'set_class_counts') == [reot, bcl]
    with pytest.raises(ValueError, match='method must be one of'):
        modules_with(model, 'forward')


def test_prior_hook_without_reot_loss_is_an_error(tmp_path):
    cfg = small_cfg(CE_CONFIG, tmp_path, max_epochs=1)
    cfg.custom_hooks = [dict(type='REOTPriorHook', milestones=(1, 2))]
    with pytest.raises(RuntimeError, match='found no RE-OT loss'):
        Runner.from_cfg(cfg).train()


@pytest.mark.parametrize('counts_in_checkpoint', [True, False])
def test_test_mode_counts_for_shot_metric(tmp_path, monkeypatch,
                                          counts_in_checkpoint):
    """tools/test.py path: the many/medium/few metric works without a training
    run in this process. Counts come from the checkpoint's meta, without
    building the training dataset (LVIS: the whole annotation file); an older
    checkpoint without them falls back to counting the training set."""
    Runner.from_cfg(small_cfg(REOT_CONFIG, tmp_path, max_epochs=1)).train()
    checkpoint = osp.join(tmp_path, 'epoch_1.pth')
    if not counts_in_checkpoint:
        state = torch.load(checkpoint, map_location='cpu', weights_only=False)
        del state['meta']['reot_mm_class_counts']
        for key in [k for k in state['state_dict'] if 'class_counts' in k]:
            state['state_dict'][key] = torch.zeros(0, dtype=torch.float64)
        checkpoint = osp.join(tmp_path, 'no_counts.pth')
        torch.save(state, checkpoint)
    built = []
    original = ClassStatisticsHook._training_dataset

    def spy(self, runner):
        built.append(True)
        return original(self, runner)

    monkeypatch.setattr(ClassStatisticsHook, '_training_dataset', spy)
    cfg = small_cfg(REOT_CONFIG, tmp_path / 'test')
    cfg.load_from = checkpoint
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    assert {'shot/many', 'shot/medium', 'shot/few'} <= set(metrics)
    assert len(built) == (0 if counts_in_checkpoint else 1)
    loss, = reot_losses(runner)
    assert loss.class_counts.tolist() == [float(c) for c in DIGITS_COUNTS]
    assert runner.message_hub.get_info('reot_mm/class_counts') == \
        [float(c) for c in DIGITS_COUNTS]


def test_hook_argument_errors():
    with pytest.raises(ValueError, match='not both'):
        ClassStatisticsHook(class_counts=[1], class_counts_file='x.json')
    with pytest.raises(ValueError, match='t2=2 < t1=5'):
        REOTPriorHook(milestones=(5, 2))
    with pytest.raises(ValueError, match='mode must be one of'):
        REOTPriorHook(mode='cosine')
    with pytest.raises(ValueError, match="update must be 'epoch' or 'iter'"):
        REOTPriorHook(update='step')
