"""RE-OT Sinkhorn (reot_mm.ot.reot_sinkhorn): RE-OT Eq. 3, 6-8, 12-13, 16.

Each test names the equation or proposition it checks. The reference solver
is POT (``ot.bregman.sinkhorn_log``), an independent implementation.
"""
import math
import warnings

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from reot_mm.ot import SinkhornResult, log_kernel, reot_sinkhorn

ot = pytest.importorskip('ot')

D = torch.float64


def _problem(n, m, seed, skew=1.0, batch=None):
    gen = torch.Generator().manual_seed(seed)
    shape = (n, m) if batch is None else (batch, n, m)
    cost = torch.rand(shape, generator=gen, dtype=D)
    a = torch.rand(shape[:-1], generator=gen, dtype=D)**skew + 1e-3
    b = torch.rand(shape[:-2] + (m, ), generator=gen, dtype=D)**skew + 1e-3
    a = a / a.sum(-1, keepdim=True)
    b = b / b.sum(-1, keepdim=True)
    return cost, a, b


def _randn(*shape, seed):
    return torch.randn(shape, dtype=D,
                       generator=torch.Generator().manual_seed(seed))


def _solve(*args, **kwargs):
    kwargs.setdefault('max_iter', 100000)
    kwargs.setdefault('tol', 1e-12)
    return reot_sinkhorn(*args, **kwargs)


def _pot(a, b, cost, eps):
    return ot.bregman.sinkhorn_log(a, b, cost, eps, numItermax=100000,
                                   stopThr=1e-13)


def test_eq8_marginals_match_a_and_b():
    cost, a, b = _problem(9, 6, 0, skew=3.0)
    res = _solve(cost, 0.05, a, b)
    plan = res.plan()
    assert isinstance(res, SinkhornResult) and res.converged
    torch.testing.assert_close(plan.sum(1), a, atol=1e-10, rtol=0)
    torch.testing.assert_close(plan.sum(0), b, atol=1e-10, rtol=0)
    assert res.marginal_error < 1e-12
    assert res.f.shape == (9, ) and res.g.shape == (6, )


def test_eq16_ua_rows_match_a_closed_form():
    """Eq. 16 relaxation U(a): P_ij = a_i softmax_j(log K_ij), one step."""
    cost, a, _ = _problem(8, 5, 1, skew=2.0)
    log_q = _randn(8, 5, seed=2)
    res = reot_sinkhorn(cost, 0.3, a, log_prior=log_q, constraints='a')
    expected = a[:, None] * torch.softmax(log_q - cost / 0.3, dim=-1)
    torch.testing.assert_close(res.plan(), expected, atol=1e-15, rtol=1e-12)
    torch.testing.assert_close(res.plan().sum(1), a)
    assert res.iterations == 1 and res.converged


@pytest.mark.parametrize('eps', [1.0, 0.1, 1e-2, 1e-3])
@pytest.mark.parametrize('skew', [1.0, 4.0])
def test_eq3_matches_pot_sinkhorn_log(eps, skew):
    """Q = 1: plain entropic OT (Eq. 3), plans equal POT's within 1e-6."""
    cost, a, b = _problem(12, 7, int(eps * 1000) + int(skew), skew=skew)
    res = _solve(cost, eps, a, b)
    assert res.converged
    torch.testing.assert_close(res.plan(), _pot(a, b, cost, eps), atol=1e-6,
                               rtol=0)


@pytest.mark.parametrize('eps', [1.0, 0.05, 1e-3])
def test_prop2_prior_equals_pot_on_shifted_cost(eps):
    """Prop. 2: K = Q∘exp(-C/ε), so RE-OT(C, Q) = entropic OT(C - ε log Q)."""
    cost, a, b = _problem(10, 6, 3, skew=2.0)
    q = torch.rand(10, 6, dtype=D, generator=torch.Generator().manual_seed(4))
    q = q + 0.05
    res = _solve(cost, eps, a, b, log_prior=q.log())
    expected = _pot(a, b, cost - eps * q.log(), eps)
    torch.testing.assert_close(res.plan(), expected, atol=1e-6, rtol=0)


