"""Sinkhorn inference (RE-OT §5): the pure function and the whole-set metric.

The head (batch) mode is tested in tests/cls/test_sinkhorn_head.py.
"""
import json
import os.path as osp
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from mmengine.evaluator import Evaluator
from mmengine.logging import MessageHub
from mmengine.registry import METRICS, init_default_scope
from launch import run_torchrun, subprocess_env

import reot_mm  # noqa: F401  (registers the metric)
from reot_mm.evaluation import CLASS_COUNTS_INFO_KEY, ShotAccuracy
from reot_mm.evaluation.sinkhorn_inference import SinkhornInferenceMetric
from reot_mm.ot.test_prior import parse_target_prior, resolve_target_prior
from reot_mm.ot.test_time import sinkhorn_prediction
from reot_mm.ot.sinkhorn import reot_sinkhorn

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
C = 10
PI = torch.linspace(1.0, 0.05, C) / torch.linspace(1.0, 0.05, C).sum()
COUNTS = (PI * 1000).round().tolist()


def long_tail_scores(n, seed=0, num_classes=C):
    """Logits biased towards the head classes, as a long-tailed model's."""
    generator = torch.Generator().manual_seed(seed)
    pi = torch.linspace(1.0, 0.05, num_classes)
    labels = torch.arange(n) % num_classes
    scores = torch.randn(n, num_classes, generator=generator) * 2 \
        + (pi / pi.sum()).log() + 2.0 * F.one_hot(labels, num_classes)
    return scores, labels


def samples_of(scores, labels):
    """mmpretrain-style data sample dicts (DataSample.to_dict)."""
    probs = torch.softmax(scores, 1)
    return [dict(pred_score=p, pred_label=p.argmax().reshape(1),
                 gt_label=torch.tensor([int(y)]), sample_idx=i)
            for i, (p, y) in enumerate(zip(probs, labels))]


# ------------------------------------------------------------ pure function
def test_plan_marginals_and_argmax_of_adjusted_scores():
    """Rows 1/N, columns b; prediction = argmax_j(s_ij/ε + g_j) with g the
    solver's column log-potentials (log v)."""
    scores, _ = long_tail_scores(400)
    b = torch.linspace(2, 1, C, dtype=torch.float64)
    b = b / b.sum()
    for epsilon in (1.0, 0.5):
        result = sinkhorn_prediction(scores, b, epsilon, tol=1e-7)
        # the row-normalised plan's column means are the plan's column sums
        torch.testing.assert_close(result.probs.double().mean(0), b,
                                   atol=1e-6, rtol=0)
        torch.testing.assert_close(result.probs.sum(1),
                                   torch.ones(400))
        solver = reot_sinkhorn(-scores, epsilon, None, b.float(), tol=1e-7)
        expected = (scores / epsilon + solver.g).argmax(1)
        assert torch.equal(result.pred_label, expected)
        torch.testing.assert_close(result.g - result.g.mean(),
                                   solver.g - solver.g.mean(), atol=1e-4,
                                   rtol=0)
        assert result.converged and result.marginal_error < 1e-6


def test_logits_and_log_probabilities_give_the_same_plan():
    scores, _ = long_tail_scores(300)
    from_logits = sinkhorn_prediction(scores.double(), tol=1e-10)
    from_log_probs = sinkhorn_prediction(torch.log_softmax(scores.double(), 1),
                                        tol=1e-10)
    assert torch.equal(from_logits.pred_label, from_log_probs.pred_label)
    torch.testing.assert_close(from_logits.probs, from_log_probs.probs)


def test_uniform_b_gives_a_near_uniform_label_histogram():
    scores, _ = long_tail_scores(5000)
    plain = torch.bincount(scores.argmax(1), minlength=C)
    result = sinkhorn_prediction(scores)
    hist = torch.bincount(result.pred_label, minlength=C)
    assert plain.max() > 1.5 * plain.min()  # the model is biased ...
    # ... the Sinkhorn labels are within 10 % of N/C for every class (the
    # soft marginals are exact; the hard argmax rounds them)
    assert (hist - 500).abs().max() <= 50, hist.tolist()
    assert (plain - 500).abs().max() > 150, plain.tolist()


