"""Digits-LT imbalance sweep: every method at several ρ, paired over seeds.

For every imbalance factor ρ (``train_dataloader.dataset.imbalance_factor``;
head 100 images, so ρ <= 100: ρ = 200 would leave the tail class half an
image) and every training seed, trains with tools/train.py and tests the
final model on the balanced test split (50 images per class; the runs
validate on the val split, where the hyper-parameters were chosen:
benchmarks/digits_select_hparams.py):

* CE, Balanced Softmax, RE-OT (the shipped schedule: RE-OT Eq. 34's linear
  ramp) and RE-OT with the authors' schedule mode (``mode='official'``:
  the mixing of their code, nearly a hard switch at t2), BCL, the GML teacher,
  the GML student and its control (same three views and teacher, classifier
  loss only);
* without retraining, from the same test dumps: post-hoc logit adjustment
  (τ = 1) of the CE model and RE-OT's Sinkhorn inference (b uniform, ε = 1)
  of the RE-OT model.

Prints (and writes to ``--out``) per ρ the mean ± std over seeds of balanced,
many, medium and few test accuracy and the paired per-seed difference of the
balanced accuracy against Balanced Softmax (mean ± std of the differences,
seeds won). Runs already done in ``--work-dir`` are reused (an interrupted
sweep resumes); ``--report-only`` tabulates what is there without training.

    OMP_NUM_THREADS=1 python benchmarks/digits_imbalance_sweep.py --jobs 2 \\
        --rhos 10 50 100 --seeds 0 1 2 3 4 --out docs/results/digits_sweep.md
"""
import argparse
import os
import os.path as osp
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from digits_gml import student_config  # noqa: E402
from digits_runs import (DONE, GROUPS, PREDICTIONS, ROOT,  # noqa: E402
                         format_paired, markdown_table, mean_std,
                         paired_difference, test_metrics, train_and_test)

#: run name -> config (the GML students get a config written per run)
RUNS = {
    'ce': 'demo/ce_resnet8_100e_digitslt',
    'bsoftmax': 'demo/bsoftmax_resnet8_100e_digitslt',
    'reot': 'demo/reot_resnet8_100e_digitslt',
    'reot-official': 'demo/reot_resnet8_100e_digitslt',
    'bcl': 'bcl/bcl_resnet8_100e_digitslt',
    'gml-teacher': 'gml/gml-teacher_resnet8_100e_digitslt',
    'gml': None,
    'gml-control': None,
}
RUN_OPTIONS = {'reot-official': ['custom_hooks.1.mode=official']}
#: table row -> (run, prediction rule of digits_runs.test_metrics)
ROWS = {
    'CE': ('ce', 'plain'),
    'CE + post-hoc logit adjustment': ('ce', 'logit_adjustment'),
    'Balanced Softmax': ('bsoftmax', 'plain'),
    'RE-OT (shipped schedule, Eq. 34 ramp)': ('reot', 'plain'),
    "RE-OT (authors' schedule mode)": ('reot-official', 'plain'),
    'RE-OT + Sinkhorn inference (b uniform)': ('reot', 'sinkhorn'),
    'BCL': ('bcl', 'plain'),
    'GML teacher': ('gml-teacher', 'plain'),
    'GML student': ('gml', 'plain'),
    'control: GML views, L_cls only': ('gml-control', 'plain'),
}
BASELINE = 'Balanced Softmax'
MAX_RHO = 100  # head 100 images, tail floor(100 / ρ) >= 1


def run_dir(root: str, rho: float, seed: int, run: str) -> str:
    return osp.join(root, f'rho{rho:g}', f'seed{seed}', run)


def chains(rho: float, seed: int, runs, root: str):
    """The jobs of one (ρ, seed): lists of runs that run in order (a GML
    student needs its teacher's checkpoint)."""
    gml = [r for r in ('gml-teacher', 'gml', 'gml-control') if r in runs]
    singles = [[r] for r in runs if r not in gml]
    # the longest chain first, so the last jobs of a sweep are short ones
    return ([gml] if gml else []) + singles


def train_run(rho: float, seed: int, run: str, root: str) -> None:
    options = [f'train_dataloader.dataset.imbalance_factor={rho:g}',
               *RUN_OPTIONS.get(run, [])]
    work_dir = run_dir(root, rho, seed, run)
    config = RUNS[run]
    if run in ('gml', 'gml-control'):
        teacher = osp.join(run_dir(root, rho, seed, 'gml-teacher'),
                           'epoch_100.pth')
        config = student_config(work_dir, teacher,
                                'gml' if run == 'gml' else 'control')
    train_and_test(config, work_dir, seed, options, test=True)


