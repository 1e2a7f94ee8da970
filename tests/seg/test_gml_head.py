"""GML decode head for mmseg (Suh and Seo, ICML 2023, Eq. 6, 7, 11; appendix A.2)."""
import math
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData

import reot_mm  # noqa: F401
from reot_mm.seg.models import sample_pixels_per_class
from reot_mm.seg.models.gml_head import CosineConv2d

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
C = 4
COUNTS = [600., 250., 100., 50.]


def test_sampling_takes_min_of_n_and_available_per_class_and_image():
    labels = torch.tensor([[[0, 0, 0, 1], [1, 255, 2, 2]],
                           [[3, 3, 3, 3], [3, 0, 255, 255]]])
    picked = sample_pixels_per_class(labels, 2, 255,
                                     torch.Generator().manual_seed(0))
    flat = labels.reshape(-1)
    image = picked // 8
    assert (flat[picked] != 255).all()
    assert len(set(picked.tolist())) == picked.numel()  # no repeats
    got = {(int(i), int(c)): int(n) for (i, c), n in zip(*torch.unique(
        torch.stack([image, flat[picked]], 1), dim=0, return_counts=True))}
    assert got == {(0, 0): 2, (0, 1): 2, (0, 2): 2, (1, 3): 2, (1, 0): 1}
    # all of a class's pixels when n is large; nothing from empty maps
    everything = sample_pixels_per_class(labels, 100, 255)
    assert sorted(everything.tolist()) == torch.nonzero(flat != 255).flatten().tolist()
    assert sample_pixels_per_class(torch.full((2, 3, 3), 255), 4).numel() == 0
    # different draws pick different pixels
    draws = {tuple(sorted(sample_pixels_per_class(
        labels, 1, 255, torch.Generator().manual_seed(s)).tolist()))
        for s in range(20)}
    assert len(draws) > 1


def test_cosine_classifier_gives_cosines():
    layer = CosineConv2d(6, 3)
    x = torch.randn(2, 6, 4, 5)
    expected = torch.einsum('bchw,kc->bkhw', F.normalize(x, dim=1),
                            F.normalize(layer.weight[:, :, 0, 0], dim=1))
    torch.testing.assert_close(layer(x), expected)
    assert layer(x).abs().max() <= 1 + 1e-6


def build_head(alpha=0.5, trainable_tau=False, size=64):
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    head = MODELS.build(dict(
        type='GMLFCNHead', in_channels=6, channels=6, num_convs=1,
        concat_input=False, dropout_ratio=0.0, num_classes=C,
        queue=dict(size=size, min_per_class=2),
        query_mlp=dict(hidden_channels=8, out_channels=5),
        gml_loss=dict(tau_g=0.1, trainable_tau=trainable_tau, alpha=alpha),
        pixels_per_class=1000,  # every labelled pixel: a deterministic batch
        loss_decode=dict(type='REOTPixelLoss', cost='cosine', scale=20.0,
                         prior_scale=alpha, loss_name='loss_cls')))
    for module in head.modules():
        if hasattr(module, 'set_class_counts'):
            module.set_class_counts(COUNTS)
    head.queue.build_segments(COUNTS)
    return head


def batch(labels, paths=None):
    from mmseg.structures import SegDataSample
    samples = []
    for number, label in enumerate(labels):
        sample = SegDataSample(metainfo=dict(
            img_path=(paths or [f'img{i}.jpg' for i in range(len(labels))])[number]))
        sample.gt_sem_seg = PixelData(data=label[None])
        samples.append(sample)
    return samples


def reference_gml(query, keys, key_labels, target, tau, log_prior, alpha):
    """GML Eq. 11 written with a loop over classes (test code only)."""
    logits = torch.stack([
        torch.logsumexp(query @ keys[key_labels == c].t() / tau, dim=1)
        - math.log(int((key_labels == c).sum())) for c in range(C)], dim=1)
    return F.cross_entropy(logits + alpha * log_prior, target)