def test_estimated_prior_recovers_a_planted_test_prior():
    """EM (Saerens et al. 2002) on calibrated posteriors recovers a planted
    test prior (reversed long tail) within 0.04 in L1 from 20k samples,
    without the test labels."""
    generator = torch.Generator().manual_seed(0)
    num_classes, n = 5, 20000
    pi_train = torch.tensor([.5, .25, .13, .08, .04], dtype=torch.float64)
    pi_test = pi_train.flip(0)
    labels = torch.multinomial(pi_test, n, replacement=True,
                               generator=generator)
    means = 2.0 * torch.eye(num_classes, dtype=torch.float64)
    x = means[labels] + torch.randn(n, num_classes, generator=generator,
                                    dtype=torch.float64)
    # Bayes posteriors of a model trained under pi_train (up to a row constant)
    logits = -0.5 * ((x[:, None] - means[None]) ** 2).sum(-1) + pi_train.log()
    estimate = resolve_target_prior('estimated', logits, pi_train * 1000)
    assert (estimate - pi_test).abs().sum() < 0.04
    assert (estimate - pi_train).abs().sum() > 0.5
    # through the metric (on a part, to keep the test fast): the same
    # estimate, and it is the b that Sinkhorn used
    part = slice(0, 2000)
    metric = SinkhornInferenceMetric(
        metrics=[ShotAccuracy(class_counts=(pi_train * 1000).tolist())],
        target_prior='estimated', train_class_counts=(pi_train * 1000).tolist())
    metric.process(None, samples_of(logits[part], labels[part]))
    metric.evaluate(2000)
    torch.testing.assert_close(
        metric.last_target_prior.double(),
        resolve_target_prior('estimated', logits[part].float(),
                             pi_train * 1000), atol=1e-5, rtol=0)
    # a model trained with a prior-corrected loss has balanced posteriors:
    # with calibration_prior='uniform' the EM recovers the test prior from
    # them, where assuming the training prior would not
    balanced = logits - pi_train.log()
    estimate = resolve_target_prior('estimated', balanced,
                                    calibration_prior='uniform')
    assert (estimate - pi_test).abs().sum() < 0.04
    wrong = resolve_target_prior('estimated', balanced, pi_train * 1000)
    assert (wrong - pi_test).abs().sum() > 0.2


# ------------------------------------------------------------------ metric
def build_metric(**kwargs):
    init_default_scope('mmpretrain')
    return SinkhornInferenceMetric(
        metrics=[dict(type='Accuracy', topk=(1, )),
                 dict(type='ShotAccuracy', class_counts=COUNTS,
                      many_threshold=100, few_threshold=40)], **kwargs)


def evaluate(metric, samples, batch=64):
    for start in range(0, len(samples), batch):
        metric.process(None, samples[start:start + batch])
    return metric.evaluate(len(samples))


def test_metric_reassigns_predictions_and_feeds_wrapped_metrics():
    scores, labels = long_tail_scores(500)
    samples = samples_of(scores, labels)
    metric = build_metric(report_plain=True)
    metric.dataset_meta = dict(classes=[str(i) for i in range(C)])
    assert all(m.dataset_meta['classes'] == metric.dataset_meta['classes']
               for m in metric.metrics)
    out = evaluate(metric, samples)

    # refined: what sinkhorn_prediction predicts on log pred_score
    result = sinkhorn_prediction(torch.softmax(scores, 1).log())
    correct = (result.pred_label == labels).float()
    assert out['accuracy/top1'] == pytest.approx(100 * correct.mean().item(),
                                                 abs=1e-4)
    assert out['shot/top1'] == pytest.approx(out['accuracy/top1'], abs=1e-4)
    # plain: the wrapped metrics on the untouched samples
    plain = ShotAccuracy(class_counts=COUNTS, many_threshold=100,
                         few_threshold=40)
    plain.process(None, samples)
    expected = plain.compute_metrics(plain.results)
    for key, value in expected.items():
        assert out[f'plain/shot/{key}'] == pytest.approx(value)
    assert out['sinkhorn/marginal_error'] < 1e-6
    # the long-tail bias hurts the few-shot classes; Sinkhorn removes it
    assert out['shot/few'] > out['plain/shot/few']
    assert metric.results == []  # BaseMetric.evaluate clears them


def test_metric_estimated_prior_reads_counts_from_the_message_hub():
    scores, labels = long_tail_scores(200)
    hub = MessageHub.get_current_instance()
    hub.update_info(CLASS_COUNTS_INFO_KEY, COUNTS)
    metric = build_metric(target_prior='estimated')
    out = evaluate(metric, samples_of(scores, labels))
    assert 'accuracy/top1' in out
    estimate = resolve_target_prior('estimated', torch.log_softmax(scores, 1),
                                    COUNTS)
    torch.testing.assert_close(metric.last_target_prior.double(), estimate,
                               atol=1e-6, rtol=0)
    # em_smoothing reaches the EM: the MAP estimate, not the ML one
    smoothed_metric = build_metric(target_prior='estimated', em_smoothing=5.0)
    evaluate(smoothed_metric, samples_of(scores, labels))
    smoothed = resolve_target_prior('estimated', torch.log_softmax(scores, 1),
                                    COUNTS, em_smoothing=5.0)
    torch.testing.assert_close(smoothed_metric.last_target_prior.double(),
                               smoothed, atol=1e-6, rtol=0)
    assert (smoothed - estimate).abs().max() > 1e-3
    uniform = torch.full((C, ), 1.0 / C, dtype=torch.float64)
    assert (smoothed - uniform).abs().sum() < (estimate - uniform).abs().sum()


