"""RE-OT contrastive loss (RE-OT §4.1, Eq. 14-16, Fig. 1, Table 1 triplet row).

Reference losses are transcribed independently here with explicit loops over
anchors (float64), from the papers' formulas:
SimCLR's NT-Xent (Chen et al. 2020, Eq. 1), SupCon L^sup_out (Khosla et al.
2020, Eq. 2) and the hardest-negative triplet hinge.
"""
import math
import textwrap

import pytest
import torch
import torch.nn.functional as F
from launch import run_torchrun

from reot_mm.losses import REOTContrastiveLoss
from reot_mm.losses.reot_contrastive_loss import (contrastive_log_plan,
                                                  contrastive_targets,
                                                  pair_log_prior,
                                                  reot_contrastive_loss)

TAU = 0.2


def _batch(batch=6, views=2, dim=5, seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, views, dim, generator=generator, dtype=dtype)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 0, 3, 1][:batch])
    return features, labels


def _flat(features):
    """Embeddings in the loss's view-major order with image ids and cosines."""
    batch, views, dim = features.shape
    z = F.normalize(features.transpose(0, 1).reshape(-1, dim), dim=-1)
    ids = torch.arange(batch).repeat(views)
    return z, ids


def nt_xent(features, tau):
    """SimCLR Eq. 1: l(i,j) = -log e^{s_ij/τ} / Σ_{k≠i} e^{s_ik/τ}, mean over 2B."""
    z, ids = _flat(features)
    total = 0.0
    for i in range(z.shape[0]):
        j = [k for k in range(z.shape[0]) if k != i and ids[k] == ids[i]][0]
        denominator = sum(torch.exp(z[i] @ z[k] / tau)
                          for k in range(z.shape[0]) if k != i)
        total = total - torch.log(torch.exp(z[i] @ z[j] / tau) / denominator)
    return total / z.shape[0]


def supcon_out(features, labels, tau, rho=1.0):
    """SupCon Eq. 2 (L_out); rho != 1 weights other-class terms of A(i)."""
    z, _ = _flat(features)
    y = labels.repeat(features.shape[1])
    total = 0.0
    for i in range(z.shape[0]):
        positives = [p for p in range(z.shape[0]) if p != i and y[p] == y[i]]
        denominator = sum((1.0 if y[a] == y[i] else rho) *
                          torch.exp(z[i] @ z[a] / tau)
                          for a in range(z.shape[0]) if a != i)
        total = total - sum(torch.log(torch.exp(z[i] @ z[p] / tau) /
                                      denominator)
                            for p in positives) / len(positives)
    return total / z.shape[0]


def label_aware_infonce(features, labels, tau, rho):
    """The derived form of Eq. 16 with Fig. 1's prior and the other view as
    positive: other-class negatives count rho = w_o / w_s times."""
    z, ids = _flat(features)
    y = labels.repeat(features.shape[1])
    total = 0.0
    for i in range(z.shape[0]):
        j = [k for k in range(z.shape[0]) if k != i and ids[k] == ids[i]][0]
        same = sum(torch.exp(z[i] @ z[k] / tau) for k in range(z.shape[0])
                   if k != i and y[k] == y[i])
        other = sum(torch.exp(z[i] @ z[k] / tau) for k in range(z.shape[0])
                    if y[k] != y[i])
        total = total - torch.log(torch.exp(z[i] @ z[j] / tau) /
                                  (same + rho * other))
    return total / z.shape[0]


# ------------------------------------------------------------ equivalences
def test_uniform_q_is_simclr_nt_xent():
    """RE-OT §4.1 / Eq. 16 with Q uniform and P̃ = the other view: NT-Xent."""
    features, labels = _batch()
    loss = REOTContrastiveLoss(temperature=TAU)(features, labels)
    torch.testing.assert_close(loss, nt_xent(features, TAU))
    # labels are not used by the self-supervised uniform loss
    torch.testing.assert_close(REOTContrastiveLoss(temperature=TAU)(features),
                               loss)


def test_uniform_q_supervised_is_supcon():
    """Eq. 16 with Q uniform and P̃_ij ∝ [y_i = y_j]: SupCon L_out (Eq. 2)."""
    features, labels = _batch(batch=8, views=2)
    loss = REOTContrastiveLoss(temperature=TAU, supervision='supervised')(
        features, labels)
    torch.testing.assert_close(loss, supcon_out(features, labels, TAU))


