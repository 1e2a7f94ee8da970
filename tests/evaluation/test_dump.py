"""Compact prediction dumps (reot_mm/evaluation/dump.py, dump_io.py):
DumpPredictions, attach_pre_logits, the readers. The tools that write and
read them on a trained model: tests/tools/test_dump_cli.py."""
import os.path as osp

import numpy as np
import pytest
import torch
from launch import ROOT

from reot_mm.evaluation.dump import DumpPredictions, attach_pre_logits
from reot_mm.evaluation.dump_io import (DumpFormatError, load_predictions,
                                        save_predictions)

CONFIG = osp.join(ROOT, 'configs', 'demo', 'ce_resnet8_100e_digitslt.py')


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


@pytest.fixture(autouse=True)
def no_counts_in_the_message_hub():
    """Class counts an earlier test (or Runner) published in the current
    MessageHub would reach DumpPredictions; each test starts without."""
    from mmengine.logging import MessageHub
    from reot_mm.evaluation import CLASS_COUNTS_INFO_KEY
    hub = MessageHub.get_current_instance()
    before = hub.get_info(CLASS_COUNTS_INFO_KEY)
    hub.update_info(CLASS_COUNTS_INFO_KEY, None)
    yield
    hub.update_info(CLASS_COUNTS_INFO_KEY, before)


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
