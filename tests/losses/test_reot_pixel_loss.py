"""REOTPixelLoss: RE-OT Eq. 16 per pixel under mmseg's decode-head contract.

References are written out independently with F.cross_entropy on the
(B, C, H, W) logits (class dimension second), as mmseg's CrossEntropyLoss does.
"""
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from reot_mm.losses import REOTLoss, REOTPixelLoss, inverse_reot_loss
from reot_mm.losses.prior_cross_entropy import prior_shifted_cross_entropy

C = 7
COUNTS = torch.tensor([5000., 2500., 900., 300., 60., 12., 2.])
LOG_PI = (COUNTS / COUNTS.sum()).log()


def make_batch(batch=2, classes=C, height=5, width=6, ignore_frac=0.2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, classes, height, width, generator=generator) * 3
    labels = torch.randint(0, classes, (batch, height, width),
                           generator=generator)
    ignore = torch.rand(labels.shape, generator=generator) < ignore_frac
    labels[ignore] = 255
    return logits, labels


def value_and_grad(fn, logits):
    logits = logits.clone().requires_grad_(True)
    value = fn(logits)
    value.backward()
    return value.detach(), logits.grad


def assert_same(fn_a, fn_b, logits, atol=1e-5):
    value_a, grad_a = value_and_grad(fn_a, logits)
    value_b, grad_b = value_and_grad(fn_b, logits)
    torch.testing.assert_close(value_a, value_b, atol=atol, rtol=1e-5)
    torch.testing.assert_close(grad_a, grad_b, atol=atol, rtol=1e-5)


# a small batch and an ADE20K-sized class dimension (150 classes)
SIZES = [(2, C, 5, 6), (2, 150, 64, 64)]


@pytest.mark.parametrize('shape', SIZES, ids=['small', 'large'])
@pytest.mark.parametrize('avg_non_ignore', [True, False])
def test_uniform_prior_is_mmseg_cross_entropy(shape, avg_non_ignore):
    """Table 1 'vanilla softmax' row per pixel: Q uniform -> CE, including
    mmseg's normalisation (over labelled pixels or over all pixels)."""
    from mmseg.models.losses import CrossEntropyLoss
    logits, labels = make_batch(*shape)
    ours = REOTPixelLoss(prior='uniform', avg_non_ignore=avg_non_ignore)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        theirs = CrossEntropyLoss(avg_non_ignore=avg_non_ignore)
    assert_same(lambda x: ours(x, labels, ignore_index=255),
                lambda x: theirs(x, labels, ignore_index=255), logits)


@pytest.mark.parametrize('shape', SIZES, ids=['small', 'large'])
def test_class_ratio_is_balanced_softmax_on_pixel_prior(shape):
    """Eq. 16 with Q = π (Eq. 35, λ = 1): CE(s + log π) over labelled pixels."""
    logits, labels = make_batch(*shape)
    classes = shape[1]
    counts = torch.logspace(4, 0, classes).round()
    log_pi = (counts / counts.sum()).log()
    loss = REOTPixelLoss(prior='class_ratio', class_counts=counts)
    assert_same(lambda x: loss(x, labels, ignore_index=255),
                lambda x: F.cross_entropy(x + log_pi[:, None, None], labels,
                                          ignore_index=255), logits)


def test_epoch_varying_prior_eq15():
    """Eq. 15: Q = (1 - λ)/C + λ·π for λ set by the prior hook's setter."""
    logits, labels = make_batch()
    loss = REOTPixelLoss(prior='class_ratio', class_counts=COUNTS)
    loss.set_prior_schedule(0.3)
    q = 0.7 / C + 0.3 * COUNTS / COUNTS.sum()
    assert_same(lambda x: loss(x, labels),
                lambda x: F.cross_entropy(x + q.log()[:, None, None], labels,
                                          ignore_index=255), logits)
    loss.set_prior_schedule(0.0)  # λ = 0: plain CE
    assert_same(lambda x: loss(x, labels),
                lambda x: F.cross_entropy(x, labels, ignore_index=255), logits)


