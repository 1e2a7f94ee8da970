"""prior_shifted_cross_entropy: the one home of RE-OT Eq. 16 (U(a)), BCL Eq.
10-11 and GML Eq. 7, checked against the formulas it replaced."""
import pytest
import torch
import torch.nn.functional as F

from reot_mm.losses.prior_cross_entropy import (inverse_reot_loss,
                                                prior_shifted_cross_entropy)

B, C = 7, 5


class _OldFusedKernel(torch.autograd.Function):
    """The fused kernel that served inputs from 2^20 scores on until it was
    deleted, verbatim: the new code must reproduce its values and gradients."""

    @staticmethod
    def forward(ctx, similarity, log_prior, target, inv_epsilon):
        if log_prior is None:
            scores = similarity if inv_epsilon == 1.0 else \
                similarity * inv_epsilon
        elif inv_epsilon == 1.0:
            scores = similarity + log_prior
        else:
            scores = torch.add(log_prior, similarity, alpha=inv_epsilon)
        log_plan = torch.log_softmax(scores, dim=1)
        loss = log_plan.gather(1, target[:, None]).squeeze(1).neg()
        ctx.save_for_backward(log_plan, target)
        ctx.inv_epsilon = inv_epsilon
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        log_plan, target = ctx.saved_tensors
        scale = grad_loss * ctx.inv_epsilon
        grad = log_plan.exp() * scale[:, None]
        grad.scatter_add_(1, target[:, None], -scale[:, None])
        return grad, None, None, None


def _old_inverse_reot_loss(similarity, target, log_prior=None, epsilon=1.0,
                           focal_gamma=0.0, class_weights=None, fused=False):
    """The formulas of the previous ``inverse_reot_loss`` (all its paths)."""
    if target.ndim == 1 and not focal_gamma:
        if fused:
            loss = _OldFusedKernel.apply(similarity, log_prior, target,
                                         1.0 / epsilon)
        else:
            scores = similarity if epsilon == 1.0 else similarity / epsilon
            if log_prior is not None:
                scores = scores + log_prior
            loss = F.cross_entropy(scores, target, reduction='none')
        if class_weights is not None:
            loss = loss * class_weights.to(loss)[target]
        return loss
    scores = similarity / epsilon
    if log_prior is not None:
        scores = scores + log_prior
    log_plan = torch.log_softmax(scores, dim=-1)
    if target.ndim == 1:
        log_p = log_plan.gather(1, target[:, None]).squeeze(1)
        loss = -(-torch.expm1(log_p)).clamp_min(0).pow(focal_gamma) * log_p
        if class_weights is not None:
            loss = loss * class_weights.to(loss)[target]
        return loss
    weights = target.to(similarity.dtype)
    if class_weights is not None:
        weights = weights * class_weights.to(weights)
    if focal_gamma:
        weights = weights * (-torch.expm1(log_plan)).clamp_min(0).pow(
            focal_gamma)
    terms = torch.where(weights > 0, weights * log_plan,
                        torch.zeros_like(log_plan))
    return -terms.sum(-1)


def _value_and_grad(fn, scores, upstream):
    x = scores.clone().requires_grad_(True)
    value = fn(x)
    (value * upstream).sum().backward()
    return value.detach(), x.grad


def _inputs(seed=0, dtype=torch.float32, rows=B, classes=C):
    gen = torch.Generator().manual_seed(seed)
    scores = 3 * torch.randn(rows, classes, generator=gen, dtype=dtype)
    labels = torch.randint(0, classes, (rows, ), generator=gen)
    soft = torch.softmax(torch.randn(rows, classes, generator=gen,
                                     dtype=dtype), -1)
    log_q = torch.log_softmax(torch.randn(classes, generator=gen,
                                          dtype=dtype), -1)
    log_q_rows = torch.log_softmax(torch.randn(rows, classes, generator=gen,
                                               dtype=dtype), -1)
    class_weights = torch.rand(classes, generator=gen, dtype=dtype) + 0.5
    upstream = torch.rand(rows, generator=gen, dtype=dtype) - 0.3
    return scores, labels, soft, log_q, log_q_rows, class_weights, upstream


