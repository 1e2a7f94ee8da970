"""Balanced contrastive learning (BCL, seed 004): Eq. 6-9 and Eq. 10-11.

Notation (BCL Sec. 3.3). The candidates are the 2B normalised embeddings of
the two contrastive views plus, with *class-complement*, the C normalised
prototypes c_j (one per class, so every class appears in every batch). With
n_j = |B_j ∪ {c_j}| = 2·(batch count of j) + 1 and s_ik = z_i·z_k / τ, anchor
i of class y has

    D_i = Σ_j 1 / (n_j − [j = y]) · Σ_{k ∈ j, k ≠ i} exp(s_ik)
    L_i = −1/|P_i| · Σ_{p ∈ P_i} (s_ip − log D_i),   P_i = (B_y \\ {i}) ∪ {c_y}

(BCL Eq. 9, |P_i| = n_y − 1), averaged over the 2B anchors; prototypes are
never anchors. The official code (BalSCL) computes the same quantity (its
max-subtraction changes nothing mathematically), so there is no paper/code
switch for Eq. 9 itself. The ablation forms of Sec. 3.3 are options:

=====================================  =====================================
BCL loss form                          arguments
=====================================  =====================================
Eq. 9 (default, paper and code)        ``form='L1'``, ``class_complement=True``
Eq. 6, L1 (averaging outside exp)      ``form='L1'``, ``class_complement=False``
Eq. 7, L2 (averaging inside exp)       ``form='L2'`` (complement optional)
Eq. 8, L3 (prototype softmax)          ``form='L3'``
SupCon (+ complement), Table 2 rows    ``class_averaging=False``
=====================================  =====================================

The total loss is Eq. 11, L = λ·L_LC + μ·L_BCL, with the logit-compensated
cross-entropy of Eq. 10 (α_y = 1, δ_y = log π_y by default).

Everything is vectorised over anchors, candidates and classes: the class
weights 1/(n_j − [j = y]) enter as an additive log-weight before one
``logsumexp`` (log domain, no overflow for small τ), positives are summed with
class-sum embeddings (z_i·Σ_{k ∈ y} z_k), and the prototype block is handled
as a dense (anchors × C) block without masks. For unit vectors (``BCLLoss``
normalises) the denominator is one fused autograd function
(``_ShiftedExpSum``): the log-sum-exp shift is the constant 1/τ, the own
class's 1/(n_y − 1) weight is applied at its Σ_i m_{y_i} entries only (found
from the class-sorted labels, not an (A × N) mask), the exponentiated blocks
become the gradient in place, and with all rows as anchors the symmetric
z·zᵀ block needs one backward product instead of two
(``benchmarks/bench_bcl_loss.py``).
"""
import math
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS

from reot_mm import dist
from reot_mm.losses import priors
from reot_mm.losses.utils import (check_choice, check_labels,
                                  take_checkpoint_shape, weight_reduce_loss,
                                  without_autocast)

FORMS = ('L1', 'L2', 'L3')


def _check_embeddings(embeddings: torch.Tensor, labels: torch.Tensor,
                      prototypes: Optional[torch.Tensor],
                      num_classes: Optional[int]) -> int:
    if embeddings.ndim != 2:
        raise ValueError('embeddings must have shape (N, D), got '
                         f'{tuple(embeddings.shape)}')
    if labels.ndim != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f'labels must have shape ({embeddings.shape[0]},) to match the '
            f'embeddings, got {tuple(labels.shape)}')
    if labels.dtype in (torch.float16, torch.bfloat16, torch.float32,
                        torch.float64, torch.bool):
        raise ValueError(f'labels must be integer class indices, got dtype '
                         f'{labels.dtype}')
    if prototypes is not None:
        if prototypes.ndim != 2 or prototypes.shape[1] != embeddings.shape[1]:
            raise ValueError(
                f'prototypes must have shape (C, {embeddings.shape[1]}) '
                f'(one D-dim prototype per class), got '
                f'{tuple(prototypes.shape)}')
        if num_classes is not None and prototypes.shape[0] != num_classes:
            raise ValueError(f'prototypes has {prototypes.shape[0]} rows but '
                             f'num_classes is {num_classes}')
        num_classes = prototypes.shape[0]
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.numel() else 1
    check_labels(labels, num_classes, name='labels')
    return num_classes


