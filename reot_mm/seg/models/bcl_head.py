"""FCN decode head trained with balanced contrastive learning on pixels.

Zhu et al., Balanced Contrastive Learning for Long-Tailed Visual Recognition,
CVPR 2022 (BCL below), carried from images to the pixels of a semantic
segmentation map the way :class:`reot_mm.det.bbox_heads.BCLShared2FCBBoxHead`
carries it to RoIs:

* classifier branch, L_LC (BCL Eq. 10): ``loss_decode`` on the (upsampled)
  logits of every labelled pixel, i.e. ``REOTPixelLoss(prior='class_ratio')``
  = CE(φ + log π, y) per pixel with π the training pixel frequencies (the
  same prior-shifted CE BCL's ``logit_compensated_cross_entropy`` calls);
* contrastive branch, L_BCL (BCL Eq. 9): up to ``pixels_per_class`` labelled
  pixels of every class of every image (at the head's feature resolution,
  labels resized by nearest neighbour) are the batch. Each pixel is one view;
  pixels of the same class — from one image or several — are positives of
  each other. Embeddings z = g(h_p) (Linear-BN-ReLU-Linear), prototypes
  c_j = g_c(w_j) from the rows of the 1×1 classifier ``conv_seg`` (BCL's
  class-complement: every class is a candidate, gradients reach the
  classifier through them); class-averaging as in Eq. 9. The maths is
  :class:`reot_mm.losses.BCLLoss` (built with ``lc_weight=0``), which
  all-gathers the pixels under DDP so n_j counts the global batch.

This file selects pixels, builds the projections and calls the loss; it holds
no loss maths. Inference is ``FCNHead``'s (the projections are training-only).
"""
from typing import Optional

import torch
from mmseg.models.decode_heads import FCNHead
from mmseg.registry import MODELS

from reot_mm.models.bcl_branch import build_bcl_branch
from reot_mm.seg.models.pixel_sampling import pick_pixels, pixel_rows


@MODELS.register_module()
class BCLFCNHead(FCNHead):
    """``FCNHead`` plus BCL (Eq. 9) on sampled pixel features.

    :meth:`loss` returns the parent's losses (``loss_decode``: give it
    ``REOTPixelLoss(prior='class_ratio')`` for BCL's logit compensation,
    Eq. 10) plus ``loss_bcl`` = μ·L_BCL from the same forward pass.

    A batch whose images hold fewer than two sampled pixels (BatchNorm in g
    needs two rows) contributes no anchor; its ``loss_bcl`` is then 0 with
    every projection parameter in the graph. Under DDP such a rank still
    calls the loss with zero rows, so it joins the loss's all-gathers (forward
    and backward) and its peers' pixels are the batch; when no rank has a
    pixel the loss returns 0 on every rank.

    Args:
        loss_contrast: config of the contrastive loss; default
            ``BCLLoss(lc_weight=0, bcl_weight=0.35, temperature=0.07)`` (BCL's
            ImageNet-LT / iNat recipe: μ = 0.35, τ = 0.07).
        contrast_channels: D, the embedding dimension of g and g_c.
        contrast_hidden_channels: hidden width of g and g_c (default
            ``channels``).
        pixels_per_class: pixels sampled per class per image (>= 1).
        **kwargs: ``FCNHead`` / ``BaseDecodeHead`` arguments.
    """

    def __init__(self,
                 loss_contrast: Optional[dict] = None,
                 contrast_channels: int = 128,
                 contrast_hidden_channels: Optional[int] = None,
                 pixels_per_class: int = 8,
                 **kwargs):
        super().__init__(**kwargs)
        if isinstance(pixels_per_class, bool) or \
                int(pixels_per_class) != pixels_per_class or pixels_per_class < 1:
            raise ValueError('BCLFCNHead: pixels_per_class must be an integer '
                             f'>= 1, got {pixels_per_class!r}')
        self.pixels_per_class = int(pixels_per_class)
        (self.loss_contrast, self.contrast_projector,
         self.prototype_projector) = build_bcl_branch(
             type(self).__name__, loss_contrast, self.channels,
             contrast_hidden_channels, contrast_channels, 'loss_decode', MODELS)

    def loss(self, inputs, batch_data_samples, train_cfg) -> dict:
        """L_LC (``loss_decode``) + μ·L_BCL from one forward pass."""
        features = self._forward_feature(inputs)
        losses = self.loss_by_feat(self.cls_seg(features), batch_data_samples)
        losses.update(self.contrast_loss_by_feat(features, batch_data_samples))
        return losses

    def sample_rows(self, features: torch.Tensor, batch_data_samples):
        """The contrastive batch: sampled pixels' features and labels.

        Args:
            features: (B, channels, h, w) head features (before dropout).

        Returns:
            ``(rows (N, channels), labels (N,))``, grouped by image and class.
        """
        picked, labels = pick_pixels(
            self._stack_batch_gt(batch_data_samples)[:, 0], features.shape[-2:],
            self.pixels_per_class, self.out_channels, self.ignore_index,
            type(self).__name__)
        return pixel_rows(features)[picked], labels.reshape(-1)[picked]

    def contrast_loss_by_feat(self, features: torch.Tensor,
                              batch_data_samples) -> dict:
        """μ·L_BCL (Eq. 9) for (B, channels, h, w) head features.

        Returns:
            dict with ``loss_bcl``.
        """
        rows, target = self.sample_rows(features, batch_data_samples)
        num_classes = self.out_channels
        # (C, channels) classifier rows -> prototypes; gradients reach conv_seg
        prototypes = self.prototype_projector(
            self.conv_seg.weight.flatten(1))
        # every projection parameter stays in the graph (DDP without
        # find_unused_parameters), whatever the rows
        anchor = prototypes.sum() * 0.0 + sum(
            p.sum() for p in self.contrast_projector.parameters()) * 0.0
        if target.numel() < 2:
            # BatchNorm in g needs two rows: this rank has no anchor. Its zero
            # rows come from the graph (prototypes[:0]), so that under DDP the
            # loss's all-gather runs its backward on this rank as on the others
            target = target[:0]
            projected = prototypes[:0]
        else:
            projected = self.contrast_projector(rows)
        if target.numel() == 0 and not self.loss_contrast.gathers_across_ranks:
            # one process without pixels: no contrastive batch
            return {'loss_bcl': anchor}
        # the loss normalises embeddings and prototypes; its (N, C) score
        # argument is only a shape check when lc_weight = 0. Under DDP a rank
        # without pixels calls it with zero rows and joins its gathers.
        scores = projected.new_zeros(target.numel(), num_classes)
        losses = self.loss_contrast(scores, target, projected[:, None],
                                    prototypes)
        return {key: value + anchor for key, value in losses.items()}