def test_fig1_same_class_q_is_label_aware_infonce():
    """Eq. 16 with Fig. 1's Q (w_s = 0.7, w_o = 0.3): InfoNCE whose
    other-class negatives count ρ = w_o/w_s times; only ρ matters."""
    features, labels = _batch(batch=8)
    loss = REOTContrastiveLoss(temperature=TAU, prior='same_class',
                               same_weight=0.7, other_weight=0.3)(
                                   features, labels)
    torch.testing.assert_close(
        loss, label_aware_infonce(features, labels, TAU, 0.3 / 0.7))
    # any common scale of the weights cancels (per-row scaling of Q, Eq. 16)
    scaled = REOTContrastiveLoss(temperature=TAU, prior='same_class',
                                 same_weight=7.0, other_weight=3.0)
    torch.testing.assert_close(scaled(features, labels), loss)
    # ρ = 1 is SimCLR
    equal = REOTContrastiveLoss(temperature=TAU, prior='same_class',
                                same_weight=0.4, other_weight=0.4)
    torch.testing.assert_close(equal(features, labels),
                               nt_xent(features, TAU))
    # ρ → ∞, minus log ρ: the same-class negatives leave the denominator
    rho = 1e9
    big = REOTContrastiveLoss(temperature=TAU, prior='same_class',
                              same_weight=1.0, other_weight=rho)
    z, ids = _flat(features)
    y = labels.repeat(2)
    expected = 0.0
    for i in range(z.shape[0]):
        j = [k for k in range(z.shape[0]) if k != i and ids[k] == ids[i]][0]
        other = sum(torch.exp(z[i] @ z[k] / TAU) for k in range(z.shape[0])
                    if y[k] != y[i])
        expected = expected - (z[i] @ z[j] / TAU - torch.log(other))
    torch.testing.assert_close(big(features, labels) - math.log(rho),
                               expected / z.shape[0], rtol=1e-6, atol=1e-6)


def test_same_class_q_supervised_is_weighted_supcon():
    features, labels = _batch(batch=8)
    loss = REOTContrastiveLoss(temperature=TAU, supervision='supervised',
                               prior='same_class', same_weight=2.0,
                               other_weight=5.0)(features, labels)
    torch.testing.assert_close(loss, supcon_out(features, labels, TAU, 2.5))


def test_ratio_priors_reweight_the_denominator_by_class():
    """Q_ij = r_{y_j}^κ: κ = -1 with the batch ratio weights each class of
    the denominator equally (BCL-style class averaging)."""
    features, labels = _batch(batch=8)
    z, ids = _flat(features)
    y = labels.repeat(2)
    counts = torch.bincount(y).double()
    expected = 0.0
    for i in range(z.shape[0]):
        j = [k for k in range(z.shape[0]) if k != i and ids[k] == ids[i]][0]
        denominator = sum(torch.exp(z[i] @ z[k] / TAU) / counts[y[k]]
                          for k in range(z.shape[0]) if k != i)
        expected = expected - torch.log(
            torch.exp(z[i] @ z[j] / TAU) / counts[y[j]] / denominator)
    loss = REOTContrastiveLoss(temperature=TAU, prior='batch_ratio',
                               ratio_power=-1.0)(features, labels)
    torch.testing.assert_close(loss, expected / z.shape[0])

    # training class ratio (RE-OT Eq. 35), κ = 1: Balanced-Softmax analogue
    class_counts = [50.0, 20.0, 5.0, 2.0]
    module = REOTContrastiveLoss(temperature=TAU, prior='class_ratio',
                                 class_counts=class_counts)
    pi = torch.tensor(class_counts, dtype=torch.float64) / sum(class_counts)
    expected = 0.0
    for i in range(z.shape[0]):
        j = [k for k in range(z.shape[0]) if k != i and ids[k] == ids[i]][0]
        denominator = sum(pi[y[k]] * torch.exp(z[i] @ z[k] / TAU)
                          for k in range(z.shape[0]) if k != i)
        expected = expected - torch.log(
            pi[y[j]] * torch.exp(z[i] @ z[j] / TAU) / denominator)
    torch.testing.assert_close(module(features, labels),
                               expected / z.shape[0], rtol=1e-5, atol=1e-6)


