"""RE-OT barycenters (reot_mm.ot.barycenter): RE-OT Eq. 9 and Eq. 10.

The reference is POT's ``ot.bregman.barycenter`` (histograms as columns).
Note: POT's ``method='sinkhorn'`` starts from the *unweighted* geometric mean,
which breaks the invariant Σ_s λ_s log u_s = 0 of the Bregman iterations, so
for non-uniform weights it converges to a slightly different point; its
``method='sinkhorn_log'`` does not, and is the reference for those weights.
"""
import math

import pytest
import torch

from reot_mm.ot.barycenter import deblur_prior, reot_barycenter
from reot_mm.ot.sinkhorn import log_kernel, reot_sinkhorn

ot = pytest.importorskip('ot')

D = torch.float64


def _grid(m):
    x = torch.linspace(0, 1, m, dtype=D)
    return (x[:, None] - x[None])**2


def _hists(s, m, seed):
    gen = torch.Generator().manual_seed(seed)
    h = torch.rand(s, m, generator=gen, dtype=D) + 1e-3
    return h / h.sum(-1, keepdim=True)


@pytest.mark.parametrize('eps', [0.05, 0.02])
def test_eq9_uniform_q_equals_pot_barycenter_uniform_weights(eps):
    cost, hist = _grid(30), _hists(3, 30, 0)
    res = reot_barycenter(hist, cost, eps, tol=1e-12, max_iter=20000)
    assert res.converged
    for method in ('sinkhorn', 'sinkhorn_log'):
        ref = ot.bregman.barycenter(hist.T.numpy(), cost.numpy(), eps,
                                    method=method, stopThr=1e-13,
                                    numItermax=20000)
        torch.testing.assert_close(res.barycenter, torch.from_numpy(ref),
                                   rtol=0, atol=1e-12)


@pytest.mark.parametrize('eps', [0.05, 0.02])
def test_eq9_uniform_q_equals_pot_barycenter_weighted(eps):
    cost, hist = _grid(30), _hists(3, 30, 1)
    w = torch.tensor([0.2, 0.5, 0.3], dtype=D)
    res = reot_barycenter(hist, cost, eps, w, tol=1e-12, max_iter=20000)
    ref = ot.bregman.barycenter(hist.T.numpy(), cost.numpy(), eps, w.numpy(),
                                method='sinkhorn_log', stopThr=1e-13,
                                numItermax=20000)
    torch.testing.assert_close(res.barycenter, torch.from_numpy(ref),
                               rtol=0, atol=1e-12)
    # unnormalised weights give the same minimiser of Eq. 9
    res10 = reot_barycenter(hist, cost, eps, 10 * w, tol=1e-12,
                            max_iter=20000)
    torch.testing.assert_close(res10.barycenter, res.barycenter, rtol=0,
                               atol=1e-14)


def test_eq9_constraints_and_optimality():
    # P_s = diag(u_s) K diag(v_s) has columns b_s and rows a (constraints of
    # Eq. 9) and the dual optimality condition for the free a,
    # Σ_s λ_s log u_s = 0, holds.
    cost, hist = _grid(20), _hists(3, 20, 2)
    w = torch.tensor([0.6, 0.1, 0.3], dtype=D)
    lq = torch.randn(20, 20, generator=torch.Generator().manual_seed(0),
                     dtype=D)
    res = reot_barycenter(hist, cost, 0.02, w, log_prior=lq, tol=1e-12,
                          max_iter=20000)
    assert res.converged
    a = res.barycenter
    assert abs(a.sum().item() - 1) < 1e-12 and (a >= 0).all()
    logk = log_kernel(cost, 0.02, lq)
    plans = (res.f[:, :, None] + logk[None] + res.g[:, None, :]).exp()
    torch.testing.assert_close(plans.sum(1), hist, rtol=0, atol=1e-12)
    torch.testing.assert_close(plans.sum(2), a.expand(3, 20), rtol=0,
                               atol=1e-11)
    torch.testing.assert_close((w[:, None] * res.f).sum(0),
                               torch.zeros(20, dtype=D), rtol=0, atol=1e-9)


def test_eq9_prior_column_gauge_invariant_and_per_s_prior_broadcasts():
    # Prop. 1(2) for barycenters: rescaling the columns of Q (histogram side)
    # is absorbed by v_s and changes nothing; a row rescaling is NOT
    # absorbed (a is free in Eq. 9, so it acts as a prior on a). A shared
    # (n, m) prior equals the same prior repeated per histogram (S, n, m).
    cost, hist = _grid(15), _hists(2, 15, 3)
    gen = torch.Generator().manual_seed(5)
    lq = torch.randn(15, 15, generator=gen, dtype=D)
    r1 = reot_barycenter(hist, cost, 0.05, log_prior=lq, tol=1e-12)
    shift = torch.randn(1, 15, generator=gen, dtype=D)
    rows = torch.randn(15, 1, generator=gen, dtype=D)
    r4 = reot_barycenter(hist, cost, 0.05, log_prior=lq + rows, tol=1e-12)
    assert (r4.barycenter - r1.barycenter).abs().max() > 1e-3
    r2 = reot_barycenter(hist, cost, 0.05, log_prior=lq + shift, tol=1e-12)
    r3 = reot_barycenter(hist, cost, 0.05, log_prior=lq.expand(2, 15, 15),
                         tol=1e-12)
    torch.testing.assert_close(r2.barycenter, r1.barycenter, rtol=0,
                               atol=1e-11)
    torch.testing.assert_close(r3.barycenter, r1.barycenter, rtol=0,
                               atol=1e-14)


