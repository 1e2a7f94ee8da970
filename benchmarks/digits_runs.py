"""Shared launch and aggregation code of the digits-LT benchmarks.

Launch: :func:`train_and_test` runs ``tools/train.py`` and then, in the same
process (one interpreter start, one import of torch / OpenMMLab),
``tools/test.py --out preds.npz`` on the final checkpoint, i.e. on the test
split of the config (the periodic validation during training sees the val
split). The run directory gets ``done.json``; a second call with the same
work dir reuses it, so an interrupted sweep resumes where it stopped.
:func:`test_metrics` scores the dumped predictions: plain argmax, post-hoc
logit adjustment (Menon et al., "Long-tail learning via logit adjustment",
ICLR 2021, Eq. 3, τ = 1) or RE-OT's Sinkhorn inference (RE-OT §5, b uniform,
ε = 1, the settings of configs/demo/reot-sinkhorn_resnet8_100e_digitslt.py),
through the library functions of ``reot_mm.ot.test_time``.

Aggregation (pure Python, tested without training): mean ± std over seeds,
paired per-seed differences against a baseline, markdown tables.

Run as a script it is the worker of :func:`train_and_test`::

    python benchmarks/digits_runs.py [--test] CONFIG WORK_DIR SEED [KEY=VALUE ...]
"""
import argparse
import json
import math
import os
import os.path as osp
import statistics
import subprocess
import sys
from typing import Dict, Iterable, List, Optional, Sequence

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(ROOT, 'configs')
GROUPS = ('balanced', 'many', 'medium', 'few')
DONE = 'done.json'
PREDICTIONS = 'preds.npz'


# ------------------------------------------------------------------ launch
def config_path(name: str) -> str:
    """``'demo/ce_resnet8_100e_digitslt'`` -> the config file's path."""
    return name if name.endswith('.py') else osp.join(CONFIGS, f'{name}.py')


def last_val_metrics(work_dir: str, key: str = 'shot/balanced') -> dict:
    """The last scalar-log record holding ``key`` (the last validation on
    the val split) in the newest run under ``work_dir``. ``key`` may list
    alternatives, ``'shot/balanced|knn/balanced'`` (classifiers | k-NN of
    the contrastive pretraining)."""
    runs = sorted(d for d in os.listdir(work_dir) if osp.isfile(
        osp.join(work_dir, d, 'vis_data', 'scalars.json')))
    last = None
    for run in reversed(runs):
        with open(osp.join(work_dir, run, 'vis_data', 'scalars.json')) as f:
            for line in f:
                record = json.loads(line)
                if any(k in record for k in key.split('|')):
                    last = record
        if last is not None:
            return last
    raise RuntimeError(f'{work_dir} has no {key!r} in a scalar log')


def train_and_test(config: str, work_dir: str, seed: int,
                   options: Sequence[str] = (), test: bool = True) -> dict:
    """Train ``config`` with ``seed`` (and cfg ``options``), then (``test``)
    dump the final model's test-split predictions to ``work_dir/preds.npz``.

    Returns:
        dict: ``val``: the last val-split metrics of the training log;
        ``work_dir``; ``seconds``: wall time of the run.
    """
    done = osp.join(work_dir, DONE)
    if osp.isfile(done):
        with open(done) as handle:
            record = json.load(handle)
        if not test or osp.isfile(osp.join(work_dir, PREDICTIONS)):
            return record
    command = [sys.executable, osp.abspath(__file__)] + \
        (['--test'] if test else []) + [config_path(config), work_dir,
                                        str(seed), *options]
    env = dict(os.environ,
               OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '1'))
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True,
                            text=True)
    if result.returncode:
        raise RuntimeError(f'{" ".join(command)} failed:\n'
                           f'{result.stderr[-3000:]}')
    with open(done) as handle:
        return json.load(handle)