def test_prop1_large_epsilon_tends_to_projected_prior():
    """Prop. 1(1): ε → ∞ gives Q̃ = diag(u) Q diag(v) ∈ U(a, b)."""
    cost, a, b = _problem(6, 5, 5, skew=2.0)
    log_q = _randn(6, 5, seed=6)
    q_tilde = _solve(torch.zeros_like(cost), 1.0, a, b, log_prior=log_q).plan()
    torch.testing.assert_close(q_tilde.sum(1), a)
    torch.testing.assert_close(q_tilde.sum(0), b)
    gaps = [(_solve(cost, eps, a, b, log_prior=log_q).plan() - q_tilde).abs()
            .max().item() for eps in (1e2, 1e4, 1e6)]
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-6


def test_prop1_diagonal_rescaling_of_prior_changes_nothing():
    """Prop. 1(2): P_Q = P_Q̃ for Q̃ = diag(u) Q diag(v)."""
    cost, a, b = _problem(7, 4, 7)
    gen = torch.Generator().manual_seed(8)
    log_q = torch.randn(7, 4, dtype=D, generator=gen)
    log_q_tilde = log_q + torch.randn(7, 1, dtype=D, generator=gen) * 3 \
        + torch.randn(1, 4, dtype=D, generator=gen) * 3
    p = _solve(cost, 0.2, a, b, log_prior=log_q).plan()
    p_tilde = _solve(cost, 0.2, a, b, log_prior=log_q_tilde).plan()
    torch.testing.assert_close(p, p_tilde, atol=1e-12, rtol=0)


def test_prop1_outer_product_prior_is_entropic_ot():
    """Prop. 1(2): Q̃ = a⊗b recovers the entropic OT plan P^ε (Eq. 3)."""
    cost, a, b = _problem(7, 5, 9, skew=3.0)
    outer = (a[:, None] * b[None, :]).log()
    torch.testing.assert_close(
        _solve(cost, 0.1, a, b, log_prior=outer).plan(),
        _solve(cost, 0.1, a, b).plan(), atol=1e-12, rtol=0)


def _kl(p, k):
    return (p * (p / k).log() - p + k).sum()


def test_prop2_plan_is_kl_projection_of_kernel():
    """Prop. 2 (Eq. 7-8): P minimises KL~(P|K) over U(a, b)."""
    cost, a, b = _problem(6, 5, 10)
    log_q = _randn(6, 5, seed=11)
    eps = 0.3
    p = _solve(cost, eps, a, b, log_prior=log_q).plan()
    k = log_kernel(cost, eps, log_q).exp()
    base = _kl(p, k)
    gen = torch.Generator().manual_seed(12)
    for _ in range(20):
        r = torch.randn(6, 5, dtype=D, generator=gen)
        # zero row and column sums: P + t·d stays in U(a, b)
        d = r - r.mean(1, keepdim=True) - r.mean(0, keepdim=True) + r.mean()
        t = 0.5 * (p / d.abs()).min()
        assert _kl(p + t * d, k) > base
        assert _kl(p - t * d, k) > base


def test_eq12_13_iterated_prior_equals_smaller_epsilon():
    """Eq. 12-13: Q^(0) = 1, Q^(t) = P_{Q^(t-1)} give P_{Q^(t)} = P^{ε/(t+1)}.

    Unrolling Eq. 13, Q^(t) = diag(.) e^{-tC/ε} diag(.), so the (t+1)-th solve
    sees the kernel e^{-(t+1)C/ε} up to diagonal factors (Prop. 1(2)). (The
    second equality of Eq. 13 as printed has t+1 exponential factors already
    in Q^(t); the kernel of the next solve is what carries t+1.)
    """
    cost, a, b = _problem(8, 6, 13, skew=2.0)
    eps, t = 0.5, 3
    log_q = None  # Q^(0) = 1
    for _ in range(t):
        log_q = _solve(cost, eps, a, b, log_prior=log_q).log_plan()
    p_qt = _solve(cost, eps, a, b, log_prior=log_q).plan()
    direct = _solve(cost, eps / (t + 1), a, b).plan()
    torch.testing.assert_close(p_qt, direct, atol=1e-10, rtol=0)


def test_batched_equals_loop():
    cost, a, b = _problem(9, 4, 14, skew=2.0, batch=3)
    log_q = torch.randn(3, 9, 4, dtype=D)
    res = _solve(cost, 0.1, a, b, log_prior=log_q)
    assert res.f.shape == (3, 9) and res.marginal_error.shape == (3, )
    for i in range(3):
        one = _solve(cost[i], 0.1, a[i], b[i], log_prior=log_q[i])
        torch.testing.assert_close(res.plan()[i], one.plan(), atol=1e-12,
                                   rtol=0)
    # shared 1-D marginals and a class-wise (m,) prior broadcast over batch
    res = _solve(cost, 0.1, a[0], b[0], log_prior=log_q[0, 0])
    one = _solve(cost[2], 0.1, a[0], b[0], log_prior=log_q[0, 0])
    torch.testing.assert_close(res.plan()[2], one.plan(), atol=1e-12, rtol=0)


