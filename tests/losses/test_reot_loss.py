"""Inverse RE-OT loss (RE-OT Eq. 14/16 under U(a)): one test per Table 1 row.

Each classic loss is written out here from its own paper's formula, so the
RE-OT configuration is compared against an independent transcription.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from reot_mm.losses import REOTLoss
from reot_mm.losses import priors

torch.manual_seed(0)
B, C = 64, 7
COUNTS = torch.tensor([500., 300., 120., 60., 20., 8., 3.])


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(B, C, generator=generator) * 3
    labels = torch.randint(0, C, (B, ), generator=generator)
    return logits, labels


def _grad(loss_fn, logits):
    logits = logits.clone().requires_grad_(True)
    value = loss_fn(logits)
    value.backward()
    return value.detach(), logits.grad


def assert_same_loss(reot_fn, classic_fn, logits, atol=1e-5):
    value_a, grad_a = _grad(reot_fn, logits)
    value_b, grad_b = _grad(classic_fn, logits)
    torch.testing.assert_close(value_a, value_b, atol=atol, rtol=1e-5)
    torch.testing.assert_close(grad_a, grad_b, atol=atol, rtol=1e-5)


def test_eq16_closed_form_matches_kl_to_ua_plan(batch):
    """Eq. 16: KL(P̃ ‖ P) with P = argmin over U(a) equals the loss + const.

    The U(a) plan is P_ij = a_i Q_ij e^{-C_ij/ε} / Σ_k Q_ik e^{-C_ik/ε}; with
    P̃ = y/n (so P̃ ∈ U(a)), KL(P̃‖P) = (1/n)·Σ_i loss_i (the log n terms
    cancel), i.e. the mean loss.
    """
    logits, labels = batch
    epsilon = 0.7
    q = COUNTS / COUNTS.sum()
    loss = REOTLoss(epsilon=epsilon, prior='class_ratio', class_counts=COUNTS)
    a = torch.full((B, ), 1.0 / B)
    kernel = q[None, :] * torch.exp(logits / epsilon)
    plan = a[:, None] * kernel / kernel.sum(1, keepdim=True)
    p_tilde = F.one_hot(labels, C).float() / B
    mask = p_tilde > 0
    kl = (p_tilde[mask] * (p_tilde[mask] / plan[mask]).log()).sum()
    torch.testing.assert_close(loss(logits, labels), kl, atol=1e-5, rtol=1e-5)
    # the plan is in U(a): rows sum to a
    torch.testing.assert_close(plan.sum(1), a)


def test_row_vanilla_softmax(batch):
    logits, labels = batch
    loss = REOTLoss(prior='uniform')
    assert_same_loss(lambda x: loss(x, labels),
                     lambda x: F.cross_entropy(x, labels), logits)


def test_row_vanilla_softmax_temperature(batch):
    """ε = τ: the entropic weight is the softmax temperature."""
    logits, labels = batch
    loss = REOTLoss(prior='uniform', epsilon=0.3)
    assert_same_loss(lambda x: loss(x, labels),
                     lambda x: F.cross_entropy(x / 0.3, labels), logits)


def test_row_focal(batch):
    """P̃_ij = y_ij (1 - P_ij)^γ: softmax focal loss (Lin et al. 2017)."""
    logits, labels = batch
    gamma = 2.0
    loss = REOTLoss(prior='uniform', supervision='focal', focal_gamma=gamma)

    def classic(x):
        log_p = F.log_softmax(x, -1).gather(1, labels[:, None]).squeeze(1)
        return (-(1 - log_p.exp()).pow(gamma) * log_p).mean()

    assert_same_loss(lambda x: loss(x, labels), classic, logits)


def test_row_a_softmax():
    """Cost C = c - s·ψ(θ_y): A-softmax with ψ(θ) = (-1)^k cos(mθ) - 2k."""
    generator = torch.Generator().manual_seed(2)
    features = F.normalize(torch.randn(B, 16, generator=generator), dim=-1)
    weights = F.normalize(torch.randn(C, 16, generator=generator), dim=-1)
    cosine = features @ weights.t()
    labels = torch.randint(0, C, (B, ), generator=generator)
    m, s = 4, 10.0
    loss = REOTLoss(prior='uniform', cost='cosine', scale=s,
                    margin_type='multiplicative', margin=m)

    def classic(cos):
        theta = torch.acos(cos.gather(1, labels[:, None]).clamp(-1 + 1e-7, 1 - 1e-7))
        k = torch.floor(theta * m / math.pi)
        psi = (-1.0) ** k * torch.cos(m * theta) - 2 * k
        logits = s * cos.scatter(1, labels[:, None], psi)
        return F.cross_entropy(logits, labels)

    assert_same_loss(lambda x: loss(x, labels), classic, cosine, atol=1e-4)
    # with the margin the target is harder: the loss is larger than without
    plain = REOTLoss(prior='uniform', cost='cosine', scale=s)
    assert loss(cosine, labels) > plain(cosine, labels)


def test_row_triplet_limit():
    """ε → 0⁺ with squared-distance cost (Appendix G): ε·L → triplet hinge.

    ε·(-log softmax(-C/ε)_y) → C_y - min_j C_j = max(0, d(x, y) - min_{j≠y} d(x, j)),
    the zero-margin triplet loss with the hardest negative.
    """
    generator = torch.Generator().manual_seed(3)
    embeddings = torch.randn(B, 8, generator=generator)
    centers = torch.randn(C, 8, generator=generator)
    labels = torch.randint(0, C, (B, ), generator=generator)
    cost = torch.cdist(embeddings, centers).pow(2)
    positive = cost.gather(1, labels[:, None]).squeeze(1)
    negative = cost.scatter(1, labels[:, None], float('inf')).min(1).values
    triplet = (positive - negative).clamp_min(0).mean()
    errors = []
    for epsilon in (1.0, 0.1, 0.01, 0.001):
        loss = REOTLoss(prior='uniform', cost='distance', epsilon=epsilon)
        errors.append(abs(epsilon * loss(cost, labels) - triplet).item())
    assert errors[-1] < 1e-2 * max(triplet.item(), 1.0)
    assert all(a >= b for a, b in zip(errors, errors[1:]))  # monotone approach


def test_row_class_balanced(batch):
    """P̃_ij = y_ij (1 - β)/(1 - β^{n_j}), weights normalised to sum to C."""
    logits, labels = batch
    beta = 0.999
    loss = REOTLoss(prior='uniform', supervision='class_balanced',
                    cb_beta=beta, class_counts=COUNTS)
    raw = torch.tensor([(1 - beta) / (1 - beta**n) for n in COUNTS.tolist()])
    class_weights = raw / raw.sum() * C

    def classic(x):
        per_sample = F.cross_entropy(x, labels, reduction='none')
        return (class_weights[labels] * per_sample).mean()

    assert_same_loss(lambda x: loss(x, labels), classic, logits)


def test_row_ldam(batch):
    """Q_ij = exp(-1[j=y]·m_j/ε): LDAM (Cao et al. 2019), s = 1/ε."""
    logits, labels = batch
    max_m, s = 0.5, 30.0
    loss = REOTLoss(prior='ldam', epsilon=1 / s, ldam_max_margin=max_m,
                    class_counts=COUNTS)
    margins = 1.0 / COUNTS.pow(0.25)
    margins = margins * (max_m / margins.max())

    def classic(x):
        shifted = x - F.one_hot(labels, C) * margins[labels][:, None]
        return F.cross_entropy(s * shifted, labels)

    assert_same_loss(lambda x: loss(x, labels), classic, logits, atol=1e-4)


def test_row_balanced_softmax(batch):
    """Q_ij = n_j (Ren et al. 2020): CE(l + log n_j)."""
    logits, labels = batch
    loss = REOTLoss(prior='class_ratio', class_counts=COUNTS)
    assert_same_loss(lambda x: loss(x, labels),
                     lambda x: F.cross_entropy(x + COUNTS.log(), labels),
                     logits)


@pytest.mark.parametrize('weight', [0.0, 0.3, 1.0])
def test_row_epoch_varying(batch, weight):
    """Q = (1 - λ)·Uniform + λ·r (Eq. 15): λ = 0 is CE, λ = 1 Balanced Softmax."""
    logits, labels = batch
    loss = REOTLoss(prior='class_ratio', class_counts=COUNTS)
    loss.set_prior_schedule(weight)
    r = COUNTS / COUNTS.sum()
    q = (1 - weight) / C + weight * r
    assert_same_loss(lambda x: loss(x, labels),
                     lambda x: F.cross_entropy(x + q.log(), labels), logits)


def test_eq16_row_scaling_of_q_cancels(batch):
    """Under U(a) any per-row scaling of Q leaves the loss unchanged."""
    logits, labels = batch
    unnormalised = REOTLoss(prior='class_ratio', class_counts=COUNTS * 37.0)
    normalised = REOTLoss(prior='class_ratio', class_counts=COUNTS / COUNTS.sum())
    torch.testing.assert_close(unnormalised(logits, labels),
                               normalised(logits, labels))


def test_soft_targets_mixup(batch):
    """Soft P̃ (mixup): -Σ_j P̃_ij log P_ij with the prior added to the logits."""
    logits, labels = batch
    generator = torch.Generator().manual_seed(4)
    other = torch.randint(0, C, (B, ), generator=generator)
    lam = 0.7
    target = lam * F.one_hot(labels, C) + (1 - lam) * F.one_hot(other, C)
    loss = REOTLoss(prior='class_ratio', class_counts=COUNTS)
    adjusted = logits + COUNTS.log()
    expected = lam * F.cross_entropy(adjusted, labels) + \
        (1 - lam) * F.cross_entropy(adjusted, other)
    torch.testing.assert_close(loss(logits, target.float()), expected)


def test_prior_power_after_t3(batch):
    """The authors' code uses Q = r^1.03 after t3 (element-wise)."""
    logits, labels = batch
    loss = REOTLoss(prior='class_ratio', class_counts=COUNTS)
    loss.set_prior_schedule(1.0, 1.03)
    r = COUNTS / COUNTS.sum()
    torch.testing.assert_close(
        loss(logits, labels), F.cross_entropy(logits + 1.03 * r.log(), labels))


