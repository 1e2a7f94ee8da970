"""GML on the RoI features of a two-stage detector (mmdet ``MODELS``).

Suh and Seo, Long-Tailed Recognition by Mutual Information Maximization between
Latent Features and Ground-Truth Labels, ICML 2023 (arXiv:2305.01160), has no
detection recipe; this is its classification recipe (Sec. 3.3) moved to the
RoIs of Mask R-CNN's box head:

* Cosine classifier: the classification layer is mmdet's ``NormedLinear``
  without bias, scaled by 1/τ_s, so ``cls_score`` (N, C + 1) = cos(h, w_c)/τ_s
  with the background row last. L_cls (GML Eq. 7, CE(cos/τ_s + log p(c), y))
  is the head's ``loss_cls`` — ``REOTRoILoss(prior='class_ratio')`` at λ = 1,
  which calls the shared ``prior_shifted_cross_entropy``. Background: the
  prior shifts the C foreground logits by log(C·p(c)) among themselves and
  leaves the background logit unshifted (``background='foreground_only'``),
  so the foreground-versus-background decision is trained as by plain CE;
  p(c) is over the C foreground classes from the training instance counts.
  No activation or channel flag is changed (``custom_cls_channels`` etc. stay
  False): prediction is mmdet's softmax over the C + 1 scaled cosines, with no
  prior (GML predicts with the plain cosine classifier).
* Queries: q = normalize(g_q(h)) for the shared two-FC RoI embedding h of the
  foreground RoIs (label < C, positive weight). BN of g_q runs over all
  sampled RoIs, background included, before the foreground rows are taken.
* Keys (class-wise queues, GML Eq. 6): the foreground RoIs' raw embeddings
  are enqueued with their labels and image ids, then the whole queue is
  embedded by g_k and normalised (enqueue first, so every query's own key is
  present). Without a teacher the embeddings are the head's own, detached (as
  GML's segmentation recipe and :mod:`reot_mm.seg.models.gml_head`); inside
  ``TeacherStudent`` they are the *teacher's* RoI embeddings of the student's
  sampled RoIs (GML's frozen teacher, its remedy for outdated keys of rare
  classes). Segment sizes come from the instance counts (``GMLQueueHook``).
* L_GML (Eq. 3/5/11) and, with a trainable τ_g, L_τ:
  ``GMLLoss.likelihood_terms`` (no loss maths here). Same-sample exclusion of
  L_τ: every key from the same image (RoIs of one image overlap).

A rank whose batch has no foreground RoI still enqueues (an empty set, which
joins the queue's all-gather) and returns a zero ``loss_gml`` that keeps every
GML parameter in the graph, so DDP neither hangs nor misses gradients.

:class:`GMLMaskRCNN` is the Mask R-CNN that hands the head the image ids of
the batch and, as the student of ``TeacherStudent``, the teacher's RoI
embeddings (the student-defined teacher outputs of
:mod:`reot_mm.engine.teacher_student`).
"""
from contextlib import contextmanager
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmdet.models.detectors import MaskRCNN
from mmdet.models.roi_heads.bbox_heads import (ConvFCBBoxHead,
                                               Shared2FCBBoxHead)
from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox2roi, get_box_tensor
from torch import Tensor

from reot_mm import dist
from reot_mm.models.class_queue import image_ids
from reot_mm.models.gml_branch import build_gml_branch

RoIEmbedding = Callable[[Tensor], Tensor]


def shared_roi_embedding(head: ConvFCBBoxHead, roi_feats: Tensor) -> Tensor:
    """The shared part of a ``ConvFCBBoxHead`` (convs, pool, flatten, FC+ReLU).

    Args:
        head: the box head (e.g. a teacher's ``Shared2FCBBoxHead``).
        roi_feats: (N, C_in, 7, 7) RoI features.

    Returns:
        (N, ``head.shared_out_channels``) embeddings h.
    """
    x = roi_feats
    for conv in head.shared_convs:
        x = conv(x)
    if head.num_shared_fcs > 0:
        if head.with_avg_pool:
            x = head.avg_pool(x)
        x = x.flatten(1)
        for fc in head.shared_fcs:
            x = head.relu(fc(x))
    return x.flatten(1)


