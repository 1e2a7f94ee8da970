"""Test-agnostic evaluation on digits-LT: accuracy under shifted test label distributions.

The protocol of SADE ("Self-Supervised Aggregation of Diverse Experts for
Test-Agnostic Long-Tailed Recognition", NeurIPS 2022, arXiv 2107.09249): the
balanced test split is imbalanced in the training order (Forward-ρ: the
training head keeps the most test images) or against it (Backward-ρ),
ρ in 50, 25, 10, 5, 2, plus Uniform; 11 test sets
(``DigitsLT(split='test', test_distribution=...)``, counts from
``reot_mm.cls.datasets.shifted_test_counts``). RE-OT (Shi et al., NeurIPS
2023, §5) claims that estimating the test prior b in Sinkhorn inference helps
under such a shift; this script measures it.

For every training method (CE, Balanced Softmax, RE-OT: the demo configs) and
seed it trains the model with tools/train.py, dumps its predictions with
tools/test.py on the validation split and on the 11 test sets, and evaluates
each dump with (all from ``reot_mm.ot``, no labels used by any correction):

* plain argmax;
* logit adjustment with the training prior (Menon et al., ICLR 2021, τ = 1);
* Sinkhorn inference with b uniform (RE-OT §5 = OTLM Algorithm 1, ε = 1);
* Sinkhorn inference with b estimated by EM (Saerens et al. 2002) and by
  MAP-EM (Dirichlet pseudo-count α per class, α chosen on the validation
  split, see below); the EM is told the prior the model's softmax is
  calibrated for: the training prior for CE, uniform for the prior-corrected
  losses;
* OTLM (Peng et al., ICLR 2022, Eq. 12: W fitted on the unlabeled test
  predictions, μ uniform, λ 1, Adam 20 steps, lr 1e-3, wd 1e-3: the defaults
  of tools/posthoc.py, not tuned here);
* for reference, Sinkhorn inference with b = the test set's true class
  distribution (an oracle: not test-agnostic).

α of MAP-EM is chosen on the balanced validation split (20 images per class),
subsampled with the same count function to Uniform and Forward/Backward
ρ = 2, 5, 10 (ρ = 25, 50 need at least 25 images per class): the α of the
grid with the best mean accuracy over methods, seeds and these 7 sets.

Writes the markdown table (rows method x inference, columns the 11
distributions, top-1 accuracy mean ± std over seeds) to
``docs/results/digits_shifted.md``, the results to
``docs/results/digits_shifted.json`` and figures to ``docs/figures/``
(tools/analysis/plot_long_tail.py; needs ``reot_mm[plots]``)::

    OMP_NUM_THREADS=1 python benchmarks/digits_shifted_test.py --jobs 2 \\
        --seeds 0 1 2 [--reuse]
"""
import argparse
import importlib.util
import json
import os
import os.path as osp
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.join(ROOT, 'benchmarks'))
# the shared launch (tools/train.py in one worker process) and aggregation
from digits_runs import DONE, mean_std, train_and_test  # noqa: E402

METHODS = {
    'CE': ('ce_resnet8_100e_digitslt', 'train'),
    'Balanced Softmax': ('bsoftmax_resnet8_100e_digitslt', 'uniform'),
    'RE-OT': ('reot_resnet8_100e_digitslt', 'uniform'),
}
INFERENCES = ('plain argmax', 'LA (train prior)', 'Sinkhorn, b uniform',
              'Sinkhorn, b EM', 'Sinkhorn, b MAP-EM', 'OTLM (μ uniform)',
              'Sinkhorn, b true (oracle)')
ALPHAS = (0.3, 1.0, 3.0, 10.0, 30.0)
TEST_PER_CLASS, VAL_PER_CLASS = 50, 20
MARKER = '## Reading the table'
RESULTS_MD = osp.join(ROOT, 'docs', 'results', 'digits_shifted.md')
RESULTS_JSON = osp.join(ROOT, 'docs', 'results', 'digits_shifted.json')
FIGURES = osp.join(ROOT, 'docs', 'figures')
COMMAND = ('OMP_NUM_THREADS=1 python benchmarks/digits_shifted_test.py '
           '--jobs 2 --seeds {seeds}')


