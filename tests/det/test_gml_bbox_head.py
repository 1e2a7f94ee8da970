"""GMLShared2FCBBoxHead: GML (Suh and Seo, ICML 2023) on RoI features.

Eq. 7 (cosine-classifier L_cls, background logit unshifted), Eq. 6 (queue
segments from instance counts, foreground RoIs only), Eq. 3/5/11 (L_GML
equal to the direct ``gml_loss`` call on the same rows), the zero-foreground
batch and the bad-input errors."""
import json
import types

import pytest
import torch
import torch.nn.functional as F
from mmengine.logging import MessageHub, MMLogger
from mmengine.registry import init_default_scope

import reot_mm  # noqa: F401
from reot_mm.losses.gml_likelihood import gml_loss
from reot_mm.losses.gml_loss import cosine_classifier_loss
from reot_mm.models.class_queue import segment_bounds

C = 5
COUNTS = [50., 20., 8., 3., 1.]
TAU_S = 1.0 / 30


def build(**kwargs):
    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    cfg = dict(type='GMLShared2FCBBoxHead', in_channels=8, fc_out_channels=32,
               roi_feat_size=7, num_classes=C, tau_s=TAU_S,
               queue=dict(size=40, min_per_class=3),
               query_mlp=dict(hidden_channels=16, out_channels=8),
               gml_loss=dict(tau_g=0.1, trainable_tau=True, alpha=1.0,
                             gml_weight=0.5),
               bbox_coder=dict(type='DeltaXYWHBBoxCoder',
                               target_means=[0., 0., 0., 0.],
                               target_stds=[0.1, 0.1, 0.2, 0.2]),
               reg_class_agnostic=False,
               loss_cls=dict(type='REOTRoILoss', prior='class_ratio'),
               loss_bbox=dict(type='L1Loss', loss_weight=1.0))
    cfg.update(kwargs)
    head = MODELS.build(cfg)
    # what ClassStatisticsHook and GMLQueueHook do before training
    for module in head.modules():
        if hasattr(module, 'set_class_counts'):
            module.set_class_counts(COUNTS)
    head.queue.build_segments(COUNTS)
    return head


