"""The GML branch that a dense head adds to its task head.

GML (Suh and Seo, Long-Tailed Recognition by Mutual Information Maximization
between Latent Features and Ground-Truth Labels, ICML 2023, arXiv:2305.01160)
embeds queries with g_q and the class-wise queue (Eq. 6) with g_k into one
space of size D, and scores them with L_GML (Eq. 3, 5, 11). A box head (RoI
features) and a decode head (pixel features) build the same four parts here.
"""
from typing import Optional, Tuple

import torch.nn as nn
from mmengine.registry import MODELS

# GML's fixed τ_g; L_cls is the task head's own loss.
DEFAULT_GML_LOSS = dict(type='GMLLoss', trainable_tau=False, tau_g=0.07)


def build_gml_branch(owner: str, queue: dict, query_mlp: dict,
                     key_mlp: Optional[dict], gml_loss: Optional[dict],
                     in_channels: int, key_in_channels: int, num_classes: int
                     ) -> Tuple[nn.Module, nn.Module, nn.Module, nn.Module]:
    """``(g_q, g_k, queue, gml_loss)`` of a dense GML head.

    Args:
        owner: the head's class name, for messages.
        queue: ``ClassQueue`` config (``num_classes``, ``feat_dim`` filled in).
        query_mlp: ``ProjectionMLP`` config of g_q (``in_channels`` filled in).
        key_mlp: that of g_k; default: as g_q.
        gml_loss: ``GMLLoss`` config over :data:`DEFAULT_GML_LOSS`.
        in_channels: width of the query features.
        key_in_channels: width of the queued features (a teacher's, or the
            head's own).
        num_classes: C.

    Raises:
        ValueError: g_q and g_k embed into different sizes.
    """
    key_mlp = dict(query_mlp) if key_mlp is None else key_mlp
    g_q = MODELS.build(dict(dict(type='ProjectionMLP'), **query_mlp,
                            in_channels=in_channels))
    g_k = MODELS.build(dict(dict(type='ProjectionMLP'), **key_mlp,
                            in_channels=key_in_channels))
    if g_q.out_channels != g_k.out_channels:
        raise ValueError(
            f'{owner}: query_mlp and key_mlp must embed into the same '
            f'dimension D, got {g_q.out_channels} and {g_k.out_channels}')
    class_queue = MODELS.build(dict(dict(type='ClassQueue'), **queue,
                                    num_classes=num_classes,
                                    feat_dim=key_in_channels))
    gml = MODELS.build(dict(DEFAULT_GML_LOSS, **(gml_loss or {}),
                            num_classes=num_classes))
    return g_q, g_k, class_queue, gml
