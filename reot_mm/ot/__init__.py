"""Optimal transport math in plain torch (layer 1: no OpenMMLab import).

* :func:`reot_sinkhorn` — RE-OT Sinkhorn (RE-OT Eq. 6-8, 11, 16): prior Q,
  U(a, b) or U(a), log-domain, batched; returns a :class:`SinkhornResult`.
* :func:`log_kernel` — log K = log Q - C / ε.
* :mod:`reot_mm.ot.posthoc` — post-hoc corrections of predictions: logit
  adjustment, post-hoc OT (OTLM Algorithm 1), OTLM (OTLM Eq. 12), EM estimate
  of an unknown test prior.
"""
from .posthoc import (OTLMFit, PosthocOTResult, apply_otlm,
                      estimate_test_prior_em, fit_otlm, kl_divergence,
                      logit_adjustment, otlm_loss, posthoc_ot,
                      refined_marginal)
from .sinkhorn import SinkhornResult, log_kernel, reot_sinkhorn

__all__ = [
    'SinkhornResult', 'log_kernel', 'reot_sinkhorn', 'OTLMFit',
    'PosthocOTResult', 'apply_otlm', 'estimate_test_prior_em', 'fit_otlm',
    'kl_divergence', 'logit_adjustment', 'otlm_loss', 'posthoc_ot',
    'refined_marginal'
]
