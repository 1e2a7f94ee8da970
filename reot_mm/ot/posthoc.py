"""Post-hoc correction of saved predictions: logit adjustment, OT, OTLM, EM.

Plain torch (layer 1): imports only torch and :mod:`reot_mm.ot.sinkhorn`.

* :func:`logit_adjustment` — Menon et al. 2021: ``Φ - τ log π_train``.
* :func:`posthoc_ot` — OTLM Algorithm 1 (Eq. 9-11): predictions Z, cost
  ``M = -log Z``, plan Y with row sums 1/N and column sums μ, entropic weight
  λ, solved by :func:`reot_sinkhorn` with ε = λ.
* :func:`fit_otlm` / :func:`apply_otlm` — OTLM Eq. 12: a K x K linear map W
  (initialised to I) on the logits, fitted without labels by minimising the
  entropic OT objective with Sinkhorn in the loop.
* :func:`estimate_test_prior_em` — Saerens et al. 2002 EM for an unknown test
  label distribution (the limitation RE-OT names, issue 3 §4).
* :func:`kl_divergence`, :func:`refined_marginal` — the paper's Table 4 metric.

Convention for the plan. The OTLM paper writes Y with row sums 1 and column
sums N μ; here the plan has total mass 1 (row sums 1/N, column sums μ), which
is the same problem scaled by 1/N. Row-normalising either gives the refined
per-sample probabilities ``Ŷ_n = N Y_n``.
"""
import math
from dataclasses import dataclass
from typing import List, Optional

import torch

from .sinkhorn import check_positive, reot_sinkhorn

__all__ = [
    'PosthocOTResult', 'logit_adjustment', 'posthoc_ot', 'fit_otlm',
    'apply_otlm', 'OTLMFit', 'check_em_smoothing', 'estimate_test_prior_em',
    'kl_divergence', 'refined_marginal'
]

_OPTIMIZERS = ('adam', 'sgd')
#: elements per row block of the in-place passes (4 MiB in fp32)
_BLOCK_ELEMENTS = 1 << 20


# ----------------------------------------------------------------- checks
def _check_matrix(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f'{name} must be a torch.Tensor of shape (N, K), got '
                         f'{type(x).__name__}')
    if x.ndim != 2 or min(x.shape) == 0:
        raise ValueError(f'{name} must have shape (N, K) with N, K >= 1, got '
                         f'{tuple(x.shape)}')
    if not x.is_floating_point():
        raise ValueError(f'{name} must be a floating tensor, got {x.dtype}')
    return x


def _check_distribution(p, name: str, size: int, dtype, device,
                        allow_zero: bool = True) -> torch.Tensor:
    """A (size,) probability vector: finite, >= 0, summing to 1 (tol 1e-4)."""
    p = torch.as_tensor(p, device=device)
    if p.ndim != 1 or p.shape[0] != size:
        raise ValueError(f'{name} must have shape ({size},) to match the '
                         f'number of classes, got {tuple(p.shape)}')
    p = p.to(dtype)
    if not torch.isfinite(p).all():
        raise ValueError(f'{name} must be finite, got non-finite entries')
    if (p < 0).any() or (not allow_zero and (p <= 0).any()):
        bound = 'non-negative' if allow_zero else 'positive'
        raise ValueError(f'{name} must be {bound}, got minimum '
                         f'{p.min().item():.3g}')
    total = p.sum().item()
    if abs(total - 1.0) > 1e-4:
        raise ValueError(f'{name} must sum to 1 (tolerance 1e-4), got '
                         f'{total:.8g}')
    return p / p.sum()


def _working_dtype(x: torch.Tensor):
    return torch.float64 if x.dtype == torch.float64 else torch.float32


