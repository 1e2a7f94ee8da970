"""ShotAccuracy: hand-computed cases, count sources and error cases."""
import json
import math
import uuid

import pytest
import torch
from mmengine.logging import MessageHub
from mmengine.registry import METRICS

import reot_mm  # noqa: F401  (registers ShotAccuracy)

# Hand-made example, 5 classes with training counts on the group edges:
#   class:        0     1     2     3     4
#   train count:  101   100   20    19    500
#   group:        many  med   med   few   many   (many > 100, few < 20)
# Test samples (gt -> correct / total):
#   class 0: 3 / 4, class 1: 1 / 2, class 2: 0 / 1, class 3: 4 / 4,
#   class 4: 1 / 1
# => top1 = 9 / 12 = 75 %
#    per class = 75, 50, 0, 100, 100; balanced = 325 / 5 = 65 %
#    many: class mean (75 + 100) / 2 = 87.5, pooled (3 + 1) / 5 = 80
#    medium: class mean (50 + 0) / 2 = 25, pooled 1 / 3 = 33.33...
#    few: 100 either way
COUNTS = [101, 100, 20, 19, 500]
PAIRS = [  # (gt, pred)
    (0, 0), (0, 0), (0, 0), (0, 3),
    (1, 1), (1, 2),
    (2, 4),
    (3, 3), (3, 3), (3, 3), (3, 3),
    (4, 4),
]
CLASSES = tuple('abcde')


def _samples(pairs, num_classes=5, with_label=True, with_score=True):
    """mmpretrain-style data sample dicts (what DataSample.to_dict gives)."""
    samples = []
    for gt, pred in pairs:
        sample = {'gt_label': torch.tensor([gt])}
        if with_label:
            sample['pred_label'] = torch.tensor([pred])
        if with_score:
            score = torch.full((num_classes, ), 0.1)
            score[pred] = 0.9
            sample['pred_score'] = score
        samples.append(sample)
    return samples


def _evaluate(metric, pairs, classes=CLASSES, **sample_kwargs):
    metric.dataset_meta = {'classes': classes}
    samples = _samples(pairs, num_classes=len(classes), **sample_kwargs)
    # Two batches, as a loop would feed them.
    metric.process(None, samples[:5])
    metric.process(None, samples[5:])
    return metric.evaluate(len(samples))


@pytest.fixture
def fresh_hub():
    """A new MessageHub instance, which becomes the current one."""
    return MessageHub.get_instance(f'shot-test-{uuid.uuid4()}')


def test_hand_computed_class_average():
    metric = METRICS.build(
        dict(type='ShotAccuracy', class_counts=COUNTS, per_class=True))
    result = _evaluate(metric, PAIRS)
    assert result['shot/top1'] == pytest.approx(75.0)
    assert result['shot/balanced'] == pytest.approx(65.0)
    assert result['shot/many'] == pytest.approx(87.5)
    assert result['shot/medium'] == pytest.approx(25.0)
    assert result['shot/few'] == pytest.approx(100.0)
    assert result['shot/per_class'] == pytest.approx([75, 50, 0, 100, 100])


def test_hand_computed_sample_average_and_prefix():
    metric = METRICS.build(
        dict(
            type='ShotAccuracy',
            class_counts=COUNTS,
            group_average='sample',
            prefix='lt'))
    result = _evaluate(metric, PAIRS)
    assert result['lt/many'] == pytest.approx(80.0)
    assert result['lt/medium'] == pytest.approx(100 / 3)
    assert result['lt/few'] == pytest.approx(100.0)
    assert result['lt/top1'] == pytest.approx(75.0)
    assert 'lt/per_class' not in result


def test_custom_thresholds_move_classes():
    # many > 19 and few < 19: classes 0, 1, 2, 4 are many, class 3 (19)
    # is medium, no class is few.
    metric = METRICS.build(
        dict(
            type='ShotAccuracy',
            class_counts=COUNTS,
            many_threshold=19,
            few_threshold=19))
    result = _evaluate(metric, PAIRS)
    # many: (75 + 50 + 0 + 100) / 4
    assert result['shot/many'] == pytest.approx(56.25)
    assert result['shot/medium'] == pytest.approx(100.0)
    assert 'shot/few' not in result


