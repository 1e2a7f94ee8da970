"""BCL loss (Zhu et al., CVPR 2022): Eq. 6-9 against loop transcriptions, Theorem 3 (Eq. 5/15),
Jensen (L1 >= L2), class-complement, Eq. 10-11, bad input, checkpoint state."""
import math
import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mmengine.registry import MODELS
from launch import run_torchrun

import reot_mm  # noqa: F401  (registers BCLLoss)
from reot_mm.losses.bcl_loss import (BCLLoss, balanced_contrastive_loss,
                                     logit_compensated_cross_entropy)


def loop_bcl(z, labels, protos, tau, form='L1', complement=True,
             averaging=True):
    """Literal per-anchor transcription of BCL Eq. 6 / 7 / 8 / 9 (and SupCon).

    Candidates of anchor i: every other embedding, plus the prototypes when
    ``complement`` (then |B_j| counts c_j, Eq. 9). Returns (losses, valid).
    """
    n, num_classes = z.shape[0], (protos.shape[0] if protos is not None
                                  else int(labels.max()) + 1)
    cands = [(z[k], int(labels[k]), k) for k in range(n)]
    if complement:
        cands += [(protos[j], j, None) for j in range(num_classes)]
    losses, valid = [], []
    for i in range(n):
        y = int(labels[i])
        if form == 'L3':
            sims = torch.stack([z[i] @ protos[j] / tau
                                for j in range(num_classes)])
            losses.append(-(sims[y] - torch.logsumexp(sims, 0)))
            valid.append(True)
            continue
        others = [(v, c) for v, c, k in cands if k != i]
        positives = [z[i] @ v / tau for v, c in others if c == y]
        if not positives:
            losses.append(torch.tensor(0.0, dtype=z.dtype))
            valid.append(False)
            continue
        denominator = torch.tensor(0.0, dtype=z.dtype)
        for j in range(num_classes):
            members = [v for v, c in others if c == j]
            if not members:
                continue
            sims = [z[i] @ v / tau for v in members]
            if form == 'L2':
                denominator = denominator + torch.exp(sum(sims) / len(sims))
            elif averaging:
                denominator = denominator + sum(torch.exp(s) for s in sims) / len(members)
            else:
                denominator = denominator + sum(torch.exp(s) for s in sims)
        losses.append(-sum(p - torch.log(denominator) for p in positives)
                      / len(positives))
        valid.append(True)
    return torch.stack(losses), torch.tensor(valid)


def random_batch(seed, n=12, dim=5, num_classes=6, absent=(4, ),
                 dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    present = [c for c in range(num_classes) if c not in absent]
    labels = torch.tensor(present)[torch.randint(
        len(present), (n, ), generator=generator)]
    labels[:len(present)] = torch.tensor(present)  # every present class shows up
    z = F.normalize(torch.randn(n, dim, generator=generator, dtype=dtype), dim=1)
    protos = F.normalize(torch.randn(num_classes, dim, generator=generator,
                                     dtype=dtype), dim=1)
    return z, labels, protos


@pytest.mark.parametrize('form,complement,averaging', [
    ('L1', True, True),    # Eq. 9 (default)
    ('L1', False, True),   # Eq. 6
    ('L2', False, True),   # Eq. 7
    ('L2', True, True),    # Eq. 7 with class-complement
    ('L3', True, True),    # Eq. 8
    ('L1', True, False),   # SupCon + complement (Table 2)
    ('L1', False, False),  # SupCon
])
@pytest.mark.parametrize('seed', [0, 1])
def test_matches_loop_transcription(form, complement, averaging, seed):
    z, labels, protos = random_batch(seed)
    # a singleton class: without complement its anchor has no positive
    labels[-1] = 5
    labels[:-1][labels[:-1] == 5] = 0
    expected, expected_valid = loop_bcl(z, labels, protos, 0.3, form,
                                        complement, averaging)
    loss, valid = balanced_contrastive_loss(
        z, labels, protos, 0.3, form=form, class_complement=complement,
        class_averaging=averaging)
    assert torch.equal(valid, expected_valid)
    assert (~valid).any() == (not complement and form != 'L3')
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)