# ------------------------------------------------------- logit adjustment
def logit_adjustment(logits: torch.Tensor, train_prior,
                     tau: float = 1.0) -> torch.Tensor:
    """Post-hoc logit adjustment (Menon et al. 2021, Eq. 3 there).

    Args:
        logits: (N, K) logits Φ (or log-probabilities; the argmax and the
            softmax are unchanged by a per-row constant).
        train_prior: (K,) training label distribution π, positive, sums to 1.
        tau: τ >= 0, strength of the adjustment.

    Returns:
        (N, K) adjusted logits ``Φ - τ log π``.
    """
    logits = _check_matrix(logits, 'logits')
    try:
        tau = float(tau)
    except (TypeError, ValueError):
        raise ValueError(f'tau must be a finite number >= 0, got {tau!r}') \
            from None
    if not math.isfinite(tau) or tau < 0:
        raise ValueError(f'tau must be a finite number >= 0, got {tau}')
    prior = _check_distribution(train_prior, 'train_prior', logits.shape[1],
                                logits.dtype, logits.device,
                                allow_zero=False)
    return logits - tau * prior.log()


# ----------------------------------------------------------- post-hoc OT
@dataclass
class PosthocOTResult:
    """Result of :func:`posthoc_ot`.

    Attributes:
        probs: (N, K) refined probabilities, rows sum to 1 (``N Y``).
        pred: (N,) refined labels, the row argmax of the plan Y.
        f: (N,) row log-potentials ``log u`` of ``Y = diag(u) K diag(v)``.
        g: (K,) column log-potentials ``log v``.
        iterations: Sinkhorn iterations run.
        marginal_error: L1 marginal error of the plan (mass-1 scaling).
        converged: whether the solver reached its tolerance.
    """
    probs: torch.Tensor
    pred: torch.Tensor
    f: torch.Tensor
    g: torch.Tensor
    iterations: int
    marginal_error: float
    converged: bool


def posthoc_ot(log_probs: torch.Tensor,
               target_marginal=None,
               lam: float = 1.0,
               *,
               max_iter: int = 1000,
               tol: float = 1e-6,
               check_every: int = 5,
               warn: bool = True,
               memory: str = 'buffer',
               chunk_size: Optional[int] = None) -> PosthocOTResult:
    """Post-hoc OT correction, OTLM Algorithm 1 (Eq. 9-11).

    Solves ``min_Y <-log Z, Y> + λ <Y, log Y>`` over plans with row sums 1/N
    and column sums μ, i.e. RE-OT with cost ``M = -log Z``, ε = λ and Q = 1
    (kernel ``K = Z^{1/λ}``). The solution is ``Y = diag(u) K diag(v)``; with
    λ = 1 it is ``diag(u) Z diag(v)`` and the prediction is
    ``argmax_k (log Z_nk + log v_k)``.

    Args:
        log_probs: (N, K) log-predictions log Z (log-softmax of the model).
            ``-inf`` entries (Z = 0) forbid that class for that sample.
            Computed in fp64 for fp64 input, fp32 otherwise.
        target_marginal: (K,) target label distribution μ (non-negative, sums
            to 1); None means uniform 1/K (balanced test set).
        lam: entropic weight λ > 0 (OTLM Eq. 11); smaller is closer to hard
            assignment (log-domain, stable down to about 1e-3).
        max_iter: maximum Sinkhorn iterations (N_T of Algorithm 1).
        tol: stop when the L1 marginal error of Y is below ``tol``.
        check_every: check the marginal error every this many iterations.
        warn: warn when ``tol`` is not reached.
        memory: ``'buffer'`` or ``'stream'``, see :func:`reot_sinkhorn`.
        chunk_size: rows per block for the blocked passes (None: about 2^20
            elements), see :func:`reot_sinkhorn`.

    Memory: besides the input and the (N, K) output ``probs``, one N x K
    temporary with ``memory='buffer'`` and none with ``memory='stream'``: the
    cost ``-log Z`` is written into the output tensor, the solver reads it
    there, and the refined probabilities then overwrite it in place, block by
    block.

    Returns:
        :class:`PosthocOTResult` with refined row-normalised probabilities,
        predictions and the potentials.

    Raises:
        ValueError: non-positive λ, μ of the wrong shape, negative or not
            summing to 1, non-(N, K) ``log_probs``.
    """
    log_probs = _check_matrix(log_probs, 'log_probs')
    lam = check_positive(lam, 'lam')
    n, k = log_probs.shape
    dtype = _working_dtype(log_probs)
    if target_marginal is not None:
        target_marginal = _check_distribution(target_marginal,
                                              'target_marginal', k, dtype,
                                              log_probs.device)
    with torch.no_grad():
        highest = log_probs.amax()  # NaN if any entry is NaN; no temporary
    if torch.isnan(highest) or torch.isposinf(highest):
        raise ValueError('log_probs must be finite or -inf (Z = 0); got NaN '
                         'or +inf')
    with torch.no_grad():
        # the output tensor first holds the cost M = -log Z ...
        probs = torch.empty((n, k), dtype=dtype, device=log_probs.device)
        probs.copy_(log_probs).neg_()
        res = reot_sinkhorn(probs, lam, None, target_marginal,
                            max_iter=max_iter, tol=tol,
                            check_every=check_every, grad='none', warn=warn,
                            memory=memory, chunk_size=chunk_size)
        # ... then the row-normalised plan softmax_k(log K_nk + g_k) (f
        # cancels since Y_n. = 1/N), computed in place block by block
        _softmax_rows_(probs, -1.0 / lam, res.g, chunk_size)
        pred = probs.argmax(dim=1)
    return PosthocOTResult(probs=probs, pred=pred, f=res.f, g=res.g,
                           iterations=res.iterations,
                           marginal_error=float(res.marginal_error),
                           converged=res.converged)


