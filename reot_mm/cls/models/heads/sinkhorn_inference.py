"""Sinkhorn inference over the test batch for mmpretrain classification heads.

RE-OT §5 ("a new inference method"): at test time the softmax — the plan of
the relaxed set U(a) — is replaced by the plan of the full matching set
U(a, b) over the samples of the batch, rows a_i = 1/N, columns b = the
assumed test label distribution, kernel exp(s/ε) from the head's scores s.
The prediction is argmax_j(s_ij/ε + g_j) with g the column log-potentials,
a transductive logit adjustment. The math is
:func:`reot_mm.ot.test_time.sinkhorn_prediction` (RE-OT §5 = OTLM
Algorithm 1); this module only speaks the mmpretrain head contract.

``sinkhorn_cfg=None`` (the default) keeps the upstream prediction (softmax,
argmax) bit for bit. For Sinkhorn over the whole test set instead of each
batch use the evaluator wrapper ``SinkhornInferenceMetric``
(:mod:`reot_mm.evaluation.sinkhorn_inference`).
"""
import copy
import warnings
from typing import List, Optional

import torch
from mmpretrain.models.heads import LinearClsHead
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from reot_mm.counts_file import load_counts_file
from reot_mm.losses import priors
from reot_mm.losses.class_counts import CountAwareModule
from reot_mm.ot.checks import (check_choice, check_iteration_args,
                               check_positive, check_positive_int)
from reot_mm.ot.test_prior import (CALIBRATION_PRIORS, check_em_smoothing,
                                   parse_target_prior, resolve_target_prior)
from reot_mm.ot.test_time import sinkhorn_prediction

from .cosine_head import CosineClsHead

_SINKHORN_KEYS = ('target_prior', 'epsilon', 'max_iter', 'tol',
                  'check_every', 'em_iter', 'em_smoothing',
                  'calibration_prior', 'class_counts')


def check_sinkhorn_cfg(sinkhorn_cfg: Optional[dict],
                       num_classes: Optional[int] = None) -> Optional[dict]:
    """Validate a Sinkhorn-inference option dict; None stays None (argmax).

    Keys (all optional): ``target_prior`` (``'uniform'`` default,
    ``'estimated'``, a list of C probabilities or a file holding them),
    ``epsilon`` (1.0), ``max_iter`` (1000), ``tol`` (1e-6), ``check_every``
    (10), ``em_iter`` (1000, for ``'estimated'``), ``em_smoothing`` (0: the
    EM's Dirichlet pseudo-count per class), ``calibration_prior``
    (``'train'`` default, or ``'uniform'`` for a model trained with a
    prior-corrected loss such as RE-OT/Balanced Softmax; see
    :func:`reot_mm.ot.test_prior.resolve_target_prior`), ``class_counts``
    (training counts for ``'estimated'`` with ``calibration_prior='train'``;
    else ``ClassStatisticsHook`` sets them).
    """
    if sinkhorn_cfg is None:
        return None
    if not isinstance(sinkhorn_cfg, dict):
        raise ValueError('sinkhorn_cfg must be None (plain argmax) or a dict '
                         f'with keys {_SINKHORN_KEYS}, got {sinkhorn_cfg!r}')
    unknown = sorted(set(sinkhorn_cfg) - set(_SINKHORN_KEYS))
    if unknown:
        raise ValueError(f'sinkhorn_cfg has unknown keys {unknown}; expected '
                         f'some of {_SINKHORN_KEYS}')
    cfg = dict(target_prior='uniform', epsilon=1.0, max_iter=1000, tol=1e-6,
               check_every=10, em_iter=1000, em_smoothing=0.0,
               calibration_prior='train', class_counts=None)
    cfg.update(copy.deepcopy(dict(sinkhorn_cfg)))
    cfg['epsilon'] = check_positive(cfg['epsilon'], 'sinkhorn_cfg.epsilon')
    cfg['max_iter'], cfg['check_every'], cfg['tol'] = check_iteration_args(
        cfg['max_iter'], cfg['check_every'], cfg['tol'])
    cfg['em_iter'] = check_positive_int(cfg['em_iter'],
                                        'sinkhorn_cfg.em_iter')
    cfg['em_smoothing'] = check_em_smoothing(cfg['em_smoothing'],
                                             'sinkhorn_cfg.em_smoothing')
    check_choice(cfg['calibration_prior'], 'sinkhorn_cfg.calibration_prior',
                 CALIBRATION_PRIORS)
    cfg['target_prior'] = parse_target_prior(
        cfg['target_prior'], num_classes, 'sinkhorn_cfg.target_prior',
        load_counts_file)
    if cfg['class_counts'] is not None:
        cfg['class_counts'] = priors.validate_class_counts(
            cfg['class_counts'], num_classes, 'sinkhorn_cfg.class_counts')
    return cfg


