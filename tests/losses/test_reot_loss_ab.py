"""Inverse RE-OT loss under the full constraints U(a, b) over the batch (RE-OT Eq. 14).

The U(a) form (Eq. 16) is covered by test_reot_loss.py; here the column
marginal b is enforced by a differentiable log-domain Sinkhorn.
"""
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reot_mm.losses import REOTLoss, inverse_reot_loss
from reot_mm.losses.reot_loss_ab import (inverse_reot_loss_ab,
                                         reot_column_potentials)
from reot_mm.ot.sinkhorn import reot_sinkhorn

B, C = 48, 6
COUNTS = torch.tensor([400., 200., 90., 40., 12., 4.])


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(B, C, generator=generator) * 2
    labels = torch.randint(0, C, (B, ), generator=generator)
    labels[:C] = torch.arange(C)  # every class present
    return logits, labels


def batch_ratio(labels, num_classes=C):
    counts = torch.bincount(labels, minlength=num_classes).double()
    return counts / counts.sum()


def test_eq14_drops_to_eq16_without_column_constraint(batch):
    """Dropping the column constraint (constraints='a') is exactly Eq. 16."""
    logits, labels = batch
    log_q = torch.log(COUNTS / COUNTS.sum()).float()
    soft = torch.softmax(torch.randn(B, C), -1)
    for target in (labels, soft):
        for prior in (None, log_q):
            expected = inverse_reot_loss(logits, target, prior, 0.8)
            got = inverse_reot_loss_ab(logits, target, None, prior, 0.8,
                                       constraints='a')
            assert torch.equal(got, expected)
    # the solver's U(a) potentials are g = 0: the shift log Q + g is log Q
    res = reot_sinkhorn(-logits, 1.0, None, None, log_q, constraints='a')
    assert torch.equal(res.g, torch.zeros(C))
    # and the module's default is the U(a) loss
    module = REOTLoss(class_counts=COUNTS)
    assert module.constraints == 'a'
    torch.testing.assert_close(
        module(logits, labels), F.cross_entropy(logits + log_q, labels))


def test_ab_equals_ua_when_b_is_the_ua_column_marginal(batch):
    """If b equals the column sums of the U(a) plan, that plan is already in
    U(a, b) and has the Eq. 8 form (v = 1): both losses coincide."""
    logits, labels = batch
    logits = logits.double()
    b = torch.softmax(logits, -1).mean(0)
    got = inverse_reot_loss_ab(logits, labels, b, tol=1e-12)
    torch.testing.assert_close(got, inverse_reot_loss(logits, labels),
                               atol=1e-9, rtol=1e-9)
    # any other b changes the loss
    other = inverse_reot_loss_ab(logits, labels, batch_ratio(labels), tol=1e-12)
    assert not torch.allclose(other, got, atol=1e-3)


