"""Inverse RE-OT loss for contrastive representation learning, pure functions.

Shi et al., Relative Entropic Optimal Transport: a (Prior-aware) Matching
Perspective to (Unbalanced) Classification, NeurIPS 2023, §4.1; the
registered module is :class:`reot_mm.losses.REOTContrastiveLoss`.

RE-OT §4.1 ("Representation learning with our formulation") applies the
inverse RE-OT loss (Eq. 14) to representation learning "by modifying the
original one-hot label to the augmentation's features": the rows of the
coupling are the N = V·B embeddings of a batch of B images seen in V views,
the columns are the same N embeddings, and the prior Q is a matrix over
*pairs of samples* (Fig. 1: Q_ij = 0.7 for pairs of the same class, 0.3
otherwise).

Notation (one global batch; under DDP the embeddings of all ranks):

* z_i: L2-normalised embedding i ∈ {1..N}; s(i) its image, y_i its label.
* Cost C_ij = 1 - z_i·z_j (cosine distance); ε = τ, the temperature, so
  -C_ij/ε = z_i·z_j/τ - 1/τ (the constant cancels under both constraint sets).
* Self-pairs are excluded: Q_ii = 0 (K_ii = 0, RE-OT Prop. 2, Eq. 8).
* Row marginal a_i = 1/N; for U(a, b) also column marginal b_j = 1/N.
* Supervision P̃ (rows normalised to a_i):
  ``supervision='self'``: P̃_ij ∝ [s(j) = s(i), j ≠ i] (the other views);
  ``supervision='supervised'``: P̃_ij ∝ [y_j = y_i, j ≠ i] (SupCon's positives).
* Per-anchor loss: L_i = -Σ_j (P̃_ij/a_i)·log(P_ij/a_i), which is Eq. 14's
  KL(P̃ ‖ P) up to the constant Σ P̃ log P̃ and the scale N (the 'mean'
  reduction averages L_i).

Under U(a) (``constraints='a'``), Eq. 16 gives the closed form

    L_i = -Σ_j (P̃_ij/a_i)·log[ Q_ij e^{z_i·z_j/τ} / Σ_{k≠i} Q_ik e^{z_i·z_k/τ} ]

and any per-row scaling of Q cancels. Exact special cases (tested):

* Q uniform, ``'self'``, V = 2: NT-Xent / InfoNCE of SimCLR.
* Q uniform, ``'supervised'``: SupCon L^sup_out (Khosla et al. 2020, Eq. 2).
* Q same-class (w_s, w_o) as in Fig. 1, ``'self'``: with ρ = w_o/w_s,

      L_i = -log[ e^{z_i·z_p/τ} / ( Σ_{k≠i, y_k=y_i} e^{z_i·z_k/τ}
                                     + ρ·Σ_{k: y_k≠y_i} e^{z_i·z_k/τ} ) ],

  i.e. InfoNCE whose other-class negatives count ρ times: a label-aware
  InfoNCE that depends on the weights only through ρ. ρ = 1 is SimCLR;
  ρ → ∞ (after subtracting log ρ) removes the same-class negatives from the
  denominator (false-negative elimination); Fig. 1's 0.7 / 0.3 gives
  ρ = 3/7, which weights same-class negatives 7/3 times more than
  other-class ones. With ``'supervised'`` the same Q gives SupCon with the
  denominator Σ_{same} + ρ·Σ_{other} (SupCon itself at ρ = 1).
* ε → 0⁺ (Table 1 "Triplet" row; RE-OT App. G): with a uniform Q and
  ``'self'`` (V = 2), τ·L_i → max(0, max_{k∉{i,p}} z_i·z_k - z_i·z_p), the
  hardest-negative triplet hinge with margin 0 on the cosine distance; for
  every τ, hinge ≤ τ·L_i ≤ hinge + τ·log(N - 1).

Under U(a, b) (``constraints='ab'``) P is the RE-OT Sinkhorn plan
(:func:`reot_mm.ot.reot_sinkhorn`, log-domain) with both marginals uniform,
differentiated by ``grad='implicit'`` (implicit function theorem, default) or
``'unrolled'`` (autograd through the iterations).

Priors Q over pairs (all positive; the diagonal is always excluded):

* ``'uniform'``: Q_ij = 1.
* ``'same_class'``: Q_ij = w_s if y_i = y_j else w_o (Fig. 1: 0.7 / 0.3).
* ``'class_ratio'``: Q_ij = π_{y_j}^κ with π_j = n_j / Σn the training class
  ratio (RE-OT Eq. 35, counts from ``ClassStatisticsHook``). κ = 1 is the
  pairwise analogue of Balanced Softmax (Table 1 row: Q_ij = n_j); κ = -1
  weights every class equally in the denominator (BCL's class averaging,
  BCL Eq. 7, without prototypes).
* ``'batch_ratio'``: Q_ij = β_{y_j}^κ with β the label ratio of the global
  batch (RE-OT Eq. 36).

With ``prior_weight`` λ < 1 the prior follows RE-OT Eq. 15 per row,
Q_i· = (1 - λ)·Uniform_i· + λ·r_i· with both terms normalised over the N - 1
candidates of the row, and Q is raised to ``prior_power``; ``REOTPriorHook``
sets both (Eq. 34 schedule).
"""
import math
from typing import Optional