class SinkhornInferenceMixin(CountAwareModule):
    """Adds ``sinkhorn_cfg`` to an mmpretrain ``ClsHead`` subclass.

    Put it first in the bases (``class H(SinkhornInferenceMixin, SomeHead)``)
    and call :meth:`init_sinkhorn` in ``__init__``. It overrides
    ``_get_predictions`` (the step after the head's scores), so it works with
    any head whose ``predict`` passes its final scores there — the scores the
    upstream softmax would see (logits for ``LinearClsHead``, scale·cos for
    ``CosineClsHead``). ``pred_score`` becomes the row-normalised plan
    softmax_j(s_ij/ε + g_j) and ``pred_label`` its argmax, so mmpretrain's
    ``Accuracy`` (which reads ``pred_score``) sees the Sinkhorn predictions.

    The training counts for ``target_prior='estimated'`` come from
    ``sinkhorn_cfg.class_counts`` or from ``ClassStatisticsHook``, which gives
    them to every :class:`CountAwareModule`. They are kept in a
    non-persistent buffer: the hook re-sets them at every run (and restores
    them from the checkpoint's meta), and checkpoints stay loadable into the
    plain upstream head.
    """

    def init_sinkhorn(self, sinkhorn_cfg: Optional[dict]) -> None:
        self.sinkhorn_cfg = check_sinkhorn_cfg(sinkhorn_cfg,
                                               self.num_classes)
        counts = None if self.sinkhorn_cfg is None \
            else self.sinkhorn_cfg.pop('class_counts')
        self.init_class_counts(counts, num_classes=self.num_classes,
                               persistent=False)
        self._warned_small_batch = False

    @property
    def needs_class_counts(self) -> bool:
        """Only the EM under the training prior uses the counts."""
        cfg = self.sinkhorn_cfg
        return cfg is not None and isinstance(cfg['target_prior'], str) \
            and cfg['target_prior'] == 'estimated' \
            and cfg['calibration_prior'] == 'train'

    def _get_predictions(self, cls_score: torch.Tensor,
                         data_samples: Optional[List] = None) -> List:
        if self.sinkhorn_cfg is None:
            return super()._get_predictions(cls_score, data_samples)
        cfg = self.sinkhorn_cfg
        num = cls_score.shape[0]
        if num < cls_score.shape[1] and not self._warned_small_batch:
            self._warned_small_batch = True
            warnings.warn(
                f'Sinkhorn inference over a batch of {num} samples with '
                f'{cls_score.shape[1]} classes: the batch cannot follow the '
                'column marginal b; use a larger (shuffled) test batch or '
                'SinkhornInferenceMetric over the whole test set')
        target_prior = resolve_target_prior(
            cfg['target_prior'], cls_score,
            self.class_counts if self.has_class_counts else None,
            cfg['em_iter'],
            'sinkhorn_cfg.target_prior', cfg['calibration_prior'],
            cfg['em_smoothing'])
        result = sinkhorn_prediction(
            cls_score, target_prior, cfg['epsilon'], max_iter=cfg['max_iter'],
            tol=cfg['tol'], check_every=cfg['check_every'])
        pred_scores = result.probs.to(cls_score.dtype)
        pred_labels = result.pred_label.unsqueeze(1)
        if data_samples is None:
            data_samples = [None] * num
        out = []
        for data_sample, score, label in zip(data_samples, pred_scores,
                                             pred_labels):
            if data_sample is None:
                data_sample = DataSample()
            data_sample.set_pred_score(score).set_pred_label(label)
            out.append(data_sample)
        return out


@MODELS.register_module()
class SinkhornLinearClsHead(SinkhornInferenceMixin, LinearClsHead):
    """``LinearClsHead`` with optional Sinkhorn inference over the test batch.

    Same parameters and state dict as ``LinearClsHead``; checkpoints load
    either way.

    Args:
        sinkhorn_cfg: None (default: upstream softmax + argmax) or a dict,
            see :func:`check_sinkhorn_cfg`, e.g.
            ``dict(target_prior='uniform', epsilon=1.0)``.
        *args, **kwargs: ``LinearClsHead`` arguments.
    """

    def __init__(self, *args, sinkhorn_cfg: Optional[dict] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.init_sinkhorn(sinkhorn_cfg)


@MODELS.register_module()
class SinkhornCosineClsHead(SinkhornInferenceMixin, CosineClsHead):
    """``CosineClsHead`` with optional Sinkhorn inference over the test batch.

    The kernel is exp(scale·cos/ε), i.e. the scores the head's softmax uses.

    Args:
        sinkhorn_cfg: None (default: softmax + argmax) or a dict, see
            :func:`check_sinkhorn_cfg`.
        *args, **kwargs: ``CosineClsHead`` arguments.
    """

    def __init__(self, *args, sinkhorn_cfg: Optional[dict] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.init_sinkhorn(sinkhorn_cfg)
