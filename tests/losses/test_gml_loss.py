"""GML loss (Suh and Seo, ICML 2023): Eq. 3/5/11 (L_GML), Eq. 10, L_τ, Eq. 7 (L_cls), L_KD."""
import math
import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reot_mm.losses import GMLLoss
from reot_mm.losses.gml_loss import (class_log_mean_exp, cosine_classifier_loss,
                                     distillation_loss, gml_loss,
                                     gml_temperature_loss)


def unit(*shape, seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=generator, dtype=dtype), dim=-1)


def problem(batch=5, classes=4, per_class=(3, 1, 2, 4), dim=6, seed=0):
    query = unit(batch, dim, seed=seed)
    key_labels = torch.repeat_interleave(torch.arange(classes),
                                         torch.tensor(per_class))
    keys = unit(len(key_labels), dim, seed=seed + 1)
    target = torch.arange(batch) % classes
    return query, keys, key_labels, target


def eq5_by_hand(query, keys, key_labels, target, tau, log_prior, alpha):
    """GML Eq. 5 / 11 transcribed with Python loops (float64)."""
    losses = []
    for b in range(query.shape[0]):
        terms = []
        for c in range(len(log_prior)):
            members = [k for k in range(keys.shape[0]) if key_labels[k] == c]
            mean = sum(math.exp(float(query[b] @ keys[k]) / tau)
                       for k in members) / len(members)
            terms.append(math.log(mean) + alpha * float(log_prior[c]))
        log_norm = math.log(sum(math.exp(t) for t in terms))
        losses.append(log_norm - terms[int(target[b])])
    return torch.tensor(losses, dtype=torch.float64)


@pytest.mark.parametrize('alpha', [0.0, 0.2, 1.0])
def test_eq5_matches_a_direct_transcription(alpha):
    query, keys, key_labels, target = problem()
    log_prior = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64).log()
    got = gml_loss(query, keys, key_labels, target, 0.2, log_prior, alpha)
    expected = eq5_by_hand(query, keys, key_labels, target, 0.2, log_prior, alpha)
    torch.testing.assert_close(got, expected)


def test_balanced_case_is_eq10_and_bounds_supervised_contrastive():
    """GML Eq. 10: equal |Z_c| and η_c give -log(Σ_{Z_y} e / Σ_Z e), and by
    Jensen L_GML <= SupCon - log m (the paper's sum form is looser still)."""
    classes, per_class, tau = 3, 4, 0.1
    query, keys, key_labels, target = problem(batch=6, classes=classes,
                                              per_class=(per_class, ) * classes)
    uniform = torch.full((classes, ), -math.log(classes), dtype=torch.float64)
    loss = gml_loss(query, keys, key_labels, target, tau, uniform, alpha=1.0)
    logits = query @ keys.t() / tau
    positive = key_labels.view(1, -1) == target.view(-1, 1)
    eq10 = -(torch.logsumexp(logits.masked_fill(~positive, -math.inf), 1)
             - torch.logsumexp(logits, 1))
    torch.testing.assert_close(loss, eq10)
    log_ratio = logits - torch.logsumexp(logits, 1, keepdim=True)
    supcon = -(log_ratio * positive).sum(1) / positive.sum(1)
    assert (loss <= supcon - math.log(per_class) + 1e-12).all()
    assert (loss < supcon - math.log(per_class) - 1e-6).any()  # strict somewhere
    assert (-loss >= (log_ratio * positive).sum(1)).all()  # Eq. 10 as printed


def test_alpha_scales_the_log_prior():
    query, keys, key_labels, target = problem()
    log_prior = torch.tensor([0.6, 0.25, 0.1, 0.05], dtype=torch.float64).log()
    zero = torch.zeros(4, dtype=torch.float64)
    # α = 0: no logit adjustment, whatever the prior
    torch.testing.assert_close(
        gml_loss(query, keys, key_labels, target, 0.3, log_prior, alpha=0.0),
        gml_loss(query, keys, key_labels, target, 0.3, zero, alpha=1.0))
    # α = 1 is the α = 0 class likelihood plus log p(c) inside the softmax
    log_like, _ = class_log_mean_exp(query @ keys.t() / 0.3, key_labels, 4)
    torch.testing.assert_close(
        gml_loss(query, keys, key_labels, target, 0.3, log_prior, alpha=1.0),
        F.cross_entropy(log_like + log_prior, target, reduction='none'))
    different = gml_loss(query, keys, key_labels, target, 0.3, log_prior, 1.0)
    assert not torch.allclose(different, gml_loss(
        query, keys, key_labels, target, 0.3, log_prior, 0.0))


