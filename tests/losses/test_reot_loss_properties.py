"""Property-based tests of the RE-OT loss core: the prior-shifted
cross-entropy (RE-OT Eq. 16, U(a)), the U(a, b) loss (Eq. 14) and the prior
schedule (Eq. 15 / 34), over shapes, dtypes, class counts, label patterns,
extreme scores and small ε. Each case either equals a float64 reference
formula or raises a ValueError naming the argument."""
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reot_mm.losses import priors
from reot_mm.losses.prior_cross_entropy import prior_shifted_cross_entropy
from reot_mm.losses.reot_loss_ab import inverse_reot_loss_ab

FAST = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def _reference(scores, target, log_prior, epsilon, focal_gamma=0.0,
               class_weights=None):
    """-Σ_j P̃_ij·w_j·(1 - P_ij)^γ·log P_ij, P = softmax(s/ε + log Q), float64,
    on the input as the loss sees it (half precision read as float32)."""
    shifted = scores.double() / epsilon
    if log_prior is not None:
        shifted = shifted + log_prior.double().reshape(
            (-1, ) + (1, ) * (scores.ndim - 2))
    log_plan = torch.log_softmax(shifted, dim=1)
    if target.ndim == scores.ndim:
        mass = target.double()
    else:
        mass = torch.nn.functional.one_hot(target, scores.shape[1]).double()
        mass = mass.movedim(-1, 1)
    if class_weights is not None:
        mass = mass * class_weights.double().reshape(
            (-1, ) + (1, ) * (scores.ndim - 2))
    if focal_gamma:
        mass = mass * (-torch.expm1(log_plan)).clamp_min(0).pow(focal_gamma)
    terms = torch.where(mass > 0, mass * log_plan, torch.zeros_like(log_plan))
    return -terms.sum(1), shifted


def _assert_matches_reference(got, expected, shifted, compute_dtype):
    """Equal up to the rounding of the shifted scores in ``compute_dtype``."""
    assert torch.isfinite(got).all()
    assert got.dtype == compute_dtype
    unit = torch.finfo(compute_dtype).eps
    atol = 8 * unit * (float(shifted.abs().max()) + 1.0)
    torch.testing.assert_close(got.double(), expected, atol=atol,
                               rtol=8 * unit)


@st.composite
def _problem(draw, dense=False):
    seed = draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed)
    rows = draw(st.integers(1, 6))
    classes = draw(st.sampled_from([1, 2, 3, 7, 1000]))
    spatial = draw(st.sampled_from([(), (2, 3)])) if dense else ()
    dtype = draw(st.sampled_from(DTYPES))
    magnitude = draw(st.sampled_from([1.0, 30.0, 1e3, 1e6]))
    epsilon = draw(st.sampled_from([1.0, 0.5, 1e-2, 1e-4]))
    shape = (rows, classes) + spatial
    scores = magnitude * torch.randn(shape, generator=gen, dtype=torch.float64)
    if draw(st.booleans()):  # extreme: ±magnitude exactly, many ties
        scores = magnitude * torch.sign(scores)
    limit = torch.finfo(dtype).max
    scores = scores.clamp(-limit, limit).to(dtype)
    label_shape = (rows, ) + spatial
    pattern = draw(st.sampled_from(['random', 'one_class', 'soft']))
    if pattern == 'random':
        target = torch.randint(0, classes, label_shape, generator=gen)
    elif pattern == 'one_class':
        target = torch.full(label_shape, classes - 1, dtype=torch.long)
    else:
        target = torch.rand(shape, generator=gen, dtype=torch.float64)
        target = (target * (target > 0.5)).to(torch.float32)  # zeros too
    counts_kind = draw(st.sampled_from(['none', 'zeros', 'huge', 'lt']))
    log_prior = None
    if counts_kind != 'none':
        counts = torch.randint(0, 50, (classes, ), generator=gen).double()
        if counts_kind == 'zeros':
            counts[::2] = 0
        elif counts_kind == 'huge':
            counts = counts * 1e12 + 1
        else:
            counts = 1000.0 * 0.01 ** (torch.arange(classes) / max(
                classes - 1, 1))
        weight = draw(st.sampled_from([0.0, 0.5, 1.0]))
        log_prior = priors.log_epoch_varying_prior(
            priors.log_class_ratio(counts), weight)
    focal = draw(st.sampled_from([0.0, 2.0]))
    return scores, target, log_prior, epsilon, focal