def test_ab_loss_is_kl_to_pot_plan(batch):
    """Eq. 14: mean loss = KL(P̃ ‖ P) with P̃ = y/B and P the entropic OT plan
    in U(1/B, b), cross-checked against POT's sinkhorn_log."""
    ot = pytest.importorskip('ot')
    logits, labels = batch
    logits = logits.double()
    epsilon = 0.7
    b = batch_ratio(labels)
    a = np.full(B, 1.0 / B)
    plan = torch.from_numpy(ot.sinkhorn(a, b.numpy(), (-logits).numpy(), epsilon,
                                        method='sinkhorn_log', stopThr=1e-13,
                                        numItermax=100000))
    p_tilde = F.one_hot(labels, C).double() / B
    mask = p_tilde > 0
    kl = (p_tilde[mask] * (p_tilde[mask] / plan[mask]).log()).sum()
    loss = REOTLoss(prior='uniform', epsilon=epsilon, constraints='ab',
                    column_marginal='batch_ratio', sinkhorn_tol=1e-12)
    torch.testing.assert_close(loss(logits, labels), kl, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize('column_marginal, expected', [
    ('batch_ratio', None), ('class_ratio', COUNTS / COUNTS.sum()),
    ('uniform', torch.full((C, ), 1.0 / C))])
def test_batch_plan_marginals_are_a_and_b(batch, column_marginal, expected):
    logits, labels = batch
    loss = REOTLoss(prior='class_ratio', class_counts=COUNTS,
                    constraints='ab', column_marginal=column_marginal)
    b = loss.column_marginal_vector(labels, None, C)
    expected = batch_ratio(labels) if expected is None else expected.double()
    torch.testing.assert_close(b, expected)
    log_q = loss.log_prior(logits, labels)
    g, res = reot_column_potentials(logits, b, 1.0, log_q, tol=1e-7)
    plan = res.plan().double()
    torch.testing.assert_close(plan.sum(1), torch.full((B, ), 1.0 / B).double(),
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(plan.sum(0), expected, atol=1e-6, rtol=0)
    assert torch.equal(g, res.g)


def test_prior_column_marginal_follows_the_scheduled_prior(batch):
    """column_marginal='prior': b is the mass Q gives each class, so the
    λ(t) schedule of Eq. 15 still acts under U(a, b)."""
    logits, labels = batch
    loss = REOTLoss(prior='class_ratio', class_counts=COUNTS,
                    constraints='ab', prior_weight=0.5)
    log_q = loss.log_prior(logits, labels)
    b = loss.column_marginal_vector(labels, log_q, C)
    pi = (COUNTS / COUNTS.sum()).double()
    torch.testing.assert_close(b, 0.5 / C + 0.5 * pi)
    loss.set_prior_schedule(0.0)
    torch.testing.assert_close(
        loss.column_marginal_vector(labels, loss.log_prior(logits, labels), C),
        torch.full((C, ), 1.0 / C, dtype=torch.float64))


def test_class_wise_prior_is_absorbed_under_full_constraints(batch):
    """Prop. 1(2): for a fixed b a class-wise Q only rescales v; the U(a, b)
    loss is unchanged (under U(a) it is not)."""
    logits, labels = batch
    logits = logits.double()
    log_q = torch.log(COUNTS / COUNTS.sum()).double()
    b = batch_ratio(labels)
    with_q = inverse_reot_loss_ab(logits, labels, b, log_q, tol=1e-12)
    without = inverse_reot_loss_ab(logits, labels, b, None, tol=1e-12)
    torch.testing.assert_close(with_q, without, atol=1e-9, rtol=1e-9)
    assert not torch.allclose(inverse_reot_loss(logits, labels, log_q),
                              inverse_reot_loss(logits, labels), atol=1e-3)


@pytest.mark.parametrize('grad', ['implicit', 'unrolled'])
def test_gradcheck_float64(grad):
    generator = torch.Generator().manual_seed(5)
    logits = (torch.randn(7, 4, generator=generator, dtype=torch.float64)
              * 1.5).requires_grad_(True)
    labels = torch.tensor([0, 1, 1, 2, 3, 3, 0])
    log_q = torch.log(torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64))
    soft = torch.softmax(torch.randn(7, 4, generator=generator,
                                     dtype=torch.float64), -1)

    def loss_fn(x):
        return (inverse_reot_loss_ab(x, labels, None, log_q, 0.8, grad=grad,
                                     tol=1e-13, max_iter=100000).sum()
                + inverse_reot_loss_ab(x, soft, None, None, 1.0, grad=grad,
                                       tol=1e-13, max_iter=100000).sum())

    assert torch.autograd.gradcheck(loss_fn, (logits, ), atol=1e-6)
    # the gradient is not the U(a) one: g depends on the scores
    x = logits.detach().clone().requires_grad_(True)
    loss_fn(x).backward()
    y = logits.detach().clone().requires_grad_(True)
    (inverse_reot_loss(y, labels, log_q, 0.8).sum()
     + inverse_reot_loss(y, soft).sum()).backward()
    assert (x.grad - y.grad).abs().max() > 1e-3


def test_implicit_and_unrolled_gradients_agree(batch):
    logits, labels = batch
    grads = []
    for grad in ('implicit', 'unrolled'):
        x = logits.double().clone().requires_grad_(True)
        REOTLoss(prior='batch_ratio', constraints='ab', sinkhorn_grad=grad,
                 sinkhorn_tol=1e-12, sinkhorn_max_iter=100000)(x, labels).backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-9, rtol=1e-7)


def test_absent_classes_get_no_mass_and_no_gradient(batch):
    """b = batch ratio: classes absent from the batch are dropped from the
    plan (b_j = 0) and receive no gradient; their columns stay out of every
    row's softmax."""
    logits, labels = batch
    labels = labels.clamp(max=C - 3)  # classes C-2, C-1 absent
    x = logits.clone().requires_grad_(True)
    loss = REOTLoss(prior='batch_ratio', constraints='ab')
    value = loss(x, labels)
    value.backward()
    assert torch.isfinite(value)
    assert torch.equal(x.grad[:, -2:], torch.zeros(B, 2))
    b = batch_ratio(labels)
    g, _ = reot_column_potentials(logits, b)
    assert torch.isneginf(g[-2:]).all() and torch.isfinite(g[:-2]).all()
    # same value as solving on the present columns only
    sub = inverse_reot_loss_ab(logits[:, :-2], labels, b[:-2])
    torch.testing.assert_close(value, sub.mean())


