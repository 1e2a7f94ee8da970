"""Barycentric projections (reot_mm.ot.projection): RE-OT Eq. 17-18."""
import pytest
import torch

from reot_mm.ot.projection import barycentric_projection, label_barycenters
from reot_mm.ot.sinkhorn import reot_sinkhorn

D = torch.float64


def test_eq17_permutation_plan_maps_points_exactly():
    gen = torch.Generator().manual_seed(0)
    n = 7
    perm = torch.randperm(n, generator=gen)
    a = torch.rand(n, generator=gen, dtype=D) + 0.1
    a = a / a.sum()
    plan = torch.zeros(n, n, dtype=D)
    plan[torch.arange(n), perm] = a  # P in U(a, a[perm^-1])
    y = torch.randn(n, 3, generator=gen, dtype=D)
    out = barycentric_projection(plan, y)
    torch.testing.assert_close(out, y[perm], rtol=0, atol=1e-15)
    # log-plan gives the same map
    out_log = barycentric_projection(plan.log(), y, log=True)
    torch.testing.assert_close(out_log, y[perm], rtol=0, atol=1e-15)


def test_eq18_permutation_plan_maps_features_back():
    gen = torch.Generator().manual_seed(1)
    n = 6
    perm = torch.randperm(n, generator=gen)
    plan = torch.zeros(n, n, dtype=D)
    plan[torch.arange(n), perm] = 1.0 / n
    f = torch.randn(n, 4, generator=gen, dtype=D)
    out = label_barycenters(plan, f)
    # T'(y_perm[i]) = f_i
    torch.testing.assert_close(out[perm], f, rtol=0, atol=1e-15)


def test_eq17_mass_normalisation_by_a_i():
    # scaling a row of P by c (a_i -> c a_i) leaves T(x_i) unchanged, and
    # T(x_i) is the 1/a_i-normalised sum, not the raw Σ_j P_ij y_j
    gen = torch.Generator().manual_seed(2)
    plan = torch.rand(5, 4, generator=gen, dtype=D)
    y = torch.randn(4, 2, generator=gen, dtype=D)
    a = plan.sum(1, keepdim=True)
    expected = (plan @ y) / a
    torch.testing.assert_close(barycentric_projection(plan, y), expected)
    scaled = plan * torch.tensor([[1.], [10.], [0.1], [3.], [1e-6]], dtype=D)
    torch.testing.assert_close(barycentric_projection(scaled, y), expected)
    # constant targets are fixed points: T maps into the convex hull
    const = torch.ones(4, 2, dtype=D) * 3.5
    torch.testing.assert_close(barycentric_projection(plan, const),
                               torch.full((5, 2), 3.5, dtype=D))


def test_eq17_18_ua_plan_from_logits_gives_probabilities_and_class_means():
    gen = torch.Generator().manual_seed(3)
    n, k, d = 50, 4, 8
    logits = torch.randn(n, k, generator=gen, dtype=D) * 2
    feats = torch.randn(n, d, generator=gen, dtype=D)
    # U(a) plan (RE-OT Eq. 16) with cost -logits, ε = 1, uniform a
    res = reot_sinkhorn(-logits, 1.0, constraints='a')
    log_plan = res.log_plan()
    probs = logits.softmax(-1)
    # Eq. 17 with one-hot labels y_j = e_j: T(x_i) = softmax(logits_i)
    onehot = torch.eye(k, dtype=D)
    torch.testing.assert_close(
        barycentric_projection(log_plan, onehot, log=True), probs)
    # Eq. 18: class barycenter = probability-weighted mean of features
    expected = (probs.T @ feats) / probs.sum(0).unsqueeze(-1)
    torch.testing.assert_close(label_barycenters(log_plan, feats, log=True),
                               expected)
    torch.testing.assert_close(label_barycenters(log_plan.exp(), feats),
                               expected)


def test_batched_matches_loop():
    gen = torch.Generator().manual_seed(4)
    plan = torch.rand(3, 5, 4, generator=gen, dtype=D)
    y = torch.randn(3, 4, 2, generator=gen, dtype=D)
    f = torch.randn(3, 5, 2, generator=gen, dtype=D)
    t = barycentric_projection(plan, y)
    tp = label_barycenters(plan, f)
    for i in range(3):
        torch.testing.assert_close(t[i], barycentric_projection(plan[i], y[i]))
        torch.testing.assert_close(tp[i], label_barycenters(plan[i], f[i]))
    # shared (unbatched) targets broadcast over the batch
    torch.testing.assert_close(barycentric_projection(plan, y[0])[1],
                               barycentric_projection(plan[1], y[0]))


def test_log_plan_with_very_negative_entries_is_stable():
    log_plan = torch.tensor([[-1000.0, -1001.0], [-2000.0, -1e4]], dtype=D)
    y = torch.tensor([[0.0], [1.0]], dtype=D)
    out = barycentric_projection(log_plan, y, log=True)
    e = torch.exp(torch.tensor(-1.0, dtype=D))
    torch.testing.assert_close(out[0, 0], e / (1 + e))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize('kwargs, match', [
    (dict(plan=torch.ones(3, 4), y=torch.ones(3, 2)), 'y must have 4'),
    (dict(plan=-torch.ones(3, 4), y=torch.ones(4, 2)), 'non-negative'),
    (dict(plan=torch.ones(4), y=torch.ones(4, 2)), 'plan must be'),
    (dict(plan=torch.zeros(2, 4), y=torch.ones(4, 2)), 'row 0 has zero'),
])
def test_bad_input_eq17(kwargs, match):
    with pytest.raises(ValueError, match=match):
        barycentric_projection(**kwargs)


def test_bad_input_eq18_zero_mass_column():
    plan = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    with pytest.raises(ValueError, match='column 1 has zero mass'):
        label_barycenters(plan, torch.ones(2, 3))
