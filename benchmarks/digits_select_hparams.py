"""Choose the digits-LT hyper-parameters on the val split, never on test.

Each candidate trains on the train split (tools/train.py, real Runner, CPU)
with every seed; its score is the balanced accuracy of the final model on the
balanced val split (20 images per class, disjoint from train and test; the
last validation of the training log). The chosen candidate has the highest
mean over seeds (ties: the first listed, the shipped value). Searches:

* RE-OT: the milestones (t1, t2) of the epoch-varying prior (RE-OT Eq. 34),
  configs/demo/reot_resnet8_100e_digitslt.py;
* BCL: cosine-classifier scale and the loss weights λ (L_LC) and μ (L_BCL) of
  BCL Eq. 11, configs/bcl/bcl_resnet8_100e_digitslt.py;
* RE-OT contrastive (supervised): the prior exponent κ of Q_ij = π_{y_j}^κ
  (RE-OT Eq. 35; κ = 0 is SupCon's uniform Q), scored by the k-NN balanced
  accuracy on val after the 100 pretraining epochs (no linear probe: the
  k-NN monitor needs no extra training), configs/contrastive/
  reot-sup_resnet8_100e_digitslt.py.

Prints every search as a markdown table and the chosen value, and writes
them to ``--out``::

    OMP_NUM_THREADS=1 python benchmarks/digits_select_hparams.py --jobs 2 \\
        --seeds 0 1 2 --out docs/results/digits_hparams.md
"""
import argparse
import os
import os.path as osp
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from digits_runs import (ROOT, last_val_metrics, markdown_table,  # noqa: E402
                         mean_std, train_and_test)

#: search name -> (config, val metric, {candidate label: cfg options});
#: the first candidate is the value the config ships.
SEARCHES = {
    'RE-OT prior milestones (t1, t2), fractions of the run': (
        'demo/reot_resnet8_100e_digitslt', 'shot/balanced', {
            '(0.1, 0.3)': ['custom_hooks.1.milestones=(0.1,0.3)'],
            '(0.0, 0.1)': ['custom_hooks.1.milestones=(0.0,0.1)'],
            '(0.3, 0.5)': ['custom_hooks.1.milestones=(0.3,0.5)'],
            '(0.6, 0.8)': ['custom_hooks.1.milestones=(0.6,0.8)'],
        }),
    'BCL cosine scale s, λ (L_LC), μ (L_BCL)': (
        'bcl/bcl_resnet8_100e_digitslt', 'shot/balanced', {
            's 10, λ 2, μ 0.6': [],
            's 30, λ 2, μ 0.6 (paper)': ['model.head.scale=30.0'],
            's 10, λ 1, μ 0.35': ['model.loss.lc_weight=1.0',
                                  'model.loss.bcl_weight=0.35'],
        }),
    'RE-OT contrastive (sup.) prior exponent κ, k-NN on val': (
        'contrastive/reot-sup_resnet8_100e_digitslt', 'knn/balanced', {
            'κ = -1': [],
            'κ = 0 (SupCon)': ['model.loss.ratio_power=0.0'],
            'κ = +1': ['model.loss.ratio_power=1.0'],
        }),
}


def choose(scores: dict) -> str:
    """The candidate with the highest mean score (first listed on ties)."""
    best, best_mean = None, None
    for label, values in scores.items():
        mean = statistics.mean(values)
        if best_mean is None or mean > best_mean + 1e-9:
            best, best_mean = label, mean
    return best


def search_table(scores: dict, seeds, chosen: str) -> str:
    """Markdown table: candidate, per-seed val score, mean ± std."""
    rows = [[f'**{label}**' if label == chosen else label,
             *(f'{v:.1f}' for v in values), mean_std(values)]
            for label, values in scores.items()]
    return markdown_table(
        ['candidate', *(f'seed {s}' for s in seeds), 'mean ± std'], rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--jobs', type=int, default=2)
    parser.add_argument('--searches', nargs='+', type=int,
                        default=list(range(len(SEARCHES))),
                        help='indices of the searches to run')
    parser.add_argument('--out', default=None, help='markdown file to write')
    parser.add_argument('--work-dir', default=osp.join(
        ROOT, 'work_dirs', 'digits_select_hparams'))
    args = parser.parse_args()
    searches = [list(SEARCHES)[i] for i in args.searches]
    jobs = [(name, label, seed) for name in searches
            for label in SEARCHES[name][2] for seed in args.seeds]

    def one(job):
        name, label, seed = job
        config, key, candidates = SEARCHES[name]
        work_dir = osp.join(args.work_dir, f'search{list(SEARCHES).index(name)}',
                            f'cand{list(candidates).index(label)}_seed{seed}')
        train_and_test(config, work_dir, seed, candidates[label], test=False)
        return job, last_val_metrics(work_dir, key)[key]

    start, load = time.time(), os.getloadavg()
    with ThreadPoolExecutor(args.jobs) as pool:
        results = dict(pool.map(one, jobs))
    wall = time.time() - start
    command = ('OMP_NUM_THREADS=1 python benchmarks/digits_select_hparams.py '
               f'--jobs {args.jobs} --seeds {" ".join(map(str, args.seeds))}')
    parts = [f'Command: `{command}`; {wall / 60:.1f} min wall, load average '
             f'{load[0]:.1f} at the start and {os.getloadavg()[0]:.1f} at the '
             'end (2-core machine shared with other jobs). Val split: 20 '
             'images per class; score: balanced val accuracy (%) of the final '
             'model; chosen in bold (highest mean).']
    for name in searches:
        config, key, candidates = SEARCHES[name]
        scores = {label: [results[(name, label, s)] for s in args.seeds]
                  for label in candidates}
        chosen = choose(scores)
        parts.append(f'### {name}\n\n`configs/{config}.py`, metric `{key}` '
                     f'on val; chosen: **{chosen}** (shipped: '
                     f'{list(candidates)[0]})\n\n'
                     + search_table(scores, args.seeds, chosen))
    text = '\n\n'.join(parts) + '\n'
    print('\n' + text)
    if args.out:
        with open(args.out, 'w') as handle:
            handle.write('# Digits-LT hyper-parameters chosen on the val '
                         'split\n\n' + text)


if __name__ == '__main__':
    main()
