"""GML's class-conditional likelihood terms: L_GML and L_τ (pure functions).

Suh and Seo, Long-Tailed Recognition by Mutual Information Maximization
between Latent Features and Ground-Truth Labels, ICML 2023. The registered
module that combines them with L_cls and L_KD is
:class:`reot_mm.losses.gml_loss.GMLLoss`.

Notation: q = z_x is the L2-normalised query of a sample, Z_c the
L2-normalised contrast features (queue entries) of class c, τ_g the GML
temperature, η_c = log p(c) the log class prior and α its weight.

* Eq. 3: s(x|c) = (1/|Z_c|)·Σ_{z∈Z_c} exp(q·z/τ_g), a Gaussian mixture with one
  component per contrast feature (Eq. 4: the dot product equals minus half the
  squared distance up to a constant that cancels).
* Eq. 5 / 11: L_GML = -log softmax_c[log s(x|c) + α·η_c]_y, i.e. cross-entropy
  over classes of the per-class log-MEAN-exp plus the scaled log prior
  (α = 1 is Eq. 5).
* Eq. 10: with a balanced dataset (equal |Z_c| and η_c) the loss is
  -log(Σ_{Z_y} e / Σ_Z e), which bounds the supervised-contrastive loss.
* Sec. 3.3 "Trainable temperature": τ_g = exp(θ) is trained by a separate
  term L_τ, the same loss with the similarities detached and with the queue
  entries of the query's own sample excluded (otherwise the optimal τ_g is
  too small and the mixture spiky). In L_GML τ_g is detached, so θ gets its
  gradient from L_τ only.

Per-class reductions over the queue are segment reductions on the entries'
labels (``index_add`` for the sums), O(B·K) time and memory, no loop over
classes or samples. Rows are shifted by their maximum; a row in which some
class underflows (its best score ~87 below the row's maximum in float32, i.e.
only when 2/τ_g > 87) is recomputed with one shift per class
(``scatter_reduce``), so the log-mean-exp stays finite for any τ_g > 0.
Classes without entries get a likelihood of -inf (they drop out of the
softmax); a sample whose own class has no entry has an undefined L_GML (an
error) and is left out of L_τ.
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from reot_mm.losses.finite import raise_if_non_finite
from reot_mm.losses.utils import at_least_fp32, check_labels, without_autocast

__all__ = ['class_log_mean_exp', 'gml_loss', 'gml_temperature_loss']


def _check_queue_inputs(query: torch.Tensor, keys: torch.Tensor,
                        key_labels: torch.Tensor, num_classes: int) -> None:
    if query.ndim != 2 or keys.ndim != 2 or query.shape[1] != keys.shape[1]:
        raise ValueError(
            'query must be (B, D) and keys (K, D) with the same D, got '
            f'query {tuple(query.shape)} and keys {tuple(keys.shape)}')
    if query.shape[0] == 0:
        raise ValueError('query has no rows (an empty batch); expected (B, D) '
                         'with B >= 1 samples')
    if keys.shape[0] == 0:
        raise ValueError(
            'keys (the embedded queue) has no entries; expected (K, D) with '
            'K >= C·k_m >= 1: build the ClassQueue segments (GMLQueueHook) '
            'before the first loss')
    if key_labels.shape != (keys.shape[0], ):
        raise ValueError(f'key_labels must have shape ({keys.shape[0]},) '
                         f'(one label per key), got {tuple(key_labels.shape)}')
    check_labels(key_labels, num_classes, 'key_labels')


def _check_target(target: torch.Tensor, query: torch.Tensor,
                  num_classes: int) -> None:
    if target.shape != (query.shape[0], ) or target.dtype.is_floating_point:
        raise ValueError(f'target must be ({query.shape[0]},) integer labels '
                         f'(one per query), got {tuple(target.shape)} '
                         f'{target.dtype}')
    check_labels(target, num_classes, 'target')


def class_log_mean_exp(scores: torch.Tensor, key_labels: torch.Tensor,
                       num_classes: int,
                       exclude: Optional[torch.Tensor] = None
                       ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-class log-mean-exp of scores over each class's entries (GML Eq. 3).

    out_bc = log((1/|Z_c^b|)·Σ_{k: label_k = c, not excluded_bk} exp(scores_bk))

    Args:
        scores: (B, K) scores q·z_k/τ_g (any float dtype; reduced in >= fp32).
        key_labels: (K,) int64 class of every entry, in [0, num_classes).
        num_classes: C.
        exclude: optional (B, K) bool, True where entry k must not count for
            row b (GML's same-sample exclusion for L_τ).

    Returns:
        (log_mean, counts): (B, C) log-mean-exp, -inf where a class has no
        (non-excluded) entry, and the (B, C) float numbers of entries |Z_c^b|.
    """
    if scores.ndim != 2 or scores.shape[1] != key_labels.shape[0]:
        raise ValueError(f'scores must have shape (B, {key_labels.shape[0]}) '
                         f'(one column per queue entry), got '
                         f'{tuple(scores.shape)}')
    if scores.shape[1] == 0:
        raise ValueError('scores has no columns (an empty queue); expected '
                         '(B, K) with K >= 1 queue entries')
    if scores.dtype in (torch.float16, torch.bfloat16):
        scores = scores.float()
    batch = scores.shape[0]
    if exclude is not None:
        scores = scores.masked_fill(exclude, -math.inf)
    counts = torch.bincount(key_labels, minlength=num_classes).to(scores.dtype)
    counts = counts.expand(batch, -1)
    if exclude is not None:
        counts = counts - scores.new_zeros(batch, num_classes).index_add(
            1, key_labels, exclude.to(scores.dtype))
    present = counts > 0
    # Fast path: shift every row by its maximum (no gradient needed: the
    # shift cancels analytically).
    shift = scores.detach().amax(1, keepdim=True)
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    sums = scores.new_zeros(batch, num_classes).index_add(
        1, key_labels, (scores - shift).exp())
    shift = shift.expand(batch, num_classes)
    # A class whose best score lies ~87 (float32) below its row's maximum
    # underflows; those rows are redone with one shift per class.
    dtype = torch.finfo(scores.dtype)
    low = present & (sums < dtype.tiny / dtype.eps)
    if bool(low.any()):
        rows = torch.nonzero(low.any(1)).flatten()
        sub = scores.index_select(0, rows)
        index = key_labels.view(1, -1).expand(rows.numel(), -1)
        class_max = torch.full((rows.numel(), num_classes), -math.inf,
                               dtype=scores.dtype, device=scores.device)
        class_max = class_max.scatter_reduce(1, index, sub.detach(), 'amax')
        class_max = torch.where(torch.isfinite(class_max), class_max,
                                torch.zeros_like(class_max))
        sub_sums = sub.new_zeros(rows.numel(), num_classes).index_add(
            1, key_labels, (sub - class_max.gather(1, index)).exp())
        sums = sums.index_copy(0, rows, sub_sums)
        shift = shift.index_copy(0, rows, class_max)
    # where() on the inputs too, so empty classes give no NaN gradient
    safe_sums = torch.where(present, sums, torch.ones_like(sums))
    safe_counts = torch.where(present, counts, torch.ones_like(counts))
    log_mean = safe_sums.log() + shift - safe_counts.log()
    log_mean = torch.where(present, log_mean,
                           torch.full_like(log_mean, -math.inf))
    return log_mean, counts


