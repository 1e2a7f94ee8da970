"""Sinkhorn inference over the test batch in mmpretrain heads (RE-OT §5)."""
import pytest
import torch
from mmengine.registry import init_default_scope
from mmpretrain.models.heads import LinearClsHead
from mmpretrain.registry import MODELS

import reot_mm  # noqa: F401  (registers the heads)
from reot_mm.cls.models.heads import CosineClsHead
from reot_mm.cls.models.heads.sinkhorn_inference import (
    SinkhornCosineClsHead, SinkhornLinearClsHead)
from reot_mm.evaluation.sinkhorn_inference import SinkhornInferenceMetric
from reot_mm.evaluation import ShotAccuracy
from reot_mm.ot.test_prior import resolve_target_prior
from reot_mm.ot.sinkhorn import reot_sinkhorn

C, D = 6, 16
COUNTS = [300, 150, 60, 25, 10, 4]


def features(n, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(n, D, generator=generator), )


def heads(cls_plain, cls_sinkhorn, sinkhorn_cfg, **kwargs):
    torch.manual_seed(0)
    plain = cls_plain(num_classes=C, in_channels=D, **kwargs)
    sinkhorn = cls_sinkhorn(num_classes=C, in_channels=D,
                            sinkhorn_cfg=sinkhorn_cfg, **kwargs)
    # a head with a long-tail bias, as a trained one
    with torch.no_grad():
        plain.fc.weight.normal_(0, 0.5)
        if getattr(plain.fc, 'bias', None) is not None:
            plain.fc.bias.copy_(torch.log(torch.tensor(COUNTS) / 549.0))
    sinkhorn.load_state_dict(plain.state_dict(), strict=True)
    return plain.eval(), sinkhorn.eval()


@pytest.mark.parametrize('cls_plain, cls_sinkhorn, kwargs', [
    (LinearClsHead, SinkhornLinearClsHead, {}),
    (CosineClsHead, SinkhornCosineClsHead, dict(scale=20.0))])
def test_default_is_bit_identical_to_the_upstream_head(cls_plain, cls_sinkhorn,
                                                       kwargs):
    plain, sinkhorn = heads(cls_plain, cls_sinkhorn, None, **kwargs)
    feats = features(40)
    for got, expected in zip(sinkhorn.predict(feats), plain.predict(feats)):
        assert torch.equal(got.pred_score, expected.pred_score)
        assert torch.equal(got.pred_label, expected.pred_label)
    # checkpoints load both ways (the counts buffer is not persistent)
    assert set(sinkhorn.state_dict()) == set(plain.state_dict())
    sinkhorn.set_class_counts(COUNTS)
    plain.load_state_dict(sinkhorn.state_dict(), strict=True)


@pytest.mark.parametrize('cls_plain, cls_sinkhorn, kwargs', [
    (LinearClsHead, SinkhornLinearClsHead, {}),
    (CosineClsHead, SinkhornCosineClsHead, dict(scale=20.0))])
def test_batch_predictions_are_argmax_of_scores_plus_g(cls_plain, cls_sinkhorn,
                                                       kwargs):
    """pred = argmax_j(s_ij/ε + g_j), g from the solver on the batch; the
    refined scores are the row-normalised plan with column means b."""
    b = torch.tensor([0.3, 0.1, 0.1, 0.2, 0.2, 0.1])
    cfg = dict(target_prior=b.tolist(), epsilon=0.5, tol=1e-7)
    plain, sinkhorn = heads(cls_plain, cls_sinkhorn, cfg, **kwargs)
    feats = features(300)
    scores = plain(feats) * (kwargs.get('scale', 1.0))
    predictions = sinkhorn.predict(feats)
    labels = torch.cat([p.pred_label for p in predictions])
    refined = torch.stack([p.pred_score for p in predictions])
    solver = reot_sinkhorn(-scores.detach(), 0.5, None, b, tol=1e-7)
    assert torch.equal(labels, (scores.detach() / 0.5 + solver.g).argmax(1))
    torch.testing.assert_close(refined.mean(0), b, atol=1e-6, rtol=0)
    torch.testing.assert_close(refined.sum(1), torch.ones(300))


def test_uniform_batch_gives_near_uniform_labels():
    plain, sinkhorn = heads(LinearClsHead, SinkhornLinearClsHead,
                            dict(target_prior='uniform'))
    feats = features(3000, seed=1)
    before = torch.bincount(torch.cat(
        [p.pred_label for p in plain.predict(feats)]), minlength=C)
    after = torch.bincount(torch.cat(
        [p.pred_label for p in sinkhorn.predict(feats)]), minlength=C)
    assert (before - 500).abs().max() > 200, before.tolist()
    assert (after - 500).abs().max() <= 50, after.tolist()