def test_warm_start_converges_within_check_every():
    cost, a, b = _problem(20, 10, 15, skew=2.0)
    res = reot_sinkhorn(cost, 0.01, a, b, tol=1e-9, max_iter=10000)
    assert res.converged and res.iterations > 10
    warm = reot_sinkhorn(cost, 0.01, a, b, tol=1e-9, check_every=10,
                         init=(res.f, res.g))
    assert warm.converged and warm.iterations <= 10


def test_nonconvergence_warns_with_error_and_stays_finite():
    cost, a, b = _problem(30, 20, 16, skew=4.0)
    with pytest.warns(UserWarning, match='marginal error'):
        res = reot_sinkhorn(cost.float(), 1e-3, a.float(), b.float(),
                            max_iter=3, tol=1e-9)
    assert not res.converged and res.iterations == 3
    assert torch.isfinite(res.f).all() and torch.isfinite(res.g).all()
    assert torch.isfinite(res.marginal_error)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        reot_sinkhorn(cost, 1e-3, a, b, max_iter=3, warn=False)


def test_fp32_small_epsilon_stable():
    cost, a, b = _problem(200, 50, 17, skew=3.0)
    res = reot_sinkhorn(cost.float(), 1e-3, a.float(), b.float(),
                        max_iter=20000, tol=1e-5)
    ref = _solve(cost, 1e-3, a, b).plan()
    assert res.converged and res.f.dtype == torch.float32
    assert (res.plan().double() - ref).abs().max() < 1e-5


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision_input_is_solved_in_fp32(dtype):
    cost, a, b = _problem(30, 8, 27)
    res = reot_sinkhorn(cost.to(dtype), 0.1, a, b, tol=1e-7)
    assert res.converged and res.f.dtype == torch.float32
    assert res.log_plan().dtype == torch.float32
    ref = _solve(cost.to(dtype).double(), 0.1, a, b).plan()
    assert (res.plan().double() - ref).abs().max() < 1e-5


def test_zero_prior_entries_give_exact_zero_plan():
    """log Q = -inf (Q_ij = 0) with finite cost: P_ij is exactly 0."""
    cost, a, b = _problem(5, 4, 18)
    log_q = torch.zeros(5, 4, dtype=D)
    log_q[0, 1] = log_q[3, 2] = -math.inf
    for constraints in ('ab', 'a'):
        res = _solve(cost, 0.1, a, b, log_prior=log_q, constraints=constraints)
        plan = res.plan()
        assert plan[0, 1] == 0 and plan[3, 2] == 0
        torch.testing.assert_close(plan.sum(1), a)
        if constraints == 'ab':
            torch.testing.assert_close(plan.sum(0), b)


def test_zero_marginal_entries():
    cost, a, b = _problem(5, 4, 19)
    a = a.clone()
    a[2] = 0
    a = a / a.sum()
    res = _solve(cost, 0.1, a, b)
    plan = res.plan()
    assert (plan[2] == 0).all()
    torch.testing.assert_close(plan.sum(0), b)


@pytest.mark.parametrize('axis', ['row', 'column'])
def test_all_zero_kernel_row_or_column_is_infeasible(axis):
    cost, a, b = _problem(5, 4, 20)
    log_q = torch.zeros(5, 4, dtype=D)
    if axis == 'row':
        log_q[1] = -math.inf
    else:
        log_q[:, 2] = -math.inf
    for grad in ('none', 'unrolled'):
        with pytest.raises(ValueError, match=f'infeasible.*{axis}'):
            reot_sinkhorn(cost, 0.1, a, b, log_prior=log_q, grad=grad)


@pytest.mark.parametrize('eps', [0, -1.0, math.inf, math.nan])
def test_bad_epsilon(eps):
    cost, a, b = _problem(3, 3, 0)
    with pytest.raises(ValueError, match='epsilon'):
        reot_sinkhorn(cost, eps, a, b)