def test_gml_head_loss_is_eq11_on_sampled_pixels_with_own_positive():
    torch.manual_seed(0)
    head = build_head(alpha=0.5)
    head.train()
    labels = torch.randint(0, C, (2, 8, 8))
    labels[0, :2] = 255
    features = [torch.randn(2, 6, 8, 8)]
    losses = head.loss(features, batch(labels), train_cfg=dict())
    assert {'loss_cls', 'loss_gml', 'acc_seg', 'tau_g'} <= set(losses)
    assert torch.isfinite(losses['loss_gml']) and torch.isfinite(losses['loss_cls'])

    # the queue now holds every labelled pixel's feature (enqueued first)
    valid = labels != 255
    assert int(head.queue.num_enqueued.sum()) == int(valid.sum())
    feats = head._forward_feature(features)
    pixel = feats.permute(0, 2, 3, 1)[valid]
    queued = head.queue.indices >= 0
    assert queued.any()
    # each enqueued feature is one of the batch's pixel features
    gap = (head.queue.features[queued][:, None] - pixel.detach()[None]).abs()
    assert gap.amax(-1).min(1).values.max() < 1e-6
    # Eq. 11 with the same queries and keys (BN of g_q/g_k in train mode)
    query = F.normalize(head.query_mlp(pixel), dim=1)
    keys = F.normalize(head.key_mlp(head.queue.features), dim=1)
    log_prior = torch.tensor(COUNTS).div(sum(COUNTS)).log().float()
    expected = reference_gml(query, keys, head.queue.labels, labels[valid],
                             0.1, log_prior, 0.5)
    torch.testing.assert_close(losses['loss_gml'], expected, atol=1e-4, rtol=1e-4)
    total = losses['loss_cls'] + losses['loss_gml']
    total.backward()
    assert head.query_mlp.mlp[0].weight.grad.abs().sum() > 0
    assert head.key_mlp.mlp[0].weight.grad.abs().sum() > 0


def test_alpha_scales_the_log_prior_of_l_gml():
    labels = torch.randint(0, C, (2, 6, 6), generator=torch.Generator().manual_seed(3))
    features = [torch.randn(2, 6, 6, 6, generator=torch.Generator().manual_seed(4))]
    values = {}
    for alpha in (0.0, 1.0):
        torch.manual_seed(0)
        head = build_head(alpha=alpha)
        values[alpha] = float(head.loss(features, batch(labels), dict())['loss_gml'])
    assert values[0.0] != pytest.approx(values[1.0], abs=1e-4)


def test_trainable_tau_excludes_same_image_entries():
    torch.manual_seed(0)
    head = build_head(trainable_tau=True)
    labels = torch.randint(0, C, (2, 6, 6))
    losses = head.loss([torch.randn(2, 6, 6, 6)], batch(labels), dict())
    assert torch.isfinite(losses['loss_tau'])
    theta = head.gml.log_tau_g
    losses['loss_gml'].backward(retain_graph=True)
    assert theta.grad is None or theta.grad.abs().max() == 0  # τ_g detached
    losses['loss_tau'].backward()
    assert theta.grad.abs().max() > 0
    # one image only: every other entry is from the same image or an initial
    # random vector; with a queue holding only this image's entries L_τ has
    # no valid pixel and is exactly 0
    torch.manual_seed(0)
    small = build_head(trainable_tau=True, size=8)
    label = torch.arange(C).repeat_interleave(4).reshape(1, 4, 4)
    features = [torch.randn(1, 6, 4, 4)]
    for _ in range(2):  # fill every slot with this image's pixels
        out = small.loss(features, batch(label), dict())
    assert (small.queue.indices >= 0).all()
    assert float(out['loss_tau']) == 0.0


def test_batch_without_labelled_pixels():
    torch.manual_seed(0)
    head = build_head()
    labels = torch.full((2, 6, 6), 255)
    losses = head.loss([torch.randn(2, 6, 6, 6)], batch(labels), dict())
    assert float(losses['loss_gml']) == 0.0 and float(losses['loss_cls']) == 0.0
    (losses['loss_gml'] + losses['loss_cls']).backward()
    # every parameter stays in the graph (DDP without find_unused_parameters)
    assert all(p.grad is not None for p in head.query_mlp.parameters())


@pytest.mark.parametrize('name', ['gml-a0.2', 'gml-a1.0'])
def test_gml_configs_build_with_paper_hyper_parameters(name):
    from mmseg.registry import MODELS
    cfg = Config.fromfile(osp.join(
        ROOT, 'configs', 'ade20k', f'{name}_fcn_r50-d8_4xb4-160k_ade20k-512x512.py'))
    assert cfg.custom_imports == dict(imports=['reot_mm'],
                                      allow_failed_imports=False)
    alpha = float(name.split('-a')[1])
    head_cfg = cfg.model.decode_head
    assert (head_cfg.queue.size, head_cfg.queue.min_per_class) == (8192, 27)
    assert head_cfg.gml_loss.tau_g == 0.07 and head_cfg.gml_loss.alpha == alpha
    assert head_cfg.loss_decode.scale == pytest.approx(1 / 0.05)
    assert head_cfg.loss_decode.prior_scale == alpha
    assert cfg.model.auxiliary_head.type == 'CosineFCNHead'
    init_default_scope('mmseg')
    head = MODELS.build(head_cfg)
    assert head.queue.size == 8192 and head.queue.min_per_class == 27
    assert head.gml.alpha == alpha and not head.gml.trainable_tau
    assert [h['type'] for h in cfg.custom_hooks] == ['ClassStatisticsHook',
                                                    'GMLQueueHook']
