"""Compact prediction dumps: DumpPredictions, attach_pre_logits, readers,
and ``tools/test.py --out preds.npz --dump-features`` on a digits model
trained in the test (real Runner, CPU)."""
import importlib.util
import os
import os.path as osp
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from reot_mm.evaluation.dump import DumpPredictions, attach_pre_logits
from reot_mm.evaluation.dump_io import (DumpFormatError, load_predictions,
                                        save_predictions)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'demo', 'ce_resnet8_100e_digitslt.py')


def _load(name):
    spec = importlib.util.spec_from_file_location(
        f'{name}_tool', osp.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _samples(n=7, k=4, features=False, seed=0):
    """mmpretrain DataSample dicts, as mmengine's Evaluator passes them."""
    from mmpretrain.structures import DataSample
    g = torch.Generator().manual_seed(seed)
    scores = torch.softmax(torch.randn(n, k, generator=g), 1)
    out = []
    for i in range(n):
        sample = DataSample(metainfo={'sample_idx': 10 + i})
        sample.set_gt_label(i % k).set_pred_score(scores[i])
        sample.set_pred_label(int(scores[i].argmax()))
        if features:
            sample.set_field(torch.arange(3.0) + i, 'pre_logits')
        out.append(sample.to_dict())
    return out, scores


@pytest.mark.parametrize('suffix', ['.npz', '.pt'])
def test_dump_predictions_round_trip(tmp_path, suffix):
    path = str(tmp_path / f'preds{suffix}')
    metric = DumpPredictions(path, dump_features=True)
    samples, scores = _samples(features=True)
    metric.process(None, samples[:3])
    metric.process(None, samples[3:])
    assert metric.evaluate(7) == {}
    data = load_predictions(path, need_features=True)
    assert data['format'] == 'compact'
    torch.testing.assert_close(data['pred_score'], scores)
    assert data['gt_label'].tolist() == [i % 4 for i in range(7)]
    assert data['pred_label'].tolist() == scores.argmax(1).tolist()
    assert data['sample_idx'].tolist() == list(range(10, 17))
    torch.testing.assert_close(data['features'],
                               torch.arange(3.0) + torch.arange(7.0)[:, None])


def test_dump_predictions_stores_class_counts_and_thresholds(tmp_path):
    """Counts given explicitly, else from the MessageHub (ClassStatisticsHook
    publishes them); thresholds (many, few) default to ShotAccuracy's."""
    from mmengine.logging import MessageHub
    from reot_mm.evaluation import CLASS_COUNTS_INFO_KEY
    samples, _ = _samples()
    hub = MessageHub.get_current_instance()
    hub.update_info(CLASS_COUNTS_INFO_KEY, [9.0, 7.0, 5.0, 3.0])
    path = str(tmp_path / 'hub.npz')
    metric = DumpPredictions(path)
    metric.process(None, samples)
    metric.evaluate(7)
    data = load_predictions(path)
    assert data['class_counts'].tolist() == [9.0, 7.0, 5.0, 3.0]
    assert data['shot_thresholds'] == (100.0, 20.0)
    path = str(tmp_path / 'explicit.pt')
    metric = DumpPredictions(path, class_counts=[1, 2, 3, 4],
                             shot_thresholds=(40, 10))
    metric.process(None, samples)
    metric.evaluate(7)
    data = load_predictions(path)
    assert data['class_counts'].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert data['shot_thresholds'] == (40.0, 10.0)
    hub.update_info(CLASS_COUNTS_INFO_KEY, None)
    path = str(tmp_path / 'none.npz')
    metric = DumpPredictions(path)
    metric.process(None, samples)
    metric.evaluate(7)
    assert load_predictions(path)['class_counts'] is None
    with pytest.raises(ValueError, match='few <= many'):
        DumpPredictions(path, shot_thresholds=(10, 40))
    with pytest.raises(DumpFormatError, match=r'class_counts must be \(3,\)'):
        load_predictions(_compact(tmp_path, class_counts=np.ones(2)))


def test_dump_predictions_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"out_file_path must end with one "
                       r"of \('.npz', '.pt'\)"):
        DumpPredictions(str(tmp_path / 'x.pkl'))
    metric = DumpPredictions(str(tmp_path / 'x.npz'), dump_features=True)
    samples, _ = _samples()
    with pytest.raises(ValueError, match="no 'pre_logits' field.*"
                       'attach_pre_logits'):
        metric.process(None, samples)
    metric = DumpPredictions(str(tmp_path / 'x.npz'))
    with pytest.raises(ValueError, match='needs classification samples with '
                       r'pred_score.*seg_logits.*preds.pkl'):
        metric.process(None, [{'seg_logits': {'data': torch.zeros(2, 3, 3)}}])
    with pytest.raises(ValueError, match='one label per sample'):
        metric.process(None, [{'pred_score': torch.ones(4) / 4,
                               'gt_label': torch.tensor([0, 2])}])
    metric.process(None, [{'pred_score': torch.ones(4) / 4}])
    with pytest.raises(ValueError, match='has 5 classes, expected 4'):
        metric.process(None, [{'pred_score': torch.ones(5) / 5}])


def _compact(tmp_path, name='d.npz', **arrays):
    base = {'pred_score': np.full((4, 3), 1 / 3, np.float32),
            'gt_label': np.array([0, 1, 2, 0])}
    base.update(arrays)
    base = {k: v for k, v in base.items() if v is not None}
    path = str(tmp_path / name)
    save_predictions(path, base)
    return path