def test_class_likelihood_is_a_log_mean_not_a_log_sum():
    """Duplicating every key of a class leaves the mixture (a mean) unchanged;
    a log-sum-exp would add log 2 to that class."""
    query, keys, key_labels, target = problem()
    log_prior = torch.zeros(4, dtype=torch.float64)
    twice = key_labels == 2
    keys2 = torch.cat([keys, keys[twice]])
    labels2 = torch.cat([key_labels, key_labels[twice]])
    base = gml_loss(query, keys, key_labels, target, 0.2, log_prior)
    torch.testing.assert_close(
        gml_loss(query, keys2, labels2, target, 0.2, log_prior), base)
    log_mean, counts = class_log_mean_exp(query @ keys.t() / 0.2, key_labels, 4)
    log_sum = torch.logsumexp(
        (query @ keys.t() / 0.2).unsqueeze(1).masked_fill(
            key_labels.view(1, 1, -1) != torch.arange(4).view(1, -1, 1),
            -math.inf), dim=2)
    torch.testing.assert_close(log_mean, log_sum - counts.log())
    assert counts[0].tolist() == [3, 1, 2, 4]


def masked_log_mean_exp(scores, key_labels, num_classes):
    member = key_labels.view(1, 1, -1) == torch.arange(num_classes).view(1, -1, 1)
    total = torch.logsumexp(scores.unsqueeze(1).masked_fill(~member, -math.inf), 2)
    return total - member.sum(2).log()


def test_rows_that_underflow_fall_back_to_per_class_shifts():
    """Row 1 spans 400 (float32 exp underflows below ~-87 from its maximum),
    row 0 stays in range: both must equal a masked float64 log-sum-exp."""
    key_labels = torch.tensor([0, 0, 1, 1, 2, 2])
    scores = torch.tensor([[1.0, 2.0, 0.5, -1.0, 3.0, 0.0],
                           [200.0, 150.0, -200.0, -190.0, 10.0, -5.0]])
    got, _ = class_log_mean_exp(scores.clone().requires_grad_(), key_labels, 3)
    expected = masked_log_mean_exp(scores.double(), key_labels, 3)
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-5)
    leaf = scores.clone().requires_grad_()
    class_log_mean_exp(leaf, key_labels, 3)[0].sum().backward()
    reference = scores.double().requires_grad_()
    masked_log_mean_exp(reference, key_labels, 3).sum().backward()
    torch.testing.assert_close(leaf.grad.double(), reference.grad)


def test_same_sample_exclusion_only_in_the_temperature_term():
    query, keys, key_labels, target = problem()
    log_prior = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64).log()
    sample_idx = torch.arange(100, 105)
    far = torch.arange(-len(key_labels), 0)  # never a dataset index
    # key 0 (class 0) and key 7 (class 3) come from samples 100 and 103
    own = far.clone()
    own[0], own[7] = 100, 103
    tau = torch.tensor(0.25, dtype=torch.float64)
    assert target[0] == 0 and target[3] == 3
    torch.testing.assert_close(  # L_GML ignores indices
        gml_loss(query, keys, key_labels, target, tau, log_prior),
        gml_loss(query, keys, key_labels, target, tau, log_prior))
    tau_far, valid = gml_temperature_loss(query, keys, key_labels, target, tau,
                                          sample_idx, far, log_prior)
    tau_own, _ = gml_temperature_loss(query, keys, key_labels, target, tau,
                                      sample_idx, own, log_prior)
    assert valid.all()
    # without matches L_τ has the value of L_GML
    torch.testing.assert_close(tau_far, gml_loss(query, keys, key_labels, target,
                                                 tau, log_prior))
    changed = (tau_own - tau_far).abs() > 1e-12
    assert changed.tolist() == [True, False, False, True, False]
    # sample 0 sees the queue without key 0, sample 3 without key 7
    for row, key in ((0, 0), (3, 7)):
        keep = torch.arange(len(key_labels)) != key
        expected = gml_loss(query[row:row + 1], keys[keep], key_labels[keep],
                            target[row:row + 1], tau, log_prior)
        torch.testing.assert_close(tau_own[row:row + 1], expected)


