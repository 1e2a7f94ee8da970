"""Box heads that add a RoI-feature contrastive loss (mmdet ``MODELS``).

mmdet's ``BBoxHead.loss`` receives scores, box deltas and targets but not the
RoI features, so a loss on the features needs its own head (mmdet's contract:
subclass ``Shared2FCBBoxHead`` and override ``loss``):
:class:`BCLShared2FCBBoxHead` keeps the shared 1024-d RoI embedding of the
last training forward and adds a balanced contrastive term (Zhu et al.,
Balanced Contrastive Learning for Long-Tailed Visual Recognition, CVPR 2022,
Eq. 9) over the foreground RoIs to the usual box-head losses. The contrastive
math is :class:`reot_mm.losses.BCLLoss`'s; this file only selects RoIs, builds
the projections and calls it.
"""
from typing import Optional, Tuple

from mmdet.models.roi_heads.bbox_heads import Shared2FCBBoxHead
from mmdet.registry import MODELS
from torch import Tensor

from reot_mm.models.bcl_branch import build_bcl_branch


@MODELS.register_module()
class BCLShared2FCBBoxHead(Shared2FCBBoxHead):
    """``Shared2FCBBoxHead`` plus BCL on the RoI embeddings of foreground RoIs.

    The shared two-FC embedding h (N, ``fc_out_channels``) of the sampled RoIs
    is projected by g = Linear-BN-ReLU-Linear (BCL's projection head) to D
    dimensions; the embeddings of the foreground RoIs (label < C, positive
    label weight) are the contrastive batch. Each RoI is one view; RoIs of the
    same class — several RoIs of one object included — are positives of each
    other. The class prototypes are g_c applied to the foreground rows of the
    classification layer's weight (C, ``fc_out_channels``) (BCL's
    class-complement, so every class is a candidate and every anchor has a
    positive); gradients reach the classifier through them. Under DDP the
    loss all-gathers the embeddings, so n_j counts the global batch; a rank
    whose sampled RoIs are all background still calls the loss, with zero
    rows, so that it joins every gather of the other ranks (forward and
    backward) instead of leaving them waiting.

    Classification stays with ``loss_cls`` (e.g. ``REOTRoILoss``): the
    contrastive loss must be built with ``lc_weight=0``. Inference is the
    parent's (the projections are training-only), so test-time scores are
    unchanged: (N, C + 1) softmax, background last.

    Batch-norm statistics of g are taken over all sampled RoIs (background
    included) before the foreground rows are selected, so a batch with zero
    or one foreground RoI still trains; the loss is 0 then (and every
    parameter still receives a gradient, as DDP requires).

    Args:
        loss_contrast: config of the contrastive loss; defaults to
            ``BCLLoss(lc_weight=0, bcl_weight=0.35, temperature=0.07)`` (the
            ImageNet-LT/iNat recipe of BCL, μ = 0.35, τ = 0.07).
        contrast_channels: D, the embedding dimension (BCL: 1024 on
            ImageNet-LT; 128 here by default, the RoI head being narrower).
        contrast_hidden_channels: hidden width of g and g_c (default
            ``fc_out_channels``).
        **kwargs: ``Shared2FCBBoxHead`` arguments (``fc_out_channels``,
            ``num_classes``, ``loss_cls``, ...).
    """

    def __init__(self,
                 loss_contrast: Optional[dict] = None,
                 contrast_channels: int = 128,
                 contrast_hidden_channels: Optional[int] = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if not self.with_cls:
            raise ValueError('BCLShared2FCBBoxHead needs the classification '
                             'branch (with_cls=True) for its prototypes')
        (self.loss_contrast, self.contrast_projector,
         self.prototype_projector) = build_bcl_branch(
             type(self).__name__, loss_contrast, self.shared_out_channels,
             contrast_hidden_channels, contrast_channels, 'loss_cls', MODELS)
        self._roi_embedding: Optional[Tensor] = None

    def forward(self, x: Tuple[Tensor]) -> tuple:
        """Scores and box deltas as ``Shared2FCBBoxHead`` computes them.

        Args:
            x: (N, C_in, 7, 7) RoI features.

        Returns:
            ``(cls_score (N, C + 1), bbox_pred (N, 4·C or 4))``. In training
            mode the shared (N, fc_out_channels) embedding is kept for
            :meth:`loss`.
        """
        # Shared2FCBBoxHead has no convolutions and no branch-specific
        # layers: flatten, two shared FC + ReLU, then the two predictors.
        if self.with_avg_pool:
            x = self.avg_pool(x)
        x = x.flatten(1)
        for fc in self.shared_fcs:
            x = self.relu(fc(x))
        if self.training:
            self._roi_embedding = x
        cls_score = self.fc_cls(x) if self.with_cls else None
        bbox_pred = self.fc_reg(x) if self.with_reg else None
        return cls_score, bbox_pred

    def loss(self, cls_score: Tensor, bbox_pred: Tensor, rois: Tensor,
             labels: Tensor, label_weights: Tensor, bbox_targets: Tensor,
             bbox_weights: Tensor,
             reduction_override: Optional[str] = None) -> dict:
        """The parent's ``loss_cls``/``acc``/``loss_bbox`` plus ``loss_bcl``.

        Args:
            labels: (N,) RoI labels, C = background; label_weights: (N,).
            (Other arguments as ``BBoxHead.loss``.)
        """
        losses = super().loss(cls_score, bbox_pred, rois, labels,
                              label_weights, bbox_targets, bbox_weights,
                              reduction_override)
        embedding = self._roi_embedding
        self._roi_embedding = None
        if embedding is None or embedding.shape[0] != labels.shape[0]:
            raise RuntimeError(
                'BCLShared2FCBBoxHead.loss needs the RoI embedding of the '
                'training forward of the same RoIs; call forward() in train '
                'mode first')
        losses.update(self.contrast_losses(embedding, labels, label_weights))
        return losses

    def contrast_losses(self, embedding: Tensor, labels: Tensor,
                        label_weights: Tensor) -> dict:
        """BCL (Eq. 9) on the foreground RoIs.

        Args:
            embedding: (N, fc_out_channels) shared RoI embeddings.
            labels: (N,) RoI labels (C = background).
            label_weights: (N,) label weights.

        Returns:
            dict with ``loss_bcl`` (from the contrastive loss).
        """
        num_classes = self.num_classes
        projected = self.contrast_projector(embedding)
        foreground = (labels < num_classes) & (label_weights > 0)
        prototypes = self.prototype_projector(
            self.fc_cls.weight[:num_classes])
        fg_labels = labels[foreground]
        # keep every projection parameter in the graph (DDP) even when no
        # RoI is foreground
        anchor = (projected.sum() + prototypes.sum()) * 0.0
        if fg_labels.numel() == 0 and \
                not self.loss_contrast.gathers_across_ranks:
            # no contrastive batch (the loss refuses an empty one): zero.
            # When the loss all-gathers across DDP ranks it is still called
            # with zero rows, so this rank joins the other ranks' gathers
            # (forward and backward) and contributes 0.
            return {'loss_bcl': anchor}
        # the loss normalises embeddings and prototypes; its (B, C) score
        # argument is only a shape check when lc_weight = 0
        scores = projected.new_zeros(fg_labels.shape[0], num_classes)
        losses = self.loss_contrast(scores, fg_labels,
                                    projected[foreground][:, None],
                                    prototypes)
        return {key: value + anchor for key, value in losses.items()}
