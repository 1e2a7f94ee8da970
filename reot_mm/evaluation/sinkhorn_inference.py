"""Sinkhorn inference over the whole test set, as an evaluator wrapper.

RE-OT §5 ("a new inference method"): replace the softmax (the U(a) plan) by
the U(a, b) plan of the entire test set — rows 1/N, columns b the assumed or
estimated test label distribution, kernel from the model's scores — and
predict argmax_j(s_ij/ε + g_j). The model runs unchanged; this metric keeps
every sample's ``pred_score``, mmengine gathers them from all ranks
(``BaseMetric.evaluate`` → ``collect_results``, truncated to the dataset
size), and on the main rank one Sinkhorn re-assigns ``pred_score`` /
``pred_label`` before the wrapped metrics (``Accuracy``, ``ShotAccuracy``, ...)
compute their results.

Config::

    val_evaluator = dict(
        type='SinkhornInferenceMetric',
        metrics=[dict(type='Accuracy', topk=(1, )),
                 dict(type='ShotAccuracy')],
        target_prior='uniform')     # or 'estimated', [p_1, ..., p_C], a file

The scores are ``log pred_score``, which equal the logits up to a per-row
constant (the row potential absorbs it, so the plan is that of the logits);
probabilities that underflowed to 0 are clamped to the smallest normal
number of their dtype so that every class stays reachable. The math is
:func:`reot_mm.ot.test_time.sinkhorn_prediction` (RE-OT §5 = OTLM
Algorithm 1); b is resolved by :func:`reot_mm.ot.test_prior.resolve_target_prior`.
"""
import copy
from typing import Dict, List, Optional, Sequence, Union

import torch
from mmengine.evaluator import BaseMetric, Evaluator
from mmengine.logging import MessageHub
from mmengine.registry import EVALUATOR, METRICS

from reot_mm.counts_file import load_counts_file
from reot_mm.losses import priors
from reot_mm.ot.checks import (check_choice, check_iteration_args,
                               check_positive, check_positive_int)
from reot_mm.ot.test_prior import (CALIBRATION_PRIORS, check_em_smoothing,
                                   parse_target_prior, resolve_target_prior)
from reot_mm.ot.test_time import sinkhorn_prediction

from .shot_metric import CLASS_COUNTS_INFO_KEY


