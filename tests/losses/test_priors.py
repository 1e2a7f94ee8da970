"""RE-OT priors (Eq. 15, 35-38, Table 1 LDAM / class-balanced rows, the
authors' sample-wise form), λ(t) schedules (Eq. 34 and the authors' code) and
milestone handling."""
import math

import pytest
import torch

from reot_mm.losses import priors
from reot_mm.losses.priors import prior_schedule, resolve_milestones


@pytest.mark.parametrize('t, expected', [
    (1, 0.0), (620, 0.0), (621, 1 / 30), (635, 15 / 30), (649, 29 / 30),
    (650, 1.0), (700, 1.0), (790, 1.0)])
def test_eq34_paper_linear_ramp(t, expected):
    """CIFAR-100-LT milestones 620/650/755 (the authors' CIFAR-100-LT ρ=200 config)."""
    weight, power = prior_schedule(t, 620, 650, 755, mode='paper')
    assert weight == pytest.approx(expected)
    assert power == 1.0


@pytest.mark.parametrize('t', [621, 630, 640, 649])
def test_official_schedule_effective_weight(t):
    """(t2 - t)·U + (t - t1)·R with U = 1 per entry, R = r summing to 1:
    the uniform part has mass C(t2 - t), the r part (t - t1)."""
    num_classes = 100
    weight, _ = prior_schedule(t, 620, 650, 755, mode='official',
                               num_classes=num_classes)
    uniform_mass = num_classes * (650 - t)
    ratio_mass = t - 620
    assert weight == pytest.approx(ratio_mass / (ratio_mass + uniform_mass))
    # nearly a hard switch: far below the paper's linear ramp
    paper, _ = prior_schedule(t, 620, 650, 755, mode='paper')
    assert weight < paper


def test_official_schedule_is_continuous_at_t2():
    assert prior_schedule(650, 620, 650, 755, mode='official',
                          num_classes=100)[0] == pytest.approx(1.0)


def test_final_power_after_t3():
    assert prior_schedule(755, 620, 650, 755, final_power=1.03) == (1.0, 1.0)
    assert prior_schedule(756, 620, 650, 755, final_power=1.03) == (1.0, 1.03)


def test_fraction_milestones_scale_with_run_length():
    assert resolve_milestones((0.6, 0.8), 100) == (60.0, 80.0, math.inf)
    assert resolve_milestones((0.6, 0.8, 0.95), 200) == (120.0, 160.0, 190.0)
    # integers are absolute epochs, even small ones
    assert resolve_milestones((1, 2, 3), 200) == (1.0, 2.0, 3.0)


def test_unordered_milestones_rejected_by_default():
    """The authors' CIFAR-10 config has t1/t2/t3 = 500/462/650."""
    with pytest.raises(ValueError, match='t2=462 < t1=500'):
        resolve_milestones((500, 462, 650), 682)


def test_unordered_milestones_warn_follows_official_code():
    with pytest.warns(UserWarning, match='hard switch'):
        t1, t2, t3 = resolve_milestones((500, 462, 650), 682, on_unordered='warn')
    assert (t1, t2, t3) == (500.0, 500.0, 650.0)
    assert prior_schedule(500, t1, t2, t3, mode='official', num_classes=10)[0] == 0.0
    assert prior_schedule(501, t1, t2, t3, mode='official', num_classes=10)[0] == 1.0


@pytest.mark.parametrize('milestones, match', [
    ((1, ), 'milestones must be'),
    ((1, 2, 3, 4), 'milestones must be'),
    ((-1, 2), 'non-negative'),
    ((5, 10, 7), 't3=7 < t2=10'),
])
def test_bad_milestones(milestones, match):
    with pytest.raises(ValueError, match=match):
        resolve_milestones(milestones, 100)


def test_bad_mode():
    with pytest.raises(ValueError, match='mode must be one of'):
        prior_schedule(1, 1, 2, mode='linear')
    with pytest.raises(ValueError, match='needs num_classes'):
        prior_schedule(1.5, 1, 2, mode='official')


# ------------------------------------------------------------ prior formulas
COUNTS = torch.tensor([50., 20., 5., 0., 1.])


def _logits(rows=6, classes=5, seed=0):
    return 4 * torch.randn(rows, classes,
                           generator=torch.Generator().manual_seed(seed))


def test_eq35_class_ratio_smooths_raw_zero_counts():
    got = priors.log_class_ratio(COUNTS)
    smoothed = torch.tensor([50., 20., 5., 1., 1.], dtype=torch.float64)
    torch.testing.assert_close(got, (smoothed / smoothed.sum()).log().float())
    assert torch.isfinite(got).all()
    with_min = priors.log_class_ratio(COUNTS, min_count=0.5)
    assert with_min[3] < got[3]
    with pytest.raises(ValueError, match='min_count must be > 0'):
        priors.log_class_ratio(COUNTS, min_count=0.0)


