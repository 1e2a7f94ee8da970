"""tools/train.py (one process) and tools/dist_train.sh (two gloo processes) on
the tiny LVIS fixture, through configs that inherit the shipped LVIS configs
(and, through them, upstream mmdet's)."""
import glob
import json
import math
import os
import os.path as osp
import subprocess
import sys
import textwrap

from conftest import ROOT, tiny_config_text
from launch import free_port
from lvis_fixture import train_instance_counts

AP_KEYS = [f'lvis/{t}_{k}' for t in ('bbox', 'segm')
           for k in ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'APr', 'APc',
                     'APf')]

PROBE = textwrap.dedent('''
    """Test instrumentation: each rank writes the statistics it holds."""
    import json
    import os.path as osp

    import torch
    from mmengine.dist import get_rank
    from mmengine.hooks import Hook
    from mmengine.model import is_model_wrapper
    from mmengine.registry import HOOKS


    @HOOKS.register_module()
    class LVISRankProbe(Hook):
        priority = 'LOWEST'

        def after_train_epoch(self, runner):
            model = runner.model
            module = model.module if is_model_wrapper(model) else model
            counts = {name: m.class_counts.tolist()
                      for name, m in module.named_modules()
                      if isinstance(getattr(m, 'class_counts', None),
                                    torch.Tensor)}
            lambdas = {name: float(m.prior_weight)
                       for name, m in module.named_modules()
                       if hasattr(m, 'set_prior_schedule')}
            params = torch.cat([p.detach().flatten()
                                for p in module.parameters()]).double()
            record = dict(
                wrapper=type(model).__name__, world_size=runner.world_size,
                counts=counts, lambdas=lambdas,
                hub_counts=runner.message_hub.get_info('reot_mm/class_counts'),
                param_sum=float(params.sum()), param_abs=float(params.abs().sum()))
            path = osp.join(runner.work_dir, f'rank{get_rank()}.json')
            with open(path, 'w') as handle:
                json.dump(record, handle)
''')


def scalars(work_dir):
    [path] = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def check_losses_and_metrics(records):
    train = [r for r in records if 'loss' in r]
    assert train, 'no training iteration was logged'
    for record in train:
        for key, value in record.items():
            if key.startswith('loss'):
                assert math.isfinite(value), (key, value)
    metrics = [r for r in records if 'lvis/bbox_AP' in r]
    assert len(metrics) == 1
    for key in AP_KEYS:
        assert key in metrics[0], key
    for key in AP_KEYS:
        if key[-3:] in ('APr', 'APc', 'APf'):
            # every frequency group has ground truth in the val split
            assert metrics[0][key] >= 0.0, key
    return train, metrics[0]


def test_train_py_one_epoch_with_lvis_evaluation(tmp_path, lvis_data):
    config = tmp_path / 'tiny_reot_mask_rcnn.py'
    config.write_text(tiny_config_text(lvis_data['data_root']))
    work_dir = tmp_path / 'work'
    env = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    result = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'train.py'), str(config),
         '--work-dir', str(work_dir)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    train, _ = check_losses_and_metrics(scalars(str(work_dir)))
    # the RE-OT loss ran with its prior on: milestones (0.5, 0.75) of 1 epoch
    assert all(r['reot_lambda'] == 1.0 for r in train)
    assert {'loss_cls', 'loss_bbox', 'loss_mask', 'acc'} <= set(train[0])
    assert 'ClassStatisticsHook: 6 classes, 26 samples' in log


def test_dist_train_two_gloo_processes_bcl_variant(tmp_path, lvis_data):
    """2-process torchrun/gloo run of the RE-OT + BCL RoI-contrastive config:
    completes with evaluation, both ranks hold the same instance counts (on
    every count-aware module) and λ, and DDP kept the replicas equal (BCL's
    all-gather of a different number of foreground RoIs per rank included)."""
    (tmp_path / 'lvis_rank_probe.py').write_text(PROBE)
    config = tmp_path / 'tiny_reot_bcl.py'
    config.write_text(tiny_config_text(
        lvis_data['data_root'],
        base='configs/lvis/reot-bcl_mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1.py',
        extra_imports=('lvis_rank_probe', ), bbox_head='contrast_channels=16',
        extra=textwrap.dedent('''
            custom_hooks = [
                dict(type='LVISAnnotationCheckHook'),
                dict(type='ClassStatisticsHook'),
                dict(type='REOTPriorHook', milestones=(0.5, 0.75)),
                dict(type='LVISRankProbe'),
            ]''')))
    work_dir = tmp_path / 'work'
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()),
               PYTHONPATH=f'{tmp_path}{os.pathsep}{ROOT}',
               OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    result = subprocess.run(
        ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), str(config), '2',
         '--work-dir', str(work_dir)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, \
        result.stdout[-4000:] + result.stderr[-4000:]
    records = [json.loads((work_dir / f'rank{r}.json').read_text())
               for r in (0, 1)]
    expected = [float(c) for c in train_instance_counts()]
    for record in records:
        assert record['world_size'] == 2
        assert record['wrapper'] == 'CPUDistributedDataParallel'
        # REOTRoILoss and BCLLoss both received the counts
        assert set(record['counts']) == {'roi_head.bbox_head.loss_cls',
                                         'roi_head.bbox_head.loss_contrast'}
        assert all(c == expected for c in record['counts'].values())
        assert record['hub_counts'] == expected
        assert record['lambdas'] == {'roi_head.bbox_head.loss_cls': 1.0}
    assert records[0]['counts'] == records[1]['counts']
    assert records[0]['param_sum'] == records[1]['param_sum']
    assert records[0]['param_abs'] == records[1]['param_abs']
    train, _ = check_losses_and_metrics(scalars(str(work_dir)))
    assert all('loss_bcl' in r for r in train)
