"""FCN decode heads with a cosine classifier, and the GML head (GML App. A.2).

GML's segmentation recipe (Suh & Seo 2023, Sec. 4.8 and appendix A.2): FCN on
ADE20K, the decode head's classifier replaced by a cosine-similarity
classifier trained with L_cls + L_GML, the auxiliary FCN head's classifier by
a cosine classifier trained with L_cls; (k, k_m, τ_s, τ_g) = (8192, 27, 0.05,
0.07); α of Eq. 11 trades mIoU (α = 0.2) against mAcc (α = 1.0). No code was
released; the choices made here are listed in docs/methods/ade20k.md:

* L_cls (Eq. 7) is ``loss_decode`` — ``REOTPixelLoss(cost='cosine', scale=1/τ_s,
  prior='class_ratio', prior_scale=α)``: per pixel CE(cos/τ_s + α·log p, y).
* Pixel sampling: at the head's feature resolution (labels resized by nearest
  neighbour), up to ``pixels_per_class`` random labelled pixels of every class
  in every image are the queries of the batch.
* Contrast features: no teacher is described for segmentation, so the
  class-wise queue (``ClassQueue``, Eq. 6) stores the sampled pixels' own
  decode-head features, detached, and the whole queue is embedded by the key
  MLP g_k at every step (as GML embeds its teacher queue). The batch is
  enqueued first, so each query's own feature is among its positives.
* "Same sample" (excluded from L_τ when τ_g is trained): every entry from the
  same image, current or earlier iterations (pixels of one image are strongly
  correlated).
* log p(c) comes from per-class pixel counts (``ClassStatisticsHook``;
  image counts with ``count_type='image'``).
* With a frozen teacher (``TeacherStudent`` around
  :class:`~reot_mm.seg.models.gml_segmentor.GMLEncoderDecoder`, GML Sec. 3.3)
  the queue stores the *teacher's* decode-head features at the pixels the
  student sampled instead of the student's own (``key_in_channels`` = the
  teacher's ``channels``): keys from a fixed encoder, GML's remedy for the
  outdated keys of rare classes.
"""
from contextlib import contextmanager
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmseg.models.decode_heads import FCNHead
from mmseg.registry import MODELS

from reot_mm.models.class_queue import image_ids
from reot_mm.models.gml_branch import build_gml_branch
from reot_mm.seg.models.pixel_sampling import pick_pixels, pixel_rows


class CosineConv2d(nn.Module):
    """1×1 cosine classifier: cos(x_p, w_c) = m_x·m_c (GML Eq. 7-8), no bias.

    Args:
        in_channels: feature channels.
        num_classes: C.

    Shapes:
        (B, in_channels, H, W) -> (B, C, H, W) cosines in [-1, 1].
    """

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_channels, 1, 1))
        nn.init.normal_(self.weight, std=0.01)
        self.bias = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))


