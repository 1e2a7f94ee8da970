"""The ADE20K RE-OT config end to end on the tiny fixture: tools/train.py on the
CPU, then a 2-process gloo run through tools/dist_train.sh (torchrun).

The test-only configs inherit configs/ade20k/reot_fcn_...py (which inherits
the upstream mmseg FCN config) and shrink the backbone, crops and schedule.
"""
import json
import math
import os
import os.path as osp
import re
import subprocess
import sys
import textwrap

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from ade_fixture import (load_tool, make_ade_fixture, reduced_counts,  # noqa: E402
                         tiny_config_text)
from launch import free_port  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
BASE = osp.join(ROOT, 'configs', 'ade20k',
                'reot_fcn_r50-d8_4xb4-160k_ade20k-512x512.py')
GML = osp.join(ROOT, 'configs', 'ade20k',
               'gml-a0.2_fcn_r50-d8_4xb4-160k_ade20k-512x512.py')
BIN_KEYS = [f'{m}_{b}' for m in ('mIoU', 'mAcc') for b in ('head', 'common', 'rare')]
# bins by training pixel count that each hold a class of the fixture
EVALUATOR = '''
val_evaluator = dict(type='FrequencyBinnedIoUMetric', iou_metrics=['mIoU'],
                     bin_mode='count', bin_edges=(1000, 100))
test_evaluator = val_evaluator
'''

PROBE = textwrap.dedent('''
    """Test instrumentation: each rank writes the state it holds."""
    import json
    import os.path as osp

    import torch
    from mmengine.dist import get_rank
    from mmengine.hooks import Hook
    from mmengine.model import is_model_wrapper
    from mmengine.registry import HOOKS

    from reot_mm.losses import REOTPixelLoss
    from reot_mm.models import ClassQueue


    @HOOKS.register_module()
    class SegRankProbe(Hook):
        priority = 'LOWEST'

        def after_train_iter(self, runner, batch_idx, data_batch=None,
                             outputs=None):
            model = runner.model
            module = model.module if is_model_wrapper(model) else model
            losses = [m for m in module.modules() if isinstance(m, REOTPixelLoss)]
            params = torch.cat([p.detach().flatten() for p in module.parameters()])
            record = dict(
                wrapper=type(model).__name__,
                world_size=runner.world_size,
                # every count-aware module: RE-OT pixel losses, GMLLoss
                counts=[m.class_counts.tolist() for m in module.modules()
                        if hasattr(m, 'set_class_counts')],
                queues=[m.fingerprint() for m in module.modules()
                        if isinstance(m, ClassQueue)],
                prior_weight=[float(loss.prior_weight) for loss in losses],
                sync_bn=any('SyncBatchNorm' in type(m).__name__
                            for m in module.modules()),
                loss=float(outputs['loss']),
                param_sum=float(params.double().sum()))
            path = osp.join(runner.work_dir,
                            f'rank{get_rank()}_iter{runner.iter + 1}.json')
            with open(path, 'w') as handle:
                json.dump(record, handle)
''')


def run(command, env=None):
    env = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='',
               **(env or {}))
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


def test_train_with_cached_pixel_counts(tmp_path):
    """tools/dataset_stats/pixel_class_counts.py, then tools/train.py: finite
    losses, the iteration-based λ ramp, and the binned metric keys."""
    fixture = str(tmp_path / 'ade')
    maps = make_ade_fixture(fixture)
    counts_file = str(tmp_path / 'pixel_counts.json')
    config = tmp_path / 'reot_fcn_tiny.py'
    config.write_text(tiny_config_text(fixture, BASE, counts_file,
                                       extra=EVALUATOR))
    # the counting tool (its main(argv), in-process: one interpreter start less)
    load_tool().main([str(config)])
    work_dir = tmp_path / 'work'
    log = run([sys.executable, 'tools/train.py', str(config),
               '--work-dir', str(work_dir)])
    assert 'ClassStatisticsHook: 150 classes, 7360 samples' in log
    assert sum(reduced_counts(maps['training'])[0]) == 7360
    losses = [float(v) for v in re.findall(r'decode\.loss_reot: ([-\d.e+naif]+)', log)]
    aux = [float(v) for v in re.findall(r'aux\.loss_reot: ([-\d.e+naif]+)', log)]
    assert len(losses) == 4 and len(aux) == 4
    assert all(math.isfinite(v) and v > 0 for v in losses + aux)
    # milestones (0.25, 0.75) of 4 iterations -> t1 = 1, t2 = 3 (Eq. 34)
    lambdas = [float(v) for v in re.findall(r'reot_lambda: ([\d.]+)', log)]
    assert lambdas == [0.0, 0.5, 1.0, 1.0]
    metrics = re.findall(r'Iter\(val\) \[3/3\]\s+(.*)', log)[-1]
    for key in ['aAcc', 'mIoU', 'mAcc'] + BIN_KEYS:
        assert re.search(rf'\b{key}: ', metrics), (key, metrics)
    values = dict(re.findall(r'(\w+): ([-\d.na]+)', metrics))
    assert math.isfinite(float(values['mIoU_head']))
    assert osp.isfile(work_dir / 'iter_4.pth')


