"""Aggregation of the digits-LT benchmarks (benchmarks/digits_runs.py,
digits_select_hparams.py, digits_imbalance_sweep.py) on synthetic results:
mean ± std, paired differences, the choice on val, the sweep tables. No
training."""
import os.path as osp
import statistics
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'benchmarks'))
import digits_imbalance_sweep as sweep  # noqa: E402
import digits_runs  # noqa: E402
import digits_select_hparams as select  # noqa: E402


def test_mean_std_uses_sample_std_and_skips_missing_groups():
    assert digits_runs.mean_std([80.0, 84.0, 88.0]) == '84.00 ± 4.00'
    assert digits_runs.mean_std([90.0]) == '90.00'
    # a run whose few group had no class contributes nothing
    assert digits_runs.mean_std([70.0, float('nan'), 74.0]) == '72.00 ± 2.83'
    assert digits_runs.mean_std([float('nan')]) == '–'


def test_paired_difference_pairs_by_seed():
    method = {0: 90.0, 1: 85.0, 2: 88.0, 3: 80.0}
    baseline = {0: 89.0, 1: 86.0, 2: 88.0, 4: 99.0}  # seed 3 / 4 unpaired
    diff = digits_runs.paired_difference(method, baseline)
    assert diff['n'] == 3 and diff['diffs'] == [1.0, -1.0, 0.0]
    assert diff['mean'] == pytest.approx(0.0)
    assert diff['std'] == pytest.approx(statistics.stdev([1.0, -1.0, 0.0]))
    assert (diff['wins'], diff['ties'], diff['losses']) == (1, 1, 1)
    assert digits_runs.format_paired(diff) == '+0.00 ± 1.00 (1/3 won, 1 tied)'
    assert digits_runs.paired_difference({0: 1.0}, {1: 1.0}) is None
    assert digits_runs.format_paired(None) == '–'
    # the paired std removes the seed effect the unpaired stds carry
    shifted = digits_runs.paired_difference(
        {0: 80.0, 1: 90.0, 2: 85.0}, {0: 79.0, 1: 89.0, 2: 84.0})
    assert shifted['mean'] == pytest.approx(1.0)
    assert shifted['std'] == pytest.approx(0.0) and shifted['wins'] == 3


def test_choose_takes_highest_mean_and_keeps_shipped_on_ties():
    assert select.choose({'a': [80, 90], 'b': [86, 86], 'c': [70, 99]}) == 'b'
    assert select.choose({'shipped': [85, 87], 'other': [86, 86]}) == 'shipped'
    table = select.search_table({'a': [80.0, 90.0], 'b': [86.0, 86.0]},
                                [0, 1], 'b')
    lines = table.splitlines()
    assert lines[0] == '| candidate | seed 0 | seed 1 | mean ± std |'
    assert lines[3] == '| **b** | 86.0 | 86.0 | 86.00 ± 0.00 |'


def test_sweep_tables_on_synthetic_results():
    results = {}
    for seed, (bs, reot) in enumerate([(88.0, 90.0), (86.0, 85.0),
                                       (90.0, 93.0)]):
        results[(50, 'Balanced Softmax', seed)] = dict(
            balanced=bs, many=99.0, medium=90.0, few=80.0)
        # no few-shot class at this ρ: the group is missing
        results[(50, 'RE-OT (shipped schedule, Eq. 34 ramp)', seed)] = dict(
            balanced=reot, many=98.0, medium=91.0)
    text = sweep.sweep_tables(results, [50], [0, 1, 2])
    lines = text.splitlines()
    assert lines[0] == '### ρ = 50'
    assert lines[2].startswith('| method | seeds | balanced | many | medium '
                               '| few | Δ balanced vs Balanced Softmax')
    bs_row = next(line for line in lines if line.startswith('| Balanced'))
    assert bs_row == ('| Balanced Softmax | 3 | 88.00 ± 2.00 | 99.00 ± 0.00 '
                      '| 90.00 ± 0.00 | 80.00 ± 0.00 | (baseline) |')
    reot_row = next(line for line in lines if line.startswith('| RE-OT'))
    # differences +2, -1, +3: mean 1.33, sample std 2.08, 2 of 3 won
    assert reot_row.endswith('| – | +1.33 ± 2.08 (2/3 won) |')
    # rows without a finished run are left out
    assert 'BCL' not in text


def test_sweep_rejects_rho_beyond_the_head(monkeypatch, capsys):
    monkeypatch.setattr(sys, 'argv', ['sweep', '--rhos', '200',
                                      '--report-only'])
    with pytest.raises(SystemExit):
        sweep.main()
    assert '--rhos must lie in [1, 100]' in capsys.readouterr().err


def test_gml_chain_runs_teacher_first():
    chains = sweep.chains(50, 0, list(sweep.RUNS), '/tmp')
    assert chains[0] == ['gml-teacher', 'gml', 'gml-control']
    assert sorted(r for c in chains for r in c) == sorted(sweep.RUNS)
