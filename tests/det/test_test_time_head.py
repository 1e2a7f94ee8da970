"""REOTShared2FCBBoxHead: test-time correction of the RoI class distributions.

Logit adjustment: Menon et al., Long-Tail Learning via Logit Adjustment, ICLR
2021, Eq. 3, with the training foreground prior and the background treated as
RE-OT's ``foreground_only`` prior (RE-OT Eq. 15 at λ = 1). Sinkhorn
inference: Shi et al., Relative Entropic Optimal Transport, NeurIPS 2023, §5 =
Peng et al., OTLM, ICLR 2022, Algorithm 1, over the foreground part of the
RoIs of a batch, background kept.
"""
import os
import os.path as osp
import pickle
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config, ConfigDict

import reot_mm

reot_mm.register_all_modules()
from mmdet.registry import MODELS  # noqa: E402
from mmdet.utils import register_all_modules as register_mmdet  # noqa: E402

from reot_mm.ot.test_time import sinkhorn_prediction  # noqa: E402

register_mmdet(init_default_scope=False)

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(osp.dirname(HERE))
C = 6
COUNTS = [40.0, 25.0, 8.0, 5.0, 2.0, 1.0]
HEAD = dict(in_channels=4, fc_out_channels=16, roi_feat_size=3,
            num_classes=C)
LA_CONFIG = osp.join(ROOT, 'configs', 'lvis', 'reot-test-time-la_mask-rcnn_'
                     'r50_fpn_sample1e-3_ms-1x_lvis-v1.py')
SINKHORN_CONFIG = osp.join(ROOT, 'configs', 'lvis', 'reot-test-time-sinkhorn_'
                           'mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1.py')
MAIN_CONFIG = osp.join(ROOT, 'configs', 'lvis', 'reot_mask-rcnn_r50_fpn_'
                       'sample1e-3_ms-1x_lvis-v1.py')
RCNN_TEST = ConfigDict(score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5),
                       max_per_img=100)


def build(mode='none', counts=COUNTS, **cfg):
    head = MODELS.build(dict(type='REOTShared2FCBBoxHead', **HEAD,
                             class_counts=counts,
                             test_time_cfg=dict(mode=mode, **cfg)))
    return head.eval()


def logits(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, C + 1, generator=g) * 2.0


def rois_and_metas(n_per_image=(30, 20), seed=1):
    g = torch.Generator().manual_seed(seed)
    rois, metas = [], []
    for image, n in enumerate(n_per_image):
        xy = torch.rand(n, 2, generator=g) * 60
        wh = torch.rand(n, 2, generator=g) * 30 + 4
        rois.append(torch.cat([torch.full((n, 1), float(image)), xy, xy + wh],
                              1))
        metas.append(dict(img_shape=(80, 96), scale_factor=(1.0, 1.0)))
    return tuple(rois), metas


def predict(head, cls_score, sizes=(30, 20)):
    rois, metas = rois_and_metas(sizes)
    g = torch.Generator().manual_seed(2)
    deltas = torch.randn(sum(sizes), 4 * C, generator=g) * 0.1
    return head.predict_by_feat(rois, cls_score.split(list(sizes)),
                                deltas.split(list(sizes)), metas,
                                rcnn_test_cfg=RCNN_TEST, rescale=False)


# ------------------------------------------------------------------- none
def test_mode_none_is_bit_identical_to_upstream_shared2fc():
    ours = build('none')
    upstream = MODELS.build(dict(type='Shared2FCBBoxHead', **HEAD)).eval()
    # same parameters: the counts buffer is not persistent, so the state
    # dicts are interchangeable both ways, strictly
    assert 'class_counts' not in ours.state_dict()
    upstream.load_state_dict(ours.state_dict(), strict=True)
    ours.load_state_dict(upstream.state_dict(), strict=True)
    feats = torch.randn(50, 4, 3, 3)
    with torch.no_grad():
        cls_ours, reg_ours = ours(feats)
        cls_up, reg_up = upstream(feats)
    assert torch.equal(cls_ours, cls_up) and torch.equal(reg_ours, reg_up)
    for a, b in zip(predict(ours, cls_ours), predict(upstream, cls_up)):
        assert a.bboxes.shape[0] > 0
        assert torch.equal(a.bboxes, b.bboxes)
        assert torch.equal(a.scores, b.scores)
        assert torch.equal(a.labels, b.labels)


