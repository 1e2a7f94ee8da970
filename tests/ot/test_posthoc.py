"""Post-hoc correction math: OTLM Algorithm 1 (the Sinkhorn prediction), OTLM
Eq. 12, logit adjustment (Menon et al. 2021), EM (Saerens et al. 2002)."""
import pytest
import torch

from reot_mm.ot.otlm import apply_otlm, fit_otlm, otlm_loss
from reot_mm.ot.test_prior import estimate_test_prior_em
from reot_mm.ot.test_time import (kl_divergence, logit_adjustment,
                                  refined_marginal, sinkhorn_prediction)

D = torch.float64


def _long_tailed_logits(n=400, k=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    logits = torch.randn(n, k, generator=g, dtype=D)
    logits[torch.arange(n), y] += 2.0
    prior = torch.linspace(2.0, -2.0, k, dtype=D)  # head classes favoured
    return logits + prior, y


def _algorithm1_reference(z, mu, lam, iters=5000):
    """OTLM Algorithm 1 literally (kernel domain, rows 1, columns N μ)."""
    n, k = z.shape
    kern = z ** (1.0 / lam)
    r, c = torch.ones(n, dtype=D), mu * n
    v = torch.ones(k, dtype=D)
    for _ in range(iters):
        u = r / (kern @ v)
        v = c / (kern.T @ u)
    return u[:, None] * kern * v[None, :]


def test_algorithm1_matches_reference_plan():
    logits, _ = _long_tailed_logits()
    mu = torch.tensor([0.1, 0.1, 0.2, 0.2, 0.2, 0.2], dtype=D)
    for lam in (1.0, 0.5):
        res = sinkhorn_prediction(torch.log_softmax(logits, 1), mu, lam, tol=1e-12)
        ref = _algorithm1_reference(torch.softmax(logits, 1), mu, lam)
        torch.testing.assert_close(res.probs, ref / ref.sum(1, keepdim=True),
                                   atol=1e-8, rtol=0)
        assert torch.equal(res.pred_label, ref.argmax(1))


def test_lambda1_prediction_is_argmax_logz_plus_log_v():
    """λ = 1: Y = diag(u) Z diag(v), so pred = argmax(log Z + log v)."""
    logits, _ = _long_tailed_logits(seed=1)
    log_z = torch.log_softmax(logits, 1)
    res = sinkhorn_prediction(log_z, None, 1.0, tol=1e-10)
    assert torch.equal(res.pred_label, (log_z + res.g).argmax(1))
    plan = (res.f[:, None] + log_z + res.g[None, :]).exp()
    torch.testing.assert_close(plan.sum(1), torch.full((400, ), 1 / 400,
                                                       dtype=D), atol=1e-12,
                               rtol=0)


def test_refined_marginal_matches_mu_eq10():
    """Column constraint Y^T 1 = μ (Eq. 10) holds to 1e-6 in float64."""
    logits, _ = _long_tailed_logits(n=1000, k=8, seed=2)
    mu = torch.softmax(torch.randn(8, generator=torch.Generator()
                                   .manual_seed(3), dtype=D), 0)
    for lam in (1.0, 0.1, 1e-2):
        res = sinkhorn_prediction(torch.log_softmax(logits, 1), mu, lam, tol=1e-9,
                         max_iter=20000)
        marg = refined_marginal(res.probs)
        assert (marg - mu).abs().max() < 1e-6
        assert kl_divergence(marg, mu) < 1e-10
        torch.testing.assert_close(res.probs.sum(1), torch.ones(1000, dtype=D))


def test_sinkhorn_prediction_balances_long_tailed_predictions():
    logits, y = _long_tailed_logits(n=3000)
    plain = torch.bincount(logits.argmax(1), minlength=6)
    res = sinkhorn_prediction(torch.log_softmax(logits, 1), None, 1.0)
    hard = refined_marginal(res.probs, hard=True)
    assert plain.max() > 2 * plain.min()  # the input is long-tailed
    assert (hard - 1 / 6).abs().max() < 0.03
    assert (res.pred_label == y).double().mean() > (logits.argmax(1) == y) \
        .double().mean()


def test_otlm_identity_reproduces_sinkhorn_prediction():
    """W = I in Eq. 12 is plain post-hoc OT of softmax(Φ)."""
    logits, _ = _long_tailed_logits(seed=4)
    ot = sinkhorn_prediction(torch.log_softmax(logits, 1), None, 0.7, tol=1e-10)
    otlm = apply_otlm(torch.eye(6, dtype=D), logits, None, 0.7, tol=1e-10)
    torch.testing.assert_close(otlm.probs, ot.probs)
    assert torch.equal(otlm.pred_label, ot.pred_label)


def test_otlm_loss_eq12_gradient_matches_unrolled():
    logits, _ = _long_tailed_logits(n=60, k=4, seed=5)
    W = (torch.eye(4, dtype=D) + 0.1 * torch.randn(
        4, 4, generator=torch.Generator().manual_seed(0), dtype=D))
    grads = []
    for grad in ('implicit', 'unrolled'):
        w = W.clone().requires_grad_(True)
        otlm_loss(logits, w, None, 0.5, grad=grad, tol=1e-12,
                  max_iter=5000).backward()
        grads.append(w.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-7, rtol=1e-5)


def _distorted_problem(seed):
    """Balanced test set whose logits are distorted by a known per-class map.

    Clean scores φ (true class +2, unit noise) are observed as Φ = φ W*⁻¹
    with W*⁻¹ = diag(3, 2, 1, 0.5, 0.25): head classes inflated, tail classes
    compressed. The best linear cost is W* = diag(1/3, 1/2, 1, 2, 4).
    """
    g = torch.Generator().manual_seed(seed)
    n, k = 3000, 5
    y = torch.arange(n) % k
    phi = torch.randn(n, k, generator=g, dtype=D)
    phi[torch.arange(n), y] += 2.0
    scale = torch.tensor([3.0, 2.0, 1.0, 0.5, 0.25], dtype=D)
    return phi * scale, y, torch.diag(1 / scale)


def _balanced_accuracy(pred, y, k=5):
    return torch.stack([(pred[y == c] == c).double().mean()
                        for c in range(k)]).mean().item()


@pytest.mark.parametrize('seed', [0, 2])
def test_otlm_eq12_improves_balanced_accuracy_over_ot(seed):
    logits, y, w_star = _distorted_problem(seed)
    ot = sinkhorn_prediction(torch.log_softmax(logits, 1), None, 1.0)
    fit = fit_otlm(logits, None, 1.0, iters=20, lr=1e-2, weight_decay=1e-3,
                   optimizer='adam')
    otlm = apply_otlm(fit.W, logits, None, 1.0)
    best = apply_otlm(w_star, logits, None, 1.0)
    acc_ot, acc_otlm = (_balanced_accuracy(ot.pred_label, y),
                        _balanced_accuracy(otlm.pred_label, y))
    acc_best = _balanced_accuracy(best.pred_label, y)
    assert acc_otlm > acc_ot + 0.005, (acc_ot, acc_otlm)
    assert acc_best > acc_otlm  # the known linear cost is the ceiling here
    assert fit.losses[-1] < fit.losses[0]
    # W moved in the direction of W*: tail scale up relative to head scale
    assert fit.W[4, 4] / fit.W[0, 0] > 1.2


def test_fit_otlm_sgd_and_minibatch_run():
    logits, _, _ = _distorted_problem(1)
    fit = fit_otlm(logits[:500], None, 1.0, iters=3, lr=0.05,
                   optimizer='sgd', batch_size=200, grad='unrolled')
    assert fit.W.shape == (5, 5) and len(fit.losses) == 3
    assert all(torch.isfinite(torch.tensor(fit.losses)))


def test_logit_adjustment_menon():
    logits, _ = _long_tailed_logits()
    prior = torch.softmax(torch.linspace(2.0, -2.0, 6, dtype=D), 0)
    adj = logit_adjustment(logits, prior, tau=1.0)
    torch.testing.assert_close(adj, logits - prior.log())
    torch.testing.assert_close(logit_adjustment(logits, prior, 0.0), logits)


def test_em_recovers_planted_test_prior():
    """Saerens et al. 2002: max abs error < 0.02 with N = 20000."""
    g = torch.Generator().manual_seed(7)
    k, n = 5, 20000
    means = 2.5 * torch.eye(k, dtype=D)
    train_prior = torch.tensor([0.4, 0.25, 0.15, 0.12, 0.08], dtype=D)
    test_prior = torch.tensor([0.05, 0.1, 0.2, 0.25, 0.4], dtype=D)
    y = torch.multinomial(test_prior, n, replacement=True, generator=g)
    x = means[y] + torch.randn(n, k, generator=g, dtype=D)
    # exact (calibrated) posteriors under the training prior
    log_lik = -0.5 * ((x[:, None, :] - means[None]) ** 2).sum(-1)
    probs = torch.softmax(log_lik + train_prior.log(), 1)
    est = estimate_test_prior_em(probs, train_prior)
    assert (est - test_prior).abs().max() < 0.02
    naive = probs.mean(0)
    assert (naive - test_prior).abs().max() > 0.05  # EM is needed
    torch.testing.assert_close(est.sum(), torch.tensor(1.0, dtype=D))


def test_em_smoothing_is_the_dirichlet_map_fixed_point():
    """MAP-EM (Dirichlet(1 + α) prior on π): the estimate satisfies
    π_k = (Σ_n p(k|x_n; π) + α) / (N + K·α); α = 0 is the ML estimate, large
    α tends to uniform, and every class keeps mass ≥ α / (N + K·α) even when
    ML drives one to ~0 (a class no test sample looks like)."""
    g = torch.Generator().manual_seed(3)
    k, n = 4, 60
    train_prior = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=D)
    # class 3 never wins: ML-EM sends its mass to ~0
    logits = torch.randn(n, k, generator=g, dtype=D)
    logits[:, 3] -= 8.0
    probs = torch.softmax(logits, 1)
    ml = estimate_test_prior_em(probs, train_prior, max_iter=5000, tol=1e-14)
    assert ml[3] < 1e-3
    torch.testing.assert_close(
        estimate_test_prior_em(probs, train_prior, smoothing=0.0), ml,
        rtol=1e-6, atol=1e-7)
    for alpha in (0.5, 2.0):
        pi = estimate_test_prior_em(probs, train_prior, max_iter=5000,
                                    tol=1e-14, smoothing=alpha)
        post = probs * (pi / train_prior)
        post = post / post.sum(1, keepdim=True)
        expected = (post.sum(0) + alpha) / (n + k * alpha)
        torch.testing.assert_close(pi, expected, rtol=1e-9, atol=1e-12)
        assert pi.min() >= alpha / (n + k * alpha) - 1e-12
        torch.testing.assert_close(pi.sum(), torch.tensor(1.0, dtype=D))
    wide = estimate_test_prior_em(probs, train_prior, smoothing=1e9)
    torch.testing.assert_close(wide, torch.full((k, ), 1.0 / k, dtype=D),
                               rtol=0, atol=1e-6)
    for bad in (-1.0, float('nan'), float('inf'), 'x', True):
        with pytest.raises(ValueError, match='smoothing must be a finite '
                           'number >= 0'):
            estimate_test_prior_em(probs, train_prior, smoothing=bad)


