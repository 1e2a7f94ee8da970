"""OTLM: a learned linear cost for post-hoc OT (OTLM Eq. 12-14).

Peng, Sun, Li, Optimal Transport for Long-Tailed Recognition with Learnable
Cost Matrix, ICLR 2022. A K x K linear map W (initialised to I) on the logits
Φ gives Z = softmax(Φ W); W is fitted without labels by minimising the
entropic OT objective of Eq. 12, with the plan from Sinkhorn in the loop, and
the predictions are then the post-hoc OT of softmax(Φ W), i.e.
:func:`reot_mm.ot.test_time.sinkhorn_prediction` of log Z with ε = λ.

Plain torch (layer 1): imports only torch and :mod:`reot_mm.ot`.
"""
from dataclasses import dataclass
from typing import List, Optional

import torch

from .checks import (check_choice, check_distribution, check_matrix,
                     check_nonnegative, check_positive, check_positive_int)
from .sinkhorn import reot_sinkhorn
from .test_time import SinkhornPrediction, sinkhorn_prediction

__all__ = ['OTLMFit', 'otlm_loss', 'fit_otlm', 'apply_otlm']

_OPTIMIZERS = ('adam', 'sgd')


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
        grad: ``'implicit'`` or ``'unrolled'`` (the paper's Eq. 13-14 loop),
            see :func:`reot_sinkhorn`.
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
    logits = check_matrix(logits, 'logits').detach()
    n, k = logits.shape
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    logits = logits.to(dtype)
    lam = check_positive(lam, 'lam')
    lr = check_positive(lr, 'lr')
    iters = check_positive_int(iters, 'iters')
    weight_decay = check_nonnegative(weight_decay, 'weight_decay')
    check_choice(optimizer, 'optimizer', _OPTIMIZERS)
    check_choice(grad, 'grad', ('implicit', 'unrolled'))
    batch_size = check_positive_int(batch_size, 'batch_size', allow_none=True)
    if not torch.isfinite(logits).all():
        raise ValueError('logits must be finite')
    mu = None if target_marginal is None else check_distribution(
        target_marginal, 'target_marginal', k, dtype, logits.device)

    W = torch.eye(k, dtype=dtype, device=logits.device, requires_grad=True)
    if optimizer == 'adam':
        opt = torch.optim.Adam([W], lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD([W], lr=lr, momentum=momentum,
                              weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    steps = range(iters)
    if progress:
        from tqdm import tqdm
        steps = tqdm(steps, desc='OTLM', unit='it')
    losses = []
    for _ in steps:
        if batch_size is None or batch_size >= n:
            batch = logits
        else:
            idx = torch.randperm(n, generator=gen)[:batch_size]
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
               lam: float = 1.0, **kwargs) -> SinkhornPrediction:
    """Refine predictions with a fitted OTLM map: post-hoc OT of softmax(Φ W).

    Args:
        W: (K, K) map from :func:`fit_otlm`.
        logits: (N, K) logits Φ.
        target_marginal: (K,) μ or None (uniform).
        lam: λ > 0, the ε of the Sinkhorn prediction.
        **kwargs: passed to :func:`sinkhorn_prediction` (stopping rule,
            memory mode).

    Returns:
        :class:`SinkhornPrediction`.
    """
    logits = check_matrix(logits, 'logits')
    if not isinstance(W, torch.Tensor) or tuple(W.shape) != (
            logits.shape[1], ) * 2:
        raise ValueError(f'W must be a ({logits.shape[1]}, '
                         f'{logits.shape[1]}) tensor to match the logits, '
                         f'got {tuple(getattr(W, "shape", ()))}')
    with torch.no_grad():
        log_z = torch.log_softmax(logits @ W.to(logits.dtype), dim=1)
    return sinkhorn_prediction(log_z, target_marginal, lam, **kwargs)
