"""The class-statistics contract: raw counts stored, smoothed where the prior
is formed, λ stored once, checkpoints (old and new) load."""
import math
import warnings

import pytest
import torch

from reot_mm.losses.class_counts import CountAwareModule, ScheduledPriorModule


class Counted(ScheduledPriorModule):
    def __init__(self, class_counts=None, num_classes=None, min_count=1.0,
                 prior_weight=1.0):
        super().__init__()
        self.init_class_counts(class_counts, num_classes, min_count)
        self.init_prior_schedule(prior_weight)


def test_raw_counts_are_stored_and_smoothed_only_for_the_prior():
    with pytest.warns(UserWarning, match=r'classes \[1\]'):
        module = Counted([6., 0., 2.], min_count=0.5)
    assert module.class_counts.tolist() == [6., 0., 2.]
    assert module.class_counts.dtype == torch.float64
    # RE-OT Eq. 35 on the smoothed counts
    expected = torch.tensor([6., 0.5, 2.]).div(8.5).log()
    torch.testing.assert_close(module.log_class_ratio(3), expected)


def test_counts_from_the_config_cannot_be_replaced_by_another_size():
    """A 3-entry class_counts in the config and 10 classes in the dataset:
    an error naming the setting and both sizes, not a silent replacement."""
    module = Counted([1., 2., 3.])
    with pytest.raises(ValueError, match=r'class_counts in the config has 3 '
                       r'entries.*have 10'):
        module.set_class_counts([1.] * 10)
    module.set_class_counts([4., 5., 6.])  # same size: the dataset's win
    assert module.class_counts.tolist() == [4., 5., 6.]
    with pytest.raises(ValueError, match='class_counts has 2 entries but '
                       'num_classes is 3'):
        Counted(num_classes=3).set_class_counts([1., 2.])


def test_missing_and_mismatched_counts_are_explained():
    with pytest.raises(RuntimeError, match='ClassStatisticsHook'):
        Counted().log_class_ratio(3)
    with pytest.raises(ValueError, match='class_counts has 2 entries but the '
                       'scores have 3 classes'):
        Counted([1., 2.]).log_class_ratio(3)
    with pytest.raises(ValueError, match='min_count must be > 0'):
        Counted(min_count=0)
    with pytest.raises(ValueError, match='num_classes must be an integer'):
        Counted(num_classes=0)


def test_schedule_is_validated_and_kept_once():
    module = Counted([1., 2.], prior_weight=0.25)
    assert module.prior_schedule == (0.25, 1.0)
    module.set_prior_schedule(0.5, 1.03)
    assert float(module.prior_weight) == 0.5
    assert float(module.prior_power) == pytest.approx(1.03)
    assert module.prior_schedule == (0.5, 1.03)
    with pytest.raises(ValueError, match=r'prior_weight \(λ\) must be in'):
        module.set_prior_schedule(1.5)
    with pytest.raises(ValueError, match='prior_power must be > 0'):
        module.set_prior_schedule(0.5, 0.0)


def test_cache_is_dropped_on_every_change():
    module = Counted([1., 3.])
    calls = []

    def compute():
        calls.append(1)
        return torch.tensor(float(len(calls)))
    assert module.cached('x', compute) == 1
    assert module.cached('x', compute) == 1
    module.set_prior_schedule(0.3)
    assert module.cached('x', compute) == 2
    module.set_class_counts([2., 2.])
    assert module.cached('x', compute) == 3
    module.double()
    assert module.cached('x', compute) == 4
    torch.testing.assert_close(module.log_class_ratio(),
                               torch.tensor([math.log(0.5)] * 2))


def test_state_dict_round_trip_and_old_smoothed_checkpoints():
    trained = Counted([5., 0., 1.], prior_weight=0.4)
    fresh = Counted(prior_weight=1.0)
    fresh.load_state_dict(trained.state_dict())
    assert fresh.class_counts.tolist() == [5., 0., 1.]
    assert fresh.prior_schedule == pytest.approx((0.4, 1.0))
    # a checkpoint written when the modules stored SMOOTHED counts (zero ->
    # min_count) loads as is and forms the same prior: smoothing is idempotent
    old = {'class_counts': torch.tensor([5., 1., 1.], dtype=torch.float64),
           'prior_weight': torch.tensor(0.4), 'prior_power': torch.tensor(1.)}
    legacy = Counted()
    legacy.load_state_dict(old)
    torch.testing.assert_close(legacy.log_class_ratio(),
                               trained.log_class_ratio())


def test_non_persistent_counts_stay_out_of_the_state_dict():
    class Head(CountAwareModule):
        def __init__(self):
            super().__init__()
            self.init_class_counts([1., 2.], persistent=False)
    head = Head()
    assert 'class_counts' not in head.state_dict()
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        head.load_state_dict({})
    assert head.class_counts.tolist() == [1., 2.]