def test_eq36_batch_ratio_and_eq37_interpolation():
    labels = torch.tensor([0, 0, 1, 4])
    mass = priors.batch_label_ratio(labels, 5)
    torch.testing.assert_close(mass, torch.tensor([2., 1., 0., 0., 1.]))
    log_batch = priors.log_batch_ratio(mass)
    torch.testing.assert_close(log_batch.exp(), mass / 4)
    assert torch.isneginf(log_batch[2])
    log_class = priors.log_class_ratio(COUNTS)
    mixed = priors.log_interpolated_ratio(log_class, log_batch, 0.74)
    torch.testing.assert_close(
        mixed.exp(), 0.74 * log_class.exp() + 0.26 * mass / 4)


@pytest.mark.parametrize('g', [0.0, 0.3, 1.0])
def test_eq38_sample_wise_paper_form(g):
    """R_ij ∝ r_j·[(1 - g)/C + g·softmax(l_i)_j], rows normalised."""
    logits = _logits()
    log_r = priors.log_class_ratio(COUNTS)
    got = priors.log_sample_wise_ratio(logits, log_r, g)
    raw = log_r.exp() * ((1 - g) / 5 + g * logits.softmax(-1))
    torch.testing.assert_close(got.exp(), raw / raw.sum(-1, keepdim=True))


@pytest.mark.parametrize('g', [0.0, 0.3, 1.0])
@pytest.mark.parametrize('batch_size', [None, 64])
def test_sample_wise_official_form(g, batch_size):
    """The authors' form: R_ij = r_j·[(1 - g)/(B·C) + g·softmax(l_i)_j], rows
    not renormalised, softmax detached."""
    logits = _logits().requires_grad_(True)
    log_r = priors.log_class_ratio(COUNTS)
    got = priors.log_sample_wise_ratio_official(logits, log_r, g, batch_size)
    b = 6 if batch_size is None else batch_size
    expected = log_r.exp() * ((1 - g) / (b * 5)
                              + g * logits.detach().softmax(-1))
    torch.testing.assert_close(got.exp(), expected)
    assert not got.requires_grad


@pytest.mark.parametrize('g', [0.2, 0.5, 0.9])
def test_sample_wise_official_equals_paper_form_at_g_prime(g):
    """Official g equals the paper-style form at g' = g·B/(g·B + 1 - g) up to
    a per-row constant, and is not the paper-style form at g itself."""
    logits = _logits(rows=8)
    log_r = priors.log_class_ratio(COUNTS)
    official = priors.log_sample_wise_ratio_official(logits, log_r, g)
    g_prime = g * 8 / (g * 8 + 1 - g)
    paper = priors.log_sample_wise_ratio(logits, log_r, g_prime)
    row_gap = official - paper
    torch.testing.assert_close(row_gap, row_gap[:, :1].expand_as(row_gap))
    at_g = official - priors.log_sample_wise_ratio(logits, log_r, g)
    assert (at_g - at_g[:, :1]).abs().max() > 1e-3


def test_sample_wise_bad_arguments():
    log_r = priors.log_class_ratio(COUNTS)
    with pytest.raises(ValueError, match='sample_wise_g must be in'):
        priors.log_sample_wise_ratio_official(_logits(), log_r, 1.5)
    with pytest.raises(ValueError, match='sample_wise_g must be in'):
        priors.log_sample_wise_ratio(_logits(), log_r, -0.1)
    with pytest.raises(ValueError, match='batch_size must be >= 1'):
        priors.log_sample_wise_ratio_official(_logits(), log_r, 0.5, 0)


@pytest.mark.parametrize('weight, power', [(0.0, 1.0), (0.4, 1.0),
                                           (1.0, 1.03)])
def test_eq15_epoch_varying_prior(weight, power):
    """Q = [(1 - λ)·Uniform + λ·r]^power."""
    log_r = priors.log_class_ratio(COUNTS)
    got = priors.log_epoch_varying_prior(log_r, weight, power)
    expected = ((1 - weight) / 5 + weight * log_r.exp()).pow(power).log()
    torch.testing.assert_close(got, expected)


def test_table1_ldam_margins_and_class_balanced_weights_from_raw_counts():
    margins = priors.ldam_margins(COUNTS, max_margin=0.5, power=0.25)
    raw = torch.tensor([50., 20., 5., 1., 1.]).pow(-0.25)
    torch.testing.assert_close(margins, 0.5 * raw / raw.max())
    weights = priors.class_balanced_weights(COUNTS, beta=0.99)
    effective = (1 - 0.99) / (1 - 0.99 ** torch.tensor(
        [50., 20., 5., 1., 1.], dtype=torch.float64))
    torch.testing.assert_close(
        weights, (effective * 5 / effective.sum()).float())
    assert torch.isfinite(margins).all() and torch.isfinite(weights).all()