# ------------------------------------------------------- logit adjustment
def test_logit_adjust_equals_the_explicit_formula():
    """softmax([s_j - τ log(C π_j)]_j<C, s_bg) with π = n / Σ n."""
    tau = 0.7
    head = build('logit_adjust', tau=tau)
    s = logits()
    pi = torch.tensor(COUNTS, dtype=torch.float64) / sum(COUNTS)
    expected = s.double().clone()
    expected[:, :C] -= tau * torch.log(C * pi)
    got = head.correct_scores(s)
    torch.testing.assert_close(got.double().softmax(1), expected.softmax(1),
                               rtol=1e-5, atol=1e-7)
    # the background logit relative to a uniform foreground prior is
    # untouched: with equal counts the correction is the identity
    flat = build('logit_adjust', counts=[3.0] * C)
    torch.testing.assert_close(flat.correct_scores(s).softmax(1), s.softmax(1))


def test_logit_adjust_acts_before_nms():
    """The head's detections equal upstream's on the adjusted logits."""
    head = build('logit_adjust')
    upstream = MODELS.build(dict(type='Shared2FCBBoxHead', **HEAD)).eval()
    s = logits(50, seed=3)
    for a, b in zip(predict(head, s),
                    predict(upstream, head.correct_scores(s))):
        assert torch.equal(a.labels, b.labels)
        torch.testing.assert_close(a.scores, b.scores)
    plain = predict(upstream, s)
    assert any(not torch.equal(a.labels, b.labels) or
               a.scores.shape != b.scores.shape
               for a, b in zip(predict(head, s), plain))


# ----------------------------------------------------------------- Sinkhorn
@pytest.mark.parametrize('b', ['train', 'uniform',
                               [0.05, 0.1, 0.15, 0.2, 0.2, 0.3]])