def test_anchor_subset_matches_full_rows():
    """Anchoring a slice of the rows (the DDP path) gives those rows' losses."""
    z, labels, protos = random_batch(3, n=10)
    full, _ = balanced_contrastive_loss(z, labels, protos, 0.2)
    part, _ = balanced_contrastive_loss(z, labels, protos, 0.2,
                                        anchor_offset=4, num_anchors=3)
    torch.testing.assert_close(part, full[4:7])


def regular_simplex(num_classes, dim, seed=0):
    """K unit vectors with pairwise inner product −1/(K−1), randomly rotated
    into R^dim (dim >= K)."""
    centred = torch.eye(num_classes, dtype=torch.float64) - 1.0 / num_classes
    vertices = F.normalize(centred, dim=1)
    rotation, _ = torch.linalg.qr(torch.randn(
        dim, dim, dtype=torch.float64,
        generator=torch.Generator().manual_seed(seed)))
    return vertices @ rotation[:num_classes]


@pytest.mark.parametrize('num_classes,dim', [(4, 4), (10, 16), (7, 32)])
def test_theorem3_simplex_collapse_attains_bound(num_classes, dim):
    """BCL Eq. 5 / supp. Eq. 15: with z_n = ζ_{y_n} and c_j = ζ_j on a regular
    simplex (τ = 1), every anchor's loss is log(1 + (K−1)·exp(−K/(K−1))),
    whatever the (long-tailed, incomplete) batch composition: class-complement
    makes Y_B = Y for every batch, the theorem's assumption."""
    zeta = regular_simplex(num_classes, dim)
    gram = zeta @ zeta.t()
    torch.testing.assert_close(gram.diagonal(), torch.ones(num_classes,
                                                           dtype=torch.float64))
    off = gram[~torch.eye(num_classes, dtype=torch.bool)]
    torch.testing.assert_close(off, torch.full_like(off, -1 / (num_classes - 1)))
    # long-tailed batch, the last class absent; 2 views of each sample
    counts = [max(1, 9 - 2 * j) for j in range(num_classes - 1)] + [0]
    labels = torch.repeat_interleave(torch.arange(num_classes),
                                     torch.tensor(counts)).repeat(2)
    loss, valid = balanced_contrastive_loss(zeta[labels], labels, zeta, 1.0)
    bound = math.log(1 + (num_classes - 1) * math.exp(-num_classes / (num_classes - 1)))
    assert valid.all()
    torch.testing.assert_close(loss.double(),
                               torch.full_like(loss.double(), bound),
                               rtol=1e-6, atol=1e-6)
    # the module (mean over anchors) gives the same constant
    module = BCLLoss(temperature=1.0, lc_weight=0.0, bcl_weight=1.0)
    half = labels.shape[0] // 2
    value = module(torch.zeros(half, num_classes), labels[:half],
                   zeta[labels].view(2, half, dim).transpose(0, 1).float(),
                   zeta.float())['loss_bcl']
    assert abs(float(value) - bound) < 1e-5