@MODELS.register_module()
class GMLShared2FCBBoxHead(Shared2FCBBoxHead):
    """``Shared2FCBBoxHead`` with a cosine classifier, L_cls + L_GML on RoIs.

    Losses: the parent's ``loss_cls`` (L_cls, Eq. 7, with the cosine scores),
    ``acc`` and ``loss_bbox``, plus ``loss_gml`` (β·L_GML), ``loss_tau`` (only
    with a trainable τ_g) and ``tau_g`` (logged, not summed).

    Args:
        queue: ``ClassQueue`` config: ``size`` (K) and ``min_per_class``
            (k_m); ``num_classes`` and ``feat_dim`` (the key width) are filled
            in. K < C·k_m is refused.
        query_mlp / key_mlp: ``ProjectionMLP`` configs of g_q / g_k
            (``hidden_channels``, ``out_channels`` = D); ``in_channels`` is
            filled in: ``fc_out_channels`` for g_q, ``key_in_channels`` for
            g_k. ``key_mlp`` defaults to ``query_mlp``.
        key_in_channels: width of the enqueued RoI embeddings: the teacher's
            ``fc_out_channels`` under ``TeacherStudent``; defaults to this
            head's ``fc_out_channels``.
        gml_loss: ``GMLLoss`` config (``tau_g``, ``trainable_tau``, ``alpha``,
            ``gml_weight`` = β); its L_cls / KD weights are unused here.
        tau_s: τ_s of Eq. 7; the cosine classifier multiplies by 1/τ_s.
        **kwargs: ``Shared2FCBBoxHead`` arguments. ``cls_predictor_cfg`` may
            only be a ``NormedLinear`` (its temperature and bias are set here).
    """

    def __init__(self,
                 queue: dict,
                 query_mlp: Optional[dict] = None,
                 key_mlp: Optional[dict] = None,
                 key_in_channels: Optional[int] = None,
                 gml_loss: Optional[dict] = None,
                 tau_s: float = 1.0 / 30,
                 **kwargs) -> None:
        predictor = kwargs.pop('cls_predictor_cfg', None)
        if predictor is not None and predictor.get('type') != 'NormedLinear':
            raise ValueError(
                'GMLShared2FCBBoxHead: the classifier is GML\'s cosine '
                "classifier (mmdet's NormedLinear); cls_predictor_cfg must be "
                f"NormedLinear or left out, got type={predictor.get('type')!r}")
        if not (isinstance(tau_s, (int, float)) and tau_s > 0):
            raise ValueError(f'GMLShared2FCBBoxHead: tau_s must be > 0, got '
                             f'{tau_s!r}')
        kwargs['cls_predictor_cfg'] = dict(type='NormedLinear',
                                           tempearture=1.0 / tau_s, bias=False)
        super().__init__(**kwargs)
        if not self.with_cls or self.custom_cls_channels:
            raise ValueError(
                'GMLShared2FCBBoxHead needs the classification branch with C + 1 '
                'softmax channels (background last): with_cls=True and a '
                'loss_cls without custom_cls_channels (e.g. REOTRoILoss)')
        self.tau_s = float(tau_s)
        width = self.shared_out_channels
        self.query_mlp, self.key_mlp, self.queue, self.gml = build_gml_branch(
            type(self).__name__, queue, dict(query_mlp or dict(out_channels=128)),
            key_mlp, gml_loss, width,
            width if key_in_channels is None else key_in_channels,
            self.num_classes)
        self._roi_embedding: Optional[Tensor] = None
        self._image_ids: Optional[List[int]] = None
        self._teacher_embedding: Optional[RoIEmbedding] = None
        self._num_unlabelled_batches = 0

    # ---------------------------------------------------------------- batch
    @contextmanager
    def batch_context(self, ids: List[int],
                      teacher_embedding: Optional[RoIEmbedding] = None):
        """Image ids of the batch and, with a teacher, the function giving the
        teacher's RoI embeddings (N, key_in_channels) of (N, 5) RoIs, for the
        losses computed inside the block. mmdet's RoI head passes neither to
        ``loss``; :class:`GMLMaskRCNN` opens this around its loss."""
        self._image_ids, self._teacher_embedding = list(ids), teacher_embedding
        try:
            yield self
        finally:
            self._image_ids, self._teacher_embedding = None, None

    def _roi_sample_ids(self, image_index: Tensor) -> Tensor:
        if self._image_ids is not None:
            ids = torch.tensor(self._image_ids, dtype=torch.long,
                               device=image_index.device)
            return ids[image_index]
        # outside GMLMaskRCNN (a plain detector): ids unique per image of
        # this step and rank, so L_τ excludes keys of the same image of this
        # iteration only (not of earlier visits of that image)
        step = self._num_unlabelled_batches
        self._num_unlabelled_batches += 1
        base = (step * dist.get_world_size() + dist.get_rank()) << 16
        return image_index + base

    # -------------------------------------------------------------- forward
    def forward(self, x: Tuple[Tensor]) -> tuple:
        """``(cls_score (N, C + 1) = cos/τ_s, bbox_pred (N, 4·C))``; in train
        mode the shared (N, fc_out_channels) embedding is kept for :meth:`loss`."""
        embedding = shared_roi_embedding(self, x)
        if self.training:
            self._roi_embedding = embedding
        return self.fc_cls(embedding), self.fc_reg(embedding)

    def loss(self, cls_score: Tensor, bbox_pred: Tensor, rois: Tensor,
             labels: Tensor, label_weights: Tensor, bbox_targets: Tensor,
             bbox_weights: Tensor,
             reduction_override: Optional[str] = None) -> dict:
        """The parent's losses (L_cls is ``loss_cls``) plus the GML terms.

        Args:
            rois: (N, 5) sampled RoIs (image index first).
            labels: (N,) RoI labels in [0, C]; C = background.
            (Other arguments as ``BBoxHead.loss``.)
        """
        if labels.ndim != 1 or labels.numel() != rois.shape[0]:
            raise ValueError(f'GMLShared2FCBBoxHead: labels must be (N,) for '
                             f'the {rois.shape[0]} RoIs, got shape '
                             f'{tuple(labels.shape)}')
        if labels.numel() and (labels.min() < 0 or labels.max() > self.num_classes):
            raise ValueError(
                f'GMLShared2FCBBoxHead: RoI labels must be in [0, '
                f'{self.num_classes}] ({self.num_classes} = background, '
                f'num_classes = {self.num_classes}), got [{int(labels.min())}, '
                f'{int(labels.max())}]')
        embedding, self._roi_embedding = self._roi_embedding, None
        if embedding is None or embedding.shape[0] != labels.shape[0]:
            raise RuntimeError(
                'GMLShared2FCBBoxHead.loss needs the RoI embedding of the '
                'training forward of the same RoIs; call forward() in train '
                'mode first')
        losses = super().loss(cls_score, bbox_pred, rois, labels,
                              label_weights, bbox_targets, bbox_weights,
                              reduction_override)
        losses.update(self.gml_losses(embedding, rois, labels, label_weights))
        return losses

    def enqueue_keys(self, features: Tensor, labels: Tensor,
                     ids: Tensor) -> None:
        """Enqueue (n, key_in_channels) raw RoI embeddings of foreground RoIs
        (all ranks, gathered; n may be 0)."""
        self.queue.enqueue(features.detach(), labels, ids)

    def gml_losses(self, embedding: Tensor, rois: Tensor, labels: Tensor,
                   label_weights: Tensor) -> dict:
        """β·L_GML (and β·L_τ) over the foreground RoIs.

        Args:
            embedding: (N, fc_out_channels) shared RoI embeddings h.
            rois: (N, 5) RoIs. labels, label_weights: (N,).

        Returns:
            dict with ``loss_gml`` (``loss_tau``) and ``tau_g``.
        """
        num_classes = self.num_classes
        foreground = (labels < num_classes) & (label_weights > 0)
        ids = self._roi_sample_ids(rois[:, 0].long())
        if self._teacher_embedding is not None:
            raw_keys = self._teacher_embedding(rois[foreground])
        else:
            raw_keys = embedding[foreground]
        # enqueue first (every rank, empty or not: it joins the all-gather),
        # then embed the whole queue: each query's own key is a positive
        self.enqueue_keys(raw_keys, labels[foreground], ids[foreground])
        keys = F.normalize(self.key_mlp(self.queue.features), dim=1)
        projected = self.query_mlp(embedding)
        tau = self.gml.tau_g
        if not bool(foreground.any()):
            # no query: zero, with every GML parameter in the graph (DDP)
            zero = projected.sum() * 0.0 + keys.sum() * 0.0
            losses = dict(loss_gml=zero, tau_g=tau.detach())
            if self.gml.trainable_tau:
                losses['loss_tau'] = tau * 0.0
            return losses
        query = F.normalize(projected[foreground], dim=1)
        log_prior = self.gml.log_prior(num_classes, embedding.device)
        return self.gml.likelihood_terms(
            query, keys, self.queue.labels, labels[foreground], log_prior,
            self.queue.indices, ids[foreground])