def test_kl_divergence_values():
    p = torch.tensor([0.5, 0.5])
    assert kl_divergence(p, p) == 0.0
    assert kl_divergence(p, torch.tensor([0.25, 0.75])) == pytest.approx(
        0.5 * torch.log(torch.tensor(2.0)).item()
        + 0.5 * torch.log(torch.tensor(2 / 3)).item())
    assert kl_divergence(p, torch.tensor([1.0, 0.0])) == float('inf')


@pytest.mark.parametrize('lam', [0, -1.0, float('nan'), float('inf'), 'x'])
def test_bad_lambda(lam):
    with pytest.raises(ValueError, match='epsilon must be a positive'):
        sinkhorn_prediction(torch.zeros(4, 3), None, lam)


@pytest.mark.parametrize('mu,match', [
    ([0.5, 0.6, -0.1], 'non-negative'),
    ([0.2, 0.2, 0.2], 'sum to 1'),
    ([0.5, 0.5], r'shape \(3,\)'),
    ([float('nan'), 0.5, 0.5], 'finite'),
])
def test_bad_target_marginal(mu, match):
    with pytest.raises(ValueError, match='target_prior .*' + match):
        sinkhorn_prediction(torch.zeros(4, 3), torch.tensor(mu), 1.0)


def test_bad_shapes_and_values():
    with pytest.raises(ValueError, match=r'scores must have shape \(N, C\)'):
        sinkhorn_prediction(torch.zeros(4), None, 1.0)
    with pytest.raises(ValueError, match='scores must be finite or -inf'):
        sinkhorn_prediction(torch.tensor([[0.0, float('nan')]]), None, 1.0)
    with pytest.raises(ValueError, match=r'train_prior must have shape \(3,\)'):
        logit_adjustment(torch.zeros(4, 3), torch.ones(4) / 4)
    with pytest.raises(ValueError, match='train_prior must be positive'):
        logit_adjustment(torch.zeros(4, 3), torch.tensor([0.5, 0.5, 0.0]))
    with pytest.raises(ValueError, match='tau must be'):
        logit_adjustment(torch.zeros(4, 3), torch.ones(3) / 3, tau=-1)
    with pytest.raises(ValueError, match=r'W must be a \(3, 3\)'):
        apply_otlm(torch.eye(4), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="optimizer must be one of"):
        fit_otlm(torch.zeros(4, 3), optimizer='rmsprop')
    with pytest.raises(ValueError, match='probs rows must sum to 1'):
        estimate_test_prior_em(torch.ones(4, 3), torch.ones(3) / 3)


