"""Prior-shifted cross-entropy: the inverse RE-OT loss under U(a) (RE-OT Eq. 16)."""
from typing import Optional

import torch
import torch.nn.functional as F


# From about a million scores on, the fused kernel is faster than
# F.cross_entropy on shifted scores (benchmarks/bench_reot_loss.py).
_FUSED_MIN_NUMEL = 1 << 20


class _PriorCrossEntropy(torch.autograd.Function):
    """-log softmax(l/ε + log Q)_y per sample, fused for speed and memory.

    Forward keeps one (B, C) buffer, the log-plan log P; backward turns that
    buffer into the gradient in place, (P - onehot)·g/ε with
    P·g/ε = exp(log P + log(g/ε)). ``F.cross_entropy(l/ε + log Q)`` instead
    allocates the shifted scores, the log-probabilities and two (B, C)
    gradients; fresh large buffers cost page faults on the CPU (see
    benchmarks/bench_reot_loss.py). Not twice differentiable: a second
    backward through the same graph is refused by autograd.
    """

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
        del scores
        loss = log_plan.gather(1, target[:, None]).squeeze(1).neg()
        ctx.save_for_backward(log_plan, target)
        ctx.inv_epsilon = inv_epsilon
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        log_plan, target = ctx.saved_tensors
        scale = grad_loss if ctx.inv_epsilon == 1.0 else \
            grad_loss * ctx.inv_epsilon
        if scale.min() < 0:
            grad = log_plan.exp_().mul_(scale[:, None])
        else:
            # one pass fewer: fold the (non-negative) scale into the exponent
            grad = log_plan.add_(scale.log()[:, None]).exp_()
        grad.scatter_add_(1, target[:, None], -scale[:, None])
        return grad, None, None, None


def inverse_reot_loss(similarity: torch.Tensor, target: torch.Tensor,
                      log_prior: Optional[torch.Tensor] = None,
                      epsilon: float = 1.0,
                      focal_gamma: float = 0.0,
                      class_weights: Optional[torch.Tensor] = None
                      ) -> torch.Tensor:
    """Per-sample inverse RE-OT loss under U(a) (RE-OT Eq. 16).

    L_i = -Σ_j P̃_ij·log P_ij with P_ij ∝ Q_ij·exp(-C_ij/ε), C = c - similarity.

    Args:
        similarity: (B, C) -C (up to the constant c): logits, scaled
            cosines, or minus distances.
        target: (B,) integer labels (P̃ one-hot) or (B, C) soft targets.
        log_prior: log Q, shape (C,) or (B, C); None means uniform.
        epsilon: ε > 0.
        focal_gamma: γ of the focal row, P̃ ← P̃·(1 - P)^γ (gradients flow
            through P, as in the focal loss).
        class_weights: (C,) class-balanced factors, P̃_ij ← P̃_ij·w_j.

    Returns:
        (B,) float32 losses.
    """
    similarity = at_least_fp32(similarity)
    if log_prior is not None:
        log_prior = log_prior.to(similarity.dtype)
    # the fused kernel returns no gradient for log Q; the U(a, b) loss needs
    # one (its log Q + g depends on the scores)
    prior_grad = log_prior is not None and log_prior.requires_grad
    if target.ndim == 1 and not focal_gamma:
        if similarity.numel() >= _FUSED_MIN_NUMEL and not prior_grad:
            loss = _PriorCrossEntropy.apply(similarity, log_prior, target,
                                            1.0 / epsilon)
        else:
            # small batches: the fused function's fixed Python cost (its own
            # forward/backward) outweighs the memory it saves
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
        weights = weights * (-torch.expm1(log_plan)).clamp_min(0).pow(focal_gamma)
    # 0·(-inf) must be 0: classes without prior mass carry no supervision.
    terms = torch.where(weights > 0, weights * log_plan,
                        torch.zeros_like(log_plan))
    return -terms.sum(-1)


def at_least_fp32(tensor: torch.Tensor) -> torch.Tensor:
    """Half-precision inputs are reduced in float32; float64 stays float64."""
    if tensor.dtype in (torch.float16, torch.bfloat16):
        return tensor.float()
    return tensor


def _soft_labels(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    if target.ndim == 1:
        return F.one_hot(target, num_classes).to(torch.float32)
    return target.to(torch.float32)