def test_bad_marginals():
    cost, a, b = _problem(4, 3, 0)
    with pytest.raises(ValueError, match='non-negative'):
        reot_sinkhorn(cost, 1.0, a - 0.3, b)
    with pytest.raises(ValueError, match='finite'):
        reot_sinkhorn(cost, 1.0, a, b * math.nan)
    with pytest.raises(ValueError, match=r'same total mass.*relative gap'):
        reot_sinkhorn(cost, 1.0, a, b * 1.01)
    # within the 1e-6 relative tolerance is accepted; unnormalised mass too
    reot_sinkhorn(cost, 1.0, 2 * a, 2 * b * (1 + 1e-8))


def test_bad_shapes():
    cost, a, b = _problem(4, 3, 0)
    with pytest.raises(ValueError, match=r'a must have shape \(4,\)'):
        reot_sinkhorn(cost, 1.0, b, b)
    with pytest.raises(ValueError, match=r'b must have shape \(3,\)'):
        reot_sinkhorn(cost, 1.0, a, a)
    with pytest.raises(ValueError, match='log_prior must broadcast'):
        reot_sinkhorn(cost, 1.0, a, b, log_prior=torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r'\(2, 4\)'):
        reot_sinkhorn(cost.expand(3, 4, 3), 1.0, a.expand(2, 4), b)
    with pytest.raises(ValueError, match='cost must have shape'):
        reot_sinkhorn(cost[0], 1.0)
    with pytest.raises(ValueError, match='cost contains NaN'):
        reot_sinkhorn(cost * math.nan, 1.0)
    with pytest.raises(ValueError, match='constraints'):
        reot_sinkhorn(cost, 1.0, constraints='b')
    with pytest.raises(ValueError, match='grad'):
        reot_sinkhorn(cost, 1.0, grad='last')
    with pytest.raises(ValueError, match='init g'):
        reot_sinkhorn(cost, 1.0, init=(a, a))


def test_unrolled_gradcheck_wrt_cost():
    cost, a, b = _problem(3, 4, 21, skew=2.0)
    log_q = torch.randn(3, 4, dtype=D)

    def fn(c):
        res = reot_sinkhorn(c, 0.5, a, b, log_prior=log_q, grad='unrolled',
                            max_iter=300, tol=1e-14, warn=False)
        return res.log_plan()

    torch.autograd.gradcheck(fn, (cost.clone().requires_grad_(True), ))
    # the unrolled solution is the same solution
    torch.testing.assert_close(fn(cost).exp(),
                               _solve(cost, 0.5, a, b, log_prior=log_q).plan())


def test_grad_none_returns_detached_potentials():
    cost, a, b = _problem(3, 4, 22)
    cost = cost.requires_grad_(True)
    for constraints in ('ab', 'a'):
        res = reot_sinkhorn(cost, 0.5, a, b, constraints=constraints)
        assert not res.f.requires_grad and not res.g.requires_grad


@pytest.mark.parametrize('grad', ['unrolled', 'implicit'])
def test_eq16_ua_gradient_is_exact_softmax_gradient(grad):
    cost, a, _ = _problem(3, 4, 23)
    cost = cost.requires_grad_(True)
    torch.autograd.gradcheck(
        lambda c: reot_sinkhorn(c, 0.5, a, constraints='a',
                                grad=grad).log_plan(), (cost, ))


def _implicit(cost, a, b, log_q):
    return _solve(cost, 0.5, a, b, log_prior=log_q, tol=1e-13,
                  grad='implicit')


def test_implicit_gradcheck_wrt_cost_and_prior():
    """Implicit function theorem on P 1 = a, P^T 1 = b (Eq. 8 optimality)."""
    cost, a, b = _problem(3, 4, 24, skew=2.0)
    log_q = torch.randn(3, 4, dtype=D)
    torch.autograd.gradcheck(
        lambda c: _implicit(c, a, b, log_q).log_plan(),
        (cost.clone().requires_grad_(True), ))
    torch.autograd.gradcheck(
        lambda lq: _implicit(cost, a, b, lq).log_plan(),
        (log_q.clone().requires_grad_(True), ))


def test_implicit_equals_unrolled_at_convergence_batched():
    cost, a, b = _problem(5, 4, 25, skew=2.0, batch=2)
    log_q = torch.randn(2, 5, 4, dtype=D)
    weight = torch.randn(2, 5, 4, dtype=D)
    grads = []
    for grad in ('implicit', 'unrolled'):
        c = cost.clone().requires_grad_(True)
        res = _solve(c, 0.5, a, b, log_prior=log_q, grad=grad, tol=1e-13)
        (res.plan() * weight).sum().backward()
        grads.append(c.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-10, rtol=1e-8)