def test_gradients_split_between_the_two_terms():
    query, keys, key_labels, target = problem()
    query = query.clone().requires_grad_(True)
    keys = keys.clone().requires_grad_(True)
    log_tau = torch.tensor(math.log(0.2), dtype=torch.float64, requires_grad=True)
    log_prior = torch.zeros(4, dtype=torch.float64)
    gml_loss(query, keys, key_labels, target, log_tau.exp(), log_prior).sum().backward()
    assert log_tau.grad is None  # τ_g detached in L_GML
    assert query.grad.abs().sum() > 0 and keys.grad.abs().sum() > 0
    query.grad = keys.grad = None
    loss, _ = gml_temperature_loss(query, keys, key_labels, target, log_tau.exp(),
                                   torch.arange(5), torch.arange(-10, 0), log_prior)
    loss.sum().backward()
    assert query.grad is None and keys.grad is None  # similarities detached
    assert log_tau.grad.abs() > 0
    # the gradient of L_τ w.r.t. θ matches finite differences

    def value(theta):
        return gml_temperature_loss(query.detach(), keys.detach(), key_labels,
                                    target, theta.exp(), torch.arange(5),
                                    torch.arange(-10, 0), log_prior)[0].sum()
    assert torch.autograd.gradcheck(value, (log_tau.detach().requires_grad_(),))


def test_nan_free_with_few_entries_and_tiny_temperatures():
    # class 1 has one entry, from the query's own sample: L_τ has no other
    # entry of that class -> the sample is invalid (0), not inf/NaN
    query, keys, key_labels, target = problem(per_class=(3, 1, 2, 4))
    query, keys = query.float(), keys.float()
    sample_idx = torch.arange(5)
    key_idx = torch.full((10, ), -1)
    key_idx[3] = 1  # the single class-1 entry is sample 1's own (target 1)
    log_tau = torch.tensor(math.log(0.1), requires_grad=True)
    loss, valid = gml_temperature_loss(query, keys, key_labels, target,
                                       log_tau.exp(), sample_idx, key_idx,
                                       torch.zeros(4))
    assert valid.tolist() == [True, False, True, True, True]
    assert torch.isfinite(loss).all() and loss[1] == 0
    loss.sum().backward()
    assert torch.isfinite(log_tau.grad)
    # τ_g = 1e-3: scores span 2000, beyond float32 exp range with a shared
    # shift; the per-class shift keeps every class finite
    q = query.clone().requires_grad_(True)
    tiny = gml_loss(q, keys, key_labels, target, 1e-3, torch.zeros(4))
    assert torch.isfinite(tiny).all()
    tiny.sum().backward()
    assert torch.isfinite(q.grad).all()
    reference = gml_loss(query.double(), keys.double(), key_labels, target,
                         1e-3, torch.zeros(4, dtype=torch.float64))
    torch.testing.assert_close(tiny.double(), reference, rtol=1e-4, atol=1e-2)
    # half-precision inputs are reduced in float32
    half = gml_loss(query.half(), keys.half(), key_labels, target, 0.1,
                    torch.zeros(4))
    assert half.dtype == torch.float32 and torch.isfinite(half).all()


def test_empty_classes_drop_out_and_an_empty_target_class_is_an_error():
    query, keys, key_labels, target = problem(per_class=(3, 1, 2, 4))
    # relabel class 1's only key as class 0: class 1 has no entry
    labels = key_labels.clone()
    labels[3] = 0
    log_mean, counts = class_log_mean_exp(query @ keys.t(), labels, 4)
    assert torch.isinf(log_mean[:, 1]).all() and (counts[:, 1] == 0).all()
    keep = target != 1
    loss = gml_loss(query[keep], keys, labels, target[keep], 0.2,
                    torch.zeros(4, dtype=torch.float64))
    assert torch.isfinite(loss).all()
    with pytest.raises(ValueError, match='no queue entries'):
        gml_loss(query, keys, labels, target, 0.2, torch.zeros(4, dtype=torch.float64))


def test_cosine_classifier_loss_is_eq7():
    cosine = torch.rand(6, 5) * 2 - 1
    target = torch.tensor([0, 1, 2, 3, 4, 0])
    log_prior = torch.tensor([0.4, 0.3, 0.15, 0.1, 0.05]).log()
    expected = -torch.log_softmax(cosine * 30 + log_prior, 1)[torch.arange(6), target]
    torch.testing.assert_close(
        cosine_classifier_loss(cosine, target, 1 / 30, log_prior), expected)