def test_eq15_mix_with_uniform():
    """Q_i· = (1 - λ)/(N - 1) + λ·r_i· over the off-diagonal candidates."""
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    r = pair_log_prior(labels, 'same_class', same_weight=3, other_weight=1)
    mixed = pair_log_prior(labels, 'same_class', same_weight=3,
                           other_weight=1, prior_weight=0.25)
    off = ~torch.eye(6, dtype=torch.bool)
    torch.testing.assert_close(r.exp().sum(-1), torch.ones(6))
    expected = 0.75 / 5 + 0.25 * r.exp()
    torch.testing.assert_close(mixed.exp()[off], expected[off])
    assert torch.isneginf(mixed.diagonal()).all()
    assert pair_log_prior(labels, 'same_class', prior_weight=0.0) is None
    # the schedule hook's λ = 0 gives back SimCLR
    features, labels = _batch()
    module = REOTContrastiveLoss(temperature=TAU, prior='same_class')
    module.set_prior_schedule(0.0)
    torch.testing.assert_close(module(features, labels),
                               nt_xent(features, TAU))


# ------------------------------------------------------------------ limits
@pytest.mark.parametrize('tau', [1.0, 0.1, 0.01, 1e-3])
def test_epsilon_to_zero_is_hardest_negative_triplet(tau):
    """Table 1 triplet row (App. G): hinge <= τ·L_i <= hinge + τ·log(N - 1),
    hinge = max(0, max_{k≠i,p} cos_ik - cos_ip), so τ·L → hinge as τ → 0⁺."""
    features, labels = _batch(batch=7, dtype=torch.float64)
    z, ids = _flat(features)
    n = z.shape[0]
    per_anchor = reot_contrastive_loss(z, ids, temperature=tau)
    cos = z @ z.t()
    hinge = torch.empty(n, dtype=torch.float64)
    for i in range(n):
        p = [k for k in range(n) if k != i and ids[k] == ids[i]][0]
        negatives = [k for k in range(n) if k not in (i, p)]
        hinge[i] = torch.clamp(cos[i, negatives].max() - cos[i, p], min=0)
    scaled = tau * per_anchor
    assert (scaled >= hinge - 1e-9).all()
    assert (scaled <= hinge + tau * math.log(n - 1) + 1e-9).all()
    if tau == 1e-3:
        assert (scaled - hinge).max() < 1e-2


# ------------------------------------------------------------- U(a) / U(a,b)
def test_u_a_and_u_ab_marginals():
    features, labels = _batch(batch=8)
    z, _ = _flat(features)
    n = z.shape[0]
    log_q = pair_log_prior(labels.repeat(2), 'same_class')
    plan_a = contrastive_log_plan(z, TAU, log_q, 'a').exp() / n
    torch.testing.assert_close(plan_a.sum(-1), torch.full((n, ), 1.0 / n,
                                                          dtype=z.dtype))
    plan = contrastive_log_plan(z, TAU, log_q, 'ab', tol=1e-12,
                                max_iter=5000).exp() / n
    uniform = torch.full((n, ), 1.0 / n, dtype=z.dtype)
    torch.testing.assert_close(plan.sum(-1), uniform, atol=1e-10, rtol=0)
    torch.testing.assert_close(plan.sum(0), uniform, atol=1e-10, rtol=0)
    assert (plan.diagonal() == 0).all()
    # U(a) only fixes rows: its column sums are not uniform in general
    assert (plan_a.sum(0) - uniform).abs().max() > 1e-3


def test_u_ab_invariant_to_diagonal_rescaling_of_q():
    """Prop. 1(2): Q and diag(u)·Q·diag(v) give the same plan (and loss)."""
    features, labels = _batch(batch=8)
    z, ids = _flat(features)
    log_q = pair_log_prior(labels.repeat(2), 'same_class')
    generator = torch.Generator().manual_seed(3)
    u, v = torch.rand(2, z.shape[0], generator=generator, dtype=z.dtype) + 0.1
    rescaled = log_q + u.log()[:, None] + v.log()[None, :]
    kwargs = dict(temperature=TAU, constraints='ab', tol=1e-12, max_iter=5000)
    torch.testing.assert_close(
        reot_contrastive_loss(z, ids, log_prior=rescaled, **kwargs),
        reot_contrastive_loss(z, ids, log_prior=log_q, **kwargs))