@MODELS.register_module()
class CosineFCNHead(FCNHead):
    """mmseg ``FCNHead`` whose 1×1 classifier is a cosine classifier.

    ``seg_logits`` are cosines; the loss scales them (``REOTPixelLoss(cost=
    'cosine', scale=1/τ_s)``), and prediction takes their argmax. Used as
    GML's auxiliary head (trained with L_cls only).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv_seg = CosineConv2d(self.channels, self.out_channels)


@MODELS.register_module()
class GMLFCNHead(CosineFCNHead):
    """FCN head trained with L_cls + L_GML (GML Eq. 7 and 11, appendix A.2).

    ``loss_decode`` gives L_cls on the (upsampled) cosine map, exactly as any
    mmseg head; :meth:`loss` adds, from the same forward pass,

    * ``loss_gml`` = β·mean over sampled pixels of L_GML (Eq. 11: CE over
      classes of log-mean-exp_{z∈Z_c} q·z/τ_g + α·log p(c)),
    * ``loss_tau`` (only with a trainable τ_g) = β·L_τ,
    * ``tau_g`` (logged, not summed).

    The math is :func:`reot_mm.losses.gml_likelihood.gml_loss` /
    :func:`~reot_mm.losses.gml_likelihood.gml_temperature_loss`, called
    through :meth:`reot_mm.losses.GMLLoss.likelihood_terms` of the
    ``GMLLoss`` module built from ``gml_loss``, which holds τ_g, α, β and the
    class counts (``set_class_counts``, called by ``ClassStatisticsHook``). ``GMLQueueHook``
    (``prefill='none'``) builds the queue's segments from the counts before
    training.

    Args:
        queue: ``ClassQueue`` config: ``size`` (k = 8192), ``min_per_class``
            (k_m = 27); ``num_classes`` and ``feat_dim`` (= ``channels``) are
            filled in.
        query_mlp / key_mlp: ``ProjectionMLP`` configs of g_q and g_k
            (``in_channels`` = ``channels`` is filled in); ``out_channels`` is
            the embedding size D.
        gml_loss: ``GMLLoss`` config (``tau_g``, ``trainable_tau``, ``alpha``,
            ``gml_weight``); its L_cls / L_KD weights are unused here.
        pixels_per_class: pixels sampled per class per image.
        key_in_channels: width d of the queued features (the queue's
            ``feat_dim`` and g_k's input): the teacher's decode-head
            ``channels`` when a teacher supplies the keys; default
            ``channels`` (the head's own features).
        **kwargs: ``FCNHead`` / ``BaseDecodeHead`` arguments.
    """

    def __init__(self,
                 queue: dict,
                 query_mlp: dict,
                 key_mlp: Optional[dict] = None,
                 gml_loss: Optional[dict] = None,
                 pixels_per_class: int = 8,
                 key_in_channels: Optional[int] = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.key_in_channels = self.channels if key_in_channels is None \
            else key_in_channels
        # the teacher's (B, key_in_channels, h, w) features of the current
        # batch, set by teacher_keys() for one loss call
        self._teacher_features: Optional[torch.Tensor] = None
        if int(pixels_per_class) != pixels_per_class or pixels_per_class < 1:
            raise ValueError('GMLFCNHead: pixels_per_class must be an integer '
                             f'>= 1, got {pixels_per_class!r}')
        self.pixels_per_class = int(pixels_per_class)
        self.query_mlp, self.key_mlp, self.queue, self.gml = build_gml_branch(
            type(self).__name__, queue, query_mlp, key_mlp, gml_loss,
            self.channels, self.key_in_channels, self.out_channels)

    def loss(self, inputs, batch_data_samples, train_cfg) -> dict:
        """L_cls (``loss_decode``) + β·(L_GML + L_τ) from one forward pass."""
        features = self._forward_feature(inputs)
        losses = self.loss_by_feat(self.cls_seg(features), batch_data_samples)
        losses.update(self.gml_loss_by_feat(features, batch_data_samples,
                                            self._teacher_features))
        return losses

    @contextmanager
    def teacher_keys(self, teacher_features: torch.Tensor):
        """Within the block, :meth:`loss` enqueues ``teacher_features``
        (B, key_in_channels, h', w') at the sampled pixels."""
        self._teacher_features = teacher_features
        try:
            yield self
        finally:
            self._teacher_features = None

    def key_rows(self, key_features: torch.Tensor, size) -> torch.Tensor:
        """(B·h·w, d) rows of teacher features at the head's (h, w).

        A teacher with another output stride is resized bilinearly.
        """
        if key_features.ndim != 4 or key_features.shape[1] != self.key_in_channels:
            raise ValueError(
                f'{type(self).__name__}: teacher features must have shape (B, '
                f'key_in_channels={self.key_in_channels}, h, w), got '
                f'{tuple(key_features.shape)}')
        if tuple(key_features.shape[-2:]) != tuple(size):
            key_features = F.interpolate(key_features, size=tuple(size),
                                         mode='bilinear', align_corners=False)
        return pixel_rows(key_features)

    @torch.no_grad()
    def enqueue_teacher_pixels(self, key_features: torch.Tensor,
                               batch_data_samples) -> int:
        """Sample pixels per class per image and enqueue the teacher's
        features there (queue pre-fill); returns the local count."""
        size = key_features.shape[-2:]
        picked, labels = pick_pixels(
            self._stack_batch_gt(batch_data_samples)[:, 0], size,
            self.pixels_per_class, self.out_channels, self.ignore_index,
            type(self).__name__)
        ids = torch.tensor(image_ids(batch_data_samples), dtype=torch.long,
                           device=key_features.device)
        per_image = labels.shape[1] * labels.shape[2]
        self.queue.enqueue(self.key_rows(key_features, size)[picked],
                           labels.reshape(-1)[picked], ids[picked // per_image])
        return int(picked.numel())

    def gml_loss_by_feat(self, features: torch.Tensor,
                         batch_data_samples,
                         key_features: Optional[torch.Tensor] = None) -> dict:
        """The GML terms for (B, channels, h, w) head features.

        ``key_features``: the teacher's (B, key_in_channels, h', w') features
        of the batch; the queue then stores them (at the sampled pixels)
        instead of the head's own features.

        Returns:
            dict with ``loss_gml`` (and ``loss_tau``) scalars and ``tau_g``.
        """
        picked, labels = pick_pixels(
            self._stack_batch_gt(batch_data_samples)[:, 0], features.shape[-2:],
            self.pixels_per_class, self.out_channels, self.ignore_index,
            type(self).__name__)
        channels = features.shape[1]
        per_image = labels.shape[1] * labels.shape[2]
        # (N, channels) features of the sampled pixels only
        pixel_features = pixel_rows(features)[picked]
        target = labels.reshape(-1)[picked]
        ids = torch.tensor(image_ids(batch_data_samples), dtype=torch.long,
                           device=features.device)
        sample_ids = ids[picked // per_image]
        if key_features is not None:
            keys_in = self.key_rows(key_features, features.shape[-2:])[picked]
        elif self.key_in_channels != channels:
            raise ValueError(
                f'{type(self).__name__}: key_in_channels={self.key_in_channels}'
                f' differs from channels={channels}: the queue expects a '
                "teacher's features (train it inside TeacherStudent with a "
                'GMLEncoderDecoder student) or set key_in_channels=None')
        else:
            keys_in = pixel_features
        # enqueue first (all ranks, gathered), then embed the whole queue
        self.queue.enqueue(keys_in.detach(), target, sample_ids)
        keys = F.normalize(self.key_mlp(self.queue.features), dim=1)
        tau = self.gml.tau_g
        losses = dict(tau_g=tau.detach())
        if target.numel() < 2:
            # BatchNorm in g_q needs two queries; keep every parameter in the
            # graph so DDP sees the same set on all ranks
            zero = sum(p.sum() for p in self.query_mlp.parameters()) * 0.0 \
                + keys.sum() * 0.0
            losses['loss_gml'] = zero
            if self.gml.trainable_tau:
                losses['loss_tau'] = tau * 0.0
            return losses
        query = F.normalize(self.query_mlp(pixel_features), dim=1)
        log_prior = self.gml.log_prior(self.out_channels, features.device)
        return self.gml.likelihood_terms(query, keys, self.queue.labels,
                                         target, log_prior, self.queue.indices,
                                         sample_ids)
