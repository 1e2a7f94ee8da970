"""REOTRoILoss: RE-OT Eq. 15/16 over C + 1 RoI logits, both background options."""
import math

import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import MODELS

import reot_mm  # noqa: F401
from reot_mm.losses import REOTRoILoss, log_detection_prior
from reot_mm.losses.class_counts import ScheduledPriorModule
from reot_mm.losses.reot_roi_loss import roi_label_mass

COUNTS = [400., 120., 30., 6., 1.]
C = len(COUNTS)


def rois(num=64, seed=0, background_fraction=0.75):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(num, C + 1, generator=gen, dtype=torch.float64) * 2
    labels = torch.randint(0, C, (num, ), generator=gen)
    background = torch.rand(num, generator=gen) < background_fraction
    labels[background] = C
    return scores.requires_grad_(), labels


def reference_loss(scores, labels, log_q):
    return F.cross_entropy(scores + log_q, labels)


@pytest.mark.parametrize('background', ['foreground_only', 'batch_fraction'])
def test_zero_prior_weight_is_plain_cross_entropy(background):
    """Eq. 15 with λ = 0: Q uniform over the C + 1 columns, Eq. 16 = CE
    (Table 1 "Vanilla softmax"), for either background option."""
    scores, labels = rois()
    loss = REOTRoILoss(background=background, class_counts=COUNTS,
                       prior_weight=0.0)
    assert torch.allclose(loss(scores, labels), F.cross_entropy(scores, labels),
                          atol=1e-12)
    uniform = REOTRoILoss(background=background, prior='uniform')
    assert torch.allclose(uniform(scores, labels),
                          F.cross_entropy(scores, labels), atol=1e-12)


def test_foreground_only_with_equal_counts_is_plain_cross_entropy():
    """No foreground imbalance → no foreground prior: with equal counts the
    foreground-only loss is CE at any λ, and the background column of log Q
    is 0 (the background logit is untouched)."""
    scores, labels = rois()
    loss = REOTRoILoss(class_counts=[7.] * C, prior_weight=1.0)
    assert torch.allclose(loss(scores, labels), F.cross_entropy(scores, labels),
                          atol=1e-12)
    log_q = log_detection_prior(torch.log(torch.tensor(COUNTS) / sum(COUNTS)),
                                0.3)
    assert log_q.shape == (C + 1, ) and log_q[-1] == 0


def test_foreground_only_golden_value():
    """Eq. 15/16, foreground-only: log Q = [p·log(C·((1 - λ)/C + λ·r)), 0]."""
    scores, labels = rois(seed=1)
    weight, power = 0.4, 1.03
    ratio = torch.tensor(COUNTS, dtype=torch.float64) / sum(COUNTS)
    log_q = torch.cat([power * torch.log(C * ((1 - weight) / C + weight * ratio)),
                       torch.zeros(1, dtype=torch.float64)])
    loss = REOTRoILoss(class_counts=COUNTS, prior_weight=weight,
                       prior_power=power)
    expected = reference_loss(scores, labels, log_q)
    assert torch.allclose(loss(scores, labels), expected, atol=1e-5)
    # with λ = 1 this is Balanced Softmax over the foreground classes
    full = REOTRoILoss(class_counts=COUNTS)
    log_q = torch.cat([torch.log(C * ratio), torch.zeros(1, dtype=torch.float64)])
    assert torch.allclose(full(scores, labels),
                          reference_loss(scores, labels, log_q), atol=1e-5)


def test_batch_fraction_golden_value():
    """Batch fraction: r = [(1 - f_bg)·n/Σn, f_bg], mixed with the uniform
    over C + 1 columns (Eq. 15)."""
    scores, labels = rois(seed=2)
    weight = 0.6
    f_bg = (labels == C).double().mean()
    ratio = torch.tensor(COUNTS, dtype=torch.float64) / sum(COUNTS)
    r = torch.cat([(1 - f_bg) * ratio, f_bg.reshape(1)])
    q = (1 - weight) / (C + 1) + weight * r
    loss = REOTRoILoss(background='batch_fraction', class_counts=COUNTS,
                       prior_weight=weight)
    assert torch.allclose(loss(scores, labels),
                          reference_loss(scores, labels, q.log()), atol=1e-5)


