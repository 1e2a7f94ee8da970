"""Test-time correction of reot_mm/ot/test_time.py: OTLM Algorithm 1 (the
Sinkhorn prediction, Eq. 10-11), logit adjustment (Menon et al. 2021), KL.

OTLM: Peng et al., Optimal Transport for Long-Tailed Recognition with
Learnable Cost Matrix, ICLR 2022. The learned cost (OTLM Eq. 12) is tested in
tests/ot/test_otlm.py, the EM test prior in tests/ot/test_test_prior.py."""
import pytest
import torch

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


def test_logit_adjustment_menon():
    logits, _ = _long_tailed_logits()
    prior = torch.softmax(torch.linspace(2.0, -2.0, 6, dtype=D), 0)
    adj = logit_adjustment(logits, prior, tau=1.0)
    torch.testing.assert_close(adj, logits - prior.log())
    torch.testing.assert_close(logit_adjustment(logits, prior, 0.0), logits)


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