def test_prior_scale_alpha_gml_eq11_and_cosine_cost():
    """GML Eq. 7 with Eq. 11's α: CE(cos/τ_s + α·log π) on a cosine head."""
    cosines = torch.tanh(make_batch()[0])
    labels = make_batch()[1]
    tau, alpha = 0.05, 0.2
    loss = REOTPixelLoss(cost='cosine', scale=1 / tau, prior_scale=alpha,
                         class_counts=COUNTS)
    assert_same(lambda x: loss(x, labels),
                lambda x: F.cross_entropy(x / tau + alpha * LOG_PI[:, None, None],
                                          labels, ignore_index=255), cosines)


@pytest.mark.parametrize('shape', SIZES, ids=['small', 'large'])
def test_dense_layout_equals_inverse_reot_loss_on_rows(shape):
    """The (B, C, H, W) layout the adapter uses equals inverse_reot_loss
    (RE-OT Eq. 16) on the permuted rows."""
    logits, labels = make_batch(*shape, ignore_frac=0.0)
    log_q = torch.log_softmax(torch.randn(shape[1]), 0)

    def dense(x):
        return prior_shifted_cross_entropy(x, labels, log_q,
                                           epsilon=0.7).sum()

    def rows(x):
        flat = x.movedim(1, -1).reshape(-1, shape[1])
        return inverse_reot_loss(flat, labels.reshape(-1), log_q, 0.7).sum()
    assert_same(dense, rows, logits, atol=1e-3 if shape[1] == 150 else 1e-5)


def test_ignored_pixels_do_not_contribute():
    logits, labels = make_batch()
    loss = REOTPixelLoss(class_counts=COUNTS)
    value, grad = value_and_grad(lambda x: loss(x, labels), logits)
    ignored = labels == 255
    assert ignored.any()
    changed = logits.clone()
    changed.movedim(1, -1)[ignored] = 1e3  # huge scores at ignored pixels
    torch.testing.assert_close(loss(changed, labels), value)
    assert grad.movedim(1, -1)[ignored].abs().max() == 0
    # mean over labelled pixels only = sum / #labelled
    total = loss(logits, labels, reduction_override='sum')
    torch.testing.assert_close(value, total / (~ignored).sum())
    per_pixel = loss(logits, labels, reduction_override='none')
    assert per_pixel.shape == labels.shape
    assert (per_pixel[ignored] == 0).all()


def test_empty_images():
    """A label map without labelled pixels adds nothing; an all-empty batch
    gives a finite zero loss and zero gradient."""
    logits, labels = make_batch(batch=2, ignore_frac=0.0)
    loss = REOTPixelLoss(class_counts=COUNTS)
    with_empty = labels.clone()
    with_empty[1] = 255
    torch.testing.assert_close(loss(logits, with_empty),
                               loss(logits[:1], labels[:1]))
    all_empty = torch.full_like(labels, 255)
    value, grad = value_and_grad(lambda x: loss(x, all_empty), logits)
    assert value == 0 and torch.isfinite(value)
    assert grad.abs().max() == 0


def test_label_values_above_num_classes_are_an_error():
    logits, labels = make_batch()
    loss = REOTPixelLoss(class_counts=COUNTS)
    bad = labels.clone()
    bad[0, 0, 0] = C  # one past the last class, not the ignore label
    bad[1, 2, 3] = 200
    with pytest.raises(ValueError, match=r'seg_label holds values \[7, 200\]'):
        loss(logits, bad)
    with pytest.raises(ValueError, match='outside'):
        loss(logits, labels, ignore_index=None)  # 255 is then a label
    with pytest.raises(ValueError, match='seg_label must have shape'):
        loss(logits, labels[:, :-1])
    with pytest.raises(ValueError, match='integer labels'):
        loss(logits, labels.float())
    with pytest.raises(ValueError, match=r'\(B, C, H, W\)'):
        loss(logits[:, :, 0, 0], labels[:, 0, 0])
    with pytest.raises(ValueError, match='num_classes=9'):
        REOTPixelLoss(num_classes=9)(logits, labels)