@pytest.mark.parametrize('arrays, match', [
    (dict(pred_score=None), r'missing key pred_score.*got keys'),
    (dict(gt_label=None), r'missing key gt_label; expected gt_label \(4,\)'),
    (dict(pred_score=np.ones((4, 3, 1), np.float32)),
     r'pred_score must be a non-empty floating \(N, K\) array, got shape '
     r'\(4, 3, 1\)'),
    (dict(pred_score=np.ones((4, 3), np.int64)), 'floating'),
    (dict(gt_label=np.array([0, 1, 2])),
     r'gt_label must be an integer array of shape \(4,\)'),
    (dict(gt_label=np.array([0., 1., 2., 0.])), 'integer array'),
    (dict(gt_label=np.array([0, 1, 3, 0])), r'out of range \[0, 3\)'),
    (dict(gt_label=np.array([0, -1, 2, 0])), 'sample 1 has no gt_label'),
    (dict(pred_score=np.full((4, 3), np.nan, np.float32)),
     'finite probabilities'),
    (dict(pred_score=-np.ones((4, 3), np.float32)), r'>= 0, got min -1'),
    (dict(features=np.ones((3, 2), np.float32)),
     r'features must be a floating \(4, d\) array'),
    (dict(sample_idx=np.ones((4, 2), np.int64)), 'sample_idx must be'),
])
def test_load_predictions_bad_compact(tmp_path, arrays, match):
    for suffix in ('.npz', '.pt'):
        path = _compact(tmp_path, 'd' + suffix, **arrays)
        with pytest.raises(DumpFormatError, match=match):
            load_predictions(path)


def test_load_predictions_bad_files(tmp_path):
    path = _compact(tmp_path)
    with pytest.raises(DumpFormatError, match='has no features; write it '
                       'with tools/test.py --out preds.npz --dump-features'):
        load_predictions(path, need_features=True)
    (tmp_path / 'd.json').write_text('{}')
    with pytest.raises(DumpFormatError, match=r"unknown dump format '\.json'"):
        load_predictions(str(tmp_path / 'd.json'))
    bad = tmp_path / 'junk.npz'
    bad.write_bytes(b'not an archive')
    with pytest.raises(DumpFormatError, match='not a readable .npz'):
        load_predictions(str(bad))
    torch.save([torch.ones(2)], str(tmp_path / 'list.pt'))
    with pytest.raises(DumpFormatError, match='expected a dict of tensors'):
        load_predictions(str(tmp_path / 'list.pt'))
    (tmp_path / 'junk.pkl').write_bytes(b'\x80\x05junk')
    with pytest.raises(DumpFormatError, match='not a readable pickle'):
        load_predictions(str(tmp_path / 'junk.pkl'))
    with pytest.raises(FileNotFoundError, match='does not exist'):
        load_predictions(str(tmp_path / 'missing.npz'))


def test_attach_pre_logits_on_an_mmpretrain_classifier():
    """The stored features are the input of the head's fc layer."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample
    import reot_mm  # noqa: F401
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(CONFIG)
    model = MODELS.build(cfg.model).eval()
    images = [torch.rand(1, 8, 8) * 255 for _ in range(5)]

    def batch():  # the head writes into the given samples: fresh ones
        return {'inputs': images, 'data_samples': [
            DataSample().set_gt_label(i) for i in range(5)]}

    handle = attach_pre_logits(model)
    with torch.no_grad():
        outputs = model.test_step(batch())
        feats = torch.stack([o.pre_logits for o in outputs])
        scores = torch.stack([o.pred_score for o in outputs])
        logits = model.head.fc(feats)
    assert feats.shape == (5, 64)
    torch.testing.assert_close(torch.softmax(logits, 1), scores)
    handle.remove()
    with torch.no_grad():
        assert 'pre_logits' not in model.test_step(batch())[0]
    with pytest.raises(ValueError, match='head has a pre_logits method'):
        attach_pre_logits(torch.nn.Linear(2, 2))


def test_tools_test_rejects_bad_out_arguments():
    tool = _load('test')
    with pytest.raises(ValueError, match=r'--dump-features needs --out '
                       r"ending with one of \('.npz', '.pt'\)"):
        tool.main([CONFIG, 'x.pth', '--out', 'x.pkl', '--dump-features'])
    with pytest.raises(ValueError, match='--out must end with one of'):
        tool.main([CONFIG, 'x.pth', '--out', 'x.json'])


def _run(*args):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    result = subprocess.run([sys.executable, *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + \
        result.stderr[-3000:]
    return result.stdout + result.stderr


@pytest.fixture(scope='module')
def digits_dump(tmp_path_factory):
    """Train ResNet-8 on digits-LT for 2 epochs, dump test predictions and
    pre-logit features with tools/test.py --out preds.npz --dump-features."""
    tmp = tmp_path_factory.mktemp('digits_dump')
    work = str(tmp / 'work')
    _run(osp.join(ROOT, 'tools', 'train.py'), CONFIG, '--work-dir', work,
         '--cfg-options', 'train_cfg.max_epochs=2', 'train_cfg.val_interval=5',
         'default_hooks.checkpoint.interval=2')
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