def test_batch_fraction_u_a_marginal_identity():
    """U(a) of Eq. 16: with uninformative (equal) logits the plan's rows are
    Q, so its column sums are N·Q. With λ = 1 the background column equals the
    number of background labels, i.e. Σ_i (P_i - y_i) vanishes on the
    background column — the gradient of the summed loss there is 0. When the
    foreground labels also follow r, every column balances."""
    num = 40
    # labels: 30 background, the 10 foreground distributed as r = (4,3,2,1,0)/10
    labels = torch.tensor([C] * 30 + [0] * 4 + [1] * 3 + [2] * 2 + [3])
    counts = [4., 3., 2., 1., 1e-9]
    scores = torch.zeros(num, C + 1, dtype=torch.float64, requires_grad=True)
    loss = REOTRoILoss(background='batch_fraction', class_counts=counts,
                       reduction='sum')
    loss(scores, labels).backward()
    column_gap = scores.grad.sum(0)
    assert abs(column_gap[C].item()) < 1e-6
    assert torch.allclose(column_gap, torch.zeros_like(column_gap), atol=1e-5)
    # the foreground-only prior instead leaves the background at 1/(C + 1)
    scores.grad = None
    REOTRoILoss(class_counts=counts, reduction='sum')(scores, labels).backward()
    assert scores.grad.sum(0)[C].item() == pytest.approx(
        num / (C + 1) - 30, abs=1e-5)


@pytest.mark.parametrize('prior', ['batch_ratio', 'interpolated'])
def test_batch_priors_count_foreground_rois(prior):
    """Eq. 36/37 over the foreground RoIs: background RoIs do not enter the
    batch ratio."""
    scores, labels = rois(seed=3)
    gamma = 0.74
    fg = labels[labels < C]
    batch = torch.bincount(fg, minlength=C).double() / fg.numel()
    ratio = torch.tensor(COUNTS, dtype=torch.float64) / sum(COUNTS)
    r = batch if prior == 'batch_ratio' else gamma * ratio + (1 - gamma) * batch
    log_q = torch.cat([torch.log(C * r), torch.zeros(1, dtype=torch.float64)])
    loss = REOTRoILoss(prior=prior, class_counts=COUNTS,
                       interpolation_gamma=gamma)
    assert torch.allclose(loss(scores, labels),
                          reference_loss(scores, labels, log_q), atol=1e-5)
    assert torch.equal(roi_label_mass(labels, C),
                       torch.bincount(labels, minlength=C + 1).float())


@pytest.mark.parametrize('prior, background', [
    ('batch_ratio', 'foreground_only'), ('class_ratio', 'batch_fraction'),
    ('interpolated', 'batch_fraction')])
def test_batch_without_foreground_rois_is_finite(prior, background):
    """An image batch whose sampled RoIs are all background (images without
    objects): Eq. 36 is undefined there (uniform is used) and f_bg = 1."""
    scores = torch.randn(8, C + 1, requires_grad=True)
    labels = torch.full((8, ), C)
    loss = REOTRoILoss(prior=prior, background=background,
                       class_counts=COUNTS)(scores, labels)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(scores.grad).all()


def test_mmdet_call_contract_weights_and_avg_factor():
    """BBoxHead.loss calls loss_cls(cls_score, labels, label_weights,
    avg_factor=..., reduction_override=...)."""
    scores, labels = rois(seed=4)
    weights = torch.ones(labels.shape[0], dtype=torch.float64)
    weights[::5] = 0
    loss = REOTRoILoss(class_counts=COUNTS)
    per_roi = loss(scores, labels, reduction_override='none')
    assert per_roi.shape == labels.shape
    value = loss(scores, labels, weights, avg_factor=float((weights > 0).sum()))
    assert torch.allclose(value, (per_roi * weights).sum() / (weights > 0).sum(),
                          atol=1e-6)
    assert loss(scores, labels, reduction_override='sum').item() == \
        pytest.approx(per_roi.sum().item(), rel=1e-6)