def test_given_prior_list_and_file(tmp_path):
    scores, labels = long_tail_scores(300)
    b = (PI.flip(0) / PI.sum()).tolist()
    path = tmp_path / 'test_prior.json'
    path.write_text(json.dumps(b))
    outs = []
    for spec in (b, str(path)):
        metric = build_metric(target_prior=spec)
        outs.append(evaluate(metric, samples_of(scores, labels)))
        torch.testing.assert_close(metric.last_target_prior.double(),
                                   torch.tensor(b, dtype=torch.float64))
    assert outs[0] == outs[1]


def test_runner_builds_the_dict_and_list_spellings():
    from mmengine.runner import Runner
    init_default_scope('mmpretrain')
    inner = [dict(type='Accuracy', topk=(1, ))]
    for spec in (dict(type='SinkhornInferenceMetric', metrics=inner),
                 [dict(type='SinkhornInferenceMetric', metrics=inner)]):
        evaluator = Runner.build_evaluator(None, spec)
        assert isinstance(evaluator, Evaluator)
        assert [type(m).__name__ for m in evaluator.metrics] == \
            ['SinkhornInferenceMetric']
    assert isinstance(METRICS.build(dict(type='SinkhornInferenceMetric',
                                         metrics=inner)),
                      SinkhornInferenceMetric)


