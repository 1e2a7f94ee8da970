"""Test-time correction of a Mask R-CNN box head's RoI class distributions.

:class:`REOTShared2FCBBoxHead` is mmdet's ``Shared2FCBBoxHead`` whose
``predict_by_feat`` corrects the (N, C + 1) RoI class distributions (C
foreground classes, background last) *before* mmdet's score threshold and
per-class NMS. Training is untouched. Modes (``test_time_cfg['mode']``):

``'none'``
    upstream's prediction, bit for bit (softmax of the raw logits).
``'logit_adjust'``
    post-hoc logit adjustment (Menon et al., Long-Tail Learning via Logit
    Adjustment, ICLR 2021, Eq. 3) with the *training foreground prior* π (the
    per-class instance ratio of the training annotations, RE-OT Eq. 35) and
    the background handled as in ``REOTRoILoss(background='foreground_only')``:
    the prior over the C + 1 columns is Q ∝ [C·π, 1] (RE-OT Eq. 15 at λ = 1,
    background keeping its uniform share), so each foreground logit moves by
    -τ·log(C·π_j) and the background logit does not move. On a head trained
    with plain CE this is the post-hoc counterpart of training with
    ``REOTRoILoss(prior='class_ratio')`` at λ = 1; on a head trained with that
    loss the prior would be removed twice.
``'sinkhorn'``
    Sinkhorn inference (Shi et al., Relative Entropic Optimal Transport: a
    (Prior-aware) Matching Perspective to (Unbalanced) Classification, NeurIPS
    2023, §5 = Peng et al., Optimal Transport for Long-Tailed Recognition
    with Learnable Cost Matrix, ICLR 2022, Algorithm 1) over the RoIs of the
    test batch (all images of the ``predict_by_feat`` call). Background as in
    the training loss: each RoI keeps its background probability p_i0; only
    its foreground part is transported, and renormalised to the remaining
    mass 1 - p_i0::

        q_i = softmax(s_i,fg)                  (class distribution given fg)
        q'  = U(a, b) plan of the RoIs, rows a_i ∝ 1 - p_i0, columns b
        p'_i = [(1 - p_i0)·q'_i / Σ_j q'_ij,  p_i0]

    Rows weighted by the foreground probability (``rows='foreground'``,
    default) make the column constraint say "the expected foreground class
    histogram of the batch is b"; with ``rows='uniform'`` (a_i = 1/N, RE-OT §5
    as written) the many near-certain background RoIs count as much as the
    objects. b is ``'train'`` (the training foreground prior π), ``'uniform'``
    or an explicit list of C probabilities.

Sinkhorn over the RoIs of the whole test set is not offered: it needs every
pre-NMS RoI distribution at once (LVIS v1 val: ~19.8k images x 1000 RoIs x
1204 classes ≈ 24e9 numbers, ~95 GB in fp32) and then a second pass for NMS
and the masks; see docs/methods/lvis.md.

The head is a :class:`~reot_mm.losses.class_counts.CountAwareModule`, so
``ClassStatisticsHook`` gives it the training instance counts (or a test run
takes them from the checkpoint's meta). The counts buffer is not persistent:
checkpoints stay loadable into upstream's ``Shared2FCBBoxHead`` and back.
"""
import math
import warnings
from typing import List, Optional, Tuple

import torch
from mmdet.models.roi_heads.bbox_heads import Shared2FCBBoxHead
from mmdet.registry import MODELS
from torch import Tensor

from reot_mm.losses.class_counts import CountAwareModule
from reot_mm.losses.reot_roi_loss import log_detection_prior
from reot_mm.ot.test_prior import class_distribution
from reot_mm.ot.test_time import logit_adjustment, sinkhorn_prediction

TEST_TIME_MODES = ('none', 'logit_adjust', 'sinkhorn')
ROW_MASSES = ('foreground', 'uniform')
_DEFAULTS = dict(mode='none', b='train', tau=1.0, epsilon=1.0,
                 rows='foreground', max_iter=1000, tol=1e-6)


def _option(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f'REOTShared2FCBBoxHead: test_time_cfg.{name} must be '
                         f'one of {choices}, got {value!r}')