def _scale_entries_(matrix: torch.Tensor, flat_index: Optional[torch.Tensor],
                    scale: Optional[torch.Tensor]) -> None:
    """matrix.view(-1)[flat_index] *= scale, in place (nothing for None)."""
    if flat_index is None:
        return
    flat = matrix.view(-1)
    flat.index_copy_(0, flat_index,
                     flat.index_select(0, flat_index).mul_(scale))


class _ShiftedExpSum(torch.autograd.Function):
    """D_i·e^(−shift) of Eq. 9 for the unit-norm path, fused.

    Returns, per anchor i (rows ``[offset, offset + A)`` of ``z``),

        Σ_{k ≠ i} w_ik·exp(z_i·z_k/τ + b_k) + Σ_j v_ij·exp(z_i·c_j/τ + b'_j)

    where the bias b, b' holds −log n_j − shift and the weights w, v are 1
    except at a few listed entries (the anchor's own class, see
    ``balanced_contrastive_loss``). Forward keeps the two exponentiated
    blocks E (A, N) and E' (A, C), weighted in place; backward turns them
    into the gradient of the scores in place (E·g) and needs no other
    (A, N)-sized temporary. When the anchors are all the rows the score block
    is z·zᵀ/τ, symmetric in its two factors, and one product (G + Gᵀ)·z
    replaces the two of autograd. Not twice differentiable (a second
    backward through the same graph is refused by autograd).
    """

    @staticmethod
    def forward(ctx, z, protos, col_bias, proto_bias, pair_index, pair_scale,
                proto_index, proto_scale, offset, num_anchors, inv_tau):
        anchors = z[offset:offset + num_anchors]
        # E = exp(s + b): addmm writes the bias, then accumulates the product
        block = torch.addmm(col_bias[None, :], anchors, z.t(), alpha=inv_tau)
        block.exp_()
        block[:, offset:offset + num_anchors].diagonal().zero_()  # k ≠ i
        _scale_entries_(block, pair_index, pair_scale)
        total = block.sum(1)
        saved = [z, block]
        if protos is not None:
            proto_block = torch.addmm(proto_bias[None, :], anchors, protos.t(),
                                      alpha=inv_tau).exp_()
            _scale_entries_(proto_block, proto_index, proto_scale)
            total += proto_block.sum(1)
            saved += [protos, proto_block]
        ctx.save_for_backward(*saved)
        ctx.offset, ctx.num_anchors, ctx.inv_tau = offset, num_anchors, inv_tau
        return total

    @staticmethod
    @torch.autograd.function.once_differentiable
    @without_autocast  # fp32 like the forward, also inside autocast
    def backward(ctx, grad_total):
        z, block, *rest = ctx.saved_tensors
        offset, num_anchors, inv_tau = ctx.offset, ctx.num_anchors, ctx.inv_tau
        anchors = z[offset:offset + num_anchors]
        # d total_i / d s_ik = E_ik (weights included), so G = E·g in place
        scale = grad_total[:, None] * inv_tau
        grad_block = block.mul_(scale)
        if offset == 0 and num_anchors == z.shape[0]:
            grad_z = torch.mm(grad_block + grad_block.t(), z)
        else:
            grad_z = torch.mm(grad_block.t(), anchors)
            grad_z[offset:offset + num_anchors].addmm_(grad_block, z)
        grad_protos = None
        if rest:
            protos, proto_block = rest
            grad_proto_block = proto_block.mul_(scale)
            grad_z[offset:offset + num_anchors].addmm_(grad_proto_block,
                                                       protos)
            if ctx.needs_input_grad[1]:
                grad_protos = torch.mm(grad_proto_block.t(), anchors)
        return (grad_z, grad_protos) + (None, ) * 9