def test_cosine_classifier_loss_gradient_matches_eq7():
    """L_cls through the shared prior-shifted cross-entropy: values and
    cosine gradients equal CE(cos/τ_s + log p, y) written out, to 1e-6."""
    generator = torch.Generator().manual_seed(2)
    cosine = torch.rand(7, 4, generator=generator) * 2 - 1
    target = torch.tensor([0, 1, 2, 3, 3, 0, 1])
    log_prior = torch.tensor([50.0, 20.0, 5.0, 2.0]).log_softmax(0)
    got_cos = cosine.clone().requires_grad_()
    got = cosine_classifier_loss(got_cos, target, 1 / 30, log_prior)
    ref_cos = cosine.clone().requires_grad_()
    ref = F.cross_entropy(ref_cos / (1 / 30) + log_prior, target,
                          reduction='none')
    got.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(got_cos.grad, ref_cos.grad, rtol=0, atol=1e-6)


def test_distillation_loss():
    student = torch.rand(4, 5) * 2 - 1
    teacher = torch.rand(4, 5) * 2 - 1
    T, tau_s = 4.0, 1 / 30
    p_t = torch.softmax(teacher / (tau_s * T), 1)
    log_p_s = torch.log_softmax(student / (tau_s * T), 1)
    expected = T ** 2 * (p_t * (p_t.log() - log_p_s)).sum(1).mean()
    torch.testing.assert_close(distillation_loss(student, teacher, tau_s, T),
                               expected)
    assert distillation_loss(teacher, teacher, tau_s, T).abs() < 1e-6
    with pytest.raises(ValueError, match='teacher_scores'):
        distillation_loss(student, teacher[:, :3], tau_s, T)


def module_inputs(batch=6, classes=4, dim=8):
    query, keys, key_labels, target = problem(batch, classes, (2, 3, 2, 5), dim)
    cosine = torch.rand(batch, classes) * 2 - 1
    return dict(cls_score=cosine.float(), target=target, query=query.float(),
                keys=keys.float(), key_labels=key_labels,
                key_indices=torch.arange(-12, 0), sample_indices=torch.arange(batch),
                teacher_scores=(torch.rand(batch, classes) * 2 - 1))


def test_module_total_and_weights():
    counts = [50, 20, 5, 2]
    inputs = module_inputs()
    loss = GMLLoss(num_classes=4, tau_g=0.1, alpha=1.0, cls_weight=0.5,
                   gml_weight=2.0, kd_weight=1.0, class_counts=counts)
    inputs['query'].requires_grad_(True)
    out = loss(**inputs)
    assert set(out) == {'loss_cls', 'loss_gml', 'loss_tau', 'loss_kd', 'tau_g'}
    log_prior = (torch.tensor(counts, dtype=torch.float64) / sum(counts)).log().float()
    torch.testing.assert_close(out['loss_cls'], 0.5 * cosine_classifier_loss(
        inputs['cls_score'], inputs['target'], 1 / 30, log_prior).mean())
    torch.testing.assert_close(out['loss_gml'], 2.0 * gml_loss(
        inputs['query'], inputs['keys'], inputs['key_labels'], inputs['target'],
        0.1, log_prior).mean())
    torch.testing.assert_close(out['loss_kd'], distillation_loss(
        inputs['cls_score'], inputs['teacher_scores'], 1 / 30, 4.0))
    torch.testing.assert_close(out['tau_g'], torch.tensor(0.1))
    # only L_τ reaches θ; it is named for paramwise_cfg (no weight decay)
    assert [n for n, _ in loss.named_parameters()] == ['log_tau_g']
    out['loss_gml'].backward(retain_graph=True)
    assert loss.log_tau_g.grad is None
    out['loss_tau'].backward()
    assert loss.log_tau_g.grad != 0


def test_module_fixed_temperature_and_no_kd():
    loss = GMLLoss(tau_g=0.07, trainable_tau=False, class_counts=[5, 4, 3, 2])
    inputs = module_inputs()
    inputs.pop('teacher_scores')
    out = loss(**inputs)
    assert set(out) == {'loss_cls', 'loss_gml', 'tau_g'}
    assert list(loss.named_parameters()) == []
    assert 'log_tau_g' in loss.state_dict()