def test_batch_ratio_counts_labelled_pixels_only():
    """Eq. 36 per pixel: r = labelled-pixel label ratio of the batch."""
    logits, labels = make_batch(ignore_frac=0.3)
    loss = REOTPixelLoss(prior='batch_ratio')
    valid = labels[labels != 255]
    ratio = torch.bincount(valid, minlength=C).float() / valid.numel()
    assert_same(lambda x: loss(x, labels),
                lambda x: F.cross_entropy(x + ratio.log()[:, None, None],
                                          labels, ignore_index=255), logits)


def test_sample_wise_prior_matches_reot_loss_on_labelled_rows():
    """Eq. 38 per pixel: the same as REOTLoss on the labelled pixels' rows."""
    logits, labels = make_batch()
    pixel = REOTPixelLoss(prior='sample_wise', class_counts=COUNTS)
    rows = REOTLoss(prior='sample_wise', class_counts=COUNTS)
    valid = labels != 255

    def reference(x):
        flat = x.movedim(1, -1)[valid]
        return rows(flat, labels[valid])
    assert_same(lambda x: pixel(x, labels), reference, logits)


def test_weights_loss_weight_and_half_precision():
    logits, labels = make_batch()
    weight = torch.rand(labels.shape)
    loss = REOTPixelLoss(class_counts=COUNTS, loss_weight=0.4)
    per_pixel = REOTPixelLoss(class_counts=COUNTS)(
        logits, labels, reduction_override='none')
    expected = 0.4 * (per_pixel * weight).sum() / (labels != 255).sum()
    torch.testing.assert_close(loss(logits, labels, weight=weight), expected)
    half = REOTPixelLoss(class_counts=COUNTS)(logits.half(), labels)
    assert half.dtype == torch.float32
    torch.testing.assert_close(
        half, REOTPixelLoss(class_counts=COUNTS)(logits.half().float(), labels))


def test_constructor_errors_and_contract():
    assert REOTPixelLoss().loss_name == 'loss_reot'
    with pytest.raises(ValueError, match="must start with 'loss_'"):
        REOTPixelLoss(loss_name='reot')
    with pytest.raises(ValueError, match='prior must be one of'):
        REOTPixelLoss(prior='teacher')
    with pytest.raises(ValueError, match='prior_scale'):
        REOTPixelLoss(prior_scale=-1)
    with pytest.raises(ValueError, match="cost must be 'logits' or 'cosine'"):
        REOTPixelLoss(cost='distance')
    with pytest.raises(TypeError, match='constraints'):
        REOTPixelLoss(constraints='ab')  # U(a, b) has no per-pixel form
    logits, labels = make_batch()
    with pytest.raises(RuntimeError, match='needs class_counts'):
        REOTPixelLoss()(logits, labels)


def test_fcn_head_uses_the_loss_through_mmseg_contract():
    """mmseg FCNHead.loss_by_feat calls loss_decode(seg_logits, seg_label,
    weight=None, ignore_index=255) and logs it under loss_name."""
    from mmengine.registry import init_default_scope
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    init_default_scope('mmseg')
    head = MODELS.build(dict(
        type='FCNHead', in_channels=8, channels=8, num_convs=1, num_classes=C,
        loss_decode=dict(type='REOTPixelLoss', class_counts=COUNTS.tolist(),
                         loss_name='loss_reot')))
    features = [torch.randn(2, 8, 4, 4)]
    samples = []
    for labels in make_batch(height=8, width=8)[1]:
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=labels[None])
        samples.append(sample)
    losses = head.loss(features, samples, train_cfg=dict())
    assert set(losses) == {'loss_reot', 'acc_seg'}
    assert torch.isfinite(losses['loss_reot'])
    losses['loss_reot'].backward()
    assert math.isfinite(float(head.conv_seg.weight.grad.abs().sum()))