def roi_batch(num=24, seed=0, background=None):
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(num, 8, 7, 7, generator=gen)
    labels = torch.arange(num) % (C + 1)  # every class, and background (C)
    if background is not None:
        labels[:] = C
    images = (torch.arange(num) >= num // 2).float()  # two images
    rois = torch.cat([images[:, None],
                      torch.tensor([[4., 4., 40., 36.]]).repeat(num, 1)], 1)
    targets = torch.randn(num, 4, generator=gen) * 0.1
    return feats, labels, rois, targets


def run_loss(head, feats, labels, rois, targets, weights=None, **context):
    head.train()
    cls_score, bbox_pred = head(feats)
    weights = torch.ones(labels.shape[0]) if weights is None else weights
    with head.batch_context([101, 202], **context):
        return head.loss(cls_score, bbox_pred, rois, labels, weights, targets,
                         torch.ones_like(targets))


def test_cosine_classifier_and_eq7_with_unshifted_background():
    """cls_score = cos/τ_s (NormedLinear, no bias, background row last);
    loss_cls = GML Eq. 7 through prior_shifted_cross_entropy with
    log(C·p(c)) on the foreground logits and 0 on the background logit."""
    torch.manual_seed(0)
    head = build()
    assert head.fc_cls.bias is None and head.fc_cls.out_features == C + 1
    assert not head.custom_cls_channels and not head.custom_activation
    feats, labels, rois, targets = roi_batch()
    head.train()
    cls_score, _ = head(feats)
    embedding = head._roi_embedding
    cosine = F.normalize(embedding, dim=1) @ F.normalize(head.fc_cls.weight,
                                                         dim=1).t()
    torch.testing.assert_close(cls_score, cosine / TAU_S, atol=1e-4, rtol=1e-4)
    losses = run_loss(head, feats, labels, rois, targets)
    counts = torch.tensor(COUNTS)
    log_prior = torch.cat([(C * counts / counts.sum()).log(), torch.zeros(1)])
    expected = cosine_classifier_loss(cls_score.detach() * TAU_S, labels, TAU_S,
                                      log_prior).mean()
    torch.testing.assert_close(losses['loss_cls'].detach(), expected,
                               atol=1e-5, rtol=1e-5)
    # the background logit is not shifted: shifting it changes the loss
    moved = log_prior.clone()
    moved[C] = 1.0
    assert not torch.allclose(expected, cosine_classifier_loss(
        cls_score.detach() * TAU_S, labels, TAU_S, moved).mean())
    # prediction: mmdet's softmax over the C + 1 scaled cosines, no prior
    head.eval()
    with torch.no_grad():
        scores = head.predict_by_feat(
            (rois, ), head(feats)[:1], head(feats)[1:],
            [dict(img_shape=(48, 48), scale_factor=(1., 1.))],
            rcnn_test_cfg=None)[0].scores
    torch.testing.assert_close(scores, F.softmax(cls_score.detach(), -1),
                               atol=1e-5, rtol=1e-4)


def test_queue_gets_foreground_rois_only_and_loss_is_gml_loss():
    torch.manual_seed(1)
    head = build()
    starts, sizes = segment_bounds(COUNTS, 40, 3)
    assert torch.equal(head.queue.segment_sizes, sizes)  # Eq. 6
    feats, labels, rois, targets = roi_batch()
    weights = torch.ones(labels.shape[0])
    weights[0] = 0.0  # a foreground RoI without weight is not a query
    losses = run_loss(head, feats, labels, rois, targets, weights)
    foreground = (labels < C) & (weights > 0)
    assert torch.equal(head.queue.num_enqueued,
                       torch.bincount(labels[foreground], minlength=C))
    # the entries are the detached RoI embeddings with their image ids
    head.train()
    head(feats)
    embedding = head._roi_embedding.detach()
    head._roi_embedding = None
    class1 = foreground & (labels == 1)
    stored, ids = head.queue.class_entries(1)
    written = ids >= 0
    torch.testing.assert_close(stored[written], embedding[class1])
    image_ids = torch.tensor([101, 202])[rois[:, 0].long()]
    assert torch.equal(ids[written], image_ids[class1])
    assert {'loss_cls', 'acc', 'loss_bbox', 'loss_gml', 'loss_tau',
            'tau_g'} == set(losses)
    # the same number from the direct call on the same rows (β = 0.5, α = 1)
    query = F.normalize(head.query_mlp(embedding)[foreground], dim=1)
    keys = F.normalize(head.key_mlp(head.queue.features), dim=1)
    counts = torch.tensor(COUNTS)
    direct = 0.5 * gml_loss(query, keys, head.queue.labels, labels[foreground],
                            head.gml.tau_g, (counts / counts.sum()).log(),
                            1.0).mean()
    torch.testing.assert_close(losses['loss_gml'].detach(), direct.detach(),
                               atol=1e-5, rtol=1e-5)
    total = sum(v for k, v in losses.items() if k.startswith('loss'))
    total.backward()
    for module in (head.query_mlp, head.key_mlp, head.shared_fcs):
        assert all(p.grad is not None for p in module.parameters())
    assert head.gml.log_tau_g.grad is not None


def test_teacher_keys_replace_the_heads_own_embeddings():
    torch.manual_seed(2)
    head = build(key_in_channels=12)
    feats, labels, rois, targets = roi_batch()
    seen = []

    def teacher(rois_in):
        seen.append(rois_in)
        return rois_in[:, 1:2].repeat(1, 12) + rois_in[:, :1]
    run_loss(head, feats, labels, rois, targets, teacher_embedding=teacher)
    foreground = labels < C
    assert torch.equal(seen[0], rois[foreground])
    stored, ids = head.queue.class_entries(2)
    written = ids >= 0
    expected = teacher(rois[foreground & (labels == 2)])
    torch.testing.assert_close(stored[written], expected)


def test_zero_foreground_batch_gives_zero_loss_with_a_graph():
    torch.manual_seed(3)
    head = build()
    feats, labels, rois, targets = roi_batch(background=True)
    before = head.queue.features.clone()
    losses = run_loss(head, feats, labels, rois, targets)
    assert losses['loss_gml'].item() == 0.0 and losses['loss_tau'].item() == 0.0
    assert torch.equal(head.queue.features, before)
    (losses['loss_gml'] + losses['loss_tau']).backward()
    for module in (head.query_mlp, head.key_mlp):
        assert all(p.grad is not None for p in module.parameters())
    assert head.gml.log_tau_g.grad is not None


def test_bad_input_errors(tmp_path):
    with pytest.raises(ValueError, match=r'size \(K\) = 12 is too small.*'
                       r'min_per_class \(k_m\) = 3'):
        build(queue=dict(size=12, min_per_class=3))
    with pytest.raises(ValueError, match='cls_predictor_cfg must be NormedLinear'):
        build(cls_predictor_cfg=dict(type='Linear'))
    head = build()
    feats, labels, rois, targets = roi_batch()
    labels[3] = C + 2
    with pytest.raises(ValueError, match=r'RoI labels must be in \[0, 5\]'):
        run_loss(head, feats, labels, rois, targets)
    labels[3] = -1
    with pytest.raises(ValueError, match='RoI labels'):
        run_loss(head, feats, labels, rois, targets)
    # a class-count file of another dataset (10 classes) for this 5-class head
    from reot_mm.engine.hooks.class_stats_hook import ClassStatisticsHook
    path = tmp_path / 'other_counts.json'
    path.write_text(json.dumps([5.0] * 10))
    hook = ClassStatisticsHook(class_counts_file=str(path))
    runner = types.SimpleNamespace(
        model=build(), message_hub=MessageHub.get_instance('gml_head_test'),
        logger=MMLogger.get_instance('gml_head_test'), _train_loop=None,
        _load_from=None)
    with pytest.raises(ValueError, match='10'):
        hook.before_run(runner)