def test_u_ab_implicit_and_unrolled_gradients_agree():
    features, labels = _batch(batch=6)
    grads = []
    for grad in ('implicit', 'unrolled'):
        x = features.clone().requires_grad_(True)
        module = REOTContrastiveLoss(temperature=0.5, prior='same_class',
                                     constraints='ab', grad=grad,
                                     sinkhorn_tol=1e-12,
                                     sinkhorn_max_iter=2000)
        module(x, labels).backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-6, atol=1e-8)
    assert grads[0].abs().sum() > 0


def test_u_a_gradcheck():
    features, labels = _batch(batch=4, dim=3)
    x = features.clone().requires_grad_(True)
    module = REOTContrastiveLoss(temperature=0.5, prior='same_class',
                                 supervision='supervised')
    assert torch.autograd.gradcheck(lambda t: module(t, labels), (x, ))


def test_more_than_two_views_and_half_precision():
    features, labels = _batch(batch=5, views=3, dtype=torch.float32)
    module = REOTContrastiveLoss(temperature=TAU)
    z, ids = _flat(features)
    target = contrastive_targets(ids, None, 'self')
    assert torch.allclose(target.sum(-1), torch.ones(15))
    assert (target > 0).sum(-1).eq(2).all()  # two other views per anchor
    loss32 = module(features, labels)
    loss16 = module(features.to(torch.bfloat16), labels)
    assert loss16.dtype == torch.float32
    torch.testing.assert_close(loss16, loss32, rtol=2e-2, atol=2e-2)


# ----------------------------------------------------------------- state
def test_buffers_survive_state_dict_round_trip():
    module = REOTContrastiveLoss(prior='class_ratio', class_counts=[5, 3, 1])
    module.set_prior_schedule(0.4, 1.03)
    state = module.state_dict()
    assert {'class_counts', 'prior_weight', 'prior_power'} <= set(state)
    fresh = REOTContrastiveLoss(prior='class_ratio')
    fresh.load_state_dict(state)
    assert fresh.class_counts.tolist() == [5.0, 3.0, 1.0]
    assert fresh._schedule == pytest.approx((0.4, 1.03))
    features, labels = _batch(batch=6)
    labels = labels.clamp(max=2)
    torch.testing.assert_close(fresh(features, labels),
                               module(features, labels))


# ------------------------------------------------------------ bad input
def test_single_view_is_a_clear_error():
    features, labels = _batch(views=1)
    with pytest.raises(ValueError, match='at least 2 views'):
        REOTContrastiveLoss()(features, labels)
    with pytest.raises(ValueError, match=r'\(B, V, D\)'):
        REOTContrastiveLoss()(features[:, 0], labels)


@pytest.mark.parametrize('kwargs, name', [
    (dict(same_weight=0.0), 'same_weight'),
    (dict(other_weight=-0.3), 'other_weight'),
    (dict(same_weight=float('nan')), 'same_weight'),
    (dict(temperature=0.0), 'temperature'),
])
def test_non_positive_weights_are_clear_errors(kwargs, name):
    with pytest.raises(ValueError, match=name):
        REOTContrastiveLoss(prior='same_class', **kwargs)
    if name != 'temperature':
        with pytest.raises(ValueError, match=name):
            pair_log_prior(torch.tensor([0, 1]), 'same_class', **kwargs)


def test_missing_labels_and_counts_are_clear_errors():
    features, labels = _batch()
    with pytest.raises(ValueError, match='needs labels'):
        REOTContrastiveLoss(supervision='supervised')(features)
    with pytest.raises(ValueError, match='needs labels'):
        REOTContrastiveLoss(prior='same_class')(features)
    with pytest.raises(RuntimeError, match='ClassStatisticsHook'):
        REOTContrastiveLoss(prior='class_ratio')(features, labels)
    with pytest.raises(ValueError, match='labels must be'):
        REOTContrastiveLoss()(features, labels[:3])
    with pytest.raises(ValueError, match='prior must be one of'):
        REOTContrastiveLoss(prior='teacher')