def test_module_state_and_bad_input():
    loss = GMLLoss(kd_weight=1.0)
    inputs = module_inputs()
    with pytest.raises(RuntimeError, match='ClassStatisticsHook'):
        loss(**inputs)
    loss.set_class_counts([5, 4, 3, 2])
    state = loss.state_dict()
    restored = GMLLoss(kd_weight=1.0)
    restored.load_state_dict(state)
    assert restored.class_counts.tolist() == [5, 4, 3, 2]
    torch.testing.assert_close(restored(**inputs)['loss_cls'],
                               loss(**inputs)['loss_cls'])
    inputs.pop('teacher_scores')
    with pytest.raises(ValueError, match='teacher_scores'):
        loss(**inputs)
    with pytest.raises(ValueError, match='tau_g'):
        GMLLoss(tau_g=0.0)
    with pytest.raises(ValueError, match='alpha'):
        GMLLoss(alpha=-1)
    with pytest.raises(ValueError, match='num_classes'):
        GMLLoss(num_classes=3, class_counts=[1, 2])
    with pytest.raises(ValueError, match='integer labels'):
        GMLLoss(class_counts=[1, 2, 3, 4])(**dict(
            module_inputs(), target=torch.zeros(6)))


def test_non_finite_empty_batch_and_empty_queue_are_clear_errors():
    """NaN / inf inputs name the argument instead of returning loss=nan; an
    empty batch or queue is an error, not an IndexError."""
    loss = GMLLoss(class_counts=[5, 4, 3, 2], kd_weight=1.0)
    inputs = module_inputs()
    for name, row in (('cls_score', 1), ('query', 2), ('keys', 3),
                      ('teacher_scores', 0)):
        bad = dict(inputs)
        bad[name] = inputs[name].clone()
        bad[name][row, 0] = float('nan')
        with pytest.raises(ValueError, match=rf'{name} contains 1 non-finite '
                           rf'values \(rows \[{row}\]\); expected finite'):
            loss(**bad)
    empty_batch = dict(inputs, cls_score=inputs['cls_score'][:0],
                       target=inputs['target'][:0], query=inputs['query'][:0],
                       sample_indices=inputs['sample_indices'][:0],
                       teacher_scores=inputs['teacher_scores'][:0])
    with pytest.raises(ValueError, match='target has no samples'):
        loss(**empty_batch)
    empty_queue = dict(inputs, keys=inputs['keys'][:0],
                       key_labels=inputs['key_labels'][:0],
                       key_indices=inputs['key_indices'][:0])
    with pytest.raises(ValueError, match='keys .* has no entries'):
        loss(**empty_queue)
    query, keys, key_labels, target = problem()
    with pytest.raises(ValueError, match='query has no rows'):
        gml_loss(query[:0], keys, key_labels, target[:0], 0.1, num_classes=4)
    with pytest.raises(ValueError, match='keys .* has no entries'):
        gml_temperature_loss(query, keys[:0], key_labels[:0], target, 0.1,
                             num_classes=4)
    with pytest.raises(ValueError, match='no columns'):
        class_log_mean_exp(torch.zeros(2, 0), key_labels[:0], 4)
    with pytest.raises(ValueError, match=r'target must be \(5,\)'):
        gml_loss(query, keys, key_labels, target[:3], 0.1, num_classes=4)
    # finite inputs whose scores overflow: a temperature far too small
    with pytest.raises(FloatingPointError, match='overflows'):
        gml_loss(query.float() * 1e20, keys.float() * 1e20, key_labels,
                 target, 0.1, num_classes=4)