@FAST
@given(_problem())
def test_prior_shifted_ce_equals_float64_reference(problem):
    """RE-OT Eq. 16 on (N, C) rows equals the float64 log_softmax formula."""
    scores, target, log_prior, epsilon, focal = problem
    got = prior_shifted_cross_entropy(scores, target, log_prior,
                                      epsilon=epsilon, focal_gamma=focal)
    expected, shifted = _reference(scores, target, log_prior, epsilon, focal)
    compute = torch.float64 if scores.dtype == torch.float64 \
        else torch.float32
    _assert_matches_reference(got, expected, shifted, compute)


@FAST
@given(_problem(dense=True), st.data())
def test_prior_shifted_ce_dense_and_ignore_index(problem, data):
    """Eq. 16 on (N, C, *spatial) scores, labels partly ignored: the others
    equal the reference, the ignored ones give zero loss and gradient."""
    scores, target, log_prior, epsilon, focal = problem
    if target.ndim == scores.ndim:
        target = target.argmax(1)
    ignored = torch.zeros_like(target, dtype=torch.bool)
    if data.draw(st.booleans()):
        ignored.view(-1)[::2] = True
    labels = target.masked_fill(ignored, 255)
    x = scores.detach().clone().requires_grad_(True)
    got = prior_shifted_cross_entropy(x, labels, log_prior, epsilon=epsilon,
                                      focal_gamma=focal, ignore_index=255)
    got.sum().backward()
    expected, shifted = _reference(scores, target, log_prior, epsilon, focal)
    compute = torch.float64 if scores.dtype == torch.float64 \
        else torch.float32
    expected = torch.where(ignored, torch.zeros_like(expected), expected)
    _assert_matches_reference(got, expected, shifted, compute)
    assert torch.isfinite(x.grad).all()
    assert (x.grad.movedim(1, -1)[ignored] == 0).all()


@FAST
@given(rows=st.integers(1, 5), classes=st.integers(1, 6),
       epsilon=st.sampled_from([0.0, -1.0, math.inf, math.nan]))
def test_prior_shifted_ce_rejects_bad_epsilon(rows, classes, epsilon):
    with pytest.raises(ValueError, match='epsilon must be a positive'):
        prior_shifted_cross_entropy(torch.zeros(rows, classes),
                                    torch.zeros(rows, dtype=torch.long),
                                    epsilon=epsilon)


def _sinkhorn_column_potentials(shifted, b, iterations=5000):
    """g of the U(a, b) plan diag(u)·exp(shifted)·diag(v), a = 1/B, in
    float64 (plain log-domain Sinkhorn, independent of the solver)."""
    log_a = torch.full((shifted.shape[0], ), -math.log(shifted.shape[0]),
                       dtype=torch.float64)
    log_b = b.log()
    g = torch.zeros(shifted.shape[1], dtype=torch.float64)
    for _ in range(iterations):
        f = log_a - torch.logsumexp(shifted + g, 1)
        g_new = log_b - torch.logsumexp(shifted + f[:, None], 0)
        if (g_new - g).abs().max() < 1e-12:
            return g_new
        g = g_new
    return g


@settings(max_examples=15, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**16), rows=st.integers(2, 6),
       classes=st.integers(2, 5), epsilon=st.sampled_from([1.0, 0.5]),
       dtype=st.sampled_from(DTYPES), with_prior=st.booleans())