def test_sinkhorn_foreground_marginal_matches_b_and_background_is_kept(b):
    head = build('sinkhorn', b=b, tol=1e-8)
    s = logits(60, seed=4)
    p = s.double().softmax(1)
    new = head.correct_scores(s).double().softmax(1)
    # background probability of every RoI unchanged; rows still sum to 1
    torch.testing.assert_close(new[:, C], p[:, C], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(new.sum(1), torch.ones(60, dtype=torch.float64))
    # column marginal of the foreground part, rows a_i ∝ 1 - p_i,bg
    if b == 'train':
        target = torch.tensor(COUNTS, dtype=torch.float64) / sum(COUNTS)
    elif b == 'uniform':
        target = torch.full((C, ), 1.0 / C, dtype=torch.float64)
    else:
        target = torch.tensor(b, dtype=torch.float64)
    fg_mass = 1 - p[:, C]
    marginal = new[:, :C].sum(0) / fg_mass.sum()
    torch.testing.assert_close(marginal, target, rtol=0, atol=1e-5)
    # and the uncorrected one is far from it
    assert (p[:, :C].sum(0) / fg_mass.sum() - target).abs().max() > 0.02


def test_sinkhorn_uniform_rows_is_the_plain_re_ot_inference():
    """rows='uniform': a_i = 1/N over the foreground conditionals, as
    sinkhorn_prediction computes it."""
    head = build('sinkhorn', b='uniform', rows='uniform', tol=1e-8)
    s = logits(30, seed=5)
    p = s.double().softmax(1)
    new = head.correct_scores(s).double().softmax(1)
    conditional = new[:, :C] / (1 - p[:, C:])
    reference = sinkhorn_prediction(s[:, :C], None, 1.0, tol=1e-8).probs
    torch.testing.assert_close(conditional, reference.double(), rtol=1e-4,
                               atol=1e-6)
    torch.testing.assert_close(conditional.mean(0),
                               torch.full((C, ), 1.0 / C, dtype=torch.float64),
                               rtol=0, atol=1e-5)


def test_sinkhorn_sees_every_roi_of_the_batch():
    """One problem over the concatenated images: predicting the images one
    at a time gives other scores."""
    head = build('sinkhorn', b='uniform')
    s = logits(50, seed=6)
    together = predict(head, s, (30, 20))
    alone = predict(head, s[:30], (30, ))
    assert not torch.equal(together[0].scores, alone[0].scores) or \
        not torch.equal(together[0].labels, alone[0].labels)


def test_sinkhorn_with_only_certain_background_rois():
    """Every RoI certain background (1 - p_bg underflows to 0): the rows
    fall back to a_i = 1/N and the RoIs stay background."""
    head = build('sinkhorn')
    s = logits(10, seed=8)
    s[:, C] = 200.0
    new = head.correct_scores(s).softmax(1)
    assert torch.isfinite(new).all()
    torch.testing.assert_close(new[:, C], torch.ones(10))


def test_logit_adjust_on_a_reot_trained_head_warns():
    with pytest.warns(UserWarning, match='removed twice'):
        MODELS.build(dict(type='REOTShared2FCBBoxHead', **HEAD,
                          loss_cls=dict(type='REOTRoILoss',
                                        prior='class_ratio'),
                          test_time_cfg=dict(mode='logit_adjust')))


def test_sample_weight_of_sinkhorn_prediction():
    s = logits(25, seed=7)[:, :C]
    b = torch.tensor([0.3, 0.2, 0.2, 0.1, 0.1, 0.1])
    w = torch.rand(25, generator=torch.Generator().manual_seed(0))
    w[:5] = 0.0
    res = sinkhorn_prediction(s, b, sample_weight=w, tol=1e-8)
    torch.testing.assert_close(((w / w.sum())[:, None] * res.probs).sum(0), b,
                               rtol=0, atol=1e-5)
    assert torch.equal(sinkhorn_prediction(s, b).probs,
                       sinkhorn_prediction(s, b, sample_weight=torch.ones(25)
                                           ).probs)
    with pytest.raises(ValueError, match=r'sample_weight must have shape \(25,'):
        sinkhorn_prediction(s, b, sample_weight=torch.ones(24))
    with pytest.raises(ValueError, match='sample_weight must be finite'):
        sinkhorn_prediction(s, b, sample_weight=-torch.ones(25))


# -------------------------------------------------------------- bad input
@pytest.mark.parametrize('cfg, match', [
    (dict(mode='otlm'), r"test_time_cfg.mode must be one of \('none', "
                        r"'logit_adjust', 'sinkhorn'\), got 'otlm'"),
    (dict(mode='sinkhorn', b=[0.5, 0.5]),
     r'test_time_cfg.b has 2 entries but there are 6 classes'),
    (dict(mode='sinkhorn', b=[0.2] * 6), r'test_time_cfg.b'),
    (dict(mode='sinkhorn', b='test'), r"test_time_cfg.b must be 'train', "
                                      r"'uniform' or a list"),
    (dict(mode='sinkhorn', rows='all'), r'test_time_cfg.rows must be one of'),
    (dict(mode='logit_adjust', tau=-1.0), r'test_time_cfg.tau must be'),
    (dict(mode='sinkhorn', epsilon=0.0), r'test_time_cfg.epsilon must be'),
    (dict(mode='sinkhorn', b_prior='train'), r'unknown test_time_cfg keys'),
])
def test_bad_test_time_cfg_names_the_setting(cfg, match):
    with pytest.raises(ValueError, match=match):
        MODELS.build(dict(type='REOTShared2FCBBoxHead', **HEAD,
                          test_time_cfg=cfg))


def test_counts_of_another_dataset_are_refused():
    head = build('logit_adjust', counts=None)
    # e.g. the 1203 LVIS counts given to a 6-class head
    with pytest.raises(ValueError, match=r'num_classes|6'):
        head.set_class_counts([1.0] * 1203)
    with pytest.raises(RuntimeError, match='ClassStatisticsHook'):
        head.correct_scores(logits())
    with pytest.raises(ValueError, match=r'class_counts'):
        MODELS.build(dict(type='REOTShared2FCBBoxHead', **HEAD,
                          class_counts=[1.0] * 7,
                          test_time_cfg=dict(mode='logit_adjust')))


def test_custom_activation_loss_is_refused():
    with pytest.raises(ValueError, match='custom channels'):
        MODELS.build(dict(type='REOTShared2FCBBoxHead', **HEAD,
                          loss_cls=dict(type='SeesawLoss', num_classes=C),
                          test_time_cfg=dict(mode='sinkhorn')))


def test_needs_class_counts_only_where_the_prior_is_used():
    assert build('logit_adjust').needs_class_counts
    assert build('sinkhorn', b='train').needs_class_counts
    assert not build('sinkhorn', b='uniform').needs_class_counts
    assert not build('none').needs_class_counts


# ------------------------------------------------------------------ configs
def test_test_time_configs_change_only_the_box_head():
    """Each test-time config is the RE-OT config with the head type and its
    test_time_cfg (and, for LA, the loss's prior 'uniform': plain CE)."""
    for path, loss in ((LA_CONFIG, dict(prior='uniform')),
                       (SINKHORN_CONFIG, {})):
        cfg, main = (Config.fromfile(p).to_dict()
                     for p in (path, MAIN_CONFIG))
        head, ref = (c['model']['roi_head'].pop('bbox_head')
                     for c in (cfg, main))
        assert head.pop('type') == 'REOTShared2FCBBoxHead'
        assert ref.pop('type') == 'Shared2FCBBoxHead'
        assert head.pop('test_time_cfg')['mode'] in ('logit_adjust',
                                                     'sinkhorn')
        ref['loss_cls'].update(loss)
        assert head == ref
        assert cfg == main


# --------------------------------------------------------------- end to end
def _lvis_line(log):
    lines = [line for line in log.splitlines()
             if 'Epoch(test)' in line and 'lvis/bbox_AP:' in line]
    assert len(lines) == 1, log[-3000:]
    return lines[0]


@pytest.mark.slow
def test_each_mode_gives_the_lvis_metric(tmp_path, lvis_data):
    """The tiny fixture tested with a checkpoint without class counts (like
    an upstream one): ClassStatisticsHook counts the training set before the
    test. ``tools/test.py`` runs the Sinkhorn config; the mmengine Runner
    (in this process, to keep the test short) runs 'none' and
    'logit_adjust' through ``--cfg-options``-equivalent overrides. Each
    yields every LVIS AP key, and both corrections change the detections."""
    from mmengine.runner import Runner

    from conftest import tiny_config_text
    from test_train_lvis import AP_KEYS
    config = tmp_path / 'tiny_test_time.py'
    config.write_text(tiny_config_text(lvis_data['data_root'],
                                       base=SINKHORN_CONFIG))
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(str(config)).model)
    checkpoint = tmp_path / 'init.pth'
    torch.save(dict(state_dict=model.state_dict(), meta={}), checkpoint)

    env = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    result = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'test.py'), str(config),
         str(checkpoint), '--work-dir', str(tmp_path / 'sinkhorn'),
         '--out', str(tmp_path / 'sinkhorn.pkl')],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert 'ClassStatisticsHook: 6 classes, 26 samples' in log
    line = _lvis_line(log)
    for key in AP_KEYS:
        assert f'{key}: ' in line, key
    with open(tmp_path / 'sinkhorn.pkl', 'rb') as handle:
        detections = dict(sinkhorn=pickle.load(handle))

    for mode in ('none', 'logit_adjust'):
        cfg = Config.fromfile(str(config))
        cfg.merge_from_dict({
            'model.roi_head.bbox_head.test_time_cfg.mode': mode})
        cfg.work_dir = str(tmp_path / mode)
        cfg.load_from = str(checkpoint)
        cfg.experiment_name = f'test_time_{mode}'
        out = str(tmp_path / f'{mode}.pkl')
        cfg.test_evaluator = [cfg.test_evaluator,
                              dict(type='DumpDetResults', out_file_path=out)]
        metrics = Runner.from_cfg(cfg).test()
        for key in AP_KEYS:
            assert key in metrics, (mode, key)
        with open(out, 'rb') as handle:
            detections[mode] = pickle.load(handle)
    for mode in ('logit_adjust', 'sinkhorn'):
        assert any(
            not torch.equal(torch.as_tensor(a['pred_instances']['scores']),
                            torch.as_tensor(b['pred_instances']['scores']))
            for a, b in zip(detections[mode], detections['none'])), mode