def test_ignore_index_rows_stay_out_of_the_plan(batch):
    logits, labels = batch
    ignored = labels.clone()
    ignored[::5] = 255
    keep = ignored != 255
    loss = REOTLoss(prior='uniform', constraints='ab',
                    column_marginal='batch_ratio', reduction='none')
    per_sample = loss(logits, ignored, ignore_index=255)
    assert torch.equal(per_sample[~keep], torch.zeros(int((~keep).sum())))
    expected = inverse_reot_loss_ab(logits[keep], labels[keep])
    torch.testing.assert_close(per_sample[keep], expected)


def test_large_input_passes_gradient_to_a_differentiable_prior():
    """A log Q that needs a gradient (log Q + g under U(a, b)) gets it, also
    on large inputs (2^20 scores, where a fused kernel without one used to
    run)."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(1024, 1024, generator=generator)
    labels = torch.randint(0, 1024, (1024, ), generator=generator)
    shift = torch.randn(1024, generator=generator).requires_grad_(True)
    inverse_reot_loss(logits, labels, shift).sum().backward()
    reference = shift.detach().clone().requires_grad_(True)
    F.cross_entropy(logits + reference, labels, reduction='sum').backward()
    torch.testing.assert_close(shift.grad, reference.grad, atol=1e-4, rtol=1e-4)


def test_module_trains_and_keeps_state_dict(batch):
    logits, labels = batch
    loss = REOTLoss(prior='interpolated', class_counts=COUNTS,
                    constraints='ab', column_marginal='prior')
    assert set(loss.state_dict()) == set(REOTLoss().state_dict())
    x = logits.clone().requires_grad_(True)
    loss(x, labels).backward()
    assert torch.isfinite(x.grad).all()
    # half-precision scores are solved in fp32
    value = loss(logits.half(), labels)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    assert loss.needs_class_counts
    assert REOTLoss(prior='uniform', constraints='ab',
                    column_marginal='class_ratio').needs_class_counts
    assert not REOTLoss(prior='uniform', constraints='ab').needs_class_counts


def test_non_convergence_warns_once(batch):
    logits, labels = batch
    loss = REOTLoss(prior='uniform', constraints='ab',
                    column_marginal='uniform', sinkhorn_max_iter=1,
                    sinkhorn_tol=1e-12)
    with pytest.warns(UserWarning, match='did not reach sinkhorn_tol'):
        assert torch.isfinite(loss(logits * 3, labels))
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        loss(logits * 3, labels)


def test_infeasible_and_bad_input(batch):
    logits, labels = batch
    present = labels.clamp(max=C - 2)  # class C-1 absent
    # batch-ratio prior (Q = 0 for an absent class) but b with mass there
    for column_marginal in ('class_ratio', 'uniform'):
        loss = REOTLoss(prior='batch_ratio', class_counts=COUNTS,
                        constraints='ab', column_marginal=column_marginal)
        with pytest.raises(ValueError, match=r'infeasible U\(a, b\).*\[5\]'):
            loss(logits, present)
    # a target on a class without column mass
    b = batch_ratio(present).clone()
    soft = F.one_hot(present, C).float()
    soft[0] = torch.full((C, ), 1.0 / C)
    with pytest.raises(ValueError, match='target puts mass on classes'):
        inverse_reot_loss_ab(logits, soft, b)
    with pytest.raises(ValueError, match='constraints must be one of'):
        REOTLoss(constraints='b')
    with pytest.raises(ValueError, match='column_marginal must be one of'):
        REOTLoss(constraints='ab', column_marginal='test_labels')
    with pytest.raises(ValueError, match='sinkhorn_grad must be one of'):
        REOTLoss(constraints='ab', sinkhorn_grad='none')
    with pytest.raises(ValueError, match='sinkhorn_tol'):
        REOTLoss(constraints='ab', sinkhorn_tol=0)
    with pytest.raises(ValueError, match='sinkhorn_max_iter'):
        REOTLoss(constraints='ab', sinkhorn_max_iter=0)
    with pytest.raises(ValueError, match="undefined for prior='ldam'"):
        REOTLoss(prior='ldam', constraints='ab')
    with pytest.raises(ValueError, match='epsilon must be a positive'):
        reot_column_potentials(logits, batch_ratio(labels), 0.0)
    with pytest.raises(ValueError, match=r'column_marginal must have shape \(6,\)'):
        reot_column_potentials(logits, torch.ones(C + 1) / (C + 1))
    with pytest.raises(ValueError, match='non-negative'):
        reot_column_potentials(logits, torch.tensor([1.5, -.5, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match='grad must be one of'):
        inverse_reot_loss_ab(logits, labels, grad='none')
    assert math.isfinite(float(inverse_reot_loss_ab(logits, labels).mean()))