def _similarity(query, keys, similarity):
    """q·z for every query and key, (B, K), or the given precomputed one."""
    if similarity is None:
        return at_least_fp32(query) @ at_least_fp32(keys).t()
    if similarity.shape != (query.shape[0], keys.shape[0]):
        raise ValueError(f'similarity must have shape ({query.shape[0]}, '
                         f'{keys.shape[0]}), got {tuple(similarity.shape)}')
    return at_least_fp32(similarity)


def _class_scores(similarity, key_labels, num_classes, log_prior, alpha,
                  scale, exclude=None):
    """(B, C) [log s(x|c) + α·η_c] and the per-class entry counts."""
    log_like, counts = class_log_mean_exp(similarity * scale, key_labels,
                                          num_classes, exclude)
    if log_prior is not None and alpha != 0:
        log_like = log_like + alpha * log_prior.to(log_like)
    return log_like, counts


@without_autocast
def gml_loss(query: torch.Tensor, keys: torch.Tensor, key_labels: torch.Tensor,
             target: torch.Tensor, tau: torch.Tensor,
             log_prior: Optional[torch.Tensor] = None,
             alpha: float = 1.0,
             num_classes: Optional[int] = None,
             similarity: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-sample GML loss (GML Eq. 5; Eq. 11 with α), τ_g detached.

    Args:
        query: (B, D) L2-normalised queries z_x.
        keys: (K, D) L2-normalised contrast features (the embedded queue).
        key_labels: (K,) int64 class of each key.
        target: (B,) int64 labels y.
        tau: τ_g, a positive scalar tensor or float; detached here.
        log_prior: (C,) η_c = log p(c); None means a uniform prior.
        alpha: α of Eq. 11 (1 gives Eq. 5, 0 no logit adjustment).
        num_classes: C; defaults to the length of ``log_prior``.
        similarity: optional precomputed (B, K) ``query @ keys.T`` (with its
            graph), so that L_GML and L_τ share one matrix product.

    Returns:
        (B,) float32 (or float64) losses.

    Raises:
        ValueError: a sample's own class has no key (only possible with
            k_m = 0 or an unbuilt queue), an empty batch or queue, malformed
            inputs, or an input with NaN / inf values (named).
        FloatingPointError: a non-finite loss from finite inputs (q·z/τ_g
            overflows).
    """
    num_classes = _num_classes(log_prior, num_classes)
    _check_queue_inputs(query, keys, key_labels, num_classes)
    _check_target(target, query, num_classes)
    given_similarity = similarity
    similarity = _similarity(query, keys, similarity)
    tau = torch.as_tensor(tau).detach().to(similarity.device)
    inv_tau = 1.0 / tau
    logits, counts = _class_scores(similarity, key_labels, num_classes,
                                   log_prior, alpha, inv_tau.to(similarity.dtype))
    empty = counts[0].gather(0, target) <= 0
    if empty.any():
        classes = sorted(set(target[empty].tolist()))
        raise ValueError(
            f'GML loss: classes {classes[:20]} of the batch have no queue '
            'entries, so their likelihood (Eq. 3) is undefined; use a queue '
            'with min_per_class (k_m) >= 1 whose segments are built')
    loss = F.cross_entropy(logits, target, reduction='none')
    _check_result(loss, 'L_GML (GML Eq. 5 / 11)', query=query, keys=keys,
                  similarity=given_similarity, tau=tau, log_prior=log_prior)
    return loss


@without_autocast
def gml_temperature_loss(query: torch.Tensor, keys: torch.Tensor,
                         key_labels: torch.Tensor, target: torch.Tensor,
                         tau: torch.Tensor,
                         sample_indices: Optional[torch.Tensor] = None,
                         key_indices: Optional[torch.Tensor] = None,
                         log_prior: Optional[torch.Tensor] = None,
                         alpha: float = 1.0,
                         num_classes: Optional[int] = None,
                         similarity: Optional[torch.Tensor] = None
                         ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-sample L_τ: trains only τ_g (GML Sec. 3.3, "Trainable Temperature").

    The GML loss of Eq. 11 with the similarities q·z detached (so only τ_g
    receives a gradient) and with every key whose dataset index equals the
    query's excluded (entries of the same image, from this or earlier
    augmentations). A sample whose class has no other entry left has no
    defined loss and is marked invalid instead of producing inf/NaN.

    Args:
        query, keys, key_labels, target, log_prior, alpha, num_classes,
            similarity: as in :func:`gml_loss` (the similarity is detached
            here).
        tau: τ_g = exp(θ), a scalar tensor that requires grad.
        sample_indices: (B,) int64 dataset index of each query; None disables
            the exclusion.
        key_indices: (K,) int64 dataset index of each key (negative for the
            queue's initial random entries, which never match).

    Returns:
        (losses, valid): (B,) losses (0 where invalid) and (B,) bool mask.

    Raises:
        ValueError / FloatingPointError: as :func:`gml_loss`, except that a
            class without entries marks its samples invalid.
    """
    num_classes = _num_classes(log_prior, num_classes)
    _check_queue_inputs(query, keys, key_labels, num_classes)
    _check_target(target, query, num_classes)
    exclude = None
    if sample_indices is not None:
        if key_indices is None or key_indices.shape != key_labels.shape:
            raise ValueError('key_indices must be given with shape '
                             f'{tuple(key_labels.shape)} to exclude same-sample '
                             'keys')
        if sample_indices.shape != target.shape:
            raise ValueError(f'sample_indices must have shape {tuple(target.shape)}'
                             f', got {tuple(sample_indices.shape)}')
        exclude = sample_indices.view(-1, 1) == key_indices.view(1, -1)
    given_similarity = similarity
    with torch.no_grad():
        similarity = _similarity(query, keys, similarity).detach()
    tau = torch.as_tensor(tau, device=query.device).to(similarity.dtype)
    log_like, counts = class_log_mean_exp(similarity / tau, key_labels,
                                          num_classes, exclude)
    if log_prior is not None and alpha != 0:
        log_like = log_like + alpha * log_prior.to(log_like)
    valid = counts.gather(1, target.view(-1, 1)).squeeze(1) > 0
    # invalid rows: a finite dummy target keeps the CE (and its gradient) finite
    safe_logits = torch.where(valid.view(-1, 1), log_like,
                              torch.zeros_like(log_like))
    losses = F.cross_entropy(safe_logits, target, reduction='none') * valid
    _check_result(losses, 'L_τ (GML Sec. 3.3)', query=query, keys=keys,
                  similarity=given_similarity, tau=tau, log_prior=log_prior)
    return losses, valid


def _check_result(loss, what, **inputs):
    raise_if_non_finite(
        loss, what, 'q·z/τ_g overflows; expected L2-normalised query and keys '
        'and a temperature τ_g well above 1e-30', **inputs)


def _num_classes(log_prior, num_classes) -> int:
    if log_prior is not None:
        if num_classes is not None and log_prior.shape[-1] != num_classes:
            raise ValueError(f'log_prior has {log_prior.shape[-1]} classes but '
                             f'num_classes is {num_classes}')
        return int(log_prior.shape[-1])
    if num_classes is None:
        raise ValueError('give num_classes or log_prior (C,) to the GML loss')
    return int(num_classes)