def test_sinkhorn_prediction_memory_modes_and_blocks_agree():
    """OTLM Alg. 1 solved with the in-place output (buffer), streamed
    Sinkhorn and tiny row blocks: same refined probabilities; the in-place
    softmax equals softmax(log Z / λ + g) (Eq. 11 rows of the plan)."""
    logits, _ = _long_tailed_logits(n=500, k=7, seed=7)
    log_z = torch.log_softmax(logits, 1)
    mu = torch.softmax(torch.randn(7, generator=torch.Generator()
                                   .manual_seed(8), dtype=D), 0)
    ref = sinkhorn_prediction(log_z, mu, 0.5, tol=1e-12)
    torch.testing.assert_close(ref.probs,
                               torch.softmax(log_z / 0.5 + ref.g, 1),
                               atol=1e-14, rtol=0)
    for memory, chunk in (('stream', None), ('stream', 3), ('buffer', 1)):
        res = sinkhorn_prediction(log_z, mu, 0.5, tol=1e-12, memory=memory,
                         chunk_size=chunk)
        torch.testing.assert_close(res.probs, ref.probs, atol=1e-10, rtol=0)
        assert torch.equal(res.pred_label, ref.pred_label)
    res32 = sinkhorn_prediction(log_z.float(), mu, 0.5, memory='stream', chunk_size=64)
    assert res32.probs.dtype == torch.float32
    assert (res32.probs.double() - ref.probs).abs().max() < 1e-5
    # the input is left untouched (the cost lives in the output tensor)
    torch.testing.assert_close(log_z, torch.log_softmax(logits, 1), atol=0,
                               rtol=0)


def test_refined_marginal_blocks_equal_fp64_mean():
    probs = torch.softmax(torch.randn(1001, 5, generator=torch.Generator()
                                      .manual_seed(9)), 1)
    expected = probs.double().mean(0)
    torch.testing.assert_close(refined_marginal(probs), expected, atol=1e-15,
                               rtol=1e-7)
    torch.testing.assert_close(refined_marginal(probs, chunk_size=7),
                               expected, atol=1e-15, rtol=1e-7)
    with pytest.raises(ValueError, match='scores must be finite or -inf'):
        sinkhorn_prediction(torch.full((3, 2), float('nan')))
