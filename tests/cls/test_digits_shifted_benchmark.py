"""benchmarks/digits_shifted_test.py without training: the inference rows on
synthetic scores, the table, and the markdown that keeps its prose."""
import os.path as osp
import sys

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'benchmarks'))
import digits_shifted_test as bench  # noqa: E402

from reot_mm.cls.datasets import TEST_DISTRIBUTIONS  # noqa: E402


def synthetic_scores(n_per_class=(30, 10, 5, 3, 2), seed=0):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((n, ), c) for c, n in
                        enumerate(n_per_class)])
    logits = torch.randn(labels.numel(), len(n_per_class), generator=gen)
    logits[torch.arange(labels.numel()), labels] += 1.5
    return torch.log_softmax(logits, 1), labels


def test_every_inference_row_is_computed():
    log_p, labels = synthetic_scores()
    counts = torch.tensor([50.0, 20.0, 8.0, 4.0, 2.0], dtype=torch.float64)
    true = torch.bincount(labels).double()
    preds = bench.predictions(log_p, counts, 'train', 3.0, true / true.sum())
    assert set(preds) == set(bench.INFERENCES)
    assert torch.equal(preds['plain argmax'], log_p.argmax(1))
    # logit adjustment: argmax of log p - log π_train (Menon et al., Eq. 3)
    adjusted = (log_p - (counts / counts.sum()).log().float()).argmax(1)
    assert torch.equal(preds['LA (train prior)'], adjusted)
    # Sinkhorn with b uniform spreads the 50 predictions over the classes
    # (soft column sums 10 each; argmax rounding moves a few), while the
    # test set and the plain argmax are head-heavy
    hist = torch.bincount(preds['Sinkhorn, b uniform'], minlength=5)
    assert 7 <= hist.min() and hist.max() <= 13
    assert torch.bincount(log_p.argmax(1), minlength=5).max() >= 20
    # only the MAP-EM row when choosing α
    only = bench.predictions(log_p, counts, 'train', 3.0, only_map=True)
    assert list(only) == ['Sinkhorn, b MAP-EM']
    assert torch.equal(only['Sinkhorn, b MAP-EM'],
                       preds['Sinkhorn, b MAP-EM'])


def test_table_and_markdown(tmp_path):
    dists = list(TEST_DISTRIBUTIONS)
    results = {'CE': {'plain argmax': {d: [90.0, 92.0] for d in dists}}}
    lines = bench.table(results, dists).splitlines()
    assert lines[0].startswith('| method | inference | F-50 | F-25 |')
    assert lines[0].endswith('B-25 | B-50 | mean |')
    assert lines[2] == '| CE | plain argmax | ' + ' | '.join(
        ['91.0 ± 1.4'] * 11) + ' | 91.0 |'
    path = tmp_path / 'r.md'
    path.write_text(f'old table\n\n{bench.MARKER}\n\nprose kept\n')
    bench.write_markdown('new table\n', str(path))
    text = path.read_text()
    assert text.startswith('new table\n') and 'old table' not in text
    assert text.endswith(f'{bench.MARKER}\n\nprose kept\n')