import torch

from reot_mm.losses.finite import normalize_rows
from reot_mm.losses.utils import (at_least_fp32, check_choice, check_positive,
                                  without_autocast)
from reot_mm.ot.sinkhorn import reot_sinkhorn

__all__ = [
    'CONSTRAINTS', 'GRADS', 'PAIR_PRIORS', 'SUPERVISIONS',
    'contrastive_log_plan', 'contrastive_targets',
    'pair_log_prior', 'reot_contrastive_loss'
]

SUPERVISIONS = ('self', 'supervised')
PAIR_PRIORS = ('uniform', 'same_class', 'class_ratio', 'batch_ratio')
CONSTRAINTS = ('a', 'ab')
GRADS = ('unrolled', 'implicit')


# --------------------------------------------------------------- pure maths
def contrastive_targets(sample_ids: torch.Tensor,
                        labels: Optional[torch.Tensor],
                        supervision: str,
                        rows: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Supervision P̃ of RE-OT Eq. 14 over pairs, rows normalised to 1.

    Args:
        sample_ids: (N,) image index of every embedding (views of one image
            share it).
        labels: (N,) class labels; needed for ``'supervised'``.
        supervision: ``'self'`` (positives = the other views of the same
            image) or ``'supervised'`` (positives = every other embedding of
            the same class).
        rows: (n,) indices of the anchors (default: all N).

    Returns:
        (n, N) float32 P̃/a: each row sums to 1, zero on the anchor's own
        column.
    """
    check_choice('supervision', supervision, SUPERVISIONS)
    num = sample_ids.shape[0]
    rows = torch.arange(num, device=sample_ids.device) if rows is None else rows
    if supervision == 'self':
        keys = sample_ids
    else:
        if labels is None:
            raise ValueError("supervision='supervised' needs labels (N,)")
        keys = labels
    positive = keys[rows][:, None] == keys[None, :]
    positive[torch.arange(rows.numel(), device=rows.device), rows] = False
    target = positive.to(torch.float32)
    count = target.sum(-1, keepdim=True)
    if (count == 0).any():
        raise ValueError(
            'an anchor has no positive: every image needs at least 2 views')
    return target / count


def pair_log_prior(labels: Optional[torch.Tensor],
                   prior: str = 'uniform',
                   *,
                   same_weight: float = 0.7,
                   other_weight: float = 0.3,
                   log_class_ratio: Optional[torch.Tensor] = None,
                   ratio_power: float = 1.0,
                   prior_weight: float = 1.0,
                   prior_power: float = 1.0,
                   num: Optional[int] = None) -> Optional[torch.Tensor]:
    """log Q over pairs of embeddings (RE-OT §4.1, Fig. 1, Eq. 15), (N, N).

    The diagonal (self-pairs) is -inf. Rows are normalised over their N - 1
    candidates before the Eq. 15 mix with the uniform prior; the plan of
    either constraint set is unchanged by that per-row scaling (Eq. 16,
    Prop. 1(2)).

    Args:
        labels: (N,) labels of the embeddings (None only for ``'uniform'``).
        prior: ``'uniform'``, ``'same_class'``, ``'class_ratio'`` or
            ``'batch_ratio'`` (see the module docstring).
        same_weight: w_s of ``'same_class'``, > 0.
        other_weight: w_o of ``'same_class'``, > 0.
        log_class_ratio: (C,) log π of ``'class_ratio'``.
        ratio_power: κ of the ratio priors (Q_ij = r_{y_j}^κ).
        prior_weight: λ of Eq. 15 in [0, 1].
        prior_power: element-wise exponent of Q.
        num: N when ``labels`` is None.

    Returns:
        (N, N) float32 log Q, or None for a uniform Q (λ = 0 or
        ``'uniform'``), in which case only the diagonal is excluded by the
        loss.
    """
    check_choice('prior', prior, PAIR_PRIORS)
    same_weight = check_positive(same_weight, 'same_weight')
    other_weight = check_positive(other_weight, 'other_weight')
    if not 0.0 <= float(prior_weight) <= 1.0:
        raise ValueError(f'prior_weight (λ) must be in [0, 1], got {prior_weight}')
    prior_power = check_positive(prior_power, 'prior_power')
    if prior == 'uniform' or float(prior_weight) == 0.0:
        return None
    if labels is None:
        raise ValueError(f'prior={prior!r} needs labels (N,)')
    labels = labels.long()
    num = labels.shape[0]
    device = labels.device
    if prior == 'same_class':
        same = labels[:, None] == labels[None, :]
        log_q = torch.where(
            same, torch.tensor(math.log(same_weight), device=device),
            torch.tensor(math.log(other_weight), device=device))
    else:
        if prior == 'class_ratio':
            if log_class_ratio is None:
                raise ValueError("prior='class_ratio' needs log_class_ratio "
                                 '(C,) from the training class counts')
            if labels.numel() and int(labels.max()) >= log_class_ratio.numel():
                raise ValueError(
                    f'labels reach {int(labels.max())} but the class counts '
                    f'have {log_class_ratio.numel()} classes')
            log_r = log_class_ratio.to(device=device, dtype=torch.float32)
        else:
            counts = torch.bincount(labels).to(torch.float32)
            log_r = counts.log() - counts.sum().log()
        log_q = (float(ratio_power) * log_r[labels])[None, :].expand(num, num)
    log_q = log_q.to(torch.float32).clone()
    log_q.fill_diagonal_(-math.inf)
    if num > 1:
        log_q = log_q - torch.logsumexp(log_q, -1, keepdim=True)
        if float(prior_weight) < 1.0:
            log_uniform = torch.full_like(log_q, -math.log(num - 1))
            log_q = torch.logaddexp(log_uniform + math.log1p(-prior_weight),
                                    log_q + math.log(prior_weight))
            log_q.fill_diagonal_(-math.inf)
    if prior_power != 1.0:
        log_q = prior_power * log_q
    return log_q


@without_autocast
def contrastive_log_plan(embeddings: torch.Tensor,
                         temperature: float = 0.1,
                         log_prior: Optional[torch.Tensor] = None,
                         constraints: str = 'a',
                         rows: Optional[torch.Tensor] = None,
                         grad: str = 'implicit',
                         max_iter: int = 100,
                         tol: float = 1e-5,
                         warn: bool = True) -> torch.Tensor:
    """log(P_ij / a_i) of the inner RE-OT problem over pairs (RE-OT Eq. 6/8).

    Cost C_ij = 1 - cos(z_i, z_j), ε = τ, K_ij = Q_ij e^{-C_ij/τ} with
    Q_ii = 0 (self-pairs excluded), a = b = 1/N.

    Args:
        embeddings: (N, D) embeddings (normalised here; fp16/bf16 computed in
            fp32).
        temperature: τ = ε of Eq. 6 / 16, > 0.
        log_prior: (N, N) log Q (:func:`pair_log_prior`) or None (uniform).
            Its diagonal is ignored.
        constraints: ``'a'`` — U(a), closed form of Eq. 16,
            P_ij / a_i = softmax_{j≠i}(z_i·z_j/τ + log Q_ij); ``'ab'`` —
            U(a, b), RE-OT Sinkhorn (log-domain) with both marginals uniform.
        rows: (n,) anchors to return (default all N). Under U(a) only these
            rows are computed; U(a, b) solves the whole N x N plan.
        grad: gradient of the U(a, b) plan: ``'implicit'`` (implicit function
            theorem at the solution) or ``'unrolled'`` (autograd through the
            iterations).
        max_iter, tol, warn: U(a, b) stopping rule (L1 marginal error below
            ``tol``; warn with the achieved error if not reached).

    Returns:
        (n, N) log(P_ij / a_i), -inf on each anchor's own column.
    """
    temperature = check_positive(temperature, 'temperature')
    check_choice('constraints', constraints, CONSTRAINTS)
    check_choice('grad', grad, GRADS)
    if embeddings.ndim != 2:
        raise ValueError('embeddings must have shape (N, D), got '
                         f'{tuple(embeddings.shape)}')
    num = embeddings.shape[0]
    if log_prior is not None and log_prior.shape != (num, num):
        raise ValueError(f'log_prior must have shape ({num}, {num}), got '
                         f'{tuple(log_prior.shape)}')
    device = embeddings.device
    all_rows = rows is None
    rows = torch.arange(num, device=device) if all_rows else rows.to(device)
    z = normalize_rows(at_least_fp32(embeddings), dim=-1)
    if constraints == 'a':
        # -C/ε up to the constant 1/τ, anchors' rows only
        scores = (z if all_rows else z[rows]) @ z.t() / temperature
        if log_prior is not None:
            scores = scores + (log_prior if all_rows else log_prior[rows]).to(
                scores.dtype)
        scores = scores.index_put(
            (torch.arange(rows.numel(), device=device), rows),
            torch.tensor(-math.inf, dtype=scores.dtype, device=device))
        return torch.log_softmax(scores, dim=-1)
    if num < 2:
        raise ValueError('U(a, b) needs at least 2 embeddings')
    cost = 1.0 - z @ z.t()
    mask = torch.zeros(num, num, dtype=cost.dtype, device=device)
    mask.fill_diagonal_(-math.inf)
    log_q = mask if log_prior is None else log_prior.to(cost.dtype) + mask
    result = reot_sinkhorn(cost, temperature, log_prior=log_q,
                           constraints='ab', max_iter=max_iter, tol=tol,
                           grad=grad, warn=warn)
    log_plan = result.log_plan()
    return (log_plan if all_rows else log_plan[rows]) + math.log(num)


def reot_contrastive_loss(embeddings: torch.Tensor,
                          sample_ids: torch.Tensor,
                          labels: Optional[torch.Tensor] = None,
                          *,
                          temperature: float = 0.1,
                          supervision: str = 'self',
                          log_prior: Optional[torch.Tensor] = None,
                          constraints: str = 'a',
                          rows: Optional[torch.Tensor] = None,
                          grad: str = 'implicit',
                          max_iter: int = 100,
                          tol: float = 1e-5,
                          warn: bool = True) -> torch.Tensor:
    """Per-anchor inverse RE-OT contrastive loss (RE-OT Eq. 14 / 16, §4.1).

    L_i = -Σ_j (P̃_ij / a_i)·log(P_ij / a_i), with P̃ from
    :func:`contrastive_targets` and P from :func:`contrastive_log_plan`.

    Args:
        embeddings: (N, D) embeddings.
        sample_ids: (N,) image index of every embedding.
        labels: (N,) labels (``'supervised'`` only; Q carries its own).
        temperature, log_prior, constraints, rows, grad, max_iter, tol,
            warn: as :func:`contrastive_log_plan`.
        supervision: ``'self'`` or ``'supervised'``.

    Returns:
        (n,) per-anchor losses, in the embeddings' dtype (at least fp32).
    """
    if embeddings.ndim != 2:
        raise ValueError('embeddings must have shape (N, D), got '
                         f'{tuple(embeddings.shape)}')
    num = embeddings.shape[0]
    if sample_ids.shape != (num, ):
        raise ValueError(f'sample_ids must have shape ({num},), got '
                         f'{tuple(sample_ids.shape)}')
    if labels is not None and labels.shape != (num, ):
        raise ValueError(f'labels must have shape ({num},), got '
                         f'{tuple(labels.shape)}')
    device = embeddings.device
    rows = None if rows is None else rows.to(device)
    target = contrastive_targets(sample_ids, labels, supervision, rows)
    log_cond = contrastive_log_plan(
        embeddings, temperature, log_prior, constraints, rows, grad,
        max_iter, tol, warn)
    target = target.to(log_cond.dtype)
    # 0·(-inf) on the excluded diagonal must be 0, not NaN
    terms = torch.where(target > 0, target * log_cond,
                        torch.zeros_like(log_cond))
    return -terms.sum(-1)