def test_eq36_batch_ratio(batch):
    logits, labels = batch
    loss = REOTLoss(prior='batch_ratio')
    batch_ratio = torch.bincount(labels, minlength=C).float() / B
    # classes absent from the batch get no mass (their logit is excluded)
    expected = F.cross_entropy(logits + batch_ratio.log(), labels)
    torch.testing.assert_close(loss(logits, labels), expected)


def test_eq37_interpolated(batch):
    logits, labels = batch
    gamma = 0.74
    loss = REOTLoss(prior='interpolated', interpolation_gamma=gamma,
                    class_counts=COUNTS)
    r = gamma * COUNTS / COUNTS.sum() + \
        (1 - gamma) * torch.bincount(labels, minlength=C).float() / B
    torch.testing.assert_close(loss(logits, labels),
                               F.cross_entropy(logits + r.log(), labels))


def test_eq38_sample_wise(batch):
    """r_ij = softmax(l_i)_j · n_j/Σn (g = 1), detached from the logits."""
    logits, labels = batch
    loss = REOTLoss(prior='sample_wise', sample_wise_g=1.0, class_counts=COUNTS)
    r = torch.softmax(logits, -1) * (COUNTS / COUNTS.sum())
    r = r / r.sum(1, keepdim=True)
    expected_value = F.cross_entropy(logits + r.log(), labels)
    torch.testing.assert_close(loss(logits, labels), expected_value)
    # the prior is detached: gradient equals that of CE(l + const)
    _, grad = _grad(lambda x: loss(x, labels), logits)
    _, grad_const = _grad(
        lambda x: F.cross_entropy(x + r.log().detach(), labels), logits)
    torch.testing.assert_close(grad, grad_const)