def test_implicit_gradient_wrt_marginals():
    """Directional derivative along mass-preserving changes of a and b."""
    cost, a, b = _problem(3, 4, 26, skew=2.0)
    log_q = torch.randn(3, 4, dtype=D)
    weight = torch.randn(3, 4, dtype=D)
    a_, b_ = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    (_implicit(cost, a_, b_, log_q).plan() * weight).sum().backward()
    da = torch.tensor([0.01, -0.005, -0.005], dtype=D)
    db = torch.tensor([0.003, -0.001, -0.001, -0.001], dtype=D)
    h = 1e-5

    def value(sign):
        plan = _solve(cost, 0.5, a + sign * h * da, b + sign * h * db,
                      log_prior=log_q, tol=1e-14).plan()
        return (plan * weight).sum()

    numeric = (value(1) - value(-1)) / (2 * h)
    analytic = a_.grad @ da + b_.grad @ db
    torch.testing.assert_close(analytic, numeric, atol=1e-8, rtol=1e-6)


# ------------------------------------------------------------------ memory
class _NewLargeTensors(TorchDispatchMode):
    """Records every aten op that allocates a new storage of >= nbytes.

    Views, in-place ops and ``out=`` ops reuse an input's storage and are not
    counted, so the list is exactly the large allocations of a call.
    """

    def __init__(self, nbytes):
        super().__init__()
        self.nbytes, self.ops = nbytes, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = {t.untyped_storage().data_ptr()
                  for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor)}
        out = func(*args, **kwargs)
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and \
                    t.untyped_storage().nbytes() >= self.nbytes and \
                    t.untyped_storage().data_ptr() not in inputs:
                self.ops.append(str(func))
        return out


def _large_allocations(fn, n, m, itemsize=4):
    with _NewLargeTensors(n * m * itemsize) as spy:
        out = fn()
    return spy.ops, out


def test_memory_at_most_one_n_by_m_temporary():
    """No call makes more than one n x m temporary.

    buffer mode: exactly its kernel buffer; stream mode: none (row blocks of
    64 rows, also for the check of the returned plan); log_plan()/plan():
    only the output.
    """
    n, m = 640, 48
    cost, a, b = _problem(n, m, 40, skew=2.0)
    cost, a, b = cost.float(), a.float(), b.float()
    log_q = torch.randn(n, m, generator=torch.Generator().manual_seed(41))
    kwargs = dict(log_prior=log_q, tol=1e-6, chunk_size=64)
    ops, res = _large_allocations(lambda: reot_sinkhorn(cost, 0.5, a, b,
                                                        **kwargs), n, m)
    assert ops == ['aten.empty.memory_format'], ops
    ops, _ = _large_allocations(lambda: reot_sinkhorn(
        cost, 0.5, a, b, memory='stream', **kwargs), n, m)
    assert ops == [], ops
    for method in (res.log_plan, res.plan):
        ops, out = _large_allocations(method, n, m)
        assert len(ops) == 1 and out.shape == (n, m), ops


def test_stream_equals_buffer_fp32_and_fp64():
    """memory='stream' (row blocks, streamed column logsumexp) solves the
    same RE-OT problem (Eq. 6-8): plans equal to 1e-6 (fp32) / 1e-10 (fp64),
    for blocks that do not divide n, a (n, m) prior with zeros, ε = 1e-3,
    zero marginal entries and a batch."""
    cost, a, b = _problem(203, 17, 42, skew=3.0)
    a = a.clone()
    a[5] = 0
    a = a / a.sum()
    log_q = _randn(203, 17, seed=43)
    log_q[0, 3] = log_q[7, 1] = -math.inf
    for dtype, eps, atol, chunks in ((D, 0.05, 1e-12, (1, 10, None)),
                                     (D, 1e-2, 1e-10, (64, )),
                                     (torch.float32, 0.5, 1e-6, (10, None))):
        args = (cost.to(dtype), eps, a.to(dtype), b.to(dtype))
        kwargs = dict(log_prior=log_q, tol=1e-11 if dtype == D else 1e-6,
                      max_iter=100000)
        ref = reot_sinkhorn(*args, **kwargs)
        for chunk in chunks:
            res = reot_sinkhorn(*args, memory='stream', chunk_size=chunk,
                                **kwargs)
            assert res.converged and res.f.dtype == dtype
            assert (res.plan() - ref.plan()).abs().max() < atol
            assert res.plan()[0, 3] == 0 and (res.plan()[5] == 0).all()
    cost, a, b = _problem(40, 9, 42, skew=3.0)  # ε = 1e-3: 3.7k iterations
    ref = _solve(cost, 1e-3, a, b, tol=1e-11)
    res = _solve(cost, 1e-3, a, b, tol=1e-11, memory='stream', chunk_size=16)
    assert (res.plan() - ref.plan()).abs().max() < 1e-10
    cost, a, b = _problem(50, 9, 44, skew=2.0, batch=3)
    log_q = _randn(3, 1, 9, seed=45)  # broadcast over rows
    ref = _solve(cost, 0.2, a, b, log_prior=log_q)
    res = _solve(cost, 0.2, a, b, log_prior=log_q, memory='stream',
                 chunk_size=7)
    torch.testing.assert_close(res.plan(), ref.plan(), atol=1e-12, rtol=0)
    assert res.marginal_error.shape == (3, )