def test_eq9_symmetric_under_swapping_histograms_and_weights():
    cost, hist = _grid(25), _hists(2, 25, 4)
    w = torch.tensor([0.3, 0.7], dtype=D)
    r1 = reot_barycenter(hist, cost, 0.01, w, tol=1e-12, max_iter=20000)
    r2 = reot_barycenter(hist.flip(0), cost, 0.01, w.flip(0), tol=1e-12,
                         max_iter=20000)
    torch.testing.assert_close(r1.barycenter, r2.barycenter, rtol=0,
                               atol=1e-12)


def test_eq9_single_weight_is_row_marginal_of_one_projection():
    # λ = (1, 0): a is the row marginal of the single KL projection of K onto
    # {P^T 1 = b_1}, i.e. a = K (b_1 / K^T 1), whatever b_2 is.
    cost, hist = _grid(20), _hists(2, 20, 6)
    eps = 0.05
    res = reot_barycenter(hist, cost, eps, torch.tensor([1.0, 0.0], dtype=D),
                          tol=1e-13)
    k = (-cost / eps).exp()
    expected = k @ (hist[0] / k.sum(0))
    torch.testing.assert_close(res.barycenter, expected, rtol=0, atol=1e-13)
    other = reot_barycenter(torch.stack([hist[0], hist[0].flip(0)]), cost,
                            eps, torch.tensor([1.0, 0.0], dtype=D), tol=1e-13)
    torch.testing.assert_close(other.barycenter, res.barycenter, rtol=0,
                               atol=1e-14)


def test_eq9_identical_inputs_return_input_as_eps_small():
    cost = _grid(20)
    h = _hists(1, 20, 7)[0]
    hist = torch.stack([h, h, h])
    errs = []
    for eps in (1e-2, 1e-3, 1e-4):
        res = reot_barycenter(hist, cost, eps, tol=1e-10, max_iter=20000)
        errs.append((res.barycenter - h).abs().sum().item())
    # entropic blur a = K (b / K^T 1) shrinks as ε -> 0 (grid step 1/19)
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 1e-9


def test_eq10_deblur_prior():
    cost, hist = _grid(10), _hists(2, 10, 8)
    plan = reot_sinkhorn(cost, 0.05, hist[0], hist[1], tol=1e-12).plan()
    for lam in (0.0, 0.3, 1.0):
        lq = deblur_prior(plan, lam)
        torch.testing.assert_close(lq.exp(),
                                   (1 - lam) * plan.T + lam * plan)
    # λ = 1/2 gives a symmetric Q
    lq = deblur_prior(plan, 0.5)
    torch.testing.assert_close(lq, lq.T)
    # zero entries become -inf (Q_ij = 0)
    sparse = torch.eye(3, dtype=D)
    assert torch.isneginf(deblur_prior(sparse, 0.2)[0, 1])


@pytest.mark.parametrize('kwargs, match', [
    (dict(histograms=torch.ones(2, 4) / 4, cost=torch.ones(4, 3),
          epsilon=1.0), 'cost must have shape'),
    (dict(histograms=torch.ones(2, 4), cost=torch.ones(4, 4), epsilon=1.0),
     'sum to 1'),
    (dict(histograms=torch.ones(2, 4) / 4, cost=torch.ones(4, 4),
          epsilon=0.0), 'epsilon'),
    (dict(histograms=torch.ones(2, 4) / 4, cost=torch.ones(4, 4),
          epsilon=1.0, weights=torch.tensor([1.0, -1.0])), 'weights'),
    (dict(histograms=torch.ones(2, 4) / 4, cost=torch.ones(4, 4),
          epsilon=1.0, weights=torch.ones(3)), r'weights must have shape'),
    (dict(histograms=torch.ones(2, 4) / 4, cost=torch.ones(4, 4),
          epsilon=1.0, log_prior=torch.zeros(3, 4, 4)), 'log_prior'),
    (dict(histograms=torch.ones(2, 4) / 4, cost=torch.ones(4, 4),
          epsilon=1.0, log_prior=torch.full((4, 4), -math.inf)),
     'infeasible'),
])
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        reot_barycenter(**kwargs)


def test_deblur_prior_bad_input():
    with pytest.raises(ValueError, match='lam must be in'):
        deblur_prior(torch.eye(3), 1.5)
    with pytest.raises(ValueError, match='square'):
        deblur_prior(torch.ones(2, 3), 0.5)
