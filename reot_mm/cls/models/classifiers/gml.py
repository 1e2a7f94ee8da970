"""GML student for mmpretrain: cosine classifier + class-wise-queue GML loss.

GML (Suh and Seo, ICML 2023), Sec. 3.3 and the authors' code:

* three views per image, (x_cls, x_q, x_k);
* logits: cosine classifier on h(x_cls) (Eq. 7-8), trained with L_cls;
* query: q = normalize(g_q(h(x_q))), g_q = Linear(d,d)-BN-ReLU-Linear(d,D);
* keys: the frozen teacher encodes x_k; its raw pooled features are enqueued
  (with labels and dataset indices) into the class-wise queues (Eq. 6), then
  the whole queue is embedded by the trainable key MLP g_k (BN in train mode
  over the K queue rows) and normalised: enqueue first, then embed, so every
  query's own positive is present;
* loss: :class:`reot_mm.losses.GMLLoss` (Eq. 5/11, L_τ, Eq. 7, KD).

One backbone pass runs on concat(x_cls, x_q) (BN statistics shared by the two
views, as in BCL's single pass). The teacher lives in
:class:`reot_mm.engine.TeacherStudent`, which calls :meth:`loss_with_teacher`;
prediction and ``mode='tensor'`` use one view (view 0 of a list) and the
plain cosine arg-max (no prior).
"""
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from mmpretrain.models.classifiers import ImageClassifier
from mmpretrain.registry import MODELS

from .first_view import FirstViewInference

NUM_VIEWS = 3


