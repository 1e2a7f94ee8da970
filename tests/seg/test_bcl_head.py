"""BCL decode head for mmseg (Zhu et al., CVPR 2022, Eq. 9-11 on pixels)."""
import copy
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData

import reot_mm  # noqa: F401
from launch import run_forked_gloo
from reot_mm import dist
from reot_mm.losses import BCLLoss
from reot_mm.losses.balanced_contrastive import balanced_contrastive_loss
from reot_mm.losses.bcl_loss import logit_compensated_cross_entropy

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
C = 4
COUNTS = [600., 250., 100., 50.]


def build_head(pixels_per_class=1000, **overrides):
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    cfg = dict(
        type='BCLFCNHead', in_channels=6, channels=6, num_convs=1,
        concat_input=False, dropout_ratio=0.0, num_classes=C,
        contrast_channels=5, contrast_hidden_channels=8,
        pixels_per_class=pixels_per_class,
        loss_contrast=dict(type='BCLLoss', lc_weight=0.0, bcl_weight=0.35,
                           temperature=0.07),
        loss_decode=dict(type='REOTPixelLoss', prior='class_ratio',
                         loss_name='loss_lc'))
    cfg.update(overrides)
    head = MODELS.build(cfg)
    for module in head.modules():
        if hasattr(module, 'set_class_counts'):
            module.set_class_counts(COUNTS)
    return head.train()


def batch(labels):
    from mmseg.structures import SegDataSample
    samples = []
    for number, label in enumerate(labels):
        sample = SegDataSample(metainfo=dict(img_path=f'img{number}.jpg'))
        sample.gt_sem_seg = PixelData(data=label[None])
        samples.append(sample)
    return samples


def test_rows_are_at_most_n_pixels_per_class_per_image_never_ignored():
    torch.manual_seed(0)
    head = build_head(pixels_per_class=3)
    labels = torch.randint(0, C, (2, 8, 8))
    labels[0, :, :3] = 255
    labels[1] = 2
    labels[1, 0, :2] = 0  # class 0 has only 2 pixels in image 1
    features = torch.randn(2, 6, 8, 8)
    rows, target = head.sample_rows(features, batch(labels))
    assert (target != 255).all()
    flat = features.flatten(2).transpose(1, 2).reshape(-1, 6)
    # every row is one pixel's feature, at a pixel of its label
    match = (rows[:, None] - flat[None]).abs().amax(-1) < 1e-7
    pixel = match.float().argmax(1)
    assert match.any(1).all()
    assert torch.equal(labels.reshape(-1)[pixel], target)
    image = pixel // 64
    got = {(int(i), int(c)): int(n) for (i, c), n in zip(*torch.unique(
        torch.stack([image, target], 1), dim=0, return_counts=True))}
    expected = {(0, c): 3 for c in range(C)}
    expected.update({(1, 2): 3, (1, 0): 2})
    assert got == expected


def test_loss_equals_bcl_loss_and_eq9_on_the_same_rows():
    """loss_bcl is BCLLoss on the sampled rows; loss_lc is Eq. 10 per pixel."""
    torch.manual_seed(0)
    head = build_head()  # every labelled pixel: a deterministic batch
    labels = torch.randint(0, C, (2, 6, 6))
    labels[0, :2] = 255
    inputs = [torch.randn(2, 6, 6, 6)]
    losses = head.loss(inputs, batch(labels), train_cfg=dict())
    assert {'loss_lc', 'loss_bcl', 'acc_seg'} <= set(losses)

    features = head._forward_feature(inputs)
    valid = labels != 255
    rows = features.permute(0, 2, 3, 1)[valid]
    target = labels[valid]
    projected = head.contrast_projector(rows)
    prototypes = head.prototype_projector(head.conv_seg.weight.flatten(1))
    direct = BCLLoss(lc_weight=0.0, bcl_weight=0.35, temperature=0.07)(
        projected.new_zeros(len(target), C), target, projected[:, None],
        prototypes)['loss_bcl']
    torch.testing.assert_close(losses['loss_bcl'], direct, rtol=1e-5, atol=1e-6)
    # Eq. 9 from the pure function (class-averaging + class-complement)
    per_anchor, ok = balanced_contrastive_loss(
        F.normalize(projected, dim=1), target, F.normalize(prototypes, dim=1),
        0.07, num_classes=C)
    assert ok.all()
    torch.testing.assert_close(losses['loss_bcl'], 0.35 * per_anchor.mean(),
                               rtol=1e-5, atol=1e-6)
    # Eq. 10 on every labelled pixel: CE(φ + log π, y), π from pixel counts
    logits = head.cls_seg(features)
    log_prior = torch.tensor(COUNTS).div(sum(COUNTS)).log()
    lc = logit_compensated_cross_entropy(
        logits.permute(0, 2, 3, 1)[valid], target, log_prior).mean()
    torch.testing.assert_close(losses['loss_lc'], lc, rtol=1e-5, atol=1e-6)
    # gradients reach the classifier through the prototypes (class-complement)
    losses['loss_bcl'].backward()
    assert head.conv_seg.weight.grad.abs().sum() > 0
    assert head.contrast_projector.mlp[0].weight.grad.abs().sum() > 0


