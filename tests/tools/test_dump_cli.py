"""``tools/test.py --out preds.npz --dump-features`` on a digits model trained
in the test (real Runner, CPU), and the tools that read the dump
(class_barycenters, posthoc). The dump format itself:
tests/evaluation/test_dump.py."""
import importlib.util
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
from launch import ROOT, run_train, subprocess_env

from reot_mm.evaluation.dump_io import load_predictions

CONFIG = osp.join(ROOT, 'configs', 'demo', 'ce_resnet8_100e_digitslt.py')


def _load(name):
    spec = importlib.util.spec_from_file_location(
        f'{name}_tool', osp.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tools_test_rejects_bad_out_arguments():
    tool = _load('test')
    with pytest.raises(ValueError, match=r'--dump-features needs --out '
                       r"ending with one of \('.npz', '.pt'\)"):
        tool.main([CONFIG, 'x.pth', '--out', 'x.pkl', '--dump-features'])
    with pytest.raises(ValueError, match='--out must end with one of'):
        tool.main([CONFIG, 'x.pth', '--out', 'x.json'])


def _run(*args):
    result = subprocess.run([sys.executable, *args], cwd=ROOT,
                            env=subprocess_env(), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + \
        result.stderr[-3000:]
    return result.stdout + result.stderr


@pytest.fixture(scope='module')
def digits_dump(tmp_path_factory):
    """Train ResNet-8 on digits-LT for 2 epochs, dump test predictions and
    pre-logit features with tools/test.py --out preds.npz --dump-features."""
    tmp = tmp_path_factory.mktemp('digits_dump')
    work = str(tmp / 'work')
    run_train(CONFIG, work, 'train_cfg.max_epochs=2',
              'train_cfg.val_interval=5', 'default_hooks.checkpoint.interval=2',
              timeout=600)
    ckpt = osp.join(work, 'epoch_2.pth')
    npz = str(tmp / 'preds.npz')
    log = _run(osp.join(ROOT, 'tools', 'test.py'), CONFIG, ckpt, '--work-dir',
               work, '--out', npz, '--dump-features')
    assert '500 predictions written' in log
    return tmp, ckpt, npz


def test_digits_dump_holds_predictions_and_pre_logits(digits_dump):
    _, ckpt, npz = digits_dump
    data = load_predictions(npz, need_features=True)
    assert data['pred_score'].shape == (500, 10)
    assert data['features'].shape == (500, 64)
    assert data['sample_idx'].tolist() == list(range(500))
    assert torch.bincount(data['gt_label']).tolist() == [50] * 10
    state = torch.load(ckpt, map_location='cpu',
                       weights_only=False)['state_dict']
    logits = data['features'] @ state['head.fc.weight'].T + \
        state['head.fc.bias']
    torch.testing.assert_close(torch.softmax(logits, 1), data['pred_score'],
                               atol=1e-6, rtol=1e-5)
    assert torch.equal(data['pred_label'], data['pred_score'].argmax(1))


def test_digits_dump_class_barycenters_and_posthoc(digits_dump, capsys):
    """tools/class_barycenters.py on the real dump: RE-OT Eq. 18 with the
    U(a) plan P = Z / N equals Z^T F / Z^T 1, computed here in numpy."""
    tmp, _, npz = digits_dump
    out_dir = str(tmp / 'bary')
    _load('class_barycenters').main([npz, '--out-dir', out_dir])
    log = capsys.readouterr().out
    assert 'plan: ua  samples: 500  classes: 10  feature dim: 64' in log
    result = np.load(osp.join(out_dir, 'barycenters.npz'))
    with np.load(npz) as dump:
        z = dump['pred_score'].astype(np.float64)
        feats = dump['features'].astype(np.float64)
        y = dump['gt_label']
    z = z / z.sum(1, keepdims=True)
    expected = (z.T @ feats) / z.sum(0)[:, None]
    np.testing.assert_allclose(result['barycenters'], expected, rtol=1e-6,
                               atol=1e-8)
    np.testing.assert_allclose(result['class_mass'], z.mean(0), rtol=1e-9)
    means = np.stack([feats[y == j].mean(0) for j in range(10)])
    np.testing.assert_allclose(result['class_means'], means, rtol=1e-9)
    assert osp.getsize(osp.join(out_dir, 'barycenters_pca.png')) > 10000
    _load('posthoc').main([npz, '--method', 'ot'])
    log = capsys.readouterr().out
    assert 'samples: 500  classes: 10  dump: compact' in log
    assert 'balanced:' in log
    # the dump holds the training counts (ClassStatisticsHook) and the
    # config's ShotAccuracy thresholds (digits-LT: many > 40, few < 10):
    # logit adjustment needs no flag and reports every shot group
    _load('posthoc').main([npz, '--method', 'la'])
    log = capsys.readouterr().out
    assert 'train counts: the dump; many > 40, few < 10' in log
    for key in ('many', 'medium', 'few'):
        assert f'{key:>9}: ' in log, log
    with np.load(npz) as dump:
        assert dump['shot_thresholds'].tolist() == [40.0, 10.0]
        counts = dump['class_counts']
    assert counts.shape == (10, ) and counts.sum() > 100
