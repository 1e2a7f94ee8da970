"""tools/train.py and tools/test.py end to end on digits-LT (real Runner, CPU)."""
import os
import os.path as osp
import pickle
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'demo', 'reot_resnet8_100e_digitslt.py')


def run_tool(*args):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    result = subprocess.run([sys.executable, *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def test_train_resume_and_test_with_dump(tmp_path):
    work_dir = str(tmp_path / 'work')
    options = ['--cfg-options', 'train_cfg.max_epochs=2', 'train_cfg.val_interval=2',
               'default_hooks.checkpoint.interval=1', 'custom_hooks.1.milestones=[1,3]']
    log = run_tool(osp.join(ROOT, 'tools', 'train.py'), CONFIG,
                   '--work-dir', work_dir, *options)
    assert 'reot_lambda: 0.5000' in log  # epoch 2 of the (1, 3) ramp
    assert osp.isfile(osp.join(work_dir, 'epoch_2.pth'))

    # --resume (auto): continues from epoch_2 to epoch 3
    options[1:2] = ['train_cfg.max_epochs=3']
    log = run_tool(osp.join(ROOT, 'tools', 'train.py'), CONFIG,
                   '--work-dir', work_dir, '--resume', *options)
    assert 'resumed epoch: 2' in log
    assert 'reot_lambda: 1.0000' in log
    assert osp.isfile(osp.join(work_dir, 'epoch_3.pth'))

    out = str(tmp_path / 'preds.pkl')
    log = run_tool(osp.join(ROOT, 'tools', 'test.py'), CONFIG,
                   osp.join(work_dir, 'epoch_3.pth'), '--work-dir', work_dir,
                   '--out', out)
    assert 'shot/few' in log
    with open(out, 'rb') as handle:
        predictions = pickle.load(handle)
    assert len(predictions) == 500  # balanced test split, 50 per class
    assert predictions[0]['pred_score'].shape == (10, )
    assert {'gt_label', 'pred_label'} <= set(predictions[0])
    # the pickle cannot hold the training counts: they and the config's
    # ShotAccuracy thresholds lie next to it, and tools/posthoc.py takes
    # them from there (logit adjustment with no flag prints every group)
    assert osp.isfile(out + '.counts.json')
    log = run_tool(osp.join(ROOT, 'tools', 'posthoc.py'), out, '--method', 'la')
    assert 'train counts: the dump; many > 40, few < 10' in log
    for key in ('many', 'medium', 'few'):
        assert f'{key:>9}: ' in log, log
