"""BCL's two-branch classifier (BCL Fig. 4) for mmpretrain.

Adapter only: the loss math lives in :mod:`reot_mm.losses.bcl_loss`.
"""
import copy
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS as ROOT_MODELS
from mmpretrain.models.classifiers import ImageClassifier
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from ..heads import CosineClsHead
from .first_view import FirstViewInference


@MODELS.register_module()
class BCLClassifier(FirstViewInference, ImageClassifier):
    """Classification branch + balanced contrastive branch on one backbone.

    Training (BCL Sec. 3.3 "Framework", Fig. 4, and the authors' code):

    * the V views of a batch (view 0 = v1, the classifier view with weak
      augmentation; views 1.. = v2, v3, the contrastive views with strong
      augmentation; see ``configs/_base_/datasets/digits_lt_multiview.py``)
      go through the backbone (+ neck) in **one** pass over
      ``concat(v1, v2, v3)`` (shared BN statistics, as the official code);
    * logits ℓ = s·head(h_v1): with a :class:`CosineClsHead` the head gives
      cos(h, w_j) and ``logit_scale`` defaults to its ``scale`` (30), with a
      linear head (``LinearClsHead``) s = 1;
    * embeddings z = normalize(g(h)) of views 1.. with the projection MLP g
      (``projector``, ``ProjectionMLP``: Linear(d,d)-BN-ReLU-Linear(d,D));
    * prototypes c_j = normalize(g_c(w_j)) with a second MLP g_c
      (``prototype_projector``) on the raw class weights ``head.fc.weight``
      (C × d); gradients flow into the classifier weights;
    * ``loss`` (default ``BCLLoss``) returns λ·L_LC(ℓ, y) and μ·L_BCL
      (Eq. 10, 9, 11).

    Test (``predict`` / ``tensor`` modes): one view, the head's ordinary
    predictions (``head.predict``), so ``Accuracy`` / ``ShotAccuracy`` work.
    A list of views is accepted there too and view 0 is used.

    Args:
        backbone, neck, head: as :class:`mmpretrain.models.ImageClassifier`.
            The head must hold its class weights in ``head.fc`` (an
            ``nn.Linear`` with weight (C, d)), as ``LinearClsHead`` and
            ``CosineClsHead`` do. Its own ``loss`` config is not used.
        projector (dict): config of g (root ``MODELS``, e.g.
            ``ProjectionMLP``); ``in_channels`` defaults to
            ``head.in_channels``.
        prototype_projector (dict, optional): config of g_c; defaults to a
            copy of ``projector`` (same shape, separate weights).
        loss (dict): config of the training loss; called as
            ``loss(cls_score, target, embeddings (B, V-1, D), prototypes
            (C, D))`` and returning a dict of losses.
        num_views (int): views per training batch (>= 2). Defaults to 3.
        logit_scale (float, optional): multiplier s of the head output in
            training; None: the head's ``scale`` for a ``CosineClsHead``,
            else 1.
        data_preprocessor (dict, optional): defaults to
            ``MultiViewClsDataPreprocessor`` with ``num_views``.
    """

    def __init__(self,
                 backbone: dict,
                 neck: Optional[dict] = None,
                 head: Optional[dict] = None,
                 projector: dict = dict(type='ProjectionMLP', out_channels=128),
                 prototype_projector: Optional[dict] = None,
                 loss: dict = dict(type='BCLLoss'),
                 num_views: int = 3,
                 logit_scale: Optional[float] = None,
                 pretrained: Optional[str] = None,
                 train_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        if not isinstance(num_views, int) or num_views < 2:
            raise ValueError('BCLClassifier: num_views must be an int >= 2 '
                             '(one classifier view and at least one '
                             f'contrastive view), got {num_views!r}')
        if head is None:
            raise ValueError('BCLClassifier: a classification head is required')
        if train_cfg and train_cfg.get('augments'):
            raise ValueError('BCLClassifier: batch augments (mixup/cutmix) are '
                             'not supported with multi-view batches, got '
                             f'train_cfg={train_cfg!r}')
        data_preprocessor = dict(data_preprocessor or {})
        data_preprocessor.setdefault('type', 'MultiViewClsDataPreprocessor')
        if data_preprocessor['type'] in ('MultiViewClsDataPreprocessor',
                                         'mmpretrain.MultiViewClsDataPreprocessor'):
            data_preprocessor.setdefault('num_views', num_views)
        super().__init__(
            backbone=backbone, neck=neck, head=head, pretrained=pretrained,
            train_cfg=None, data_preprocessor=data_preprocessor,
            init_cfg=init_cfg)
        fc = getattr(self.head, 'fc', None)
        if not isinstance(fc, torch.nn.Linear):
            raise ValueError(
                'BCLClassifier: the head must keep its class weights in an '
                f'nn.Linear `fc` (LinearClsHead, CosineClsHead); '
                f'{type(self.head).__name__} has fc={type(fc).__name__}')
        self.num_views = num_views
        if logit_scale is None:
            logit_scale = self.head.scale if isinstance(
                self.head, CosineClsHead) else 1.0
        if not logit_scale > 0:
            raise ValueError(f'logit_scale must be > 0, got {logit_scale!r}')
        self.logit_scale = float(logit_scale)
        projector = copy.deepcopy(dict(projector))
        projector.setdefault('in_channels', fc.in_features)
        prototype_projector = copy.deepcopy(
            dict(prototype_projector) if prototype_projector is not None
            else projector)
        prototype_projector.setdefault('in_channels', fc.in_features)
        self.projector = ROOT_MODELS.build(projector)
        self.prototype_projector = ROOT_MODELS.build(prototype_projector)
        self.loss_module = ROOT_MODELS.build(loss)

    def _split_views(self, inputs) -> List[torch.Tensor]:
        if isinstance(inputs, torch.Tensor) or not isinstance(
                inputs, (list, tuple)) or len(inputs) != self.num_views:
            got = ('a single tensor' if isinstance(inputs, torch.Tensor) else
                   f'{len(inputs)} views' if isinstance(inputs, (list, tuple))
                   else type(inputs).__name__)
            raise ValueError(
                f'BCLClassifier: a training batch must be a list of '
                f'num_views={self.num_views} views (view 0 for the classifier, '
                f'views 1.. for the contrastive branch; use a MultiView '
                f'pipeline and MultiViewClsDataPreprocessor), got {got}')
        sizes = {tuple(view.shape) for view in inputs}
        if len(sizes) != 1:
            raise ValueError('BCLClassifier: all views must have the same '
                             f'shape, got {sorted(sizes)}')
        return list(inputs)

    def prototypes(self) -> torch.Tensor:
        """(C, D) un-normalised prototypes g_c(w_j) from the raw class weights."""
        return self.prototype_projector(self.head.fc.weight)

    def loss(self, inputs: Sequence[torch.Tensor],
             data_samples: List[DataSample]) -> dict:
        """BCL losses for a batch of ``num_views`` views.

        Args:
            inputs: list of V tensors (B, C, H, W), view 0 for the classifier.
            data_samples: B data samples with ``gt_label``.

        Returns:
            dict: the loss module's output (``loss_lc``, ``loss_bcl``).
        """
        views = self._split_views(inputs)
        batch = views[0].shape[0]
        feats = self.extract_feat(torch.cat(views))
        cls_feats = tuple(f[:batch] for f in feats)
        cls_score = self.logit_scale * self.head(cls_feats)
        contrast = self.head.pre_logits(feats)[batch:]
        if contrast.ndim > 2:
            contrast = contrast.flatten(1)
        embeddings = self.projector(contrast)          # ((V-1)·B, D)
        embeddings = embeddings.view(self.num_views - 1, batch, -1)
        target = torch.cat([sample.gt_label for sample in data_samples])
        if target.shape[0] != batch:
            raise ValueError(f'BCLClassifier: {target.shape[0]} labels for a '
                             f'batch of {batch} samples (one label per sample)')
        return self.loss_module(cls_score, target, embeddings.transpose(0, 1),
                                self.prototypes())

    def contrastive_embeddings(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, D) normalised embeddings normalize(g(h)) of one view (analysis)."""
        feats = self.head.pre_logits(self.extract_feat(inputs))
        return F.normalize(self.projector(feats.flatten(1)), dim=1)
