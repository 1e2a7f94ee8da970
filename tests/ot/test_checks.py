"""reot_mm.ot.checks: the one validator set of the OT layer.

Each check returns the normalised value or raises a ValueError that names
the argument and the expected value.
"""
import math

import pytest
import torch

from reot_mm.ot import checks


@pytest.mark.parametrize('value', [0, -1.0, math.inf, math.nan, 'x', True,
                                   torch.ones(2)])
def test_check_positive_rejects(value):
    with pytest.raises(ValueError, match='lam must be'):
        checks.check_positive(value, 'lam')


def test_scalar_checks_accept_and_convert():
    assert checks.check_positive(torch.tensor(0.5), 'eps') == 0.5
    assert checks.check_nonnegative(0, 'tau') == 0.0
    assert checks.check_positive_int(3.0, 'iters') == 3
    assert checks.check_positive_int(None, 'chunk', allow_none=True) is None
    assert checks.check_choice('sgd', 'optimizer', ('adam', 'sgd')) == 'sgd'
    assert checks.check_iteration_args(5, 2, 1e-3) == (5, 2, 1e-3)
    with pytest.raises(ValueError, match=r'smoothing must be a finite number '
                       r'>= 0 \(a pseudo-count\)'):
        checks.check_nonnegative(-1, 'smoothing', hint='a pseudo-count')
    for bad in (0, 2.5, True, 'a'):
        with pytest.raises(ValueError, match='iters must be a positive int'):
            checks.check_positive_int(bad, 'iters')
    with pytest.raises(ValueError, match=r"optimizer must be one of \('adam',"):
        checks.check_choice('lbfgs', 'optimizer', ('adam', 'sgd'))
    with pytest.raises(ValueError, match='tol must be a positive'):
        checks.check_iteration_args(5, 2, 0.0)


def test_tensor_checks():
    with pytest.raises(ValueError, match=r'logits must have shape \(N, K\)'):
        checks.check_matrix(torch.zeros(0, 3), 'logits')
    with pytest.raises(ValueError, match='floating'):
        checks.check_matrix(torch.zeros(2, 3, dtype=torch.long), 'logits')
    cost = torch.zeros(2, 3)
    cost[0, 1] = math.inf  # forbidden transport is allowed
    assert checks.check_cost(cost) is cost
    with pytest.raises(ValueError, match='cost contains -inf'):
        checks.check_cost(-cost)
    with pytest.raises(ValueError, match='log_prior must broadcast'):
        checks.check_log_prior(torch.zeros(4), (2, 3))
    assert checks.check_log_prior(None, (2, 3)) is None


def test_distribution_checks():
    p = checks.check_distribution([0.25, 0.75], 'prior', 2, torch.float64,
                                  'cpu')
    assert p.dtype == torch.float64 and float(p.sum()) == 1.0
    with pytest.raises(ValueError, match='prior must be positive'):
        checks.check_distribution([0.0, 1.0], 'prior', 2, torch.float32,
                                  'cpu', allow_zero=False)
    with pytest.raises(ValueError, match=r'prior must sum to 1'):
        checks.check_distribution([0.5, 0.6], 'prior', 2, torch.float32,
                                  'cpu')
    with pytest.raises(ValueError, match=r'prior must have shape \(3,\)'):
        checks.check_distribution([0.5, 0.5], 'prior', 3, torch.float32,
                                  'cpu')
    marg = checks.check_marginal(None, 'a', 2, 4, True, torch.float32, 'cpu')
    assert marg.shape == (2, 4) and torch.allclose(marg, torch.tensor(0.25))
    with pytest.raises(ValueError, match='a must have positive total mass'):
        checks.check_marginal(torch.zeros(4), 'a', 1, 4, False,
                              torch.float32, 'cpu')
    with pytest.raises(ValueError, match='histograms must each sum to 1'):
        checks.check_histograms(torch.ones(2, 3))
    w = checks.check_weights([1.0, 3.0], 'weights', 2, torch.float64, 'cpu')
    assert w.tolist() == [0.25, 0.75]
    with pytest.raises(ValueError, match='weights must be finite'):
        checks.check_weights([0.0, 0.0], 'weights', 2, torch.float64, 'cpu')


def test_check_feasible_names_the_line():
    lse = torch.tensor([[0.0, -math.inf, 1.0]])
    checks.check_feasible(lse, torch.tensor([[0.5, 0.0, 0.5]]), 'row')
    with pytest.raises(ValueError, match='entirely zero in column 1'):
        checks.check_feasible(lse, torch.tensor([[0.5, 0.1, 0.4]]), 'column')
