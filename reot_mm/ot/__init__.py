"""Optimal transport math in plain torch (layer 1: no OpenMMLab import).

* :func:`reot_sinkhorn` — RE-OT Sinkhorn (RE-OT Eq. 6-8, 11, 16): prior Q,
  U(a, b) or U(a), log-domain, batched; one n x m buffer (default) or none
  (``memory='stream'``); returns a :class:`SinkhornResult`.
* :func:`log_kernel` — log K = log Q - C / ε.
* :func:`reot_barycenter` — barycenters with a prior by iterative Bregman
  projections (RE-OT Eq. 9), :func:`deblur_prior` (Eq. 10).
* :func:`barycentric_projection`, :func:`label_barycenters` — RE-OT Eq. 17, 18.
* :func:`sinkhorn_prediction` — the one test-time OT prediction: RE-OT §5
  Sinkhorn inference = OTLM Algorithm 1 post-hoc OT (:mod:`.test_time`, with
  logit adjustment and the Table 4 marginal metrics); the test prior b
  (:mod:`.test_prior`: parsing, EM of Saerens et al. 2002); OTLM's learned
  linear cost (:mod:`.otlm`, OTLM Eq. 12).
"""
from .barycenter import BarycenterResult, deblur_prior, reot_barycenter
from .otlm import OTLMFit, apply_otlm, fit_otlm, otlm_loss
from .projection import barycentric_projection, label_barycenters
from .sinkhorn import SinkhornResult, log_kernel, reot_sinkhorn
from .test_prior import estimate_test_prior_em, resolve_target_prior
from .test_time import (SinkhornPrediction, kl_divergence, logit_adjustment,
                        refined_marginal, sinkhorn_prediction)

__all__ = [
    'SinkhornResult', 'log_kernel', 'reot_sinkhorn', 'SinkhornPrediction',
    'sinkhorn_prediction', 'estimate_test_prior_em', 'resolve_target_prior',
    'OTLMFit', 'apply_otlm', 'fit_otlm', 'kl_divergence', 'logit_adjustment',
    'otlm_loss', 'refined_marginal', 'BarycenterResult', 'deblur_prior', 'reot_barycenter',
    'barycentric_projection', 'label_barycenters'
]