@MODELS.register_module()
class GMLMaskRCNN(MaskRCNN):
    """Mask R-CNN with a :class:`GMLShared2FCBBoxHead`, teacher-ready.

    Alone it is ``MaskRCNN`` that tells the box head the images' ids (for
    L_τ's same-sample exclusion). As the student of ``TeacherStudent`` it
    implements the student-defined teacher outputs: the frozen teacher (any
    two-stage detector with a ``ConvFCBBoxHead``, e.g. the upstream or RE-OT
    Mask R-CNN) encodes the batch once, and the box head's keys are the
    teacher's shared RoI embeddings of the RoIs the student sampled; the
    queue pre-fill (``GMLQueueHook(prefill='teacher')``) enqueues the
    teacher's embeddings of the ground-truth boxes.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(getattr(self.roi_head, 'bbox_head', None),
                          GMLShared2FCBBoxHead):
            raise ValueError('GMLMaskRCNN needs roi_head.bbox_head of type '
                             "'GMLShared2FCBBoxHead'")

    @property
    def gml_head(self) -> GMLShared2FCBBoxHead:
        return self.roi_head.bbox_head

    def loss(self, inputs: Tensor, data_samples) -> dict:
        with self.gml_head.batch_context(image_ids(data_samples)):
            return super().loss(inputs, data_samples)

    # ------------------------------------------------- teacher (contract of
    # reot_mm.engine.teacher_student: student-defined teacher outputs)
    def check_teacher(self, teacher) -> None:
        """The teacher has a RoI extractor and a ConvFC box head whose
        embedding width is the key MLP's input width."""
        roi_head = getattr(teacher, 'roi_head', None)
        head = getattr(roi_head, 'bbox_head', None)
        if not isinstance(head, ConvFCBBoxHead) or \
                getattr(roi_head, 'bbox_roi_extractor', None) is None:
            raise ValueError(
                'GMLMaskRCNN: the teacher must be a two-stage detector with '
                'roi_head.bbox_roi_extractor and a ConvFCBBoxHead box head '
                f'(e.g. Mask R-CNN), got {type(teacher).__name__}')
        expected = self.gml_head.key_mlp.in_channels
        if head.shared_out_channels != expected:
            raise ValueError(
                'teacher/student feature dimension mismatch: the teacher\'s '
                f'box head embeds RoIs into {head.shared_out_channels} '
                f'dimensions but the student\'s key MLP takes {expected} '
                '(set bbox_head.key_in_channels to the teacher\'s '
                'fc_out_channels)')

    def teacher_outputs_for(self, teacher, inputs: Tensor, data_samples
                            ) -> dict:
        """The teacher's neck features of the batch and a function giving its
        RoI embeddings of any (N, 5) RoIs (run later, under ``no_grad``)."""
        features = teacher.extract_feat(inputs)
        roi_head = teacher.roi_head

        @torch.no_grad()
        def roi_embedding(rois: Tensor) -> Tensor:
            extractor = roi_head.bbox_roi_extractor
            roi_feats = extractor(features[:extractor.num_inputs], rois)
            if roi_head.with_shared_head:
                roi_feats = roi_head.shared_head(roi_feats)
            return shared_roi_embedding(roi_head.bbox_head, roi_feats)

        return dict(neck_features=features, roi_embedding=roi_embedding)

    def loss_with_teacher(self, inputs: Tensor, data_samples,
                          teacher_outputs: dict) -> dict:
        with self.gml_head.batch_context(image_ids(data_samples),
                                         teacher_outputs['roi_embedding']):
            return super().loss(inputs, data_samples)

    def enqueue_teacher_features(self, teacher_outputs: dict,
                                 data_samples) -> int:
        """Enqueue the teacher's embeddings of the ground-truth boxes."""
        boxes = [get_box_tensor(s.gt_instances.bboxes) for s in data_samples]
        rois = bbox2roi(boxes)
        labels = torch.cat([s.gt_instances.labels for s in data_samples]).long()
        ids = torch.tensor(image_ids(data_samples), dtype=torch.long,
                           device=rois.device)[rois[:, 0].long()]
        features = teacher_outputs['roi_embedding'](rois)
        self.gml_head.enqueue_keys(features, labels.to(rois.device), ids)
        return int(labels.numel())