def test_ua_b_loss_equals_float64_sinkhorn_reference(seed, rows, classes,
                                                     epsilon, dtype,
                                                     with_prior):
    """RE-OT Eq. 14: L_i = -log softmax_j(s_ij/ε + log Q_ij + g_j)_y with g
    the column log-potentials of the U(a, b) plan, b the batch label ratio."""
    gen = torch.Generator().manual_seed(seed)
    scores = (3 * torch.randn(rows, classes, generator=gen)).to(dtype)
    labels = torch.randint(0, classes, (rows, ), generator=gen)
    log_prior = torch.log_softmax(torch.randn(classes, generator=gen), 0) \
        if with_prior else None
    got = inverse_reot_loss_ab(scores, labels, None, log_prior, epsilon,
                               tol=1e-6, max_iter=5000)
    mass = torch.bincount(labels, minlength=classes).double()
    keep = mass > 0
    shifted = scores.double() / epsilon
    if log_prior is not None:
        shifted = shifted + log_prior.double()
    g = torch.full((classes, ), -math.inf, dtype=torch.float64)
    g[keep] = _sinkhorn_column_potentials(shifted[:, keep],
                                          mass[keep] / mass.sum())
    expected = -torch.log_softmax(shifted + g, 1).gather(
        1, labels[:, None]).squeeze(1)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), expected, atol=1e-4, rtol=1e-4)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**16), magnitude=st.sampled_from([1e3, 1e6]),
       epsilon=st.sampled_from([1.0, 1e-3]))
def test_ua_b_loss_extreme_scores_are_finite(seed, magnitude, epsilon):
    """Extreme scores / small ε under U(a, b): finite losses (the solver
    works in the log domain), never NaN."""
    gen = torch.Generator().manual_seed(seed)
    scores = magnitude * torch.randn(4, 3, generator=gen)
    labels = torch.tensor([0, 1, 2, 0])
    got = inverse_reot_loss_ab(scores, labels, None, None, epsilon,
                               max_iter=200, warn=False)
    assert torch.isfinite(got).all()


@FAST
@given(t1=st.integers(0, 100), ramp=st.integers(0, 100),
       tail=st.integers(0, 100), classes=st.integers(1, 100000),
       final_power=st.sampled_from([1.0, 1.03]))
def test_prior_schedule_is_monotone_bounded_and_official_lags(
        t1, ramp, tail, classes, final_power):
    """Eq. 34: λ(t) rises from 0 (t ≤ t1) to 1 (t ≥ t2), linearly in the
    paper's mode; the authors' mode never exceeds it; the power switches
    after t3."""
    t2, t3 = t1 + ramp, t1 + ramp + tail
    previous = (0.0, 0.0)
    for t in range(0, t3 + 3):
        paper, power = priors.prior_schedule(t, t1, t2, t3, 'paper',
                                             final_power=final_power)
        official, _ = priors.prior_schedule(t, t1, t2, t3, 'official',
                                            classes, final_power)
        assert 0.0 <= official <= paper + 1e-12 <= 1.0 + 1e-12
        assert paper >= previous[0] and official >= previous[1] - 1e-12
        if t <= t1:
            assert paper == official == 0.0
        elif t >= t2:
            assert paper == official == 1.0
        else:
            assert paper == pytest.approx((t - t1) / (t2 - t1))
        assert power == (final_power if t > t3 else 1.0)
        previous = (paper, official)


@FAST
@given(weight=st.floats(0.0, 1.0), classes=st.integers(1, 2000),
       zeros=st.booleans(), power=st.sampled_from([1.0, 1.03]))
def test_epoch_varying_prior_is_a_log_distribution(weight, classes, zeros,
                                                   power):
    """Eq. 15: Q = (1 - λ)·Uniform + λ·r sums to 1 (before the power) and is
    finite for counts with zeros (smoothed where the prior is formed)."""
    counts = torch.arange(classes, dtype=torch.float64) ** 2
    if not zeros:
        counts = counts + 1
    log_q = priors.log_epoch_varying_prior(priors.log_class_ratio(counts),
                                           weight, power)
    assert torch.isfinite(log_q).all()
    total = float((log_q / power).exp().double().sum())
    assert total == pytest.approx(1.0, rel=1e-5)
