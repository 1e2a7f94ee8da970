"""OTLM's learned linear cost (reot_mm/ot/otlm.py): Peng et al., Optimal
Transport for Long-Tailed Recognition with Learnable Cost Matrix, ICLR 2022,
Eq. 12 (the loss, its implicit and unrolled gradients, the fit)."""
import pytest
import torch

from reot_mm.ot.otlm import apply_otlm, fit_otlm, otlm_loss
from reot_mm.ot.test_time import sinkhorn_prediction

D = torch.float64


def _long_tailed_logits(n=400, k=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    logits = torch.randn(n, k, generator=g, dtype=D)
    logits[torch.arange(n), y] += 2.0
    prior = torch.linspace(2.0, -2.0, k, dtype=D)  # head classes favoured
    return logits + prior, y


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


def test_bad_cost_and_optimizer():
    with pytest.raises(ValueError, match=r'W must be a \(3, 3\)'):
        apply_otlm(torch.eye(4), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="optimizer must be one of"):
        fit_otlm(torch.zeros(4, 3), optimizer='rmsprop')