@METRICS.register_module()
class SinkhornInferenceMetric(BaseMetric):
    """Re-assign predictions by Sinkhorn over the whole set, then evaluate.

    Args:
        metrics: the wrapped metrics: config dicts (built from the current
            scope, e.g. mmpretrain's ``Accuracy``) or ``BaseMetric`` objects.
            Their keys are reported as they would be without the wrapper
            (``accuracy/top1``, ``shot/balanced``, ...).
        target_prior: the column marginal b. ``'uniform'`` (default),
            ``'estimated'`` (EM of Saerens et al. 2002 on the gathered
            predictions; see ``calibration_prior``), a list of C
            probabilities summing to 1, or a file holding them. Never taken
            from the test labels.
        epsilon: ε > 0, kernel exp(s/ε). 1 (default) is the authors' setting
            (kernel exp(logits), reg 1).
        max_iter: Sinkhorn iterations at most (the authors: 1000).
        tol: stop at this L1 marginal error of the mass-1 plan (the authors
            asked for 1e-9 in float64; 1e-6 is what fp32 scores support).
        check_every: check the marginal error every this many iterations.
        em_iter: EM iterations for ``'estimated'``.
        calibration_prior: the label distribution the model's softmax is
            calibrated for, used by the EM: ``'train'`` (default; a model
            trained with plain cross-entropy) or ``'uniform'`` (a model
            trained with a prior-corrected loss: RE-OT, Balanced Softmax,
            logit adjustment). See
            :func:`reot_mm.ot.test_prior.resolve_target_prior`.
        em_smoothing: Dirichlet pseudo-count α per class in the EM's M
            step (0, the default: maximum likelihood; α > 0 keeps every
            class's estimated mass above α / (N + C·α)).
        train_class_counts: training counts for ``'estimated'``; else
            ``train_class_counts_file``; else the MessageHub info
            ``'reot_mm/class_counts'`` published by ``ClassStatisticsHook``.
        train_class_counts_file: file with the training counts.
        report_plain: also evaluate the wrapped metrics on the unchanged
            (argmax) predictions, reported under ``plain_prefix``.
        plain_prefix: key prefix of the plain results.
        report_solver: report ``sinkhorn/iterations`` and
            ``sinkhorn/marginal_error``. The b used last (e.g. the EM
            estimate) is kept in ``last_target_prior``.
        collect_device: ``'cpu'`` or ``'gpu'``, as ``BaseMetric``.
        prefix: optional prefix put in front of every key.

    Raises:
        ValueError: bad options at construction; at evaluation, samples
            without ``pred_score``, a prior whose length differs from the
            number of classes, or ``'estimated'`` without training counts.
    """

    # '' (not None): no prefix and no 'prefix is not set' warning; the
    # wrapped metrics keep their own prefixes
    default_prefix: Optional[str] = ''

    def __init__(self,
                 metrics: Union[dict, BaseMetric, Sequence[Union[dict,
                                                                 BaseMetric]]],
                 target_prior='uniform',
                 epsilon: float = 1.0,
                 max_iter: int = 1000,
                 tol: float = 1e-6,
                 check_every: int = 10,
                 em_iter: int = 1000,
                 calibration_prior: str = 'train',
                 em_smoothing: float = 0.0,
                 train_class_counts: Optional[Sequence[float]] = None,
                 train_class_counts_file: Optional[str] = None,
                 report_plain: bool = False,
                 plain_prefix: str = 'plain',
                 report_solver: bool = True,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if isinstance(metrics, (dict, BaseMetric)):
            metrics = [metrics]
        if not isinstance(metrics, (list, tuple)) or not metrics:
            raise ValueError('metrics must be a non-empty list of metric '
                             f'configs or BaseMetric objects, got {metrics!r}')
        self.metrics = []
        for metric in metrics:
            if isinstance(metric, dict):
                metric = METRICS.build(copy.deepcopy(metric))
            if not isinstance(metric, BaseMetric):
                raise ValueError('every entry of metrics must build a '
                                 f'BaseMetric, got {type(metric).__name__}')
            if isinstance(metric, SinkhornInferenceMetric):
                raise ValueError('SinkhornInferenceMetric cannot wrap itself')
            self.metrics.append(metric)
        self.target_prior = parse_target_prior(target_prior, None,
                                               'target_prior',
                                               load_counts_file)
        self.epsilon = check_positive(epsilon, 'epsilon')
        self.max_iter, self.check_every, self.tol = check_iteration_args(
            max_iter, check_every, tol)
        self.em_iter = check_positive_int(em_iter, 'em_iter')
        self.calibration_prior = check_choice(
            calibration_prior, 'calibration_prior', CALIBRATION_PRIORS)
        self.em_smoothing = check_em_smoothing(em_smoothing, 'em_smoothing')
        if train_class_counts is not None:
            self.train_class_counts = priors.validate_class_counts(
                train_class_counts, name='train_class_counts')
        elif train_class_counts_file is not None:
            self.train_class_counts = priors.validate_class_counts(
                load_counts_file(train_class_counts_file,
                                 'train_class_counts_file'),
                name=f'train_class_counts_file {train_class_counts_file!r}')
        else:
            self.train_class_counts = None
        self.report_plain = bool(report_plain)
        self.plain_prefix = plain_prefix
        self.report_solver = bool(report_solver)
        self.last_target_prior = None

    @property
    def dataset_meta(self) -> Optional[dict]:
        return self._dataset_meta

    @dataset_meta.setter
    def dataset_meta(self, dataset_meta: dict) -> None:
        # the wrapped metrics need it too (class names, num_classes)
        self._dataset_meta = copy.deepcopy(dataset_meta)
        for metric in getattr(self, 'metrics', ()):
            metric.dataset_meta = dataset_meta

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        """Keep every sample (its ``pred_score`` on the CPU) until the end.

        One result per sample, so ``collect_results`` can drop the samples
        the distributed sampler pads.
        """
        for sample in data_samples:
            if 'pred_score' not in sample:
                raise ValueError(
                    'SinkhornInferenceMetric needs pred_score (C,) in every '
                    f'data sample, got keys {sorted(sample)}')
            kept = dict(sample)
            kept['pred_score'] = torch.as_tensor(
                sample['pred_score']).detach().cpu()
            self.results.append(kept)

    def _train_counts(self):
        if self.train_class_counts is not None:
            return self.train_class_counts
        published = MessageHub.get_current_instance().get_info(
            CLASS_COUNTS_INFO_KEY)
        return None if published is None else published

    def _evaluate_wrapped(self, samples: List[dict]) -> Dict:
        out = {}
        for metric in self.metrics:
            metric.results = []
            metric.process(None, samples)
            values = metric.compute_metrics(metric.results)
            metric.results = []
            for key, value in values.items():
                name = f'{metric.prefix}/{key}' if metric.prefix else key
                if name in out:
                    raise ValueError(f'two wrapped metrics report {name!r}; '
                                     'give one of them a different prefix')
                out[name] = value
        return out

    def compute_metrics(self, results: List[dict]) -> Dict:
        """One Sinkhorn over all gathered samples, then the wrapped metrics.

        Args:
            results: the per-sample dicts of every rank, in dataset order.

        Returns:
            The wrapped metrics' results on the re-assigned predictions
            (plus ``plain/...`` and ``sinkhorn/...`` keys when asked).
        """
        if not results:
            raise ValueError('SinkhornInferenceMetric got no sample')
        probs = torch.stack([r['pred_score'] for r in results])
        if probs.ndim != 2:
            raise ValueError('pred_score must be (C,) per sample, got shape '
                             f'{tuple(probs.shape[1:])}')
        if not probs.is_floating_point():
            raise ValueError(f'pred_score must be floating, got {probs.dtype}')
        num_classes = probs.shape[1]
        classes = (self.dataset_meta or {}).get('classes')
        if classes is not None and len(classes) != num_classes:
            raise ValueError(f'pred_score has {num_classes} classes but the '
                             f'dataset has {len(classes)}')
        if probs.dtype != torch.float64:
            probs = probs.float()
        if not torch.isfinite(probs).all() or (probs < 0).any():
            raise ValueError('pred_score must hold finite probabilities >= 0')
        scores = probs.clamp_min(torch.finfo(probs.dtype).tiny).log()
        counts = None
        if isinstance(self.target_prior, str) \
                and self.target_prior == 'estimated' \
                and self.calibration_prior == 'train':
            counts = self._train_counts()
        target_prior = resolve_target_prior(self.target_prior, scores, counts,
                                            self.em_iter, 'target_prior',
                                            self.calibration_prior,
                                            self.em_smoothing)
        result = sinkhorn_prediction(scores, target_prior, self.epsilon,
                                     max_iter=self.max_iter, tol=self.tol,
                                     check_every=self.check_every)
        refined = result.probs
        samples = []
        for sample, score, label in zip(results, refined, result.pred_label):
            sample = dict(sample)
            sample['pred_score'] = score.to(sample['pred_score'].dtype)
            sample['pred_label'] = label.reshape(1)
            samples.append(sample)
        metrics = self._evaluate_wrapped(samples)
        if self.report_plain:
            plain = self._evaluate_wrapped(results)
            metrics.update({f'{self.plain_prefix}/{k}': v
                            for k, v in plain.items()})
        if self.report_solver:
            metrics['sinkhorn/iterations'] = result.iterations
            metrics['sinkhorn/marginal_error'] = result.marginal_error
        # the b of the last evaluation (e.g. the EM estimate), for inspection
        self.last_target_prior = result.target_prior
        return metrics


@EVALUATOR.register_module(name='SinkhornInferenceMetric')
def build_sinkhorn_inference_evaluator(**kwargs) -> Evaluator:
    """``val_evaluator = dict(type='SinkhornInferenceMetric', metrics=[...])``.

    mmengine's Runner reads an evaluator dict that has a ``metrics`` key as
    an ``Evaluator`` config and builds it from the EVALUATOR registry; this
    entry makes that spelling build an ``Evaluator`` holding one
    :class:`SinkhornInferenceMetric`. The list spelling
    ``[dict(type='SinkhornInferenceMetric', ...)]`` builds the metric from
    METRICS directly.
    """
    return Evaluator(SinkhornInferenceMetric(**kwargs))