def test_batch_mode_equals_whole_set_mode_on_one_batch():
    """The head over one batch and the metric over the same set agree."""
    init_default_scope('mmpretrain')
    plain, sinkhorn = heads(LinearClsHead, SinkhornLinearClsHead,
                            dict(target_prior='uniform', tol=1e-7))
    feats = features(200, seed=2)
    labels = torch.arange(200) % C
    batch = sinkhorn.predict(feats)
    metric = SinkhornInferenceMetric([ShotAccuracy(class_counts=COUNTS,
                                                   per_class=True)], tol=1e-7)
    samples = [dict(pred_score=p.pred_score, pred_label=p.pred_label,
                    gt_label=torch.tensor([int(y)]))
               for p, y in zip(plain.predict(feats), labels)]
    metric.process(None, samples)
    whole = metric.evaluate(200)
    shot = ShotAccuracy(class_counts=COUNTS, per_class=True)
    shot.process(None, [dict(pred_label=p.pred_label,
                             gt_label=torch.tensor([int(y)]))
                        for p, y in zip(batch, labels)])
    assert shot.compute_metrics(shot.results) == {
        k.split('/', 1)[1]: v for k, v in whole.items()
        if k.startswith('shot/')}


def test_estimated_prior_uses_the_hook_counts():
    cfg = dict(target_prior='estimated')
    _, sinkhorn = heads(LinearClsHead, SinkhornLinearClsHead, cfg)
    feats = features(100)
    with pytest.raises(ValueError, match="'estimated' needs the training"):
        sinkhorn.predict(feats)
    sinkhorn.set_class_counts(COUNTS)  # what ClassStatisticsHook does
    labels = torch.cat([p.pred_label for p in sinkhorn.predict(feats)])
    scores = sinkhorn(feats).detach()
    b = resolve_target_prior('estimated', scores, COUNTS)
    solver = reot_sinkhorn(-scores, 1.0, None, b.float())
    assert torch.equal(labels, (scores + solver.g).argmax(1))
    # a prior-corrected model needs no counts
    _, balanced = heads(LinearClsHead, SinkhornLinearClsHead,
                        dict(target_prior='estimated',
                             calibration_prior='uniform'))
    b = resolve_target_prior('estimated', scores, calibration_prior='uniform')
    solver = reot_sinkhorn(-scores, 1.0, None, b.float())
    assert torch.equal(torch.cat([p.pred_label for p in balanced.predict(feats)]),
                       (scores + solver.g).argmax(1))
    # counts in the config work without the hook
    cfg['class_counts'] = COUNTS
    _, configured = heads(LinearClsHead, SinkhornLinearClsHead, cfg)
    assert torch.equal(
        torch.cat([p.pred_label for p in configured.predict(feats)]), labels)


def test_built_from_a_config_in_a_classifier():
    init_default_scope('mmpretrain')
    model = MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='CifarResNet', depth=8, in_channels=1),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='SinkhornLinearClsHead', num_classes=C, in_channels=64,
                  loss=dict(type='REOTLoss', prior='uniform'),
                  sinkhorn_cfg=dict(target_prior='uniform'))))
    model.eval()
    out = model(torch.randn(12, 1, 8, 8), mode='predict')
    assert len(out) == 12 and out[0].pred_score.shape == (C, )
    model.train()
    from mmpretrain.structures import DataSample
    losses = model(torch.randn(4, 1, 8, 8),
                   [DataSample().set_gt_label(i) for i in range(4)],
                   mode='loss')
    assert torch.isfinite(losses['loss'])


def test_small_batch_warns_once():
    _, sinkhorn = heads(LinearClsHead, SinkhornLinearClsHead, dict())
    with pytest.warns(UserWarning, match='batch of 3 samples with 6 classes'):
        sinkhorn.predict(features(3))


@pytest.mark.parametrize('cfg, message', [
    (dict(epsilon=0), 'sinkhorn_cfg.epsilon must be a positive'),
    (dict(epsilon=-2.0), 'sinkhorn_cfg.epsilon must be a positive'),
    (dict(target_prior=[0.5, 0.5]), 'has 2 entries but there are 6 classes'),
    (dict(target_prior=[0.5, 0.6, -0.1, 0, 0, 0]), 'must be non-negative'),
    (dict(target_prior=[float('inf')] + [0.0] * 5), 'must be finite'),
    (dict(target_prior=[0.2] * 6), r'must sum to 1 \(tolerance 0.0001\), '
     r'got 1.2'),
    (dict(target_prior='balanced'), r"must be one of \('uniform', "
     r"'estimated'\)"),
    (dict(temperature=2), r"unknown keys \['temperature'\]"),
    (dict(max_iter=0), 'max_iter must be >= 1'),
    (dict(calibration_prior='balanced'), 'calibration_prior must be one of'),
    (dict(em_smoothing=-1), 'sinkhorn_cfg.em_smoothing must be a finite '
     'number >= 0'),
    (dict(class_counts=[1, 2]), 'has 2 entries but num_classes is 6'),
    ('sinkhorn', 'must be None'),
])
def test_bad_config(cfg, message):
    with pytest.raises(ValueError, match=message):
        SinkhornLinearClsHead(num_classes=C, in_channels=D, sinkhorn_cfg=cfg)