def test_batch_without_labelled_pixels_gives_zero_with_a_graph():
    torch.manual_seed(0)
    head = build_head()
    labels = torch.full((2, 6, 6), 255)
    losses = head.loss([torch.randn(2, 6, 6, 6)], batch(labels), dict())
    assert float(losses['loss_bcl']) == 0.0 and float(losses['loss_lc']) == 0.0
    (losses['loss_bcl'] + losses['loss_lc']).backward()
    # every parameter stays in the graph (DDP without find_unused_parameters)
    for module in (head.contrast_projector, head.prototype_projector):
        assert all(p.grad is not None for p in module.parameters())
    # a single labelled pixel (BatchNorm needs two rows): zero as well
    labels[0, 0, 0] = 1
    one = head.loss([torch.randn(2, 6, 6, 6)], batch(labels), dict())
    assert float(one['loss_bcl']) == 0.0


def test_an_empty_image_next_to_a_labelled_one_adds_no_rows():
    torch.manual_seed(0)
    head = build_head(pixels_per_class=2)
    labels = torch.randint(0, C, (2, 6, 6))
    labels[1] = 255
    rows, target = head.sample_rows(torch.randn(2, 6, 6, 6), batch(labels))
    assert len(target) == 2 * len(labels[0].unique())
    losses = head.loss([torch.randn(2, 6, 6, 6)], batch(labels), dict())
    assert torch.isfinite(losses['loss_bcl']) and float(losses['loss_bcl']) > 0


def test_labels_outside_the_classes_raise_naming_num_classes():
    head = build_head()
    labels = torch.randint(0, C, (1, 6, 6))
    labels[0, 0, 0] = C  # not the ignore index (255)
    with pytest.raises(ValueError, match=r'num_classes=4.*ignore_index=255'):
        head.contrast_loss_by_feat(torch.randn(1, 6, 6, 6), batch(labels))


@pytest.mark.parametrize('overrides, match', [
    (dict(pixels_per_class=0), 'pixels_per_class'),
    (dict(loss_contrast=dict(type='BCLLoss', lc_weight=1.0)), 'lc_weight=0'),
])
def test_bad_settings_raise(overrides, match):
    with pytest.raises(ValueError, match=match):
        build_head(**overrides)


def test_bcl_config_builds_with_the_paper_hyper_parameters():
    from mmseg.registry import MODELS
    cfg = Config.fromfile(osp.join(
        ROOT, 'configs', 'ade20k', 'bcl_fcn_r50-d8_4xb4-160k_ade20k-512x512.py'))
    assert cfg.custom_imports == dict(imports=['reot_mm'],
                                      allow_failed_imports=False)
    head_cfg = cfg.model.decode_head
    contrast = head_cfg.loss_contrast
    assert (contrast.bcl_weight, contrast.temperature, contrast.lc_weight) == \
        (0.35, 0.07, 0.0)
    assert head_cfg.loss_decode.prior == 'class_ratio'
    assert head_cfg.loss_decode.get('prior_scale', 1.0) == 1.0
    assert cfg.model.auxiliary_head.loss_decode.type == 'REOTPixelLoss'
    assert cfg.auto_scale_lr == dict(base_batch_size=16, enable=False)
    assert [h['type'] for h in cfg.custom_hooks] == ['ClassStatisticsHook']
    init_default_scope('mmseg')
    head = MODELS.build(head_cfg)
    assert head.contrast_projector.out_channels == 128
    assert head.loss_contrast.bcl_weight == 0.35


def _rank_batch(rank, empty_ranks):
    gen = torch.Generator().manual_seed(10 + rank)
    labels = torch.randint(0, C, (1, 6, 6), generator=gen)
    if rank in empty_ranks:
        labels[:] = 255  # an image without a labelled pixel
    return [torch.randn(1, 6, 6, 6, generator=gen)], labels


def _dist_worker(rank, empty_ranks):
    """DDP averages the ranks' losses and gradients: with rank 1 empty that
    mean is the one-process loss on rank 0's pixels."""
    world = dist.get_world_size()
    torch.manual_seed(0)
    head = build_head()
    reference = copy.deepcopy(head)
    inputs, labels = _rank_batch(rank, empty_ranks)
    bcl = head.loss(inputs, batch(labels), dict())['loss_bcl']
    assert bcl.grad_fn is not None
    bcl.backward()  # joins the backward all-gather on every rank
    for module in (head.contrast_projector, head.prototype_projector):
        assert all(p.grad is not None for p in module.parameters()), rank
    mean_loss = dist.all_reduce_sum(bcl.detach()) / world
    weights = (head.prototype_projector.mlp[0].weight, head.conv_seg.weight)
    mean_grads = [dist.all_reduce_sum(w.grad) / world for w in weights]
    if len(empty_ranks) == world:
        assert float(mean_loss) == 0.0
        return
    reference.loss_contrast.gather_across_ranks = False
    expected = reference.loss(*_rank_batch(0, empty_ranks)[:1],
                              batch(_rank_batch(0, empty_ranks)[1]),
                              dict())['loss_bcl']
    expected.backward()
    torch.testing.assert_close(mean_loss, expected.detach(), rtol=1e-5, atol=1e-6)
    for got, weight in zip(mean_grads, (reference.prototype_projector.mlp[0].weight,
                                        reference.conv_seg.weight)):
        torch.testing.assert_close(got, weight.grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize('empty_ranks', [(1, ), (0, 1)])
def test_rank_without_pixels_joins_the_gathers_and_matches_one_process(
        empty_ranks):
    run_forked_gloo(_dist_worker, empty_ranks, timeout=30)