def _same_class_entries(labels: torch.Tensor, anchor_labels: torch.Tensor,
                        num_classes: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Flat indices into the (A, N) block of every (anchor, same-class
    candidate) pair, the anchor itself included, and each pair's row.

    Built from the class-sorted candidates, so the cost is the number of
    pairs Σ_i m_{y_i} (m_j: batch members of class j), not A·N.
    """
    order = torch.argsort(labels, stable=True)
    members = torch.bincount(labels, minlength=num_classes)
    first = torch.cumsum(members, 0) - members    # class j starts here in order
    per_anchor = members.index_select(0, anchor_labels)
    rows = torch.repeat_interleave(
        torch.arange(anchor_labels.shape[0], device=labels.device), per_anchor)
    row_start = torch.cumsum(per_anchor, 0) - per_anchor
    within = torch.arange(rows.shape[0], device=labels.device) - \
        row_start.index_select(0, rows)
    cols = order.index_select(
        0, first.index_select(0, anchor_labels).index_select(0, rows) + within)
    return rows * labels.shape[0] + cols, rows


def _fixed_shift_log_denominator(z, labels, protos, counts, log_counts,
                                 anchor_labels, anchor_offset, num_anchors,
                                 inv_tau, class_averaging):
    """log D_i of Eq. 6 / 9 with the constant shift 1/τ (unit vectors), via
    the fused ``_ShiftedExpSum``: the bias −log n_{y_k} − 1/τ per column, and
    the own class re-weighted from 1/n_y to 1/(n_y − 1) at its few entries."""
    shift = inv_tau
    if class_averaging:
        col_bias = log_counts.index_select(0, labels).neg_().sub_(shift)
        proto_bias = log_counts.neg().sub_(shift) if protos is not None \
            else None
        # n_y / (n_y − 1) (1 for a singleton class, whose only entry, the
        # anchor itself, is zero anyway)
        own_count = counts.index_select(0, anchor_labels)
        own_scale = own_count / (own_count - 1).clamp(min=1)
        pair_index, pair_rows = _same_class_entries(
            labels, anchor_labels, counts.shape[0])
        pair_scale = own_scale.index_select(0, pair_rows)
        proto_index = None
        if protos is not None:
            proto_index = torch.arange(
                num_anchors, device=z.device) * protos.shape[0] + anchor_labels
    else:
        col_bias = z.new_full((z.shape[0], ), -shift)
        proto_bias = z.new_full((protos.shape[0], ), -shift) \
            if protos is not None else None
        pair_index = pair_scale = proto_index = own_scale = None
    total = _ShiftedExpSum.apply(z, protos, col_bias, proto_bias, pair_index,
                                 pair_scale, proto_index, own_scale,
                                 anchor_offset, num_anchors, inv_tau)
    return total.log() + shift


def _general_log_denominator(z, labels, protos, counts, log_counts, anchors,
                             anchor_labels, anchor_offset, num_anchors,
                             inv_tau, class_averaging):
    """log D_i of Eq. 6 / 9 for any embeddings: logsumexp with the row max."""
    scaled = anchors * inv_tau
    own_count = counts.index_select(0, anchor_labels)
    sims = scaled @ z.t()                                  # (A, N)
    if class_averaging:
        # s_ik − log n_{y_k}; same-class candidates over n_y − 1, not n_y
        sims = sims - log_counts.index_select(0, labels)
        own_shift = log_counts.index_select(0, anchor_labels) - (
            own_count - 1).clamp(min=1).log()
        same = anchor_labels[:, None] == labels[None, :]
        sims = sims + torch.where(same, own_shift[:, None], 0.0)
    # k ≠ i: the anchors' own columns
    sims[:, anchor_offset:anchor_offset + num_anchors].diagonal().fill_(
        float('-inf'))
    log_denominator = torch.logsumexp(sims, dim=1)
    if protos is not None:
        proto_sims = scaled @ protos.t()
        if class_averaging:
            proto_sims = proto_sims - log_counts
            # c_y weighs 1/(n_y − 1) = 1/n_y + 1/(n_y·(n_y − 1)): add the
            # difference per row instead of touching the (A, C) block
            own_sim = (scaled * protos.index_select(0, anchor_labels)).sum(1)
            own_extra = own_sim - (log_counts.index_select(0, anchor_labels)
                                   + (own_count - 1).clamp(min=1).log())
        log_proto = torch.logsumexp(proto_sims, dim=1)
        if class_averaging:
            log_proto = torch.logaddexp(log_proto, own_extra)
        log_denominator = torch.logaddexp(log_denominator, log_proto)
    return log_denominator


@without_autocast
def balanced_contrastive_loss(
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        prototypes: Optional[torch.Tensor] = None,
        temperature: float = 0.1,
        form: str = 'L1',
        class_complement: bool = True,
        class_averaging: bool = True,
        num_classes: Optional[int] = None,
        anchor_offset: int = 0,
        num_anchors: Optional[int] = None,
        unit_norm: bool = False
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-anchor balanced contrastive loss (BCL Eq. 9; Eq. 6-8 as options).

    Args:
        embeddings: (N, D) L2-normalised embeddings of all views of the
            (global) batch, e.g. view 1 of every sample then view 2.
        labels: (N,) integer class of every embedding.
        prototypes: (C, D) L2-normalised class prototypes c_j. Required for
            ``class_complement=True`` and for ``form='L3'``.
        temperature: τ > 0; similarities are z_i·z_k / τ.
        form: ``'L1'`` (Eq. 6 / Eq. 9: class-averaging outside the exp),
            ``'L2'`` (Eq. 7: averaging of the similarities inside the exp) or
            ``'L3'`` (Eq. 8: softmax over the prototypes only).
        class_complement: add the prototypes to the candidates (Eq. 9), so
            classes absent from the batch still appear in D_i. Ignored by L3.
        class_averaging: weight each candidate by 1/(n_j − [j = y]) (BCL);
            ``False`` gives the supervised contrastive denominator
            Σ_{k ≠ i} exp(s_ik) (Table 2 ablation; L1 only).
        num_classes: C; defaults to ``prototypes.shape[0]`` or max label + 1.
        anchor_offset: index of the first anchor row in ``embeddings``.
        num_anchors: number of anchor rows from ``anchor_offset`` (default:
            all rows). Under DDP each rank passes the gathered global batch
            and anchors only its own rows; the other rows are candidates.
        unit_norm: promise that embeddings and prototypes are L2-normalised
            (as BCLLoss makes them). Then s_ik <= 1/τ and, for τ not too
            small, the log-sum-exp uses that constant shift instead of a row
            max (same value, fewer passes). Default False (general path).

    Returns:
        tuple: ``loss`` (A,) per-anchor losses (float32, float64 for
        float64 inputs) (0 for an anchor without
        positives) and ``valid`` (A,) bool, True where the anchor has at least
        one positive (always True with class-complement or for L3), with A
        the number of anchors.
    """
    check_choice('form', form, FORMS)
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f'temperature must be a finite number > 0, got '
                         f'{temperature!r}')
    if not class_averaging and form != 'L1':
        raise ValueError(f'class_averaging=False is the SupCon denominator of '
                         f"form='L1'; form={form!r} always averages")
    if (class_complement or form == 'L3') and prototypes is None:
        raise ValueError(
            f'prototypes (C, D) are required for form={form!r} with '
            f'class_complement={class_complement}; pass the class prototypes '
            'or set class_complement=False')
    num_classes = _check_embeddings(embeddings, labels, prototypes,
                                    num_classes)
    total = embeddings.shape[0]
    if num_anchors is None:
        num_anchors = total - anchor_offset
    if anchor_offset < 0 or num_anchors < 0 or \
            anchor_offset + num_anchors > total:
        raise ValueError(
            f'anchor rows [{anchor_offset}, {anchor_offset + num_anchors}) '
            f'must lie inside the {total} embeddings')
    inv_tau = 1.0 / float(temperature)
    # fp32 at least (fp16/bf16 inputs are promoted), fp64 kept
    compute = torch.promote_types(embeddings.dtype, torch.float32)
    z = embeddings.to(compute)
    anchor_rows = slice(anchor_offset, anchor_offset + num_anchors)
    anchors = z[anchor_rows]
    anchor_labels = labels[anchor_rows]

    if form == 'L3':
        # Eq. 8: −log softmax_y(z_i·c_j / τ) over the C prototypes
        logits = (anchors @ prototypes.to(compute).t()) * inv_tau
        loss = F.cross_entropy(logits, anchor_labels, reduction='none')
        return loss, torch.ones_like(loss, dtype=torch.bool)

    protos = prototypes.to(compute) if class_complement else None
    # n_j: members of class j among the candidates (prototype included)
    counts = torch.bincount(labels, minlength=num_classes).to(z.dtype)
    class_sums = z.new_zeros(num_classes, z.shape[1]).index_add_(0, labels, z)
    if protos is not None:
        counts = counts + 1
        class_sums = class_sums + protos
    own_count = counts[anchor_labels]                     # n_y, (A,)
    num_pos = own_count - 1                               # |P_i|
    self_sim = (anchors * anchors).sum(1) * inv_tau       # s_ii
    # Σ_{p ∈ P_i} s_ip = z_i·(Σ_{k ∈ y} z_k)/τ − s_ii
    # index_select: its backward is index_add_, far cheaper on CPU than the
    # accumulating index_put_ of advanced indexing
    pos_sum = (anchors * class_sums.index_select(0, anchor_labels)).sum(1) \
        * inv_tau - self_sim
    valid = num_pos > 0
    mean_pos = pos_sum / num_pos.clamp(min=1)

    if form == 'L2':
        # Eq. 7: D_i = Σ_j exp(mean_{k ∈ j, k ≠ i} s_ik)
        class_sim = (anchors @ class_sums.t()) * inv_tau  # (A, C)
        own = F.one_hot(anchor_labels, num_classes).to(z.dtype)
        class_sim = class_sim - own * self_sim[:, None]
        members = counts[None, :] - own                   # n_j − [j = y]
        class_mean = class_sim / members.clamp(min=1)
        class_mean = class_mean.masked_fill(members <= 0, float('-inf'))
        log_denominator = torch.logsumexp(class_mean, dim=1)
    else:
        # Eq. 6 / 9: log D_i = logsumexp_k(s_ik − log(n_{y_k} − [y_k = y]))
        log_counts = counts.log()
        # The log-sum-exp shift: the row max (torch.logsumexp) in general.
        # For unit vectors s_ik <= 1/τ (Cauchy-Schwarz), a constant folded
        # into the bias that saves the max and subtract passes; safe while
        # the smallest term e^(−2/τ − 2·log n) stays far above fp32's
        # smallest normal (e^−87), otherwise the general path is taken.
        fixed_shift = unit_norm and (
            2 * inv_tau + 2 * math.log(total + num_classes + 1) < 80)
        if fixed_shift:
            log_denominator = _fixed_shift_log_denominator(
                z, labels, protos, counts, log_counts, anchor_labels,
                anchor_offset, num_anchors, inv_tau, class_averaging)
        else:
            log_denominator = _general_log_denominator(
                z, labels, protos, counts, log_counts, anchors,
                anchor_labels, anchor_offset, num_anchors, inv_tau,
                class_averaging)

    loss = torch.where(valid, log_denominator - mean_pos,
                       torch.zeros_like(mean_pos))
    return loss, valid