def test_prediction_source():
    metric = METRICS.build(dict(type='ShotAccuracy', class_counts=COUNTS))
    # Only scores: the argmax is the prediction.
    only_scores = _evaluate(metric, PAIRS, with_label=False)
    assert only_scores['shot/top1'] == pytest.approx(75.0)

    # pred_label wins over pred_score when both exist.
    metric = METRICS.build(dict(type='ShotAccuracy', class_counts=COUNTS))
    metric.dataset_meta = {'classes': CLASSES}
    sample = {
        'gt_label': torch.tensor([1]),
        'pred_label': torch.tensor([1]),
        'pred_score': torch.tensor([0.9, 0.1, 0.0, 0.0, 0.0]),
    }
    metric.process(None, [sample])
    assert metric.evaluate(1)['shot/top1'] == pytest.approx(100.0)


def test_absent_classes_and_empty_group():
    # Class 2 (the only few-shot class) has no test sample: it is skipped in
    # 'balanced', its per-class entry is nan and the 'few' key is omitted.
    metric = METRICS.build(
        dict(type='ShotAccuracy', class_counts=[200, 50, 5], per_class=True))
    pairs = [(0, 0), (0, 1), (1, 1)]
    result = _evaluate(metric, pairs, classes=('x', 'y', 'z'))
    assert result['shot/balanced'] == pytest.approx((50 + 100) / 2)
    assert result['shot/many'] == pytest.approx(50.0)
    assert result['shot/medium'] == pytest.approx(100.0)
    assert 'shot/few' not in result
    assert math.isnan(result['shot/per_class'][2])


def test_counts_from_message_hub(fresh_hub):
    fresh_hub.update_info('reot_mm/class_counts', COUNTS)
    metric = METRICS.build(dict(type='ShotAccuracy'))
    result = _evaluate(metric, PAIRS)
    assert result['shot/many'] == pytest.approx(87.5)
    assert result['shot/few'] == pytest.approx(100.0)


def test_explicit_counts_win_over_message_hub(fresh_hub):
    # The hub says every class is few-shot; the explicit counts must be used.
    fresh_hub.update_info('reot_mm/class_counts', [1] * 5)
    metric = METRICS.build(dict(type='ShotAccuracy', class_counts=COUNTS))
    result = _evaluate(metric, PAIRS)
    assert result['shot/many'] == pytest.approx(87.5)


@pytest.mark.parametrize('kind', ['list.json', 'dict.json', 'txt'])
def test_counts_from_file(tmp_path, kind):
    path = tmp_path / f'counts.{kind.split(".")[-1]}'
    if kind == 'list.json':
        path.write_text(json.dumps(COUNTS))
    elif kind == 'dict.json':  # the ClassStatisticsHook save_file format
        path.write_text(json.dumps({'class_counts': COUNTS}))
    else:
        path.write_text('\n'.join(str(c) for c in COUNTS) + '\n')
    metric = METRICS.build(
        dict(type='ShotAccuracy', class_counts_file=str(path)))
    result = _evaluate(metric, PAIRS)
    assert result['shot/medium'] == pytest.approx(25.0)


def test_error_without_counts(fresh_hub):
    metric = METRICS.build(dict(type='ShotAccuracy'))
    with pytest.raises(ValueError, match='reot_mm/class_counts'):
        _evaluate(metric, PAIRS)


def test_error_on_length_mismatch_with_classes():
    metric = METRICS.build(
        dict(type='ShotAccuracy', class_counts=COUNTS[:4]))
    with pytest.raises(ValueError, match='4 class counts.*5 classes'):
        _evaluate(metric, PAIRS)


def test_error_on_label_beyond_counts():
    metric = METRICS.build(
        dict(type='ShotAccuracy', class_counts=COUNTS[:4]))
    metric.process(None, _samples([(4, 4)]))  # no dataset_meta here
    with pytest.raises(ValueError, match='gt_label'):
        metric.evaluate(1)


@pytest.mark.parametrize(
    'kwargs, match',
    [
        (dict(class_counts=[10, -1]), 'class_counts'),
        (dict(class_counts=[[1, 2]]), 'class_counts'),
        (dict(class_counts=[1], many_threshold=10,
              few_threshold=20), 'few_threshold'),
        (dict(class_counts=[1], group_average='median'), 'group_average'),
    ])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        METRICS.build(dict(type='ShotAccuracy', **kwargs))