def test_two_process_gloo_run_keeps_statistics_identical(tmp_path):
    fixture = str(tmp_path / 'ade')
    maps = make_ade_fixture(fixture)
    (tmp_path / 'seg_rank_probe.py').write_text(PROBE)
    config = tmp_path / 'reot_fcn_tiny_dist.py'
    # no counts file: every rank counts the label maps, rank 0's are broadcast
    config.write_text(tiny_config_text(
        fixture, BASE, None, extra=EVALUATOR + textwrap.dedent('''
            custom_imports = dict(imports=['reot_mm', 'seg_rank_probe'],
                                  allow_failed_imports=False)
            train_cfg = dict(max_iters=2, val_interval=2)
            default_hooks = dict(logger=dict(interval=1),
                                 checkpoint=dict(interval=2))
            custom_hooks = [
                dict(type='ClassStatisticsHook', count_type='pixel'),
                dict(type='REOTPriorHook', milestones=(0.5, 1.0)),
                dict(type='SegRankProbe'),
            ]
        ''')))
    work_dir = tmp_path / 'work'
    log = run(['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), str(config),
               '2', '--work-dir', str(work_dir)],
              env=dict(PYTHON=sys.executable, PORT=str(free_port()),
                       PYTHONPATH=f'{tmp_path}{os.pathsep}{ROOT}'))
    pixel = reduced_counts(maps['training'])[0]
    # the losses store the raw counts (zeros are smoothed where Q is formed)
    expected = [float(c) for c in pixel]
    for iteration in (1, 2):
        records = [json.loads((work_dir / f'rank{r}_iter{iteration}.json')
                              .read_text()) for r in (0, 1)]
        for record in records:
            assert record['world_size'] == 2
            assert record['wrapper'] == 'CPUDistributedDataParallel'
            assert not record['sync_bn']  # SyncBN reverted to BN on CPU
            assert record['counts'] == [expected, expected]  # decode + aux
            assert math.isfinite(record['loss'])
        assert records[0]['prior_weight'] == records[1]['prior_weight']
        assert records[0]['param_sum'] == records[1]['param_sum']
    assert [json.loads((work_dir / f'rank0_iter{i}.json').read_text())
            ['prior_weight'][0] for i in (1, 2)] == [0.0, 1.0]
    assert 'mIoU_head' in log


def test_two_process_gml_run_keeps_queues_identical(tmp_path):
    """GML config under gloo: the class-wise queues (gathered before every
    enqueue) and the class statistics are the same on both ranks."""
    fixture = str(tmp_path / 'ade')
    maps = make_ade_fixture(fixture)
    (tmp_path / 'seg_rank_probe.py').write_text(PROBE)
    config = tmp_path / 'gml_fcn_tiny_dist.py'
    head = ('queue=dict(size=300, min_per_class=1), '
            'query_mlp=dict(hidden_channels=16, out_channels=8), '
            'key_mlp=dict(hidden_channels=16, out_channels=8), '
            'pixels_per_class=4')
    config.write_text(tiny_config_text(
        fixture, GML, None, decode_head=head, extra=EVALUATOR + textwrap.dedent('''
            custom_imports = dict(imports=['reot_mm', 'seg_rank_probe'],
                                  allow_failed_imports=False)
            train_cfg = dict(max_iters=2, val_interval=2)
            default_hooks = dict(logger=dict(interval=1),
                                 checkpoint=dict(interval=2))
            custom_hooks = [
                dict(type='ClassStatisticsHook', count_type='pixel'),
                # raises if the ranks' queues ever differ
                dict(type='GMLQueueHook', prefill='none', check_ranks=True,
                     check_interval=1),
                dict(type='SegRankProbe'),
            ]
        ''')))
    work_dir = tmp_path / 'work'
    log = run(['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), str(config),
               '2', '--work-dir', str(work_dir)],
              env=dict(PYTHON=sys.executable, PORT=str(free_port()),
                       PYTHONPATH=f'{tmp_path}{os.pathsep}{ROOT}'))
    expected = [float(c) for c in reduced_counts(maps['training'])[0]]
    previous = None
    for iteration in (1, 2):
        records = [json.loads((work_dir / f'rank{r}_iter{iteration}.json')
                              .read_text()) for r in (0, 1)]
        # decode L_cls, GMLLoss, auxiliary L_cls
        assert records[0]['counts'] == [expected] * 3
        assert records[1]['counts'] == records[0]['counts']
        assert len(records[0]['queues']) == 1
        assert records[0]['queues'] == records[1]['queues']
        assert records[0]['queues'] != previous  # the queue did change
        previous = records[0]['queues']
        assert records[0]['param_sum'] == records[1]['param_sum']
        assert all(math.isfinite(r['loss']) for r in records)
    assert 'decode.loss_gml' in log and 'mIoU_head' in log