def test_non_finite_features_and_empty_batch_are_clear_errors():
    features, labels = _batch()
    bad = features.clone()
    bad[1, 0, 0] = float('nan')
    with pytest.raises(ValueError, match=r'features contains 1 non-finite '
                       r'values \(rows \[1\]\); expected finite'):
        REOTContrastiveLoss()(bad, labels)
    with pytest.raises(ValueError, match='empty batch'):
        REOTContrastiveLoss()(features[:0], labels[:0])


# -------------------------------------------------------------------- DDP
WORKER = textwrap.dedent('''
    import sys
    import torch
    import torch.distributed as torch_dist
    from reot_mm.losses import REOTContrastiveLoss

    torch_dist.init_process_group('gloo')
    rank = torch_dist.get_rank()
    features, labels, splits, configs = torch.load(sys.argv[1])
    start = sum(splits[:rank])
    part = slice(start, start + splits[rank])
    out = []
    for kwargs in configs:
        x = features[part].clone().requires_grad_(True)
        loss = REOTContrastiveLoss(**kwargs)(x, labels[part])
        loss.backward()
        out.append((loss.detach(), x.grad))
    torch.save(out, f'{sys.argv[2]}/rank{rank}.pt')
    torch_dist.barrier()  # every rank done before teardown
    torch_dist.destroy_process_group()
''')
DDP_CONFIGS = [
    dict(temperature=TAU),
    dict(temperature=TAU, supervision='supervised', prior='same_class'),
    dict(temperature=TAU, prior='batch_ratio', ratio_power=-1.0),
    dict(temperature=0.5, prior='same_class', constraints='ab',
         sinkhorn_tol=1e-10, sinkhorn_max_iter=3000),
]


def test_ddp_negatives_are_the_global_batch(tmp_path):
    """2-rank gloo run (rank 0: 3 images, rank 1: 5) against one process on
    the concatenated batch: the per-anchor losses and the gradients match
    (the all-gather carries gradients back to the rank that owns them)."""
    features, labels = _batch(batch=8)
    splits = [3, 5]
    torch.save((features, labels, splits, DDP_CONFIGS), tmp_path / 'batch.pt')
    (tmp_path / 'worker.py').write_text(WORKER)
    run_torchrun(tmp_path / 'worker.py', tmp_path / 'batch.pt', tmp_path)
    ranks = [torch.load(tmp_path / f'rank{r}.pt') for r in (0, 1)]
    for index, kwargs in enumerate(DDP_CONFIGS):
        x = features.clone().requires_grad_(True)
        single = REOTContrastiveLoss(**kwargs)(x, labels)
        single.backward()
        # rank losses are means over their own anchors (2 views each)
        combined = sum(ranks[r][index][0] * splits[r] for r in (0, 1)) / 8
        torch.testing.assert_close(combined, single.detach())
        # each rank's backward through the all-gather yields d(Σ_r L_r)/dx_r
        grad = torch.cat([ranks[r][index][1] for r in (0, 1)])
        x2 = features.clone().requires_grad_(True)
        per_anchor_sum = _rank_weighted_loss(x2, labels, splits, kwargs)
        per_anchor_sum.backward()
        torch.testing.assert_close(grad, x2.grad)
        # a rank-local loss (negatives from one rank only) would differ
        local = REOTContrastiveLoss(**kwargs)(features[:3], labels[:3])
        assert not torch.allclose(local, ranks[0][index][0])


def _rank_weighted_loss(x, labels, splits, kwargs):
    """Σ_r L_r in one process: L_r = mean loss of rank r's anchors."""
    module = REOTContrastiveLoss(**kwargs)
    batch, views, dim = x.shape
    z = x.transpose(0, 1).reshape(-1, dim)
    ids = torch.arange(batch).repeat(views)
    flat_labels = labels.repeat(views)
    log_q = module.log_prior(flat_labels if module.needs_labels else None,
                             batch * views)
    per_anchor = reot_contrastive_loss(
        z, ids, flat_labels, temperature=module.temperature,
        supervision=module.supervision, log_prior=log_q,
        constraints=module.constraints, tol=module.sinkhorn_tol,
        max_iter=module.sinkhorn_max_iter).reshape(views, batch)
    total, start = 0.0, 0
    for size in splits:
        total = total + per_anchor[:, start:start + size].mean()
        start += size
    return total
