"""λ(t) schedules (RE-OT Eq. 34 and the authors' code) and milestone handling."""
import math

import pytest

from reot_mm.losses.priors import prior_schedule, resolve_milestones


@pytest.mark.parametrize('t, expected', [
    (1, 0.0), (620, 0.0), (621, 1 / 30), (635, 15 / 30), (649, 29 / 30),
    (650, 1.0), (700, 1.0), (790, 1.0)])
def test_eq34_paper_linear_ramp(t, expected):
    """CIFAR-100-LT milestones 620/650/755 (reference notes §1)."""
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