def _tool(name: str):
    """tools/<name>.py as a module (by path: ``test`` is also a stdlib
    package name)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        f'reot_mm_tools_{name}', osp.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _worker(argv=None) -> None:
    import time
    parser = argparse.ArgumentParser()
    parser.add_argument('config')
    parser.add_argument('work_dir')
    parser.add_argument('seed', type=int)
    parser.add_argument('--test', action='store_true')
    parser.add_argument('options', nargs='*')
    args = parser.parse_args(argv)
    train_tool, test_tool = _tool('train'), _tool('test')
    start = time.time()
    options = [f'randomness.seed={args.seed}', *args.options]
    train_tool.main([args.config, '--work-dir', args.work_dir,
                     '--cfg-options', *options])
    # before the test run's log dir exists
    val = last_val_metrics(args.work_dir, 'shot/balanced|knn/balanced')
    if args.test:
        with open(osp.join(args.work_dir, 'last_checkpoint')) as handle:
            checkpoint = handle.read().strip()
        test_tool.main([args.config, checkpoint, '--work-dir', args.work_dir,
                        '--out', osp.join(args.work_dir, PREDICTIONS),
                        '--cfg-options', *options])
    record = dict(val=val, work_dir=args.work_dir,
                  seconds=time.time() - start)
    with open(osp.join(args.work_dir, DONE), 'w') as handle:
        json.dump(record, handle)


# --------------------------------------------------------------- test split
def test_metrics(work_dir: str, rule: str = 'plain') -> Dict[str, float]:
    """Balanced / many / medium / few test accuracy of a run's dump.

    Args:
        work_dir: a :func:`train_and_test` directory (``preds.npz`` holds the
            test softmax, the labels, the training counts and thresholds).
        rule: ``'plain'`` (argmax), ``'logit_adjustment'`` (argmax of
            log p - log π_train) or ``'sinkhorn'`` (RE-OT Sinkhorn
            inference over the whole test split, b uniform, ε = 1).
    """
    import torch

    from reot_mm.evaluation.dump_io import load_predictions
    from reot_mm.evaluation.shot_metric import shot_accuracies
    from reot_mm.ot.test_time import logit_adjustment, sinkhorn_prediction
    data = load_predictions(osp.join(work_dir, PREDICTIONS))
    log_p = data['pred_score'].double().clamp_min(1e-30).log()
    counts = data['class_counts']
    if rule == 'plain':
        pred = log_p.argmax(1)
    elif rule == 'logit_adjustment':
        prior = torch.as_tensor(counts, dtype=torch.float64)
        pred = logit_adjustment(log_p, prior / prior.sum(), 1.0).argmax(1)
    elif rule == 'sinkhorn':
        uniform = torch.full((log_p.shape[1], ), 1.0 / log_p.shape[1],
                             dtype=torch.float64)
        pred = sinkhorn_prediction(log_p, uniform, 1.0).pred_label
    else:
        raise ValueError("rule must be 'plain', 'logit_adjustment' or "
                         f"'sinkhorn', got {rule!r}")
    many, few = data['shot_thresholds']
    result = shot_accuracies(pred.numpy(), data['gt_label'].numpy(), counts,
                             many, few)
    return {group: result[group] for group in GROUPS if group in result}


# -------------------------------------------------------------- aggregation
def mean_std(values: Iterable[float], digits: int = 2) -> str:
    """``'mean ± std'`` (sample std, n - 1); one value: ``'mean'``; none or
    a group missing in a run (no tested class): ``'–'``."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return '–'
    if len(values) == 1:
        return f'{values[0]:.{digits}f}'
    return (f'{statistics.mean(values):.{digits}f} ± '
            f'{statistics.stdev(values):.{digits}f}')


def paired_difference(method: Dict[int, float], baseline: Dict[int, float]
                      ) -> Optional[dict]:
    """Per-seed differences ``method[s] - baseline[s]`` over the seeds both
    have: ``n``, ``mean``, ``std`` (sample, n - 1; 0 for one seed),
    ``wins`` / ``ties`` / ``losses`` (difference > 0 / == 0 / < 0), or None
    without a common seed."""
    seeds = sorted(set(method) & set(baseline))
    if not seeds:
        return None
    diffs = [method[s] - baseline[s] for s in seeds]
    return dict(n=len(diffs), mean=statistics.mean(diffs),
                std=statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
                wins=sum(d > 1e-9 for d in diffs),
                ties=sum(abs(d) <= 1e-9 for d in diffs),
                losses=sum(d < -1e-9 for d in diffs), diffs=diffs)


def format_paired(diff: Optional[dict]) -> str:
    """``'+1.20 ± 0.80 (4/5 won, 1 tied)'`` for :func:`paired_difference`."""
    if diff is None:
        return '–'
    tied = f', {diff["ties"]} tied' if diff['ties'] else ''
    return (f'{diff["mean"]:+.2f} ± {diff["std"]:.2f} '
            f'({diff["wins"]}/{diff["n"]} won{tied})')


def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A GitHub markdown table."""
    lines = ['| ' + ' | '.join(header) + ' |',
             '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
    return '\n'.join(lines)


def group_by(results: List[dict], *keys: str) -> Dict[tuple, List[dict]]:
    """Records grouped by the values of ``keys`` (first-seen order)."""
    groups: Dict[tuple, List[dict]] = {}
    for record in results:
        groups.setdefault(tuple(record[k] for k in keys), []).append(record)
    return groups


if __name__ == '__main__':
    _worker()