def _row_blocks(n: int, k: int, chunk_size: Optional[int]):
    if chunk_size:
        rows = int(chunk_size)
    else:
        rows = max(1, _BLOCK_ELEMENTS // max(1, k))
    return [(start, min(start + rows, n)) for start in range(0, n, rows)]


def _softmax_rows_(x: torch.Tensor, scale: float, shift: torch.Tensor,
                   chunk_size: Optional[int] = None) -> torch.Tensor:
    """In place: ``x <- softmax_k(scale * x_nk + shift_k)`` row-wise.

    Row blocks keep the temporaries (row maxima, sums) at block size.
    """
    n, k = x.shape
    for start, stop in _row_blocks(n, k, chunk_size):
        block = x[start:stop]
        block.mul_(scale).add_(shift)
        block.sub_(block.amax(1, keepdim=True)).exp_()
        block.div_(block.sum(1, keepdim=True))
    return x


def _column_sums_fp64(x: torch.Tensor,
                      chunk_size: Optional[int] = None) -> torch.Tensor:
    """(K,) column sums of an (N, K) tensor, accumulated in fp64 by blocks.

    ``x.double().sum(0)`` would make an fp64 copy of the whole matrix.
    """
    n, k = x.shape
    out = torch.zeros(k, dtype=torch.float64, device=x.device)
    for start, stop in _row_blocks(n, k, chunk_size):
        out += x[start:stop].sum(0).double()
    return out


# ----------------------------------------------------------------- OTLM
@dataclass
class OTLMFit:
    """Result of :func:`fit_otlm`.

    Attributes:
        W: (K, K) learned linear map (Z = softmax(Φ W)).
        losses: loss of Eq. 12 per iteration (per sample, see
            :func:`otlm_loss`), before each update.
    """
    W: torch.Tensor
    losses: List[float]


def otlm_loss(logits: torch.Tensor, W: torch.Tensor, target_marginal,
              lam: float, grad: str = 'implicit', max_iter: int = 1000,
              tol: float = 1e-6) -> torch.Tensor:
    """OTLM objective, Eq. 12, for one (mini-)batch.

    ``Z = softmax(Φ W)`` row-wise (the paper's ``softmax(Wᵀ φ(x_n))`` for a
    column vector φ; with rows of Φ as samples it is Φ W). Y is the post-hoc
    OT plan of Z (row sums 1/N, column sums μ, entropic weight λ) and the
    loss is ``-<Y, log Z> + λ <Y, log Y>`` with this mass-1 Y, i.e. the paper's
    value (row sums 1) divided by N, minus the constant λ log N.

    Args:
        logits: (N, K) logits Φ.
        W: (K, K) linear map.
        target_marginal: (K,) μ or None (uniform).
        lam: λ > 0.
        grad: ``'implicit'`` or ``'unrolled'`` (see :func:`reot_sinkhorn`).
        max_iter, tol: Sinkhorn stopping rule (T and Δ of the paper).

    Returns:
        Scalar loss, differentiable w.r.t. W through Z and Y.
    """
    log_z = torch.log_softmax(logits @ W, dim=1)
    res = reot_sinkhorn(-log_z, lam, None, target_marginal, max_iter=max_iter,
                        tol=tol, grad=grad, warn=False)
    log_y = res.log_plan()
    y = log_y.exp()
    # 0 log 0 = 0 where Y underflows
    ent = torch.where(y > 0, y * log_y, torch.zeros_like(y))
    return -(y * log_z).sum() + lam * ent.sum()


def fit_otlm(logits: torch.Tensor,
             target_marginal=None,
             lam: float = 1.0,
             iters: int = 100,
             lr: float = 1e-3,
             weight_decay: float = 1e-3,
             optimizer: str = 'adam',
             *,
             batch_size: Optional[int] = None,
             grad: str = 'implicit',
             sinkhorn_iters: int = 1000,
             sinkhorn_tol: float = 1e-6,
             momentum: float = 0.9,
             seed: int = 0,
             progress: bool = False) -> OTLMFit:
    """Fit the OTLM linear map W (OTLM Eq. 12) on unlabeled predictions.

    W starts at the identity (so the first iterate is plain post-hoc OT of
    ``softmax(Φ)``) and is updated by Adam or SGD on the loss of
    :func:`otlm_loss`, with Sinkhorn differentiated implicitly (default) or by
    unrolling (the paper's Eq. 13-14 loop, memory ~2 N K per iteration).

    Paper settings (appendix C): CIFAR-100-LT Adam, 20 iterations, lr 1e-3,
    wd 1e-3, λ 0.1; ImageNet-LT SGD, 100 iterations, lr 0.2, wd 1e-3, λ 1.2;
    iNaturalist SGD, lr 0.05, λ 1.0; batches of 10k samples.

    Args:
        logits: (N, K) logits Φ (log-probabilities work too).
        target_marginal: (K,) μ or None (uniform).
        lam: λ > 0.
        iters: optimiser steps.
        lr: learning rate > 0.
        weight_decay: L2 weight decay >= 0 (decays W towards 0, as in the
            paper's optimisers).
        optimizer: ``'adam'`` or ``'sgd'`` (momentum ``momentum``).
        batch_size: samples per step (random mini-batch); None = all.
        grad: ``'implicit'`` or ``'unrolled'``.
        sinkhorn_iters, sinkhorn_tol: inner Sinkhorn stopping rule.
        momentum: SGD momentum.
        seed: seed of the mini-batch sampler.
        progress: show a tqdm progress bar.

    Returns:
        :class:`OTLMFit` with W (K, K, detached) and the loss history.
    """
    logits = _check_matrix(logits, 'logits').detach()
    n, k = logits.shape
    dtype = _working_dtype(logits)
    logits = logits.to(dtype)
    lam = check_positive(lam, 'lam')
    lr = check_positive(lr, 'lr')
    if int(iters) < 1:
        raise ValueError(f'iters must be >= 1, got {iters}')
    if not (math.isfinite(float(weight_decay)) and weight_decay >= 0):
        raise ValueError(f'weight_decay must be a finite number >= 0, got '
                         f'{weight_decay}')
    if optimizer not in _OPTIMIZERS:
        raise ValueError(f'optimizer must be one of {_OPTIMIZERS}, got '
                         f'{optimizer!r}')
    if grad not in ('implicit', 'unrolled'):
        raise ValueError(f"grad must be 'implicit' or 'unrolled', got "
                         f'{grad!r}')
    if batch_size is not None and int(batch_size) < 1:
        raise ValueError(f'batch_size must be >= 1 or None, got {batch_size}')
    if not torch.isfinite(logits).all():
        raise ValueError('logits must be finite')
    mu = None if target_marginal is None else _check_distribution(
        target_marginal, 'target_marginal', k, dtype, logits.device)

    W = torch.eye(k, dtype=dtype, device=logits.device, requires_grad=True)
    if optimizer == 'adam':
        opt = torch.optim.Adam([W], lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD([W], lr=lr, momentum=momentum,
                              weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    steps = range(int(iters))
    if progress:
        from tqdm import tqdm
        steps = tqdm(steps, desc='OTLM', unit='it')
    losses = []
    for _ in steps:
        if batch_size is None or int(batch_size) >= n:
            batch = logits
        else:
            idx = torch.randperm(n, generator=gen)[:int(batch_size)]
            batch = logits[idx.to(logits.device)]
        opt.zero_grad()
        loss = otlm_loss(batch, W, mu, lam, grad=grad,
                         max_iter=sinkhorn_iters, tol=sinkhorn_tol)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if progress:
            steps.set_postfix(loss=f'{losses[-1]:.4f}')
    return OTLMFit(W=W.detach(), losses=losses)


def apply_otlm(W: torch.Tensor, logits: torch.Tensor, target_marginal=None,
               lam: float = 1.0, **kwargs) -> PosthocOTResult:
    """Refine predictions with a fitted OTLM map: post-hoc OT of softmax(Φ W).

    Args:
        W: (K, K) map from :func:`fit_otlm`.
        logits: (N, K) logits Φ.
        target_marginal: (K,) μ or None (uniform).
        lam: λ > 0.
        **kwargs: passed to :func:`posthoc_ot`.

    Returns:
        :class:`PosthocOTResult`.
    """
    logits = _check_matrix(logits, 'logits')
    if not isinstance(W, torch.Tensor) or tuple(W.shape) != (
            logits.shape[1], ) * 2:
        raise ValueError(f'W must be a ({logits.shape[1]}, '
                         f'{logits.shape[1]}) tensor to match the logits, '
                         f'got {tuple(getattr(W, "shape", ()))}')
    with torch.no_grad():
        log_z = torch.log_softmax(logits @ W.to(logits.dtype), dim=1)
    return posthoc_ot(log_z, target_marginal, lam, **kwargs)


# ----------------------------------------------------- unknown test prior
def check_em_smoothing(smoothing, name: str = 'smoothing') -> float:
    """The Dirichlet pseudo-count α of :func:`estimate_test_prior_em`."""
    if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) \
            or not (smoothing >= 0 and math.isfinite(smoothing)):
        raise ValueError(f'{name} must be a finite number >= 0 (a Dirichlet '
                         f'pseudo-count per class; 0 = maximum likelihood), '
                         f'got {smoothing!r}')
    return float(smoothing)


def estimate_test_prior_em(probs: torch.Tensor,
                           train_prior,
                           max_iter: int = 1000,
                           tol: float = 1e-8,
                           smoothing: float = 0.0) -> torch.Tensor:
    """EM estimate of the test label distribution (Saerens et al. 2002).

    With calibrated posteriors p_tr(k|x_n) under the training prior π_tr, the
    test prior π is the fixed point of::

        p(k|x_n) ∝ p_tr(k|x_n) π_k / π_tr,k          (E step, Saerens Eq. 2.9)
        π_k = 1/N Σ_n p(k|x_n)                          (M step, Eq. 2.10)

    starting from π = π_tr; this is maximum likelihood for π. With
    ``smoothing`` α > 0 the M step is the MAP one under a symmetric
    Dirichlet(1 + α) prior on π,

        π_k = (Σ_n p(k|x_n) + α) / (N + K·α),

    which keeps every class's mass above α / (N + K·α): on a small test set
    ML-EM can drive a class to π_k ≈ 0, after which Sinkhorn inference never
    predicts it. α → ∞ gives the uniform prior.

    Args:
        probs: (N, K) posteriors p_tr(k|x), rows sum to 1.
        train_prior: (K,) training label distribution π_tr (positive).
        max_iter: maximum EM iterations.
        tol: stop when the L1 change of π is below ``tol``.
        smoothing: α >= 0, Dirichlet pseudo-count per class (0: ML).

    Returns:
        (K,) estimated test prior, sums to 1.
    """
    probs = _check_matrix(probs, 'probs')
    n, k = probs.shape
    dtype = _working_dtype(probs)
    probs = probs.detach().to(dtype)
    if not torch.isfinite(probs).all() or (probs < 0).any():
        raise ValueError('probs must be finite and non-negative')
    rows = probs.sum(1)
    if ((rows - 1).abs() > 1e-3).any():
        raise ValueError(f'probs rows must sum to 1 (tolerance 1e-3), got a '
                         f'row summing to {rows[(rows - 1).abs().argmax()]:.6g}')
    pi_tr = _check_distribution(train_prior, 'train_prior', k, dtype,
                                probs.device, allow_zero=False)
    if int(max_iter) < 1:
        raise ValueError(f'max_iter must be >= 1, got {max_iter}')
    smoothing = check_em_smoothing(smoothing)
    pi = pi_tr.clone()
    for _ in range(int(max_iter)):
        post = probs * (pi / pi_tr)
        post = post / post.sum(1, keepdim=True).clamp_min(1e-300)
        new = (post.sum(0) + smoothing) / (n + k * smoothing)
        done = (new - pi).abs().sum().item() < tol
        pi = new
        if done:
            break
    return pi / pi.sum()


# ------------------------------------------------------------- metrics
def kl_divergence(p, q, eps: float = 0.0) -> float:
    """KL(p ‖ q) = Σ p_k log(p_k / q_k) for two (K,) distributions.

    Terms with p_k = 0 are 0; ``q_k = 0 < p_k`` gives ``inf``. ``eps`` is
    added to q before the log when a finite value is wanted.
    """
    p = torch.as_tensor(p, dtype=torch.float64)
    q = torch.as_tensor(q, dtype=torch.float64)
    if p.ndim != 1 or p.shape != q.shape:
        raise ValueError(f'p and q must be 1-D of the same shape, got '
                         f'{tuple(p.shape)} and {tuple(q.shape)}')
    if (p < 0).any() or (q < 0).any():
        raise ValueError('p and q must be non-negative')
    p = p / p.sum()
    q = (q + eps) / (q + eps).sum()
    terms = torch.where(p > 0, p * (p.log() - q.log()), torch.zeros_like(p))
    return float(terms.sum())


def refined_marginal(probs: torch.Tensor, hard: bool = False) -> torch.Tensor:
    """Label marginal of refined predictions (OTLM Table 4).

    Args:
        probs: (N, K) row-normalised (refined) probabilities.
        hard: False: mean of the rows, ``1/N Σ_n Ŷ_n`` (= column sums of the
            mass-1 plan, equal to μ at convergence). True: histogram of the
            row argmax divided by N.

    Returns:
        (K,) distribution (fp64).
    """
    probs = _check_matrix(probs, 'probs')
    if hard:
        counts = torch.bincount(probs.argmax(1), minlength=probs.shape[1])
        return counts.to(torch.float64) / probs.shape[0]
    return _column_sums_fp64(probs) / probs.shape[0]