def collect(root: str, rhos, seeds) -> dict:
    """``{(rho, row, seed): {group: accuracy}}`` of every finished run."""
    results = {}
    for rho in rhos:
        for seed in seeds:
            for row, (run, rule) in ROWS.items():
                work_dir = run_dir(root, rho, seed, run)
                if osp.isfile(osp.join(work_dir, DONE)) and osp.isfile(
                        osp.join(work_dir, PREDICTIONS)):
                    results[(rho, row, seed)] = test_metrics(work_dir, rule)
    return results


def sweep_tables(results: dict, rhos, seeds) -> str:
    """Markdown: one table per ρ, rows of ROWS, mean ± std per group and
    the paired balanced difference against Balanced Softmax."""
    parts = []
    for rho in rhos:
        rows = []
        baseline = {s: results[(rho, BASELINE, s)]['balanced']
                    for s in seeds if (rho, BASELINE, s) in results}
        for row in ROWS:
            done = [s for s in seeds if (rho, row, s) in results]
            if not done:
                continue
            cells = [mean_std([results[(rho, row, s)].get(g, float('nan'))
                               for s in done]) for g in GROUPS]
            balanced = {s: results[(rho, row, s)]['balanced'] for s in done}
            paired = ('(baseline)' if row == BASELINE else
                      format_paired(paired_difference(balanced, baseline)))
            rows.append([row, len(done), *cells, paired])
        parts.append(f'### ρ = {rho:g}\n\n' + markdown_table(
            ['method', 'seeds', *GROUPS,
             f'Δ balanced vs {BASELINE} (paired)'], rows))
    return '\n\n'.join(parts)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rhos', nargs='+', type=float, default=[10, 50, 100])
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument('--runs', nargs='+', default=list(RUNS),
                        choices=list(RUNS))
    parser.add_argument('--jobs', type=int, default=2)
    parser.add_argument('--report-only', action='store_true',
                        help='tabulate the finished runs, train nothing')
    parser.add_argument('--out', default=None, help='markdown file to write')
    parser.add_argument('--work-dir', default=osp.join(
        ROOT, 'work_dirs', 'digits_imbalance_sweep'))
    args = parser.parse_args()
    for rho in args.rhos:
        if not 1 <= rho <= MAX_RHO:
            parser.error(f'--rhos must lie in [1, {MAX_RHO}] (the train head '
                         f'has 100 images, the tail floor(100 / rho) must be '
                         f'>= 1), got {rho:g}')
    start, load = time.time(), os.getloadavg()
    if not args.report_only:
        # seeds outermost: a sweep stopped early has whole seeds of every ρ
        jobs = [(rho, seed, chain) for seed in args.seeds for rho in args.rhos
                for chain in chains(rho, seed, args.runs, args.work_dir)]

        def one(job):
            rho, seed, chain = job
            for run in chain:
                begin = time.time()
                try:
                    train_run(rho, seed, run, args.work_dir)
                except RuntimeError as error:  # report it, keep the sweep
                    print(f'  rho {rho:g} seed {seed} {run} FAILED: {error}',
                          flush=True)
                    return
                print(f'  rho {rho:g} seed {seed} {run}: '
                      f'{time.time() - begin:.0f} s', flush=True)

        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(one, jobs))
    wall = time.time() - start
    results = collect(args.work_dir, args.rhos, args.seeds)
    command = ('OMP_NUM_THREADS=1 python benchmarks/digits_imbalance_sweep.py '
               f'--jobs {args.jobs} --rhos {" ".join(f"{r:g}" for r in args.rhos)} '
               f'--seeds {" ".join(map(str, args.seeds))}')
    header = (f'Command: `{command}`' + (' --report-only' if args.report_only
                                         else '')
              + f'; {wall / 60:.1f} min wall with {args.jobs} jobs, load '
              f'average {load[0]:.1f} at the start and '
              f'{os.getloadavg()[0]:.1f} at the end. Test split: 50 images '
              'per class (balanced); accuracy in %, mean ± std over the '
              'seeds that finished; many > 40, few < 10 training images '
              '(a group without a class at this ρ shows –). Δ: mean ± std '
              'of the per-seed differences of balanced accuracy, and the '
              'seeds where the method beats Balanced Softmax.')
    text = header + '\n\n' + sweep_tables(results, args.rhos, args.seeds) + '\n'
    print('\n' + text)
    if args.out:
        with open(args.out, 'w') as handle:
            handle.write('# Digits-LT imbalance sweep\n\n' + text)


if __name__ == '__main__':
    main()
