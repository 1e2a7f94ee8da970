"""Balanced contrastive loss, the pure function (BCL Eq. 6-9).

Zhu et al., Balanced Contrastive Learning for Long-Tailed Visual Recognition,
CVPR 2022. The registered module (with the logit compensation of Eq. 10-11)
is :class:`reot_mm.losses.bcl_loss.BCLLoss`.

Notation (BCL Sec. 3.3). The candidates are the 2B normalised embeddings of
the two contrastive views plus, with *class-complement*, the C normalised
prototypes c_j (one per class, so every class appears in every batch). With
n_j = |B_j ∪ {c_j}| = 2·(batch count of j) + 1 and s_ik = z_i·z_k / τ, anchor
i of class y has

    D_i = Σ_j 1 / (n_j − [j = y]) · Σ_{k ∈ j, k ≠ i} exp(s_ik)
    L_i = −1/|P_i| · Σ_{p ∈ P_i} (s_ip − log D_i),   P_i = (B_y \\ {i}) ∪ {c_y}

(BCL Eq. 9, |P_i| = n_y − 1), averaged over the 2B anchors; prototypes are
never anchors. The authors' code computes the same quantity (its
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

Everything is vectorised over anchors, candidates and classes: the class
weights 1/(n_j − [j = y]) enter as an additive log-weight before one
``logsumexp`` (log domain, no overflow for small τ), and positives are summed
with class-sum embeddings (z_i·Σ_{k ∈ y} z_k).
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from reot_mm.losses.finite import raise_if_non_finite
from reot_mm.losses.utils import check_choice, check_labels, without_autocast

__all__ = ['FORMS', 'balanced_contrastive_loss']

FORMS = ('L1', 'L2', 'L3')


def _check_embeddings(embeddings: torch.Tensor, labels: torch.Tensor,
                      prototypes: Optional[torch.Tensor],
                      num_classes: Optional[int]) -> int:
    """Validate the shapes and labels; return C."""
    if embeddings.ndim != 2:
        raise ValueError('embeddings must have shape (N, D), got '
                         f'{tuple(embeddings.shape)}')
    if embeddings.shape[0] == 0:
        raise ValueError('embeddings has no rows (an empty batch); expected '
                         '(N, D) with N >= 1')
    if labels.ndim != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f'labels must have shape ({embeddings.shape[0]},) to match the '
            f'embeddings, got {tuple(labels.shape)}')
    if labels.dtype.is_floating_point or labels.dtype.is_complex \
            or labels.dtype == torch.bool:
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
        num_classes = int(labels.max()) + 1
    check_labels(labels, num_classes, name='labels')
    return num_classes


def _log_denominator(z, labels, protos, counts, anchors, anchor_labels,
                     anchor_offset, num_anchors, inv_tau, class_averaging):
    """log D_i of Eq. 6 / 9 (Eq. 6 is Eq. 9 without prototypes), (A,).

    log D_i = logsumexp_k(s_ik − log(n_{y_k} − [y_k = y])) over the
    candidates k ≠ i; without class-averaging (SupCon) the weights are 1.
    """
    scaled = anchors * inv_tau
    if class_averaging:
        log_counts = counts.log()
        own_count = counts.index_select(0, anchor_labels)
        # s_ik − log n_{y_k} (addmm writes the bias with the product) ...
        sims = torch.addmm(log_counts.index_select(0, labels).neg()[None, :],
                           scaled, z.t())                 # (A, N)
        # ... and same-class candidates over n_y − 1, not n_y
        own_shift = log_counts.index_select(0, anchor_labels) - (
            own_count - 1).clamp(min=1).log()
        same = anchor_labels[:, None] == labels[None, :]
        sims = sims.add_(same * own_shift[:, None])
    else:
        sims = scaled @ z.t()
    # k ≠ i: the anchors' own columns
    sims[:, anchor_offset:anchor_offset + num_anchors].diagonal().fill_(
        float('-inf'))
    log_denominator = torch.logsumexp(sims, dim=1)
    if protos is None:
        return log_denominator
    if class_averaging:
        proto_sims = torch.addmm(log_counts.neg()[None, :], scaled,
                                 protos.t())              # (A, C)
    else:
        proto_sims = scaled @ protos.t()
    log_proto = torch.logsumexp(proto_sims, dim=1)
    if class_averaging:
        # c_y weighs 1/(n_y − 1) = 1/n_y + 1/(n_y·(n_y − 1)): add the
        # difference per row instead of touching the (A, C) block
        own_sim = (scaled * protos.index_select(0, anchor_labels)).sum(1)
        own_extra = own_sim - (log_counts.index_select(0, anchor_labels)
                               + (own_count - 1).clamp(min=1).log())
        log_proto = torch.logaddexp(log_proto, own_extra)
    return torch.logaddexp(log_denominator, log_proto)


def _check_result(loss, embeddings, prototypes):
    raise_if_non_finite(
        loss, 'the balanced contrastive loss',
        'the similarities z·z/τ overflow; expected L2-normalised embeddings '
        'and prototypes (BCLLoss(normalize=True))',
        embeddings=embeddings, prototypes=prototypes)


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
        num_anchors: Optional[int] = None
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

    Returns:
        tuple: ``loss`` (A,) per-anchor losses (float32, float64 for float64
        inputs; 0 for an anchor without positives) and ``valid`` (A,) bool,
        True where the anchor has at least one positive (always True with
        class-complement or for L3), with A the number of anchors.

    Raises:
        ValueError: malformed shapes or labels, an empty batch, or
            non-finite embeddings / prototypes (named).
        FloatingPointError: a non-finite loss from finite inputs (similarities
            too large to exponentiate: un-normalised embeddings).
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
        _check_result(loss, embeddings, prototypes)
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
        log_denominator = _log_denominator(
            z, labels, protos, counts, anchors, anchor_labels, anchor_offset,
            num_anchors, inv_tau, class_averaging)

    loss = torch.where(valid, log_denominator - mean_pos,
                       torch.zeros_like(mean_pos))
    _check_result(loss, embeddings, prototypes)
    return loss, valid
