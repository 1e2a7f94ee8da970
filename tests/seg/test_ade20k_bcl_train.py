"""The ADE20K BCL config end to end on the tiny fixture: tools/train.py on the
CPU, then 2 gloo processes through tools/dist_train.sh (torchrun) with one
image per rank, so that one rank's batch is the fixture's image without a
labelled pixel.

The test-only configs inherit configs/ade20k/bcl_fcn_...py (which inherits
the upstream mmseg FCN config) and shrink the backbone, crops and schedule.
"""
import math
import os.path as osp
import re
import sys
import textwrap

import pytest

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from ade_fixture import make_ade_fixture, reduced_counts, tiny_config_text  # noqa: E402
from dense_rank_probe import EVALUATOR, PROBE, ROOT, rank_records  # noqa: E402
from launch import run_train, subprocess_env  # noqa: E402

BCL = osp.join(ROOT, 'configs', 'ade20k',
               'bcl_fcn_r50-d8_4xb4-160k_ade20k-512x512.py')
HEAD = ('contrast_channels=8, contrast_hidden_channels=16, '
        'pixels_per_class=4')


@pytest.mark.slow
def test_bcl_config_trains_with_tools_train(tmp_path):
    """Finite L_LC and L_BCL every iteration, the binned metric, a checkpoint."""
    fixture = str(tmp_path / 'ade')
    maps = make_ade_fixture(fixture)
    config = tmp_path / 'bcl_fcn_tiny.py'
    config.write_text(tiny_config_text(fixture, BCL, None, hooks='',
                                       decode_head=HEAD, extra=EVALUATOR))
    work_dir = tmp_path / 'work'
    log = run_train(config, work_dir)
    total = int(sum(reduced_counts(maps['training'])[0]))
    assert f'ClassStatisticsHook: 150 classes, {total} samples' in log
    lc = [float(v) for v in re.findall(r'decode\.loss_lc: ([-\d.e+naif]+)', log)]
    bcl = [float(v) for v in re.findall(r'decode\.loss_bcl: ([-\d.e+naif]+)', log)]
    aux = [float(v) for v in re.findall(r'aux\.loss_lc: ([-\d.e+naif]+)', log)]
    assert len(lc) == len(bcl) == len(aux) == 4
    # every batch of two holds a labelled image: L_BCL > 0 (Eq. 9 is > 0)
    assert all(math.isfinite(v) and v > 0 for v in lc + bcl + aux)
    metrics = re.findall(r'Iter\(val\) \[3/3\]\s+(.*)', log)[-1]
    for key in ('aAcc', 'mIoU', 'mAcc', 'mIoU_head', 'mAcc_rare'):
        assert re.search(rf'\b{key}: ', metrics), (key, metrics)
    assert math.isfinite(float(re.search(r'\bmIoU: ([-\d.na]+)', metrics)[1]))
    assert osp.isfile(work_dir / 'iter_4.pth')


@pytest.mark.slow
def test_two_process_bcl_run_with_an_empty_rank(tmp_path):
    """Two gloo ranks, one image each: the same counts and parameters on both
    ranks after every step, and the rank whose image has no labelled pixel
    joins the all-gathers (no hang, finite loss)."""
    fixture = str(tmp_path / 'ade')
    maps = make_ade_fixture(fixture)
    (tmp_path / 'dense_probe_hook.py').write_text(PROBE)
    config = tmp_path / 'bcl_fcn_tiny_dist.py'
    config.write_text(tiny_config_text(
        fixture, BCL, None, decode_head=HEAD, extra=EVALUATOR + textwrap.dedent('''
            custom_imports = dict(imports=['reot_mm', 'dense_probe_hook'],
                                  allow_failed_imports=False)
            train_dataloader = dict(
                batch_size=1, num_workers=0, persistent_workers=False,
                dataset=dict(data_root=data_root, pipeline=train_pipeline))
            # 6 images / 2 ranks: 3 iterations are one epoch, so the empty
            # image is some rank's whole batch once
            train_cfg = dict(max_iters=3, val_interval=3)
            default_hooks = dict(logger=dict(interval=1),
                                 checkpoint=dict(interval=3))
            custom_hooks = [
                dict(type='ClassStatisticsHook', count_type='pixel'),
                dict(type='DenseRankProbe'),
            ]
        ''')))
    work_dir = tmp_path / 'work'
    log = run_train(config, work_dir, procs=2,
                    env=subprocess_env(pythonpath=[tmp_path]))
    expected = [float(c) for c in reduced_counts(maps['training'])[0]]
    labelled = []
    for iteration in (1, 2, 3):
        records = rank_records(work_dir, iteration)
        for record in records:
            assert record['world_size'] == 2
            assert record['wrapper'] == 'CPUDistributedDataParallel'
            # decode L_LC, BCLLoss, auxiliary L_LC
            assert record['counts'] == [expected] * 3
            assert all(math.isfinite(v) for v in record['losses'].values())
            labelled.append(record['labelled'])
        assert records[0]['param_sum'] == records[1]['param_sum']
        assert records[0]['param_abs'] == records[1]['param_abs']
    assert labelled.count(0) == 1  # the empty image was one rank's batch
    assert 'mIoU_head' in log
