"""Optimal transport math in plain torch (layer 1: no OpenMMLab import).

* :func:`reot_sinkhorn` — RE-OT Sinkhorn (RE-OT Eq. 6-8, 11, 16): prior Q,
  U(a, b) or U(a), log-domain, batched; returns a :class:`SinkhornResult`.
* :func:`log_kernel` — log K = log Q - C / ε.
"""
from .sinkhorn import SinkhornResult, log_kernel, reot_sinkhorn

__all__ = ['SinkhornResult', 'log_kernel', 'reot_sinkhorn']