@MODELS.register_module()
class GMLClassifier(FirstViewInference, ImageClassifier):
    """Image classifier trained with the GML loss and class-wise queues.

    Args:
        backbone, neck, head: as :class:`mmpretrain.models.ImageClassifier`;
            the head must output cosines (``CosineClsHead``).
        query_mlp: config of g_q (``ProjectionMLP``: in_channels = the
            student's feature dimension, out_channels = D).
        key_mlp: config of g_k (``ProjectionMLP``: in_channels = the
            teacher's feature dimension, out_channels = D).
        queue: config of the ``ClassQueue`` (``size`` K, ``min_per_class``
            k_m); ``num_classes`` and ``feat_dim`` are filled in.
        loss: config of the ``GMLLoss``.
        kd_view: which view the teacher's KD scores come from when the loss
            has ``kd_weight > 0``: ``'cls'`` (default) — x_cls, the view the
            student classifies, as in standard distillation (the teacher then
            runs on 2B images: x_k for the keys and x_cls for KD); ``'key'``
            — x_k, the view already encoded for the queue (one teacher pass;
            the teacher and student then see different augmentations). The
            paper does not say which one its KD term uses.
    """

    def __init__(self,
                 backbone: dict,
                 neck: Optional[dict] = None,
                 head: Optional[dict] = None,
                 query_mlp: Optional[dict] = None,
                 key_mlp: Optional[dict] = None,
                 queue: Optional[dict] = None,
                 loss: Optional[dict] = None,
                 kd_view: str = 'cls',
                 pretrained: Optional[str] = None,
                 train_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(backbone=backbone, neck=neck, head=head,
                         pretrained=pretrained, train_cfg=train_cfg,
                         data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        for name, value in (('head', head), ('query_mlp', query_mlp),
                            ('key_mlp', key_mlp), ('queue', queue)):
            if value is None:
                raise ValueError(f'GMLClassifier needs a {name} config')
        num_classes = getattr(self.head, 'num_classes', None)
        if num_classes is None:
            raise ValueError('GMLClassifier: the head must define num_classes')
        self.query_mlp = MODELS.build(dict(dict(type='ProjectionMLP'), **query_mlp))
        self.key_mlp = MODELS.build(dict(dict(type='ProjectionMLP'), **key_mlp))
        if self.query_mlp.out_channels != self.key_mlp.out_channels:
            raise ValueError(
                f'query_mlp.out_channels ({self.query_mlp.out_channels}) and '
                f'key_mlp.out_channels ({self.key_mlp.out_channels}) must be equal '
                '(the GML embedding dimension D)')
        queue = dict(dict(type='ClassQueue'), **queue)
        queue.setdefault('num_classes', num_classes)
        queue.setdefault('feat_dim', self.key_mlp.in_channels)
        if queue['feat_dim'] != self.key_mlp.in_channels:
            raise ValueError(f"queue.feat_dim ({queue['feat_dim']}) must equal "
                             f'key_mlp.in_channels ({self.key_mlp.in_channels})')
        self.queue = MODELS.build(queue)
        loss = dict(dict(type='GMLLoss'), **(loss or {}))
        loss.setdefault('num_classes', num_classes)
        self.gml_loss = MODELS.build(loss)
        if kd_view not in ('cls', 'key'):
            raise ValueError(f"kd_view must be 'cls' or 'key', got {kd_view!r}")
        self.kd_view = kd_view

    @property
    def teacher_feat_dim(self) -> int:
        """Dimension of the teacher features the queue stores."""
        return self.queue.feat_dim

    # ---------------------------------------------------------------- views
    def _views(self, inputs) -> Sequence[torch.Tensor]:
        if not isinstance(inputs, (list, tuple)) or len(inputs) < NUM_VIEWS:
            got = (f'{len(inputs)} views' if isinstance(inputs, (list, tuple))
                   else f'a {type(inputs).__name__}')
            raise ValueError(
                'GMLClassifier trains on three views per image (x_cls, x_q, '
                f'x_k), got {got}: use a MultiView pipeline with 3 views and '
                'a data preprocessor that keeps the list of views '
                '(configs/_base_/datasets/digits_lt_multiview.py)')
        sizes = {int(v.shape[0]) for v in inputs[:NUM_VIEWS]}
        if len(sizes) != 1:
            raise ValueError(f'the three views must have the same batch size, '
                             f'got {sorted(sizes)}')
        return inputs[:NUM_VIEWS]

    def key_inputs(self, inputs) -> torch.Tensor:
        """The view whose teacher features go into the queue (x_k)."""
        return self._views(inputs)[2]

    @property
    def _kd_on_cls_view(self) -> bool:
        return self.gml_loss.kd_weight > 0 and self.kd_view == 'cls'

    def teacher_inputs(self, inputs) -> torch.Tensor:
        """What the teacher encodes: x_k, followed by x_cls for KD when
        ``kd_view='cls'`` (a (2B, ...) batch; the teacher is in eval mode, so
        the two halves do not interact)."""
        views = self._views(inputs)
        if self._kd_on_cls_view:
            return torch.cat([views[2], views[0]])
        return views[2]

    @staticmethod
    def _labels_and_indices(data_samples: List, device):
        if 'gt_score' in data_samples[0] and 'gt_label' not in data_samples[0]:
            raise ValueError('GMLClassifier needs integer labels (gt_label); '
                             'mixup/cutmix soft targets are not supported')
        labels = torch.cat([s.gt_label.reshape(-1) for s in data_samples]).to(device)
        try:
            indices = [int(s.sample_idx) for s in data_samples]
        except AttributeError:
            raise ValueError(
                "data samples have no 'sample_idx' (dataset index, needed for "
                "the queue and L_τ's same-sample exclusion); keep 'sample_idx' "
                'in PackInputs.meta_keys') from None
        return labels.long(), torch.tensor(indices, dtype=torch.long, device=device)

    # ----------------------------------------------------------------- queue
    def enqueue_teacher_features(self, features: torch.Tensor,
                                 data_samples: List) -> None:
        """Enqueue (B, d) teacher features with the batch's labels and indices."""
        labels, indices = self._labels_and_indices(data_samples, features.device)
        self.queue.enqueue(features, labels, indices)

    def embed_queue(self) -> torch.Tensor:
        """(K, D) normalised keys g_k(queue) (BN over the queue in train mode)."""
        return F.normalize(self.key_mlp(self.queue.features), dim=1)

    # ------------------------------------------------------------------ loss
    def loss(self, inputs, data_samples: List) -> Dict[str, torch.Tensor]:
        raise RuntimeError(
            'GMLClassifier takes its queue keys from a frozen teacher: use it as '
            "the student of model=dict(type='TeacherStudent', student=..., "
            'teacher=..., teacher_checkpoint=...)')

    def loss_with_teacher(self, inputs, data_samples: List,
                          teacher_outputs: Dict[str, torch.Tensor]
                          ) -> Dict[str, torch.Tensor]:
        """GML losses of one batch.

        Args:
            inputs: [x_cls, x_q, x_k], three (B, 3, H, W) tensors.
            data_samples: B data samples with ``gt_label`` and ``sample_idx``.
            teacher_outputs: from ``TeacherStudent.teacher_outputs`` on
                :meth:`teacher_inputs`: ``features`` of x_k in the first B
                rows and, for KD, ``scores`` of the ``kd_view``.
        """
        x_cls, x_q, _ = self._views(inputs)
        batch = x_cls.shape[0]
        teacher_features = teacher_outputs['features'][:batch]
        teacher_scores = teacher_outputs.get('scores')
        if teacher_scores is not None and self._kd_on_cls_view:
            teacher_scores = teacher_scores[batch:]
        labels, indices = self._labels_and_indices(data_samples, x_cls.device)
        feats = self.extract_feat(torch.cat([x_cls, x_q]))
        cls_feats = tuple(f[:batch] for f in feats)
        cosines = self.head(cls_feats)
        query = F.normalize(self.query_mlp(feats[-1][batch:]), dim=1)
        # enqueue first, then embed: each query's own positive is in the queue
        self.queue.enqueue(teacher_features, labels, indices)
        keys = self.embed_queue()
        return self.gml_loss(
            cosines, labels, query, keys, self.queue.labels,
            key_indices=self.queue.indices, sample_indices=indices,
            teacher_scores=teacher_scores)