def test_bad_input():
    init_default_scope('mmpretrain')
    inner = [dict(type='Accuracy')]
    with pytest.raises(ValueError, match='epsilon must be a positive'):
        SinkhornInferenceMetric(inner, epsilon=0)
    with pytest.raises(ValueError, match='epsilon must be a positive'):
        SinkhornInferenceMetric(inner, epsilon=-1.0)
    with pytest.raises(ValueError, match='must be non-negative'):
        SinkhornInferenceMetric(inner, target_prior=[1.2, -0.2])
    with pytest.raises(ValueError, match='must be finite'):
        SinkhornInferenceMetric(inner, target_prior=[float('nan'), 1.0])
    with pytest.raises(ValueError, match=r'sum to 1 \(tolerance 0.0001\), got '
                       r'0.9'):
        SinkhornInferenceMetric(inner, target_prior=[0.5, 0.4])
    with pytest.raises(ValueError, match="must be one of .*'uniform', "
                       "'estimated'.*'test_labels'"):
        SinkhornInferenceMetric(inner, target_prior='test_labels')
    with pytest.raises(ValueError, match='non-empty list'):
        SinkhornInferenceMetric([])
    with pytest.raises(ValueError, match='em_smoothing must be a finite '
                       'number >= 0'):
        SinkhornInferenceMetric(inner, target_prior='estimated',
                                em_smoothing=-0.5)
    with pytest.raises(ValueError, match='tol must be'):
        SinkhornInferenceMetric(inner, tol=0)
    with pytest.raises(ValueError, match='calibration_prior must be one of'):
        SinkhornInferenceMetric(inner, calibration_prior='test')
    scores, labels = long_tail_scores(50)
    samples = samples_of(scores, labels)
    # wrong length is known only once the scores are
    metric = SinkhornInferenceMetric(inner, target_prior=[0.5, 0.5])
    metric.process(None, samples)
    with pytest.raises(ValueError, match='has 2 entries but there are 10'):
        metric.compute_metrics(metric.results)
    # 'estimated' without any training counts
    MessageHub.get_current_instance().update_info(CLASS_COUNTS_INFO_KEY, None)
    metric = SinkhornInferenceMetric(inner, target_prior='estimated')
    metric.process(None, samples)
    with pytest.raises(ValueError, match="'estimated' needs the training"):
        metric.compute_metrics(metric.results)
    # ... which a model calibrated for a uniform prior does not need
    metric = SinkhornInferenceMetric(inner, target_prior='estimated',
                                     calibration_prior='uniform')
    metric.process(None, samples)
    assert 'accuracy/top1' in metric.compute_metrics(metric.results)
    with pytest.raises(ValueError, match='needs pred_score'):
        metric.process(None, [dict(gt_label=torch.tensor([0]))])
    with pytest.raises(ValueError, match='scores must be a floating'):
        sinkhorn_prediction(torch.zeros(4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match='epsilon must be a positive'):
        sinkhorn_prediction(scores, None, float('inf'))
    assert parse_target_prior(None) == 'uniform'


# ---------------------------------------------------- across ranks and CLI
WORKER = textwrap.dedent('''
    import json, sys
    import torch
    import torch.distributed as torch_dist
    torch_dist.init_process_group('gloo')
    from mmengine.dataset import DefaultSampler
    from reot_mm.evaluation import ShotAccuracy
    from reot_mm.evaluation.sinkhorn_inference import SinkhornInferenceMetric
    from test_helpers_samples import load
    samples, counts = load(sys.argv[1])
    metric = SinkhornInferenceMetric(
        [ShotAccuracy(class_counts=counts, per_class=True)],
        target_prior='estimated', train_class_counts=counts, report_plain=True)
    indices = list(DefaultSampler(list(range(len(samples))), shuffle=False))
    for start in range(0, len(indices), 16):
        metric.process(None, [samples[i] for i in indices[start:start + 16]])
    out = metric.evaluate(len(samples))
    rank = torch_dist.get_rank()
    with open(f'{sys.argv[2]}/rank{rank}.json', 'w') as handle:
        json.dump(out, handle)
    torch_dist.barrier()  # every rank done before teardown
    torch_dist.destroy_process_group()
''')
HELPER = textwrap.dedent('''
    import torch
    def load(path):
        scores, labels, counts = torch.load(path)
        probs = torch.softmax(scores, 1)
        return [dict(pred_score=p, gt_label=torch.tensor([int(y)]))
                for p, y in zip(probs, labels)], counts
''')


def test_whole_set_across_two_gloo_ranks_equals_one_process(tmp_path):
    """mmengine collects every rank's samples (in dataset order, padding
    dropped) before the one Sinkhorn: 2 ranks = 1 process."""
    scores, labels = long_tail_scores(301)  # odd: the sampler pads
    torch.save((scores, labels, COUNTS), tmp_path / 'data.pt')
    (tmp_path / 'worker.py').write_text(WORKER)
    (tmp_path / 'test_helpers_samples.py').write_text(HELPER)
    run_torchrun(tmp_path / 'worker.py', tmp_path / 'data.pt', tmp_path,
                 env=subprocess_env(pythonpath=[tmp_path]))
    ranks = [json.loads((tmp_path / f'rank{r}.json').read_text())
             for r in (0, 1)]
    assert ranks[0] == ranks[1]

    single = SinkhornInferenceMetric(
        [ShotAccuracy(class_counts=COUNTS, per_class=True)],
        target_prior='estimated', train_class_counts=COUNTS, report_plain=True)
    probs = torch.softmax(scores, 1)
    single.process(None, [dict(pred_score=p, gt_label=torch.tensor([int(y)]))
                          for p, y in zip(probs, labels)])
    expected = single.evaluate(301)
    assert ranks[0].keys() == expected.keys()
    for key, value in expected.items():
        # Solver diagnostics: the residual depends in its last digits on the
        # summation order, which differs between processes with different
        # thread counts (1e-7 to 4e-7 seen), and so may the stopping check it is
        # compared against (checked every 10 iterations): both runs must have
        # converged to the metric's tolerance. The metrics must agree exactly.
        if key.endswith('marginal_error'):
            assert max(ranks[0][key], value) <= single.tol, key
            continue
        if key.endswith('iterations'):
            assert abs(ranks[0][key] - value) <= 10, key
            continue
        assert ranks[0][key] == pytest.approx(value, nan_ok=True), key


def test_tools_test_runs_the_sinkhorn_demo_config(tmp_path):
    """tools/test.py (real Runner, subprocess) with the whole-set Sinkhorn
    demo config on a checkpoint of the demo model."""
    from mmengine.config import Config
    from mmpretrain.registry import MODELS
    config = osp.join(ROOT, 'configs', 'demo',
                      'reot-sinkhorn_resnet8_100e_digitslt.py')
    cfg = Config.fromfile(config)
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    checkpoint = tmp_path / 'model.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, checkpoint)
    out = tmp_path / 'metrics.json'
    result = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'test.py'), config,
         str(checkpoint), '--work-dir', str(tmp_path / 'work'), '--out',
         str(out), '--out-item', 'metrics'],
        cwd=ROOT, env=subprocess_env(), capture_output=True, text=True,
        timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads(out.read_text())
    for key in ('accuracy/top1', 'shot/balanced', 'shot/few',
                'plain/accuracy/top1', 'plain/shot/balanced'):
        assert 0.0 <= metrics[key] <= 100.0, key
    # both wrapped metrics saw the same (re-assigned) predictions
    assert metrics['accuracy/top1'] == pytest.approx(metrics['shot/top1'],
                                                     abs=1e-4)
    assert metrics['sinkhorn/marginal_error'] < 1e-5