def test_gradient_half_precision_and_registry():
    loss = MODELS.build(dict(type='REOTRoILoss', class_counts=COUNTS,
                             loss_weight=2.0))
    # an adapter of the shared core: same counts / schedule contract as
    # REOTLoss, so the hooks reach it
    assert isinstance(loss, ScheduledPriorModule)
    scores, labels = rois(seed=5)
    half = scores.detach().half().requires_grad_()
    value = loss(half, labels)
    assert value.dtype == torch.float32
    value.backward()
    assert half.grad.dtype == torch.float16 and torch.isfinite(half.grad).all()
    reference = 2.0 * REOTRoILoss(class_counts=COUNTS)(scores.detach().float(),
                                                      labels)
    assert value.item() == pytest.approx(reference.item(), rel=1e-2)


def test_schedule_and_counts_updates_are_not_cached_stale():
    scores, labels = rois(seed=6)
    loss = REOTRoILoss(class_counts=COUNTS, prior_weight=1.0)
    first = loss(scores, labels).item()
    loss.set_prior_schedule(0.0)
    assert loss(scores, labels).item() == pytest.approx(
        F.cross_entropy(scores, labels).item(), abs=1e-6)
    loss.set_prior_schedule(1.0)
    assert loss(scores, labels).item() == pytest.approx(first, abs=1e-6)
    loss.set_class_counts(list(reversed(COUNTS)))
    assert loss(scores, labels).item() != pytest.approx(first, abs=1e-3)


def test_state_survives_checkpoint():
    """Counts, λ and the power are buffers: a fresh loss loads them."""
    loss = REOTRoILoss(class_counts=COUNTS, prior_weight=0.25, prior_power=1.03)
    state = loss.state_dict()
    assert {'class_counts', 'prior_weight', 'prior_power'} <= set(state)
    fresh = REOTRoILoss()
    fresh.load_state_dict(state)
    scores, labels = rois(seed=7)
    assert torch.equal(fresh(scores, labels), loss(scores, labels))


@pytest.mark.parametrize('kwargs, message', [
    (dict(background='objectness'), 'background must be one of'),
    (dict(prior='teacher'), 'prior must be one of'),
    (dict(prior='sample_wise'), 'prior must be one of'),
    (dict(supervision='class_balanced'), 'supervision must be one of'),
    (dict(num_classes=0), 'num_classes'),
    (dict(num_classes=4, class_counts=COUNTS), 'num_classes is 4'),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        REOTRoILoss(**kwargs)


@pytest.mark.parametrize('option', [dict(cost='cosine'),
                                    dict(constraints='ab')])
def test_options_without_roi_meaning_are_not_arguments(option):
    """The adapter only takes the options that have a RoI meaning; the
    others are named by the TypeError (not silently ignored)."""
    with pytest.raises(TypeError, match=next(iter(option))):
        REOTRoILoss(**option)


def test_bad_inputs_name_the_problem():
    scores, labels = rois()
    with pytest.raises(RuntimeError, match='ClassStatisticsHook'):
        REOTRoILoss()(scores, labels)
    with pytest.raises(ValueError, match='foreground classes'):
        # counts for 4 classes, scores for 5 + background
        REOTRoILoss(class_counts=COUNTS[:4])(scores, labels)
    with pytest.raises(ValueError, match='background last'):
        REOTRoILoss(num_classes=C + 1, class_counts=COUNTS + [1.])(scores, labels)
    with pytest.raises(ValueError, match=r'labels in \[0, 6\]'):
        bad = labels.clone()
        bad[0] = C + 1
        REOTRoILoss(class_counts=COUNTS)(scores, bad)
    with pytest.raises(ValueError, match='target must be'):
        REOTRoILoss(class_counts=COUNTS)(scores, labels[:-1])
    with pytest.raises(ValueError, match='non-finite'):
        nan = scores.detach().clone()
        nan[3, 1] = math.nan
        REOTRoILoss(class_counts=COUNTS)(nan, labels)
    with pytest.raises(ValueError, match='weight contains 1 non-finite'):
        weights = torch.ones(labels.shape[0], dtype=torch.float64)
        weights[2] = math.nan
        REOTRoILoss(class_counts=COUNTS)(scores, labels, weights)
    with pytest.raises(ValueError, match='log_background_fraction'):
        log_detection_prior(torch.zeros(C), 1.0, background='batch_fraction')