@pytest.mark.parametrize('target_kind', ['labels', 'soft'])
@pytest.mark.parametrize('prior_kind', [None, 'class', 'rows'])
@pytest.mark.parametrize('epsilon', [1.0, 0.3])
@pytest.mark.parametrize('focal_gamma', [0.0, 2.0])
@pytest.mark.parametrize('weighted', [False, True])
def test_eq16_equals_previous_formulas(target_kind, prior_kind, epsilon,
                                       focal_gamma, weighted):
    """RE-OT Eq. 16: values and gradients equal the replaced code to 1e-6,
    for every path it had (plain CE, focal, soft targets, class weights)."""
    scores, labels, soft, log_q, log_q_rows, cw, upstream = _inputs()
    target = labels if target_kind == 'labels' else soft
    log_prior = {None: None, 'class': log_q, 'rows': log_q_rows}[prior_kind]
    class_weights = cw if weighted else None
    args = (target, log_prior, epsilon, focal_gamma, class_weights)
    new = _value_and_grad(lambda x: inverse_reot_loss(x, *args), scores,
                          upstream)
    old = _value_and_grad(lambda x: _old_inverse_reot_loss(x, *args), scores,
                          upstream)
    for got, expected in zip(new, old):
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize('epsilon', [1.0, 0.25])
@pytest.mark.parametrize('prior_kind', [None, 'class', 'rows'])
def test_eq16_equals_deleted_fused_kernel(epsilon, prior_kind):
    """The deleted fused kernel (used from 2^20 scores on) and the plain path
    give the same values and gradients (labels, per-sample upstream weights),
    here on a large input as the kernel saw it."""
    scores, labels, _, log_q, log_q_rows, _, upstream = _inputs(
        1, rows=1100, classes=1000)
    log_prior = {None: None, 'class': log_q, 'rows': log_q_rows}[prior_kind]
    new = _value_and_grad(
        lambda x: inverse_reot_loss(x, labels, log_prior, epsilon), scores,
        upstream)
    old = _value_and_grad(
        lambda x: _old_inverse_reot_loss(x, labels, log_prior, epsilon,
                                         fused=True), scores, upstream)
    for got, expected in zip(new, old):
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize('fused', [False, True])
def test_eq16_dense_equals_previous_pixel_formulas(fused):
    """(B, C, H, W) scores with a class-wise log Q: equal to the previous
    pixel loss (F.cross_entropy on s/ε + log Q laid along dim 1, or the
    deleted fused kernel from 2^20 scores on), values and gradients."""
    gen = torch.Generator().manual_seed(12)
    scores = 3 * torch.randn(2, 150, 64, 60, generator=gen)
    labels = torch.randint(0, 150, (2, 64, 60), generator=gen)
    log_q = torch.log_softmax(torch.randn(150, generator=gen), -1)
    upstream = torch.rand(2, 64, 60, generator=gen)
    column = log_q.reshape(-1, 1, 1)

    def old(x):
        if fused:
            return _OldFusedKernel.apply(x, column, labels, 1 / 0.7)
        return F.cross_entropy(x / 0.7 + column, labels, reduction='none')

    new = _value_and_grad(
        lambda x: prior_shifted_cross_entropy(x, labels, log_q, epsilon=0.7),
        scores, upstream)
    for got, expected in zip(new, _value_and_grad(old, scores, upstream)):
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)


def test_integer_one_hot_target_is_a_soft_target():
    scores, labels, *_ = _inputs(11)
    one_hot = F.one_hot(labels, C)
    torch.testing.assert_close(prior_shifted_cross_entropy(scores, one_hot),
                               prior_shifted_cross_entropy(scores, labels))


def test_eq16_reference_log_softmax_float64():
    """L_i = -Σ_j P̃_ij·log softmax_j(s_ij/ε + α·log Q_ij), written out."""
    scores, _, soft, _, log_q_rows, _, _ = _inputs(2, torch.float64)
    got = prior_shifted_cross_entropy(scores, soft, log_q_rows, epsilon=0.4,
                                      prior_scale=0.7)
    shifted = scores / 0.4 + 0.7 * log_q_rows
    expected = -(soft * (shifted - shifted.logsumexp(1, keepdim=True))).sum(1)
    torch.testing.assert_close(got, expected)
    assert got.dtype == torch.float64


def test_bcl_eq10_logit_compensation():
    """BCL Eq. 10-11: α_y·CE(φ(x) + s·log π, y)."""
    scores, labels, _, log_pi, _, alpha, _ = _inputs(3)
    got = prior_shifted_cross_entropy(scores, labels, log_pi, prior_scale=1.5,
                                      class_weights=alpha)
    expected = alpha[labels] * F.cross_entropy(scores + 1.5 * log_pi, labels,
                                               reduction='none')
    torch.testing.assert_close(got, expected)


def test_gml_eq7_cosine_classifier():
    """GML Eq. 7: CE(cos/τ_s + α·log p, y), mean over the batch."""
    gen = torch.Generator().manual_seed(4)
    cosine = torch.rand(B, C, generator=gen) * 2 - 1
    labels = torch.randint(0, C, (B, ), generator=gen)
    log_p = torch.log_softmax(torch.randn(C, generator=gen), -1)
    tau_s, alpha = 0.1, 0.5
    got = prior_shifted_cross_entropy(cosine, labels, log_p, epsilon=tau_s,
                                      prior_scale=alpha, reduction='mean')
    expected = F.cross_entropy(cosine / tau_s + alpha * log_p, labels)
    torch.testing.assert_close(got, expected)


def test_prior_scale_zero_drops_a_prior_with_zero_mass():
    scores, labels, *_ = _inputs(5)
    log_q = torch.zeros(C)
    log_q[0] = -float('inf')
    got = prior_shifted_cross_entropy(scores, labels, log_q, prior_scale=0.0)
    torch.testing.assert_close(got, F.cross_entropy(scores, labels,
                                                    reduction='none'))