def logit_compensated_cross_entropy(
        cls_score: torch.Tensor,
        target: torch.Tensor,
        log_prior: torch.Tensor,
        class_weight: Optional[torch.Tensor] = None,
        prior_scale: float = 1.0) -> torch.Tensor:
    """Per-sample logit-compensated cross-entropy (BCL Eq. 10).

    L_LC(y, φ(x)) = −α_y · log softmax_y(φ(x) + δ),  δ_y = s·log π_y.

    With α = 1 and s = 1 (the paper's choice, after Menon et al.) this is
    CE(φ(x) + log π, y), i.e. logit-adjusted / Balanced Softmax training;
    predictions use the raw logits φ(x).

    Args:
        cls_score: (B, C) logits φ(x).
        target: (B,) integer labels.
        log_prior: (C,) log π_y (log class ratio of the training set).
        class_weight: (C,) α_y, or None for α = 1.
        prior_scale: s, the multiplier of log π (LogitAdjust's τ in the
            official code, 1 there and here).

    Returns:
        (B,) float32 losses.
    """
    if cls_score.ndim != 2:
        raise ValueError(f'cls_score must have shape (B, C), got '
                         f'{tuple(cls_score.shape)}')
    num_classes = cls_score.shape[1]
    if target.ndim != 1 or target.shape[0] != cls_score.shape[0]:
        raise ValueError(f'target must have shape ({cls_score.shape[0]},), '
                         f'got {tuple(target.shape)}')
    if log_prior.shape != (num_classes, ):
        raise ValueError(f'log_prior must have shape ({num_classes},), got '
                         f'{tuple(log_prior.shape)}')
    check_labels(target, num_classes)
    adjusted = cls_score.float() + prior_scale * log_prior.to(
        cls_score.device, torch.float32)[None, :]
    loss = F.cross_entropy(adjusted, target, reduction='none')
    if class_weight is not None:
        loss = loss * class_weight.to(loss)[target]
    return loss


