"""tools/analysis/plot_long_tail.py: every subcommand writes a PNG from tiny
synthetic inputs, and bad input ends with a clear error."""
import json
import os.path as osp
import sys

import numpy as np
import pytest

from reot_mm.evaluation.dump_io import save_predictions

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis'))
import plot_long_tail  # noqa: E402

COUNTS = np.array([60, 30, 12, 6, 2], dtype=np.float64)


def fake_dump(path, counts=COUNTS, seed=0, per_class=8):
    rng = np.random.default_rng(seed)
    k = len(COUNTS)
    labels = np.repeat(np.arange(k), per_class)
    logits = rng.normal(size=(labels.size, k))
    logits[np.arange(labels.size), labels] += 2.0
    scores = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    arrays = {'pred_score': scores.astype(np.float32), 'gt_label': labels,
              'shot_thresholds': np.array([40.0, 10.0])}
    if counts is not None:
        arrays['class_counts'] = np.asarray(counts, dtype=np.float64)
    save_predictions(str(path), arrays)
    return str(path)


def fake_work_dir(root, with_lambda=True):
    run = root / '20260101_000000' / 'vis_data'
    run.mkdir(parents=True)
    lines = []
    for it in range(5, 101, 5):
        record = {'lr': 0.1, 'loss': 2.0 / it, 'epoch': it // 5,
                  'iter': it, 'step': it}
        if with_lambda:
            record['reot_lambda'] = min(1.0, max(0.0, (it - 10) / 20))
        lines.append(json.dumps(record))
        if it % 25 == 0:
            lines.append(json.dumps({'shot/balanced': 50 + it / 4,
                                     'step': it // 5}))
    (run / 'scalars.json').write_text('\n'.join(lines) + '\n')
    return str(root)


def assert_png(path):
    with open(path, 'rb') as handle:
        head = handle.read(8)
    assert head == b'\x89PNG\r\n\x1a\n'
    assert 5_000 < osp.getsize(path) < 200_000


def run_main(*argv):
    plot_long_tail.main([str(a) for a in argv])


def test_per_class_figure(tmp_path):
    a = fake_dump(tmp_path / 'a.npz')
    b = fake_dump(tmp_path / 'b.npz', seed=1)
    out = tmp_path / 'per_class.png'
    run_main('per-class', a, b, '--labels', 'A', 'B', '--out', out)
    assert_png(out)


def test_per_class_needs_class_counts(tmp_path):
    dump = fake_dump(tmp_path / 'plain.npz', counts=None)
    with pytest.raises(SystemExit, match='holds no class_counts'):
        run_main('per-class', dump, '--out', tmp_path / 'x.png')
    assert not (tmp_path / 'x.png').exists()
    # the counts can come from a file instead
    counts = tmp_path / 'counts.json'
    counts.write_text(json.dumps(COUNTS.tolist()))
    run_main('per-class', dump, '--train-counts', counts, '--out',
             tmp_path / 'y.png')
    assert_png(tmp_path / 'y.png')


def test_per_class_label_count_must_match(tmp_path):
    dump = fake_dump(tmp_path / 'a.npz')
    with pytest.raises(SystemExit, match='2 names for 1 inputs'):
        run_main('per-class', dump, '--labels', 'A', 'B', '--out',
                 tmp_path / 'x.png')


def test_training_figure(tmp_path):
    reot = fake_work_dir(tmp_path / 'reot')
    ce = fake_work_dir(tmp_path / 'ce', with_lambda=False)
    out = tmp_path / 'training.png'
    run_main('training', ce, reot, '--labels', 'CE', 'RE-OT', '--out', out)
    assert_png(out)


def test_training_needs_a_scalar_log(tmp_path):
    (tmp_path / 'empty').mkdir()
    with pytest.raises(SystemExit, match='vis_data/scalars.json'):
        run_main('training', tmp_path / 'empty', '--out', tmp_path / 'x.png')
    bad = tmp_path / 'bad.json'
    bad.write_text(json.dumps({'lr': 0.1}) + '\n')
    with pytest.raises(SystemExit, match='no training record'):
        run_main('training', bad, '--out', tmp_path / 'x.png')


def test_confusion_figure(tmp_path):
    out = tmp_path / 'confusion.png'
    run_main('confusion', fake_dump(tmp_path / 'a.npz'), '--out', out)
    assert_png(out)


def test_confusion_rejects_a_non_dump(tmp_path):
    path = tmp_path / 'a.npz'
    path.write_bytes(b'not an archive')
    with pytest.raises(SystemExit, match='not a readable .npz'):
        run_main('confusion', path, '--out', tmp_path / 'x.png')


def fake_results(path):
    dists = ['forward-5', 'uniform', 'backward-5']
    results = {m: {i: {d: [70 + 5 * j + s for s in range(3)]
                       for j, d in enumerate(dists)}
                   for i in ('plain argmax', 'Sinkhorn, b EM')}
               for m in ('CE', 'RE-OT')}
    path.write_text(json.dumps({'distributions': dists, 'seeds': [0, 1, 2],
                                'results': results}))
    return path


def test_shift_figure(tmp_path):
    out = tmp_path / 'shift.png'
    run_main('shift', fake_results(tmp_path / 'r.json'), '--out', out)
    assert_png(out)
    out = tmp_path / 'one.png'
    run_main('shift', tmp_path / 'r.json', '--methods', 'RE-OT',
             '--inferences', 'Sinkhorn, b EM', '--out', out)
    assert_png(out)


def test_shift_bad_input(tmp_path):
    path = fake_results(tmp_path / 'r.json')
    with pytest.raises(SystemExit, match=r"--methods \['BCL'\] not in"):
        run_main('shift', path, '--methods', 'BCL', '--out',
                 tmp_path / 'x.png')
    record = json.loads(path.read_text())
    del record['results']['CE']['plain argmax']['uniform']
    path.write_text(json.dumps(record))
    with pytest.raises(SystemExit, match="no accuracy for \\['uniform'\\]"):
        run_main('shift', path, '--out', tmp_path / 'x.png')
    path.write_text(json.dumps({'rows': []}))
    with pytest.raises(SystemExit, match='expected keys "distributions"'):
        run_main('shift', path, '--out', tmp_path / 'x.png')


def test_out_must_be_png(tmp_path):
    with pytest.raises(SystemExit, match='must end with .png'):
        run_main('confusion', fake_dump(tmp_path / 'a.npz'), '--out',
                 tmp_path / 'x.pdf')