@MODELS.register_module()
class REOTShared2FCBBoxHead(Shared2FCBBoxHead, CountAwareModule):
    """``Shared2FCBBoxHead`` with a test-time correction of the RoI scores.

    Args:
        test_time_cfg: dict with

            * ``mode``: ``'none'`` (default), ``'logit_adjust'`` or
              ``'sinkhorn'`` (module docstring);
            * ``b``: Sinkhorn column marginal: ``'train'`` (default, the
              training foreground prior), ``'uniform'`` or C probabilities;
            * ``tau``: τ >= 0 of the logit adjustment (default 1);
            * ``epsilon``: ε > 0 of the Sinkhorn kernel exp(s/ε) (default 1);
            * ``rows``: Sinkhorn row masses, ``'foreground'`` (default) or
              ``'uniform'``;
            * ``max_iter``, ``tol``: Sinkhorn stopping rule.
        class_counts: C training instance counts, or None (from
            ``ClassStatisticsHook``).
        **kwargs: ``Shared2FCBBoxHead`` arguments.
    """

    def __init__(self, test_time_cfg: Optional[dict] = None,
                 class_counts=None, **kwargs) -> None:
        super().__init__(**kwargs)
        cfg = dict(_DEFAULTS)
        given = dict(test_time_cfg or {})
        unknown = sorted(set(given) - set(_DEFAULTS))
        if unknown:
            raise ValueError(f'REOTShared2FCBBoxHead: unknown test_time_cfg '
                             f'keys {unknown}; expected some of '
                             f'{sorted(_DEFAULTS)}')
        cfg.update(given)
        _option('mode', cfg['mode'], TEST_TIME_MODES)
        _option('rows', cfg['rows'], ROW_MASSES)
        if not (isinstance(cfg['b'], str) and cfg['b'] in ('train', 'uniform')):
            if isinstance(cfg['b'], str):
                raise ValueError("REOTShared2FCBBoxHead: test_time_cfg.b must "
                                 "be 'train', 'uniform' or a list of C "
                                 f'probabilities, got {cfg["b"]!r}')
            cfg['b'] = class_distribution(cfg['b'], self.num_classes,
                                          'test_time_cfg.b')
        if not (cfg['tau'] >= 0 and math.isfinite(cfg['tau'])):
            raise ValueError('REOTShared2FCBBoxHead: test_time_cfg.tau must '
                             f'be a finite number >= 0, got {cfg["tau"]!r}')
        if not (cfg['epsilon'] > 0 and math.isfinite(cfg['epsilon'])):
            raise ValueError('REOTShared2FCBBoxHead: test_time_cfg.epsilon '
                             f'must be a finite number > 0, got '
                             f'{cfg["epsilon"]!r}')
        if cfg['mode'] != 'none' and (self.custom_cls_channels
                                      or not self.with_cls):
            raise ValueError(
                'REOTShared2FCBBoxHead: test_time_cfg.mode='
                f"{cfg['mode']!r} corrects a (N, C + 1) softmax; the head has "
                'no classification branch or a loss_cls with custom '
                'channels/activation (e.g. Seesaw)')
        loss_prior = getattr(getattr(self, 'loss_cls', None), 'prior', None)
        if cfg['mode'] == 'logit_adjust' and loss_prior not in (None,
                                                                'uniform'):
            warnings.warn(
                "REOTShared2FCBBoxHead: test_time_cfg.mode='logit_adjust' on "
                f"a head trained with loss_cls prior={loss_prior!r}: the "
                'training prior is removed twice; logit adjustment is meant '
                "for a CE-trained head (prior='uniform')")
        self.test_time_cfg = cfg
        self.init_class_counts(class_counts, self.num_classes,
                               persistent=False)

    # ------------------------------------------------------------ contract
    @property
    def needs_class_counts(self) -> bool:
        mode, b = self.test_time_cfg['mode'], self.test_time_cfg['b']
        return mode == 'logit_adjust' or (
            mode == 'sinkhorn' and isinstance(b, str) and b == 'train')

    def training_prior(self) -> Tensor:
        """(C,) float64 training foreground prior π (instance ratio, RE-OT
        Eq. 35; classes without instances count ``min_count``)."""
        return self.log_class_ratio(self.num_classes).double().exp()

    def column_marginal(self) -> Optional[Tensor]:
        """b of the Sinkhorn mode over the C foreground classes (None:
        uniform)."""
        b = self.test_time_cfg['b']
        if isinstance(b, Tensor):
            return b
        if b == 'uniform':
            return None
        prior = self.training_prior()
        return prior / prior.sum()

    # ---------------------------------------------------------- correction
    def correct_scores(self, cls_score: Tensor) -> Tensor:
        """Corrected (N, C + 1) scores whose softmax is the corrected RoI
        class distribution (background last); fp32 or fp64.

        Args:
            cls_score: (N, C + 1) raw RoI logits (N may span several images).
        """
        mode = self.test_time_cfg['mode']
        num_classes = self.num_classes
        if cls_score.ndim != 2 or cls_score.shape[1] != num_classes + 1:
            raise ValueError('REOTShared2FCBBoxHead: cls_score must be '
                             f'(N, {num_classes + 1}) with the background '
                             f'logit last, got {tuple(cls_score.shape)}')
        logits = cls_score.float() if cls_score.dtype != torch.float64 \
            else cls_score
        if mode == 'none' or logits.shape[0] == 0:
            return logits
        if mode == 'logit_adjust':
            return self._logit_adjust(logits)
        return self._sinkhorn(logits)

    def _logit_adjust(self, logits: Tensor) -> Tensor:
        # Q ∝ [C·π, 1]: the training loss's foreground-only prior at λ = 1
        log_q = log_detection_prior(self.log_class_ratio(self.num_classes),
                                    1.0, 1.0, 'foreground_only')
        prior = log_q.to(logits).softmax(0)
        return logit_adjustment(logits, prior, self.test_time_cfg['tau'])

    def _sinkhorn(self, logits: Tensor) -> Tensor:
        cfg = self.test_time_cfg
        log_p = logits.log_softmax(-1)
        log_bg = log_p[:, -1]
        # log(1 - p_bg), exact for p_bg near 0 and near 1
        log_fg_mass = torch.log(-torch.expm1(log_bg))
        weight = None
        if cfg['rows'] == 'foreground':
            weight = log_fg_mass.exp()
            if not weight.sum() > 0:  # every RoI certain background
                weight = None
        # the foreground logits differ from log q_i by a per-row constant,
        # which the plan ignores
        result = sinkhorn_prediction(
            logits[:, :-1], self.column_marginal(), cfg['epsilon'],
            max_iter=cfg['max_iter'], tol=cfg['tol'], sample_weight=weight)
        log_fg = result.probs.log() + log_fg_mass[:, None]
        return torch.cat([log_fg, log_bg[:, None]], dim=1)

    # ----------------------------------------------------------- prediction
    def predict_by_feat(self, rois: Tuple[Tensor], cls_scores: Tuple[Tensor],
                        bbox_preds: Tuple[Tensor],
                        batch_img_metas: List[dict],
                        rcnn_test_cfg=None, rescale: bool = False) -> list:
        """mmdet's prediction on corrected scores (``'none'``: unchanged).

        The per-image scores are concatenated so that Sinkhorn sees every
        RoI of the batch, corrected, split back, and handed to the parent,
        whose softmax of the corrected scores is the corrected distribution.
        """
        if self.test_time_cfg['mode'] != 'none':
            sizes = [score.shape[0] for score in cls_scores]
            corrected = self.correct_scores(torch.cat(list(cls_scores)))
            cls_scores = tuple(corrected.to(cls_scores[0].dtype)
                               .split(sizes, 0))
        return super().predict_by_feat(rois, cls_scores, bbox_preds,
                                       batch_img_metas, rcnn_test_cfg,
                                       rescale)

    def extra_repr(self) -> str:
        cfg = {k: v for k, v in self.test_time_cfg.items()
               if not isinstance(v, Tensor)}
        return f'test_time_cfg={cfg}'


__all__ = ['REOTShared2FCBBoxHead', 'TEST_TIME_MODES']
