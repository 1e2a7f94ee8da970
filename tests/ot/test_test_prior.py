"""The EM test-prior estimate of reot_mm/ot/test_prior.py (Saerens et al.,
Adjusting the Outputs of a Classifier to New a Priori Probabilities, Neural
Computation 2002), ML and Dirichlet-MAP forms."""
import pytest
import torch

from reot_mm.ot.test_prior import estimate_test_prior_em

D = torch.float64


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


def test_bad_probs():
    with pytest.raises(ValueError, match='probs rows must sum to 1'):
        estimate_test_prior_em(torch.ones(4, 3), torch.ones(3) / 3)