def gather_with_grad(embeddings: torch.Tensor, labels: torch.Tensor
                     ) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """All-gather embeddings (with gradient) and labels over ranks.

    ``torch.distributed.nn.functional.all_gather`` sums the gradients of every
    rank's copy back into the owner's rows, so each rank's local embeddings
    get the gradient of all ranks' losses. Ranks may hold different numbers of
    rows (padded for the collective, then cut).

    Args:
        embeddings: (n, D) local embeddings.
        labels: (n,) local labels.

    Returns:
        ``(all_embeddings (N, D) float32, all_labels (N,), offset)`` with
        ``offset`` the index of this rank's first row. In a single process the
        inputs come back unchanged with offset 0.
    """
    if not dist.is_distributed():
        return embeddings, labels, 0
    # labels travel as one extra column: one collective instead of two
    # (exact in float32 below 2**24 classes)
    packed = torch.cat([embeddings.float(), labels.float()[:, None]], dim=1)
    gathered, offset = dist.gather_rows(packed, with_grad=True)
    return gathered[:, :-1], gathered[:, -1].round().long(), offset


@MODELS.register_module()
class BCLLoss(torch.nn.Module):
    """BCL's training objective L = λ·L_LC + μ·L_BCL (BCL Eq. 11).

    ``forward`` takes the classifier logits of view v1 and the contrastive
    embeddings of views v2, v3 plus the class prototypes, and returns a dict
    ``{'loss_lc': λ·L_LC, 'loss_bcl': μ·L_BCL}`` (mmengine sums every key
    containing ``loss``).

    Recipes (reference notes §4): ImageNet-LT / iNat2018 λ = 1, μ = 0.35,
    τ = 0.07 (the defaults); CIFAR-LT λ = 2, μ = 0.6, τ = 0.1.

    Under DDP the embeddings and labels are all-gathered (gradient kept for
    the local rows, ``gather_across_ranks=True``) so n_j counts the global
    batch, as in the authors' DataParallel trainer; each rank's anchors are
    its own rows and the loss is scaled so that the mean over ranks equals the
    single-process loss on the concatenated batch.

    Args:
        temperature: τ of Eq. 9.
        lc_weight: λ (Eq. 11).
        bcl_weight: μ (Eq. 11).
        form: ``'L1'`` (Eq. 9, default), ``'L2'`` (Eq. 7), ``'L3'`` (Eq. 8).
        class_complement: prototypes as candidates (Eq. 9). Default True.
        class_averaging: 1/(n_j − [j = y]) weights. Default True.
        normalize: L2-normalise embeddings and prototypes here. Default True.
        prior_scale: multiplier of log π in Eq. 10 (1 in paper and code).
        class_weight: α_y of Eq. 10 (C,), None for α = 1 (paper and code).
        class_counts: training counts per class (C,) for π; usually filled
            by ``ClassStatisticsHook`` through ``set_class_counts``. A buffer
            (saved in checkpoints).
        num_classes: expected C (validates counts, logits and prototypes).
        min_count: pseudo-count for classes without training samples.
        gather_across_ranks: all-gather the contrastive batch under DDP.
        loss_weight: extra multiplier of both terms (OpenMMLab convention).
    """

    def __init__(self,
                 temperature: float = 0.07,
                 lc_weight: float = 1.0,
                 bcl_weight: float = 0.35,
                 form: str = 'L1',
                 class_complement: bool = True,
                 class_averaging: bool = True,
                 normalize: bool = True,
                 prior_scale: float = 1.0,
                 class_weight: Optional[Sequence[float]] = None,
                 class_counts: Optional[Sequence[float]] = None,
                 num_classes: Optional[int] = None,
                 min_count: float = 1.0,
                 gather_across_ranks: bool = True,
                 loss_weight: float = 1.0):
        super().__init__()
        check_choice('form', form, FORMS)
        if not (isinstance(temperature, (int, float)) and temperature > 0
                and math.isfinite(temperature)):
            raise ValueError(f'temperature must be a finite number > 0, got '
                             f'{temperature!r}')
        for name, value in (('lc_weight', lc_weight),
                            ('bcl_weight', bcl_weight),
                            ('loss_weight', loss_weight)):
            if not (isinstance(value, (int, float)) and value >= 0
                    and math.isfinite(value)):
                raise ValueError(f'{name} must be a finite number >= 0, got '
                                 f'{value!r}')
        if not class_averaging and form != 'L1':
            raise ValueError("class_averaging=False needs form='L1', got "
                             f'form={form!r}')
        if num_classes is not None and (not isinstance(num_classes, int)
                                        or num_classes < 1):
            raise ValueError(f'num_classes must be a positive int, got '
                             f'{num_classes!r}')
        if min_count <= 0:
            raise ValueError(f'min_count must be > 0, got {min_count!r}')
        self.temperature = float(temperature)
        self.lc_weight = float(lc_weight)
        self.bcl_weight = float(bcl_weight)
        self.form = form
        self.class_complement = bool(class_complement)
        self.class_averaging = bool(class_averaging)
        self.normalize = bool(normalize)
        self.prior_scale = float(prior_scale)
        self.num_classes = num_classes
        self.min_count = float(min_count)
        self.gather_across_ranks = bool(gather_across_ranks)
        self.loss_weight = float(loss_weight)
        if class_weight is not None:
            class_weight = torch.as_tensor(class_weight, dtype=torch.float32)
            if class_weight.ndim != 1 or (
                    num_classes is not None
                    and class_weight.numel() != num_classes):
                raise ValueError(
                    f'class_weight must have shape ({num_classes or "C"},), '
                    f'got {tuple(class_weight.shape)}')
            self.register_buffer('class_weight', class_weight)
        else:
            self.class_weight = None
        self.register_buffer('class_counts',
                             torch.zeros(0, dtype=torch.float64))
        # log π: derived from class_counts once, follows .to(device)
        self.register_buffer('_log_prior', torch.zeros(0), persistent=False)
        if class_counts is not None:
            self.set_class_counts(class_counts)

    @property
    def needs_class_counts(self) -> bool:
        return self.lc_weight > 0

    @property
    def needs_prototypes(self) -> bool:
        return self.bcl_weight > 0 and (self.class_complement
                                        or self.form == 'L3')

    def set_class_counts(self, class_counts) -> None:
        """Set per-class training counts (C,) (``ClassStatisticsHook``)."""
        counts = priors.validate_class_counts(class_counts, self.num_classes)
        self.class_counts = counts.to(self.class_counts.device)
        smoothed = priors.smooth_zero_counts(counts.clone(), self.min_count)
        self._log_prior = priors.log_class_ratio(smoothed).to(
            self.class_counts.device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        take_checkpoint_shape(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.class_counts.numel():
            self.set_class_counts(self.class_counts)

    def log_prior(self, num_classes: int) -> torch.Tensor:
        """log π (C,) from the class counts; raises if they are missing."""
        if self.class_counts.numel() == 0:
            raise ValueError(
                'BCLLoss needs class_counts for the logit compensation of '
                'Eq. 10: give class_counts=[...] in the loss config or add '
                "dict(type='ClassStatisticsHook') to custom_hooks")
        if self.class_counts.numel() != num_classes:
            raise ValueError(
                f'class_counts has {self.class_counts.numel()} entries but '
                f'the logits have {num_classes} classes')
        return self._log_prior

    def forward(self,
                cls_score: torch.Tensor,
                target: torch.Tensor,
                embeddings: torch.Tensor,
                prototypes: Optional[torch.Tensor] = None,
                weight: Optional[torch.Tensor] = None,
                avg_factor: Optional[float] = None) -> Dict[str, torch.Tensor]:
        """Compute λ·L_LC (Eq. 10) and μ·L_BCL (Eq. 9 or its variants).

        Args:
            cls_score: (B, C) classifier logits of view v1.
            target: (B,) integer labels.
            embeddings: (B, V, D) projections of the V ≥ 1 contrastive views
                (V = 2: v2, v3), normalised here if ``normalize``.
            prototypes: (C, D) prototype projections g_c(w_j); required with
                class-complement or form L3.
            weight: (B,) per-sample weights of the L_LC term.
            avg_factor: divisor of the L_LC sum instead of B.

        Returns:
            dict with ``loss_lc`` and ``loss_bcl`` (0-dim tensors).
        """
        if cls_score.ndim != 2:
            raise ValueError(f'cls_score must have shape (B, C), got '
                             f'{tuple(cls_score.shape)}')
        batch, num_classes = cls_score.shape
        if self.num_classes is not None and num_classes != self.num_classes:
            raise ValueError(f'cls_score has {num_classes} classes but '
                             f'num_classes is {self.num_classes}')
        if target.ndim != 1 or target.shape[0] != batch:
            raise ValueError(f'target must have shape ({batch},) integer '
                             f'labels, got {tuple(target.shape)}')
        if embeddings.ndim != 3 or embeddings.shape[0] != batch:
            raise ValueError(
                f'embeddings must have shape ({batch}, V, D) (one row per '
                f'sample, V contrastive views), got {tuple(embeddings.shape)}')
        if self.needs_prototypes and prototypes is None:
            raise ValueError(
                f'BCLLoss(form={self.form!r}, class_complement='
                f'{self.class_complement}) needs prototypes of shape '
                f'({num_classes}, {embeddings.shape[2]})')
        if prototypes is not None and (prototypes.ndim != 2
                                       or prototypes.shape[0] != num_classes):
            raise ValueError(
                f'prototypes must have shape ({num_classes}, D), got '
                f'{tuple(prototypes.shape)}')
        losses = {}
        if self.lc_weight > 0:
            lc = logit_compensated_cross_entropy(
                cls_score, target, self.log_prior(num_classes),
                class_weight=self.class_weight, prior_scale=self.prior_scale)
            lc = weight_reduce_loss(lc, weight, 'mean', avg_factor)
            losses['loss_lc'] = self.loss_weight * self.lc_weight * lc
        if self.bcl_weight > 0:
            losses['loss_bcl'] = self.loss_weight * self.bcl_weight * \
                self.contrastive(target, embeddings, prototypes, num_classes)
        return losses

    def contrastive(self, target: torch.Tensor, embeddings: torch.Tensor,
                    prototypes: Optional[torch.Tensor],
                    num_classes: int) -> torch.Tensor:
        """L_BCL (mean over the global anchors; see the class docstring).

        Args:
            target: (B,) labels; embeddings: (B, V, D); prototypes: (C, D).
        """
        views = embeddings.shape[1]
        # view-major: all samples of view 1, then view 2 (as the official code)
        local = embeddings.transpose(0, 1).reshape(-1, embeddings.shape[2])
        if self.normalize:
            local = F.normalize(local.float(), dim=1)
            if prototypes is not None:
                prototypes = F.normalize(prototypes.float(), dim=1)
        local_labels = target.repeat(views)
        everything, all_labels, offset = (
            gather_with_grad(local, local_labels)
            if self.gather_across_ranks else (local, local_labels, 0))
        per_anchor, valid = balanced_contrastive_loss(
            everything, all_labels, prototypes, self.temperature,
            form=self.form, class_complement=self.class_complement,
            class_averaging=self.class_averaging, num_classes=num_classes,
            anchor_offset=offset, num_anchors=local.shape[0],
            unit_norm=self.normalize)
        valid_count = valid.sum().to(torch.float32)
        world = 1
        if self.gather_across_ranks and dist.is_distributed():
            valid_count = dist.all_reduce_sum(valid_count)
            world = dist.get_world_size()
        # mean over all valid anchors of all ranks; rank losses average to it
        return per_anchor.sum() * world / valid_count.clamp(min=1)