# --------------------------------------------------------- property tests
PROPERTY = settings(max_examples=30, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


def gml_reference(query, keys, key_labels, target, tau, log_prior, alpha,
                  exclude=None):
    """GML Eq. 5 / 11 per query in float64 with explicit loops over classes
    (classes without entries drop out); None where the own class is empty."""
    losses = []
    for b in range(query.shape[0]):
        terms = {}
        for c in range(log_prior.shape[0]):
            members = [k for k in range(keys.shape[0])
                       if key_labels[k] == c
                       and (exclude is None or not exclude[b, k])]
            if members:
                sims = torch.stack([query[b] @ keys[k] / tau for k in members])
                terms[c] = (torch.logsumexp(sims, 0) - math.log(len(members))
                            + alpha * log_prior[c])
        own = int(target[b])
        losses.append(None if own not in terms else
                      torch.logsumexp(torch.stack(list(terms.values())), 0)
                      - terms[own])
    return losses


@st.composite
def gml_problem(draw):
    """Queries, a class-wise queue (classes may have no entry), labels,
    class counts with zeros or one class, dtypes and zero-length features."""
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    classes = draw(st.integers(1, 4))
    per_class = draw(st.lists(st.integers(0, 3), min_size=classes,
                              max_size=classes).filter(lambda c: sum(c) > 0))
    key_labels = torch.repeat_interleave(torch.arange(classes),
                                         torch.tensor(per_class))
    batch = draw(st.integers(1, 5))
    dim = draw(st.integers(1, 4))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    query = F.normalize(torch.randn(batch, dim, generator=generator,
                                    dtype=torch.float64), dim=1)
    if draw(st.booleans()):
        query[0] = 0.0  # a zero query: every class equally likely
    keys = F.normalize(torch.randn(len(key_labels), dim, generator=generator,
                                   dtype=torch.float64), dim=1)
    counts = draw(st.lists(st.integers(0, 100), min_size=classes,
                           max_size=classes).filter(lambda c: sum(c) > 0))
    return dict(query=query.to(dtype), keys=keys.to(dtype),
                key_labels=key_labels,
                target=torch.randint(classes, (batch, ), generator=generator),
                sample_indices=torch.arange(batch),
                key_indices=torch.randint(-2, batch, (len(key_labels), ),
                                          generator=generator),
                counts=counts, tau=draw(st.sampled_from([0.02, 0.1, 1.0])),
                alpha=draw(st.sampled_from([0.0, 0.5, 1.0])))


@PROPERTY
@given(gml_problem())
def test_property_gml_and_tau_losses_equal_the_reference(problem):
    """L_GML and L_τ are finite and equal the float64 reference, or L_GML is
    a clear error when a sample's class has no queue entry."""
    counts = torch.tensor(problem['counts'], dtype=torch.float64).clamp(min=1)
    log_prior = (counts / counts.sum()).log()
    args = (problem['query'], problem['keys'], problem['key_labels'],
            problem['target'])
    tau, alpha = problem['tau'], problem['alpha']
    reference = gml_reference(*[a.double() if a.is_floating_point() else a
                                for a in args], tau, log_prior, alpha)
    tolerance = dict(rtol=1e-4, atol=1e-4 / tau)
    if any(value is None for value in reference):
        with pytest.raises(ValueError, match='have no queue entries'):
            gml_loss(*args, tau, log_prior, alpha)
    else:
        got = gml_loss(*args, tau, log_prior, alpha)
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got.double(), torch.stack(reference),
                                   **tolerance)
    exclude = problem['sample_indices'][:, None] == \
        problem['key_indices'][None, :]
    tau_losses, valid = gml_temperature_loss(
        *args, torch.tensor(tau), problem['sample_indices'],
        problem['key_indices'], log_prior, alpha)
    expected = gml_reference(*[a.double() if a.is_floating_point() else a
                               for a in args], tau, log_prior, alpha, exclude)
    assert valid.tolist() == [value is not None for value in expected]
    assert torch.isfinite(tau_losses).all()
    for got_value, value in zip(tau_losses, expected):
        if value is not None:
            torch.testing.assert_close(got_value.double(), value, **tolerance)


@PROPERTY
@given(gml_problem(), st.sampled_from(['cls_score', 'query', 'keys']),
       st.sampled_from([float('nan'), float('inf')]))
def test_property_gml_module_names_a_non_finite_input(problem, name, value):
    """GMLLoss raises a ValueError naming the non-finite input (never returns
    loss=nan), whatever the shapes and counts."""
    classes = len(problem['counts'])
    batch = problem['query'].shape[0]
    inputs = dict(cls_score=torch.rand(batch, classes) * 2 - 1,
                  target=problem['target'], query=problem['query'].clone(),
                  keys=problem['keys'].clone(),
                  key_labels=problem['key_labels'],
                  key_indices=problem['key_indices'],
                  sample_indices=problem['sample_indices'])
    # every class gets an entry, so L_GML is defined
    inputs['keys'] = torch.cat([inputs['keys'], F.normalize(
        torch.ones(classes, inputs['keys'].shape[1],
                   dtype=inputs['keys'].dtype), dim=1)])
    inputs['key_labels'] = torch.cat([inputs['key_labels'],
                                      torch.arange(classes)])
    inputs['key_indices'] = torch.cat([inputs['key_indices'],
                                       torch.full((classes, ), -5)])
    inputs[name].view(-1)[0] = value
    loss = GMLLoss(class_counts=problem['counts'])
    try:
        out = loss(**inputs)
    except ValueError as error:
        assert re.search(f'{name} contains .* non-finite values .*expected '
                         'finite', str(error)), str(error)
        return
    # no error only where the value cannot matter (a single class: every
    # softmax over classes is 1): the same losses with it finite
    assert classes == 1 and all(map(torch.isfinite, out.values()))
    inputs[name].view(-1)[0] = 0.5
    clean = loss(**inputs)
    assert all(torch.equal(out[key], clean[key]) for key in out)