# ------------------------------------------------------------- dumping
def dump_all(config: str, checkpoint: str, out_dir: str) -> None:
    """tools/test.py on the val split and the 11 test sets, in one process."""
    from reot_mm.cls.datasets import TEST_DISTRIBUTIONS
    spec = importlib.util.spec_from_file_location(
        'reot_test_tool', osp.join(ROOT, 'tools', 'test.py'))
    test_tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(test_tool)
    work_dir = osp.join(out_dir, 'test_runs')
    runs = [('val', ['test_dataloader.dataset.split=val'])] + [
        (d, [f'test_dataloader.dataset.test_distribution={d}'])
        for d in TEST_DISTRIBUTIONS]
    for name, options in runs:
        test_tool.main([config, checkpoint, '--work-dir', work_dir, '--out',
                        osp.join(out_dir, f'{name}.npz'), '--cfg-options',
                        *options, f'experiment_name=test_{name}'])


def train_and_dump(method: str, seed: int, work_root: str, reuse: bool):
    config = osp.join(ROOT, 'configs', 'demo', f'{METHODS[method][0]}.py')
    work_dir = osp.join(work_root, f'{METHODS[method][0]}_seed{seed}')
    checkpoint = osp.join(work_dir, 'epoch_100.pth')
    dumps = osp.join(work_dir, 'dumps')
    if not (reuse and osp.isfile(checkpoint)):
        if osp.isfile(osp.join(work_dir, DONE)):
            os.remove(osp.join(work_dir, DONE))  # train again
        train_and_test(config, work_dir, seed, test=False)
    if not (reuse and osp.isfile(osp.join(dumps, 'backward-50.npz'))):
        os.makedirs(dumps, exist_ok=True)
        subprocess.run([sys.executable, __file__, '--dump', config,
                        checkpoint, dumps], check=True, cwd=ROOT,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return work_dir, dumps


# ----------------------------------------------------------- inference
def log_probs(path: str):
    import torch
    from reot_mm.evaluation.dump_io import load_predictions
    data = load_predictions(path)
    if data.get('class_counts') is None:
        raise ValueError(f'{path} holds no training class counts')
    # fp32 as tools/posthoc.py: the EM works in fp64 inside, and OTLM's
    # implicit Sinkhorn gradient is several times slower in fp64
    log_p = torch.log_softmax(data['pred_score'].clamp_min(1e-30).log(), 1)
    return log_p, data['gt_label'], data['class_counts']


def predictions(log_p, counts, calibration: str, alpha: float,
                true_prior=None, only_map=False) -> dict:
    """Label predictions of every inference of the table for one dump."""
    from reot_mm.ot import (apply_otlm, fit_otlm, logit_adjustment,
                            resolve_target_prior, sinkhorn_prediction)

    def sinkhorn(b):
        return sinkhorn_prediction(log_p, b, 1.0, warn=False).pred_label

    def em(smoothing):
        return resolve_target_prior('estimated', log_p, counts,
                                    calibration_prior=calibration,
                                    em_smoothing=smoothing)

    if only_map:
        return {'Sinkhorn, b MAP-EM': sinkhorn(em(alpha))}
    prior = counts / counts.sum()
    fit = fit_otlm(log_p, None, lam=1.0, iters=20, lr=1e-3,
                   weight_decay=1e-3)
    out = {
        'plain argmax': log_p.argmax(1),
        'LA (train prior)': logit_adjustment(log_p, prior).argmax(1),
        'Sinkhorn, b uniform': sinkhorn(None),
        'Sinkhorn, b EM': sinkhorn(em(0.0)),
        'Sinkhorn, b MAP-EM': sinkhorn(em(alpha)),
        'OTLM (μ uniform)': apply_otlm(fit.W, log_p, None, 1.0,
                                       warn=False).pred_label,
    }
    if true_prior is not None:
        out['Sinkhorn, b true (oracle)'] = sinkhorn(true_prior)
    return out


def accuracy(pred, labels) -> float:
    return 100.0 * float((pred == labels).double().mean())


def choose_alpha(dumps: dict, seeds) -> tuple:
    """α of MAP-EM with the best mean accuracy on shifted val subsets."""
    import numpy as np
    from reot_mm.cls.datasets import (TEST_DISTRIBUTIONS, shifted_test_counts,
                                      subsample_long_tailed)
    scores = {}
    for alpha in ALPHAS:
        values = []
        for (method, seed), folder in dumps.items():
            log_p, labels, counts = log_probs(osp.join(folder, 'val.npz'))
            for dist in TEST_DISTRIBUTIONS:
                try:
                    wanted = shifted_test_counts(VAL_PER_CLASS, counts, dist)
                except ValueError:
                    continue  # ρ > 20 leaves a class without a val image
                rows = subsample_long_tailed(labels.numpy(), wanted, seed=0)
                pred = predictions(log_p[rows], counts, METHODS[method][1],
                                   alpha, only_map=True)
                values.append(accuracy(pred['Sinkhorn, b MAP-EM'],
                                       labels[rows]))
        scores[alpha] = float(np.mean(values))
    return max(scores, key=scores.get), scores


def evaluate(dumps: dict, alpha: float) -> dict:
    """method -> inference -> distribution -> [accuracy per seed]."""
    import torch
    from reot_mm.cls.datasets import TEST_DISTRIBUTIONS, shifted_test_counts
    results = {m: {i: {d: [] for d in TEST_DISTRIBUTIONS} for i in INFERENCES}
               for m in METHODS}
    for (method, seed), folder in sorted(dumps.items(),
                                         key=lambda kv: kv[0][1]):
        for dist in TEST_DISTRIBUTIONS:
            log_p, labels, counts = log_probs(osp.join(folder, f'{dist}.npz'))
            true = torch.tensor(shifted_test_counts(TEST_PER_CLASS, counts,
                                                    dist), dtype=torch.float64)
            preds = predictions(log_p, counts, METHODS[method][1], alpha,
                                true / true.sum())
            for name, pred in preds.items():
                results[method][name][dist].append(accuracy(pred, labels))
    return results


# ---------------------------------------------------------------- report
def short(dist: str) -> str:
    return dist.replace('forward-', 'F-').replace('backward-', 'B-').replace(
        'uniform', 'Unif.')


def table(results: dict, dists) -> str:
    import statistics
    lines = ['| method | inference | ' + ' | '.join(short(d) for d in dists)
             + ' | mean |', '|---|---|' + '---|' * (len(dists) + 1)]
    for method, rows in results.items():
        for inference, row in rows.items():
            cells = [mean_std(row[d], digits=1) for d in dists]
            overall = statistics.mean(statistics.mean(row[d]) for d in dists)
            lines.append(f'| {method} | {inference} | ' + ' | '.join(cells)
                         + f' | {overall:.1f} |')
    return '\n'.join(lines)


def write_markdown(text: str, path: str = RESULTS_MD) -> None:
    """Write the generated part; keep the prose from MARKER on, if any."""
    kept = ''
    if osp.isfile(path):
        with open(path, encoding='utf-8') as handle:
            old = handle.read()
        if MARKER in old:
            kept = '\n' + old[old.index(MARKER):]
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as handle:
        handle.write(text + kept)


def figures(record: dict, runs: dict, seed: int) -> None:
    """The shift figure, per-class and training curves of one seed."""
    plot = [sys.executable, osp.join(ROOT, 'tools', 'analysis',
                                     'plot_long_tail.py')]
    os.makedirs(FIGURES, exist_ok=True)
    names = list(METHODS)
    commands = [
        ['shift', RESULTS_JSON, '--inferences', 'plain argmax',
         'Sinkhorn, b uniform', 'Sinkhorn, b EM', 'Sinkhorn, b MAP-EM',
         'Sinkhorn, b true (oracle)', '--title',
         f'digits-LT, shifted test priors (mean ± std, seeds '
         f'{", ".join(map(str, record["seeds"]))})',
         '--out', osp.join(FIGURES, 'digits_shifted.png')],
        ['per-class'] + [osp.join(runs[(m, seed)][1], 'uniform.npz')
                         for m in names]
        + ['--labels'] + names + ['--title', f'digits-LT, uniform test split '
                                  f'(seed {seed})', '--out',
                                  osp.join(FIGURES, 'digits_per_class.png')],
        ['training'] + [runs[(m, seed)][0] for m in names] + ['--labels']
        + names + ['--title', f'digits-LT training (seed {seed})', '--out',
                   osp.join(FIGURES, 'digits_training.png')],
        ['confusion', osp.join(runs[('CE', seed)][1], 'backward-50.npz'),
         '--title', f'CE, argmax on Backward-50 (seed {seed})', '--out',
         osp.join(FIGURES, 'digits_confusion_ce_backward50.png')],
    ]
    for command in commands:
        subprocess.run(plot + command, check=True, cwd=ROOT)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--jobs', type=int, default=1,
                        help='parallel trainings (each then uses one thread)')
    parser.add_argument('--reuse', action='store_true', help='skip training '
                        'and dumping where the files exist')
    parser.add_argument('--no-figures', action='store_true')
    parser.add_argument('--work-dir', default=osp.join(
        ROOT, 'work_dirs', 'digits_shifted_test'))
    parser.add_argument('--dump', nargs=3, metavar=('CONFIG', 'CKPT', 'DIR'),
                        help=argparse.SUPPRESS)  # the per-model child
    args = parser.parse_args()
    if args.dump:
        dump_all(*args.dump)
        return
    start = time.time()
    if args.jobs > 1:
        os.environ['OMP_NUM_THREADS'] = '1'
    import torch
    torch.set_num_threads(1 if args.jobs > 1 else torch.get_num_threads())
    jobs = [(m, s) for s in args.seeds for m in METHODS]
    with ThreadPoolExecutor(args.jobs) as pool:
        runs = dict(zip(jobs, pool.map(
            lambda job: train_and_dump(*job, args.work_dir, args.reuse),
            jobs)))
    trained = time.time() - start
    dumps = {job: folder for job, (_, folder) in runs.items()}
    alpha, val_scores = choose_alpha(dumps, args.seeds)
    results = evaluate(dumps, alpha)
    from reot_mm.cls.datasets import TEST_DISTRIBUTIONS
    dists = list(TEST_DISTRIBUTIONS)
    command = COMMAND.format(seeds=' '.join(map(str, args.seeds)))
    record = {'command': command, 'seeds': args.seeds, 'distributions': dists,
              'map_em_alpha': alpha, 'alpha_validation': val_scores,
              'results': results}
    os.makedirs(osp.dirname(RESULTS_JSON), exist_ok=True)
    with open(RESULTS_JSON, 'w') as handle:
        json.dump(record, handle, indent=1)
    body = table(results, dists)
    grid = ', '.join(f'{a:g}: {v:.2f}' for a, v in val_scores.items())
    text = (
        '# digits-LT under shifted test label distributions\n\n'
        'Top-1 accuracy (%), mean ± std over training seeds '
        f'{", ".join(map(str, args.seeds))}, on the 11 test sets of the SADE '
        'protocol (F-ρ: Forward-ρ, the training head keeps the most test '
        'images; B-ρ: Backward-ρ; subsets of the balanced 50-per-class test '
        'split). Generated by\n\n'
        f'```bash\n{command}\n```\n\n'
        f'MAP-EM pseudo-count α = {alpha:g}, chosen on the validation split '
        f'(mean accuracy over methods, seeds and 7 shifted val sets: {grid}). '
        'The EM assumes the softmax of CE calibrated for the training '
        'prior, that of Balanced Softmax and RE-OT for a uniform one. OTLM '
        'uses tools/posthoc.py\'s defaults (μ uniform, λ 1, Adam, 20 steps). '
        'The oracle row knows the true test prior (not test-agnostic).\n\n'
        + body + '\n\n![accuracy against the test-prior shift]'
        '(../figures/digits_shifted.png)\n')
    write_markdown(text)
    print(text)
    if not args.no_figures:
        figures(record, runs, args.seeds[0])
    print(f'wall time {time.time() - start:.0f} s (training and dumps '
          f'{trained:.0f} s, jobs {args.jobs})')


if __name__ == '__main__':
    main()