def test_sample_wise_g_zero_is_class_wise(batch):
    logits, labels = batch
    sample_wise = REOTLoss(prior='sample_wise', sample_wise_g=0.0,
                           class_counts=COUNTS)
    class_wise = REOTLoss(prior='class_ratio', class_counts=COUNTS)
    torch.testing.assert_close(sample_wise(logits, labels),
                               class_wise(logits, labels))


def test_teacher_prior(batch):
    logits, labels = batch
    teacher = torch.softmax(torch.randn(B, C), -1)
    loss = REOTLoss(prior='teacher')
    torch.testing.assert_close(
        loss(logits, labels, teacher_probs=teacher),
        F.cross_entropy(logits + teacher.log(), labels))
    with pytest.raises(ValueError, match='teacher_probs'):
        loss(logits, labels)


def test_dense_scores_with_ignore_index():
    generator = torch.Generator().manual_seed(5)
    scores = torch.randn(2, C, 4, 5, generator=generator)
    labels = torch.randint(0, C, (2, 4, 5), generator=generator)
    labels[0, 0, :3] = 255
    loss = REOTLoss(prior='class_ratio', class_counts=COUNTS)
    adjusted = scores + COUNTS.log()[None, :, None, None]
    expected = F.cross_entropy(adjusted, labels, ignore_index=255)
    torch.testing.assert_close(loss(scores, labels, ignore_index=255), expected)


def test_weight_and_avg_factor(batch):
    logits, labels = batch
    weight = torch.rand(B)
    loss = REOTLoss(prior='uniform')
    per_sample = F.cross_entropy(logits, labels, reduction='none')
    torch.testing.assert_close(
        loss(logits, labels, weight=weight, avg_factor=10.0),
        (per_sample * weight).sum() / 10.0)
    torch.testing.assert_close(
        loss(logits, labels, reduction_override='none'), per_sample)