@pytest.mark.parametrize('focal_gamma', [0.0, 1.5])
def test_dense_layout_equals_rows(focal_gamma):
    """(N, C, H, W) scores with the class dimension second equal the
    permuted (N·H·W, C) rows: class-wise and per-pixel priors."""
    gen = torch.Generator().manual_seed(6)
    scores = torch.randn(2, C, 3, 4, generator=gen)
    labels = torch.randint(0, C, (2, 3, 4), generator=gen)
    log_q = torch.log_softmax(torch.randn(C, generator=gen), -1)
    pixel_q = torch.log_softmax(torch.randn(2, C, 3, 4, generator=gen), 1)

    def rows(x):
        return x.movedim(1, -1).reshape(-1, C)

    for prior, prior_rows in ((log_q, log_q), (pixel_q, rows(pixel_q))):
        dense = _value_and_grad(
            lambda x: prior_shifted_cross_entropy(
                x, labels, prior, epsilon=0.7, focal_gamma=focal_gamma),
            scores, torch.ones(2, 3, 4))
        flat = _value_and_grad(
            lambda x: prior_shifted_cross_entropy(
                rows(x), labels.reshape(-1), prior_rows, epsilon=0.7,
                focal_gamma=focal_gamma).reshape(2, 3, 4),
            scores, torch.ones(2, 3, 4))
        for got, expected in zip(dense, flat):
            torch.testing.assert_close(got, expected)


@pytest.mark.parametrize('focal_gamma', [0.0, 2.0])
def test_ignore_index_gives_zero_loss_and_gradient(focal_gamma):
    scores, labels, _, log_q, _, cw, _ = _inputs(7)
    log_q = log_q.clone()
    log_q[0] = -float('inf')  # the dummy class of ignored rows has no mass
    labels = labels.clamp_min(1)
    labels[[1, 4]] = 255
    keep = labels != 255
    value, grad = _value_and_grad(
        lambda x: prior_shifted_cross_entropy(
            x, labels, log_q, class_weights=cw, ignore_index=255,
            focal_gamma=focal_gamma), scores, torch.ones(B))
    assert torch.all(value[~keep] == 0) and torch.all(grad[~keep] == 0)
    expected = prior_shifted_cross_entropy(scores[keep], labels[keep], log_q,
                                           class_weights=cw,
                                           focal_gamma=focal_gamma)
    torch.testing.assert_close(value[keep], expected)


def test_weight_reduction_and_avg_factor():
    scores, labels, _, log_q, _, _, _ = _inputs(8)
    weight = torch.rand(B)
    per_sample = prior_shifted_cross_entropy(scores, labels, log_q)
    torch.testing.assert_close(
        prior_shifted_cross_entropy(scores, labels, log_q, weight=weight,
                                    reduction='sum'),
        (per_sample * weight).sum())
    torch.testing.assert_close(
        prior_shifted_cross_entropy(scores, labels, log_q, weight=weight,
                                    reduction='mean', avg_factor=3.0),
        (per_sample * weight).sum() / 3.0)
    torch.testing.assert_close(
        prior_shifted_cross_entropy(scores, labels, log_q, reduction='mean'),
        per_sample.mean())


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(dtype):
    scores, labels, _, log_q, *_ = _inputs(9)
    got = prior_shifted_cross_entropy(scores.to(dtype), labels, log_q)
    assert got.dtype == torch.float32
    expected = prior_shifted_cross_entropy(scores.to(dtype).float(), labels,
                                           log_q)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize('kwargs, match', [
    (dict(target=torch.tensor([0, 1, 5, 0, 1, 2, 3])), r'target has labels'),
    (dict(target=torch.zeros(B + 1, dtype=torch.long)), r'target labels must'),
    (dict(target=torch.zeros(B, C + 1)), r'soft target must'),
    (dict(target=torch.zeros(B)), r'target labels must be integers'),
    (dict(log_prior=torch.zeros(C + 1)), r'log_prior must have 5 entries'),
    (dict(log_prior=torch.zeros(B + 1, C)), r'log_prior must have shape'),
    (dict(class_weights=torch.ones(C - 1)), r'class_weights must have'),
    (dict(epsilon=0.0), r'epsilon must be a positive'),
    (dict(focal_gamma=-1.0), r'focal_gamma must be >= 0'),
    (dict(reduction='avg'), r'reduction must be one of'),
    (dict(weight=torch.ones(B, 1)), r'weight must broadcast'),
])
def test_bad_input_names_the_argument(kwargs, match):
    scores, labels, *_ = _inputs(10)
    call = dict(target=labels)
    call.update(kwargs)
    target = call.pop('target')
    with pytest.raises(ValueError, match=match):
        prior_shifted_cross_entropy(scores, target, **call)
    with pytest.raises(ValueError, match='scores must have shape'):
        prior_shifted_cross_entropy(scores[0], labels)
