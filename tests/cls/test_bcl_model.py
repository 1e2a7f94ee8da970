"""BCLClassifier (BCL Fig. 4): one backbone pass, Eq. 9-11 wiring, prototypes
from the classifier weights, single-view predictions, bad input, and a real
tools/train.py run of the digits BCL config."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import reot_mm  # noqa: F401
from reot_mm.losses.bcl_loss import BCLLoss

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'bcl', 'bcl_resnet8_100e_digitslt.py')
NUM_CLASSES = 10


def build(head='cosine', **loss):
    init_default_scope('mmpretrain')
    if head == 'cosine':
        head_cfg = dict(type='CosineClsHead', num_classes=NUM_CLASSES,
                        in_channels=64, scale=30.0)
    else:
        head_cfg = dict(type='LinearClsHead', num_classes=NUM_CLASSES,
                        in_channels=64)
    model = MODELS.build(dict(
        type='BCLClassifier',
        backbone=dict(type='CifarResNet', depth=8, in_channels=1),
        neck=dict(type='GlobalAveragePooling'),
        head=head_cfg,
        projector=dict(type='ProjectionMLP', out_channels=16),
        loss=dict(type='BCLLoss', temperature=0.1, lc_weight=2.0,
                  bcl_weight=0.6, **loss),
        data_preprocessor=dict(mean=[77.84], std=[95.89])))
    model.loss_module.set_class_counts(torch.linspace(40, 2, NUM_CLASSES).round())
    return model


def batch(size=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    views = [torch.randn(size, 1, 8, 8, generator=generator) for _ in range(3)]
    labels = [0, 0, 1, 3, 3, 7][:size]
    samples = [DataSample().set_gt_label(label) for label in labels]
    return views, samples, torch.tensor(labels)


@pytest.mark.parametrize('head', ['cosine', 'linear'])
def test_loss_matches_manual_composition_with_one_backbone_pass(head):
    """Logits 30·cos (or linear) of v1, z = g(h) of v2/v3, c_j = g_c(w_j):
    the model's losses are BCLLoss on exactly these tensors, from a single
    backbone call on concat(v1, v2, v3)."""
    model = build(head)
    model.train()
    views, samples, labels = batch()
    calls = []
    handle = model.backbone.register_forward_hook(
        lambda module, args, out: calls.append(args[0].shape[0]))
    torch.manual_seed(0)
    losses = model(views, samples, mode='loss')
    handle.remove()
    assert calls == [18]  # one pass over the 3 x 6 images
    assert set(losses) == {'loss_lc', 'loss_bcl'}
    assert all(torch.isfinite(v) for v in losses.values())

    feats = model.neck(model.backbone(torch.cat(views)))[-1]
    if head == 'cosine':
        logits = 30.0 * F.normalize(feats[:6], dim=1) @ F.normalize(
            model.head.fc.weight, dim=1).t()
    else:
        logits = model.head.fc(feats[:6])
    z = model.projector(feats[6:]).view(2, 6, -1).transpose(0, 1)
    prototypes = model.prototype_projector(model.head.fc.weight)
    expected = model.loss_module(logits, labels, z, prototypes)
    for key in losses:
        torch.testing.assert_close(losses[key], expected[key])


def test_gradient_reaches_classifier_weights_through_prototypes():
    """With λ = 0 only L_BCL trains: the classifier weights still get a
    gradient, through c_j = g_c(w_j) (none without class-complement)."""
    model = build()
    model.loss_module = BCLLoss(temperature=0.1, lc_weight=0.0, bcl_weight=1.0)
    model.train()
    views, samples, _ = batch()
    model(views, samples, mode='loss')['loss_bcl'].backward()
    weight_grad = model.head.fc.weight.grad
    assert weight_grad is not None and weight_grad.abs().sum() > 0
    # every class row, including classes absent from the batch (2, 4, 5, ...)
    assert (weight_grad.abs().sum(1) > 0).all()
    assert model.prototype_projector.mlp[0].weight.grad.abs().sum() > 0

    model.zero_grad()
    model.loss_module = BCLLoss(temperature=0.1, lc_weight=0.0, bcl_weight=1.0,
                                class_complement=False)
    model(views, samples, mode='loss')['loss_bcl'].backward()
    grad = model.head.fc.weight.grad
    assert grad is None or grad.abs().sum() == 0


def test_predict_is_single_view_and_matches_head():
    model = build()
    model.eval()
    views, samples, _ = batch()
    with torch.no_grad():
        predictions = model(views[0], [DataSample() for _ in range(6)],
                            mode='predict')
        reference = model.head.predict(model.extract_feat(views[0]))
        from_list = model(views, None, mode='predict')
        tensor = model(views[0], mode='tensor')
    assert len(predictions) == 6
    for pred, ref, other in zip(predictions, reference, from_list):
        torch.testing.assert_close(pred.pred_score, ref.pred_score)
        torch.testing.assert_close(other.pred_score, ref.pred_score)
        assert pred.pred_score.shape == (NUM_CLASSES, )
    assert tensor.shape == (6, NUM_CLASSES)


def test_counts_reach_the_loss_through_set_class_counts():
    """ClassStatisticsHook calls set_class_counts on every sub-module that
    has it: the BCLLoss inside the classifier is one, and keeps them in the
    state dict (checkpoint)."""
    from reot_mm.engine.hooks.class_stats_hook import modules_with
    model = build()
    found = modules_with(model, 'set_class_counts')
    assert model.loss_module in found
    model.loss_module.set_class_counts([5] * NUM_CLASSES)
    assert model.state_dict()['loss_module.class_counts'].tolist() == [5] * NUM_CLASSES


def test_missing_views_raise_clear_errors():
    model = build()
    model.train()
    views, samples, _ = batch()
    with pytest.raises(ValueError, match='num_views=3 views .* got 2 views'):
        model(views[:2], samples, mode='loss')
    with pytest.raises(ValueError, match='got a single tensor'):
        model(views[0], samples, mode='loss')
    with pytest.raises(ValueError, match='same shape'):
        model([views[0], views[1], views[2][:3]], samples, mode='loss')
    # the data preprocessor refuses a short training batch too
    with pytest.raises(ValueError, match='num_views=3'):
        model.data_preprocessor(dict(inputs=[v.to(torch.uint8) for v in views[:2]],
                                     data_samples=samples), training=True)
    with pytest.raises(ValueError, match='num_views must be an int >= 2'):
        MODELS.build(dict(type='BCLClassifier', num_views=1,
                          backbone=dict(type='CifarResNet', depth=8,
                                        in_channels=1),
                          head=dict(type='LinearClsHead', num_classes=3,
                                    in_channels=64)))


def test_train_tool_runs_digits_bcl_config(tmp_path):
    """Real tools/train.py (Runner, ClassStatisticsHook, multi-view loader)
    for two epochs: finite losses and ShotAccuracy metrics."""
    work_dir = tmp_path / 'work'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    result = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'train.py'), CONFIG,
         '--work-dir', str(work_dir), '--cfg-options', 'train_cfg.max_epochs=2',
         'train_cfg.val_interval=2'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    scalars = sorted(work_dir.glob('*/vis_data/scalars.json'))
    assert scalars, list(work_dir.iterdir())
    records = [json.loads(line) for line in scalars[-1].read_text().splitlines()]
    train = [r for r in records if 'loss_bcl' in r]
    val = [r for r in records if 'shot/balanced' in r]
    assert train and val
    for record in train:
        assert all(torch.isfinite(torch.tensor(record[k]))
                   for k in ('loss', 'loss_lc', 'loss_bcl'))
    for key in ('shot/balanced', 'shot/many', 'shot/medium', 'shot/few'):
        assert 0.0 <= val[-1][key] <= 100.0
    assert osp.isfile(work_dir / 'epoch_2.pth')
    checkpoint = torch.load(work_dir / 'epoch_2.pth', map_location='cpu',
                            weights_only=False)
    counts = checkpoint['state_dict']['loss_module.class_counts']
    assert counts.tolist() == [100, 63, 40, 25, 16, 10, 6, 4, 2, 1]