def test_half_precision_scores_reduce_in_fp32(batch):
    logits, labels = batch
    loss = REOTLoss(prior='class_ratio', class_counts=COUNTS)
    value = loss(logits.to(torch.bfloat16), labels)
    assert value.dtype == torch.float32
    expected = F.cross_entropy(logits.to(torch.bfloat16).float() + COUNTS.log(),
                               labels)
    torch.testing.assert_close(value, expected)


def test_prior_is_log_domain_for_extreme_counts(batch):
    """Counts spanning 1e-30..1e30 stay finite (log-domain mixing)."""
    logits, labels = batch
    counts = torch.logspace(-30, 30, C, dtype=torch.float64)
    loss = REOTLoss(prior='class_ratio', class_counts=counts)
    loss.set_prior_schedule(0.5)
    assert torch.isfinite(loss(logits, labels))


def test_state_dict_round_trip(batch):
    logits, labels = batch
    trained = REOTLoss(prior='class_ratio', class_counts=COUNTS)
    trained.set_prior_schedule(0.4, 1.03)
    fresh = REOTLoss(prior='class_ratio')
    fresh.load_state_dict(trained.state_dict())
    assert float(fresh.prior_weight) == pytest.approx(0.4)
    assert float(fresh.prior_power) == pytest.approx(1.03)
    torch.testing.assert_close(fresh(logits, labels), trained(logits, labels))


# --------------------------------------------------------------- bad input
def test_counts_length_mismatch(batch):
    logits, labels = batch
    with pytest.raises(ValueError, match='class_counts has 3 entries'):
        REOTLoss(class_counts=[1, 2, 3], num_classes=C)
    loss = REOTLoss(class_counts=[1, 2, 3])
    with pytest.raises(ValueError, match='class_counts has 3 entries'):
        loss(logits, labels)


def test_zero_count_class_is_smoothed_with_warning(batch):
    logits, labels = batch
    counts = COUNTS.clone()
    counts[[2, 5]] = 0
    with pytest.warns(UserWarning, match=r'classes \[2, 5\]'):
        loss = REOTLoss(class_counts=counts)
    value = loss(logits, labels)
    assert torch.isfinite(value)
    smoothed = counts.clone()
    smoothed[[2, 5]] = 1.0
    torch.testing.assert_close(
        value, F.cross_entropy(logits + smoothed.log(), labels))


def test_labels_out_of_range(batch):
    logits, labels = batch
    loss = REOTLoss(prior='uniform')
    bad = labels.clone()
    bad[3] = C
    with pytest.raises(ValueError, match=r'expected labels in \[0, 7\)'):
        loss(logits, bad)
    bad[3] = -1
    with pytest.raises(ValueError, match='target has labels'):
        loss(logits, bad)


def test_non_finite_logits(batch):
    logits, labels = batch
    logits = logits.clone()
    logits[5, 2] = float('nan')
    with pytest.raises(ValueError, match='cls_score contains 1 non-finite'):
        REOTLoss(prior='uniform')(logits, labels)


def test_missing_counts_is_explained(batch):
    logits, labels = batch
    with pytest.raises(RuntimeError, match='ClassStatisticsHook'):
        REOTLoss(prior='class_ratio')(logits, labels)


@pytest.mark.parametrize('kwargs, match', [
    (dict(epsilon=0.0), 'epsilon must be a finite number > 0'),
    (dict(epsilon=-1.0), 'epsilon must be a finite number > 0'),
    (dict(prior='nope'), 'prior must be one of'),
    (dict(cost='logits', margin_type='additive'), "needs cost='cosine'"),
    (dict(cost='cosine', margin_type='multiplicative', margin=1.5),
     'positive integer'),
    (dict(prior_weight=1.5), r'prior_weight \(λ\) must be in \[0, 1\]'),
    (dict(interpolation_gamma=2.0), 'interpolation_gamma'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        REOTLoss(**kwargs)


def test_class_counts_validation_helper():
    with pytest.raises(ValueError, match='non-negative'):
        priors.validate_class_counts([1, -2, 3])
    with pytest.raises(ValueError, match='1-D'):
        priors.validate_class_counts([[1, 2]])


def test_cached_prior_follows_schedule_and_counts(batch):
    logits, labels = batch
    loss = REOTLoss(prior='class_ratio', class_counts=COUNTS)
    first = loss(logits, labels)
    loss.set_prior_schedule(0.0)
    torch.testing.assert_close(loss(logits, labels),
                               F.cross_entropy(logits, labels))
    loss.set_prior_schedule(1.0)
    torch.testing.assert_close(loss(logits, labels), first)
    loss.set_class_counts(COUNTS.flip(0))
    torch.testing.assert_close(
        loss(logits, labels),
        F.cross_entropy(logits + COUNTS.flip(0).log(), labels))
    loss.double()
    assert loss(logits.double(), labels).dtype == torch.float64