def test_stream_half_input_warm_start_and_implicit_gradient():
    cost, a, b = _problem(40, 8, 46)
    res = reot_sinkhorn(cost.half(), 0.1, a, b, tol=1e-6, memory='stream',
                        chunk_size=9)
    ref = reot_sinkhorn(cost.half(), 0.1, a, b, tol=1e-6)
    assert res.f.dtype == torch.float32
    assert (res.plan() - ref.plan()).abs().max() < 1e-6
    warm = reot_sinkhorn(cost, 0.1, a, b, tol=1e-9, check_every=1,
                         memory='stream', init=(ref.f, ref.g))
    assert warm.iterations < _solve(cost, 0.1, a, b, tol=1e-9,
                                    check_every=1,
                                    memory='stream').iterations
    grads = []
    for memory in ('buffer', 'stream'):
        c = cost.clone().requires_grad_(True)
        out = _solve(c, 0.5, a, b, grad='implicit', memory=memory,
                     chunk_size=11, tol=1e-13)
        (out.plan() * _randn(40, 8, seed=47)).sum().backward()
        grads.append(c.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-10, rtol=1e-8)


def test_eq16_ua_log_plan_in_place_equals_graph():
    cost, a, _ = _problem(37, 6, 48)
    log_q = _randn(37, 6, seed=49)
    full = reot_sinkhorn(cost, 0.3, a, log_prior=log_q, constraints='a')
    # in-place log_plan (no autograd) == the out-of-place graph version
    graph = reot_sinkhorn(cost.clone().requires_grad_(True), 0.3, a,
                          log_prior=log_q, constraints='a').log_plan()
    assert graph.requires_grad
    torch.testing.assert_close(full.log_plan(), graph.detach(), atol=0,
                               rtol=0)


def test_stream_infeasible_nonconvergence_and_bad_memory_args():
    cost, a, b = _problem(5, 4, 20)
    log_q = torch.zeros(5, 4, dtype=D)
    log_q[:, 2] = -math.inf
    with pytest.raises(ValueError, match='infeasible.*column'):
        reot_sinkhorn(cost, 0.1, a, b, log_prior=log_q, memory='stream')
    log_q = torch.zeros(5, 4, dtype=D)
    log_q[1] = -math.inf
    with pytest.raises(ValueError, match='infeasible.*row'):
        reot_sinkhorn(cost, 0.1, a, b, log_prior=log_q, memory='stream')
    cost, a, b = _problem(30, 20, 16, skew=4.0)
    with pytest.warns(UserWarning, match='marginal error'):
        res = reot_sinkhorn(cost.float(), 1e-3, a.float(), b.float(),
                            max_iter=3, tol=1e-9, memory='stream')
    assert not res.converged and res.iterations == 3
    assert torch.isfinite(res.f).all() and torch.isfinite(res.g).all()
    with pytest.raises(ValueError, match="memory must be one of"):
        reot_sinkhorn(cost, 1.0, memory='disk')
    for chunk in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match='chunk_size must be a positive'):
            reot_sinkhorn(cost, 1.0, chunk_size=chunk)
    with pytest.raises(ValueError, match='log_prior must be finite or -inf'):
        reot_sinkhorn(cost, 1.0, log_prior=torch.full((20, ), math.inf))
    with pytest.raises(ValueError, match='cost contains -inf'):
        reot_sinkhorn(-cost / 0.0, 1.0)