def test_theorem3_bound_is_a_lower_bound_for_other_collapses():
    """Collapsed but not a simplex (balanced anchors): the mean loss is above
    the Theorem 3 constant, equality only at the simplex."""
    num_classes, dim = 6, 8
    bound = math.log(1 + (num_classes - 1) * math.exp(-num_classes / (num_classes - 1)))
    labels = torch.arange(num_classes).repeat_interleave(3).repeat(2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        zeta = F.normalize(torch.randn(num_classes, dim, dtype=torch.float64,
                                       generator=generator), dim=1)
        loss, _ = balanced_contrastive_loss(zeta[labels], labels, zeta, 1.0)
        assert loss.mean() > bound + 1e-3
    # a collapse that is not exact (within-class spread) is above it too
    zeta = regular_simplex(num_classes, dim)
    noisy = F.normalize(zeta[labels] + 0.05 * torch.randn(
        labels.shape[0], dim, dtype=torch.float64, generator=generator), dim=1)
    loss, _ = balanced_contrastive_loss(noisy, labels, zeta, 1.0)
    assert loss.mean() > bound


@pytest.mark.parametrize('complement', [True, False])
def test_jensen_l1_at_least_l2(complement):
    """Eq. 6 vs Eq. 7: −log and exp are convex, so L1 >= L2 per anchor."""
    for seed in range(4):
        z, labels, protos = random_batch(seed, n=16, dim=8)
        l1, valid = balanced_contrastive_loss(z, labels, protos, 0.5, form='L1',
                                              class_complement=complement)
        l2, _ = balanced_contrastive_loss(z, labels, protos, 0.5, form='L2',
                                          class_complement=complement)
        assert (l1[valid] >= l2[valid] - 1e-10).all()
        assert (l1[valid] > l2[valid]).any()


def test_absent_classes_enter_through_prototypes():
    """Class-complement: a class missing from the batch still appears in every
    D_i through its prototype (with weight 1/n_j = 1), so its prototype gets a
    repelling gradient; without complement it plays no part."""
    z, labels, protos = random_batch(0, absent=(2, 4))
    protos = protos.clone().requires_grad_()
    loss, _ = balanced_contrastive_loss(z, labels, protos, 0.2)
    loss.mean().backward()
    grad = protos.grad
    assert grad[2].norm() > 0 and grad[4].norm() > 0
    # moving the absent prototype toward the anchors raises the loss
    shifted = protos.detach().clone()
    shifted[2] = F.normalize(z.mean(0), dim=0)
    higher, _ = balanced_contrastive_loss(z, labels, shifted, 0.2)
    assert higher.mean() > loss.mean()
    # without class-complement the prototypes are not used at all
    plain, _ = balanced_contrastive_loss(z, labels, shifted, 0.2,
                                         class_complement=False)
    plain_ref, _ = balanced_contrastive_loss(z, labels, None, 0.2,
                                             class_complement=False)
    torch.testing.assert_close(plain, plain_ref)


def test_all_candidates_receive_gradient_and_gradcheck():
    z, labels, protos = random_batch(1, n=8, dim=4)
    z = z.requires_grad_()
    protos = protos.requires_grad_()

    def func(z_, p_):
        return balanced_contrastive_loss(z_, labels, p_, 0.5)[0].double()

    assert torch.autograd.gradcheck(func, (z, protos), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize('complement,averaging', [(True, True), (False, True),
                                                  (True, False)])
@pytest.mark.parametrize('offset,count', [(0, None), (3, 5)])
def test_eq9_gradient_and_anchor_subset_match_loop(complement, averaging,
                                                    offset, count):
    """The Eq. 9 denominator (log-domain, anchor-subset rows for DDP) has the
    analytic gradient (central differences along random directions) and
    equals the loop transcription of Eq. 9, a singleton class included."""
    z, labels, protos = random_batch(5, n=11, dim=4)
    labels[-1] = 5  # a singleton class (weight n/(n - 1) guarded)
    labels[:-1][labels[:-1] == 5] = 0
    z = z.requires_grad_()
    protos = protos.requires_grad_()
    rows = slice(offset, None if count is None else offset + count)

    def func(z_, p_):
        return balanced_contrastive_loss(
            z_, labels, p_, 0.4, class_complement=complement,
            class_averaging=averaging, anchor_offset=offset,
            num_anchors=count)[0]

    # a random weighting of the per-anchor losses, so every row's gradient
    # counts
    weights = torch.rand(11 - offset if count is None else count,
                         generator=torch.Generator().manual_seed(1),
                         dtype=torch.float64)
    (func(z, protos) * weights).sum().backward()
    for seed in range(3):
        generator = torch.Generator().manual_seed(seed)
        dz = torch.randn(z.shape, generator=generator, dtype=torch.float64)
        dp = torch.randn(protos.shape, generator=generator,
                         dtype=torch.float64)
        with torch.no_grad():
            step = 1e-6
            plus = (func(z + step * dz, protos + step * dp) * weights).sum()
            minus = (func(z - step * dz, protos - step * dp) * weights).sum()
        numeric = (plus - minus) / (2 * step)
        proto_grad = torch.zeros_like(protos) if protos.grad is None \
            else protos.grad
        analytic = (z.grad * dz).sum() + (proto_grad * dp).sum()
        torch.testing.assert_close(analytic, numeric, rtol=1e-6, atol=1e-8)
    assert (protos.grad is None) == (not complement)
    expected, _ = loop_bcl(z.detach(), labels, protos.detach(), 0.4, 'L1',
                           complement, averaging)
    torch.testing.assert_close(func(z, protos).detach(), expected[rows],
                               rtol=1e-10, atol=1e-12)


def test_small_temperature_is_finite():
    """Log-domain: τ = 0.01 (logits up to 100) stays finite in fp32."""
    z, labels, protos = random_batch(2, dtype=torch.float32)
    z = z.requires_grad_()
    loss, _ = balanced_contrastive_loss(z, labels, protos, 0.01)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(z.grad).all()


def test_logit_compensation_eq10_is_ce_of_shifted_logits():
    """Eq. 10 with α = 1, δ = log π: CE(ℓ + log π, y); α_y multiplies."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 4, generator=generator)
    target = torch.tensor([0, 1, 2, 3, 0, 0, 1])
    counts = torch.tensor([50.0, 20.0, 5.0, 1.0])
    log_prior = (counts / counts.sum()).log()
    loss = logit_compensated_cross_entropy(logits, target, log_prior)
    torch.testing.assert_close(loss, F.cross_entropy(
        logits + log_prior, target, reduction='none'))
    alpha = torch.tensor([1.0, 2.0, 3.0, 4.0])
    weighted = logit_compensated_cross_entropy(logits, target, log_prior,
                                               class_weight=alpha)
    torch.testing.assert_close(weighted, loss * alpha[target])
    # the compensation favours the tail: its loss is larger than plain CE
    plain = F.cross_entropy(logits, target, reduction='none')
    assert (loss[target == 3] > plain[target == 3]).all()


@pytest.mark.parametrize('prior_scale,with_alpha', [(1.0, False), (0.5, True)])
def test_logit_compensation_values_and_gradients_match_eq10(prior_scale,
                                                            with_alpha):
    """Eq. 10 through the shared prior-shifted cross-entropy: values and
    logit gradients equal the direct form CE(ℓ + s·log π, y)·α_y to 1e-6."""
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(9, 5, generator=generator) * 3
    target = torch.randint(5, (9, ), generator=generator)
    log_prior = torch.tensor([60.0, 20.0, 9.0, 3.0, 1.0]).log_softmax(0)
    alpha = torch.rand(5, generator=generator) + 0.5 if with_alpha else None
    got_logits = logits.clone().requires_grad_()
    got = logit_compensated_cross_entropy(got_logits, target, log_prior,
                                          class_weight=alpha,
                                          prior_scale=prior_scale)
    ref_logits = logits.clone().requires_grad_()
    ref = F.cross_entropy(ref_logits + prior_scale * log_prior, target,
                          reduction='none')
    if alpha is not None:
        ref = ref * alpha[target]
    weights = torch.rand(9, generator=generator)
    (got * weights).sum().backward()
    (ref * weights).sum().backward()
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(got_logits.grad, ref_logits.grad, rtol=0,
                               atol=1e-6)


def test_module_eq11_combines_terms():
    """L = λ·L_LC + μ·L_BCL (Eq. 11) from the registered module."""
    generator = torch.Generator().manual_seed(0)
    batch, num_classes, dim = 6, 4, 5
    logits = torch.randn(batch, num_classes, generator=generator)
    target = torch.tensor([0, 0, 1, 2, 0, 1])
    embeddings = torch.randn(batch, 2, dim, generator=generator)
    protos = torch.randn(num_classes, dim, generator=generator)
    counts = [30, 10, 3, 1]
    module = MODELS.build(dict(type='BCLLoss', temperature=0.1, lc_weight=2.0,
                               bcl_weight=0.6, class_counts=counts))
    out = module(logits, target, embeddings, protos)
    log_prior = torch.log(torch.tensor(counts, dtype=torch.float64) / sum(counts)).float()
    torch.testing.assert_close(out['loss_lc'], 2.0 * F.cross_entropy(
        logits + log_prior, target))
    flat = F.normalize(torch.cat([embeddings[:, 0], embeddings[:, 1]]), dim=1)
    expected, _ = loop_bcl(flat.double(), target.repeat(2),
                           F.normalize(protos, dim=1).double(), 0.1)
    torch.testing.assert_close(out['loss_bcl'].double(), 0.6 * expected.mean(),
                               rtol=1e-5, atol=1e-6)


def test_counts_are_a_checkpointed_buffer():
    module = BCLLoss(num_classes=3)
    module.set_class_counts([5, 3, 1])
    state = module.state_dict()
    assert state['class_counts'].tolist() == [5, 3, 1]
    fresh = BCLLoss(num_classes=3)
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.log_prior(3), module.log_prior(3))


def test_bad_input_raises_clear_errors():
    logits = torch.randn(4, 3)
    target = torch.tensor([0, 1, 2, 0])
    emb = torch.randn(4, 2, 8)
    protos = torch.randn(3, 8)
    with pytest.raises(ValueError, match='class_counts'):
        BCLLoss()(logits, target, emb, protos)
    module = BCLLoss(class_counts=[3, 2, 1])
    with pytest.raises(ValueError, match=r'embeddings must have shape \(4, V, D\)'):
        module(logits, target, emb[:, 0], protos)
    with pytest.raises(ValueError, match='needs prototypes'):
        module(logits, target, emb, None)
    with pytest.raises(ValueError, match=r'prototypes must have shape \(3, D\)'):
        module(logits, target, emb, protos[:2])
    with pytest.raises(ValueError, match='labels in'):
        module(logits, torch.tensor([0, 1, 5, 0]), emb, protos)
    with pytest.raises(ValueError, match='temperature'):
        BCLLoss(temperature=0)
    with pytest.raises(ValueError, match='form'):
        BCLLoss(form='L4')
    with pytest.raises(ValueError, match="class_averaging=False needs form='L1'"):
        BCLLoss(form='L2', class_averaging=False)
    with pytest.raises(ValueError, match='class_counts has 3 entries'):
        BCLLoss(num_classes=4, class_counts=[3, 2, 1])
    with pytest.raises(ValueError, match='prototypes .* are required'):
        balanced_contrastive_loss(F.normalize(emb[:, 0], dim=1), target, None)
    with pytest.raises(ValueError, match='integer class indices'):
        balanced_contrastive_loss(emb[:, 0], target.float(), protos)


def test_non_finite_inputs_and_empty_batch_are_clear_errors():
    """NaN / inf inputs name the argument instead of returning loss=nan; an
    empty batch is an error, not a NaN mean."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, generator=generator)
    target = torch.tensor([0, 1, 2, 0])
    emb = torch.randn(4, 2, 8, generator=generator)
    protos = torch.randn(3, 8, generator=generator)
    module = BCLLoss(class_counts=[3, 2, 1])
    bad = logits.clone()
    bad[2, 1] = float('nan')
    with pytest.raises(ValueError, match=r'cls_score contains 1 non-finite '
                       r'values \(rows \[2\]\); expected finite'):
        module(bad, target, emb, protos)
    bad = emb.clone()
    bad[1, 0, 3] = float('inf')
    with pytest.raises(ValueError, match='embeddings contains .* non-finite'):
        module(logits, target, bad, protos)
    bad = protos.clone()
    bad[0, 0] = float('nan')
    with pytest.raises(ValueError, match='prototypes contains .* non-finite'):
        module(logits, target, emb, bad)
    with pytest.raises(ValueError, match='weight contains 1 non-finite'):
        module(logits, target, emb, protos,
               weight=torch.tensor([1.0, float('nan'), 1.0, 1.0]))
    with pytest.raises(ValueError, match='empty batch'):
        module(logits[:0], target[:0], emb[:0], protos)
    with pytest.raises(ValueError, match='empty batch'):
        balanced_contrastive_loss(emb[:0, 0], target[:0], protos)
    # finite but un-normalised embeddings whose similarities overflow
    with pytest.raises(FloatingPointError, match='overflow'):
        balanced_contrastive_loss(emb[:, 0] * 1e20, target, protos)


DIST_WORKER = '''
import sys
import torch
import torch.distributed as torch_dist
from reot_mm.losses import BCLLoss

torch_dist.init_process_group('gloo')
rank = torch_dist.get_rank()
embeddings, target, protos, splits = torch.load(sys.argv[1])
results = []
for split in splits:
    start = sum(split[:rank])
    rows = slice(start, start + split[rank])
    local = embeddings[rows].clone().requires_grad_()
    prototypes = protos.clone().requires_grad_()
    loss = BCLLoss(temperature=0.2, lc_weight=0.0, bcl_weight=1.0)(
        torch.zeros(split[rank], protos.shape[0]), target[rows], local,
        prototypes)['loss_bcl']
    loss.backward()
    results.append((loss.detach(), local.grad, prototypes.grad))
torch.save(results, f'{sys.argv[2]}/bcl_rank{rank}.pt')
torch_dist.barrier()  # every rank done before teardown
torch_dist.destroy_process_group()
'''


def test_ddp_two_ranks_equal_single_process_on_concatenated_batch(tmp_path):
    """Gloo, 2 ranks (torchrun): embeddings and labels are all-gathered with
    gradient, so n_j counts the global batch; the mean of the rank losses and
    the DDP-averaged gradients equal the single-process loss and gradients on
    the concatenated batch (equal and unequal local batch sizes)."""
    generator = torch.Generator().manual_seed(0)
    num_classes, dim = 5, 6
    # rank 0 holds classes 0-2, rank 1 classes 2-4: local counts would differ
    target = torch.tensor([0, 0, 1, 2, 2, 3, 4, 4])
    embeddings = torch.randn(8, 2, dim, generator=generator)
    protos = torch.randn(num_classes, dim, generator=generator)
    splits = [(4, 4), (5, 3)]
    torch.save((embeddings, target, protos, splits), tmp_path / 'batch.pt')
    (tmp_path / 'worker.py').write_text(DIST_WORKER)
    run_torchrun(tmp_path / 'worker.py', tmp_path / 'batch.pt', tmp_path)
    ranks = [torch.load(tmp_path / f'bcl_rank{r}.pt') for r in (0, 1)]
    module = BCLLoss(temperature=0.2, lc_weight=0.0, bcl_weight=1.0)
    full = embeddings.clone().requires_grad_()
    prototypes = protos.clone().requires_grad_()
    single = module(torch.zeros(8, num_classes), target, full,
                    prototypes)['loss_bcl']
    single.backward()
    for case, split in enumerate(splits):
        losses = [ranks[r][case][0] for r in (0, 1)]
        torch.testing.assert_close((losses[0] + losses[1]) / 2, single.detach())
        # DDP averages parameter gradients over the 2 ranks
        local_grads = torch.cat([ranks[r][case][1] for r in (0, 1)]) / 2
        torch.testing.assert_close(local_grads, full.grad)
        proto_grad = (ranks[0][case][2] + ranks[1][case][2]) / 2
        torch.testing.assert_close(proto_grad, prototypes.grad)
    # a rank-local loss (local counts) would not match
    local_only = module(torch.zeros(4, num_classes), target[:4], embeddings[:4],
                        protos)['loss_bcl']
    assert not torch.allclose(local_only, ranks[0][0][0])


# --------------------------------------------------------- property tests
FORM_OPTIONS = [('L1', True, True), ('L1', False, True), ('L2', False, True),
                ('L2', True, True), ('L3', True, True), ('L1', True, False),
                ('L1', False, False)]
PROPERTY = settings(max_examples=30, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


def unit_rows(rows):
    """x / ‖x‖ in float64 (zero rows stay zero), without F.normalize's eps."""
    return rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-300)


@st.composite
def bcl_problem(draw):
    """A BCLLoss call: shapes, dtypes, class counts with zeros or one class,
    label patterns, and features of extreme magnitude (or zero rows)."""
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    batch = draw(st.integers(1, 5))
    views = draw(st.integers(1, 2))
    dim = draw(st.integers(1, 5))
    classes = draw(st.integers(1, 5))
    pattern = draw(st.sampled_from(['random', 'one_class', 'distinct']))
    if pattern == 'random':
        target = torch.randint(classes, (batch, ), generator=generator)
    elif pattern == 'one_class':
        target = torch.full((batch, ), classes - 1)
    else:
        target = torch.arange(batch) % classes
    counts = draw(st.lists(st.integers(0, 50), min_size=classes,
                           max_size=classes).filter(lambda c: sum(c) > 0))
    dtype = draw(st.sampled_from([torch.float32, torch.float64,
                                  torch.bfloat16]))
    scale = draw(st.sampled_from([1.0, 1e-25, 1e25]))
    embeddings = torch.randn(batch, views, dim, generator=generator,
                             dtype=torch.float64) * scale
    if draw(st.booleans()):
        embeddings[0, 0] = 0.0  # a zero row: normalised to zero, no NaN
    prototypes = torch.randn(classes, dim, generator=generator,
                             dtype=torch.float64) * scale
    logits = torch.randn(batch, classes, generator=generator,
                         dtype=torch.float64) * draw(st.sampled_from([1.0, 1e3]))
    return dict(target=target, counts=counts,
                embeddings=embeddings.to(dtype), prototypes=prototypes.to(dtype),
                logits=logits.to(dtype),
                options=draw(st.sampled_from(FORM_OPTIONS)),
                temperature=draw(st.sampled_from([0.05, 0.1, 1.0])))


@PROPERTY
@given(bcl_problem())
def test_property_module_is_finite_and_equals_the_loop_reference(problem):
    """BCLLoss (Eq. 10-11, Eq. 6-9) equals the float64 loop transcription on
    the same (rounded) inputs, for every form, shape, dtype and count."""
    form, complement, averaging = problem['options']
    tau = problem['temperature']
    module = BCLLoss(temperature=tau, lc_weight=1.0, bcl_weight=1.0,
                     form=form, class_complement=complement,
                     class_averaging=averaging,
                     class_counts=problem['counts'])
    out = module(problem['logits'], problem['target'], problem['embeddings'],
                 problem['prototypes'])
    assert all(torch.isfinite(value) for value in out.values())
    # L_LC: CE(ℓ + log π, y) with zero counts smoothed to 1
    counts = torch.tensor(problem['counts'], dtype=torch.float64).clamp(min=1)
    logits = problem['logits'].double()
    expected_lc = F.cross_entropy(logits + (counts / counts.sum()).log(),
                                  problem['target'])
    torch.testing.assert_close(out['loss_lc'].double(), expected_lc,
                               rtol=1e-5,
                               atol=1e-5 * (1 + float(logits.abs().max())))
    # L_BCL: loop transcription on the view-major, normalised embeddings
    emb = problem['embeddings'].double()
    flat = unit_rows(emb.transpose(0, 1).reshape(-1, emb.shape[2]))
    protos = unit_rows(problem['prototypes'].double())
    labels = problem['target'].repeat(emb.shape[1])
    losses, valid = loop_bcl(flat, labels, protos, tau, form, complement,
                             averaging)
    expected_bcl = losses.sum() / max(int(valid.sum()), 1)
    torch.testing.assert_close(out['loss_bcl'].double(), expected_bcl,
                               rtol=1e-4, atol=1e-4 / tau)


@PROPERTY
@given(bcl_problem(), st.sampled_from(['cls_score', 'embeddings',
                                       'prototypes']),
       st.sampled_from([float('nan'), float('inf'), -float('inf')]))
def test_property_non_finite_input_is_a_named_error(problem, name, value):
    inputs = dict(cls_score=problem['logits'].float().clone(),
                  embeddings=problem['embeddings'].float().clone(),
                  prototypes=problem['prototypes'].float().clone())
    form, complement, averaging = problem['options']
    if name == 'prototypes' and not (complement or form == 'L3'):
        return  # prototypes are not used by this form
    if name == 'cls_score':
        # at the target class: a -inf logit elsewhere is a finite, valid CE
        inputs[name][-1, problem['target'][-1]] = value
    else:
        inputs[name].view(-1)[-1] = value
    module = BCLLoss(form=form, class_complement=complement,
                     class_averaging=averaging, class_counts=problem['counts'])
    try:
        out = module(inputs['cls_score'], problem['target'],
                     inputs['embeddings'], inputs['prototypes'])
    except ValueError as error:
        assert re.search(f'{name} contains .* non-finite values .*expected '
                         'finite', str(error)), str(error)
        return
    # no error only where the value cannot matter (an embedding whose anchor
    # has no positive and no other candidate): the same loss with it finite
    assert name == 'embeddings' and all(map(torch.isfinite, out.values()))
    inputs[name].view(-1)[-1] = 1.0
    clean = module(inputs['cls_score'], problem['target'],
                   inputs['embeddings'], inputs['prototypes'])
    assert all(torch.equal(out[key], clean[key]) for key in out)
