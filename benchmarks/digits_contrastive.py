"""Digits-LT contrastive benchmark: SimCLR vs SupCon vs RE-OT, linear probe and k-NN.

For every method and seed: contrastive pretraining with ``tools/train.py``
(configs/contrastive/*_resnet8_100e_digitslt.py), then the linear probe
(configs/contrastive/linear-probe_resnet8_30e_digitslt.py) on the frozen
backbone of that checkpoint, which also reports the k-NN accuracy of the same
frozen features. The probe's final checkpoint is evaluated by tools/test.py
on the test split (the runs validate on the val split). Prints mean ± std
over seeds of overall / many / medium / few accuracy (balanced digits-LT test
split, 50 images per class; many > 40, few < 10 training images).

    OMP_NUM_THREADS=1 python benchmarks/digits_contrastive.py --seeds 0 1 2 3 4 --jobs 2

Extra variants for sweeps: ``--variant NAME CONFIG [KEY=VALUE ...]`` (cfg
options applied to the pretraining run), repeatable.
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(ROOT, 'configs', 'contrastive')
METHODS = {
    'SimCLR': ('simclr_resnet8_100e_digitslt.py', []),
    'SupCon': ('supcon_resnet8_100e_digitslt.py', []),
    'RE-OT (self-sup.)': ('reot-ssl_resnet8_100e_digitslt.py', []),
    'RE-OT (sup.)': ('reot-sup_resnet8_100e_digitslt.py', []),
}
PROBE = osp.join(CONFIGS, 'linear-probe_resnet8_30e_digitslt.py')
COLUMNS = [('linear', 'accuracy/top1', 'shot/'), ('k-NN', 'knn/top1', 'knn/')]
GROUPS = ('all', 'many', 'medium', 'few')


def train(config: str, work_dir: str, options) -> None:
    command = [sys.executable, osp.join(ROOT, 'tools', 'train.py'), config,
               '--work-dir', work_dir, '--cfg-options', *options]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS',
                                                          '1'))
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True,
                            text=True)
    if result.returncode:
        raise RuntimeError(f'{" ".join(command)} failed:\n'
                           f'{result.stderr[-3000:]}')


def test(config: str, work_dir: str, options) -> dict:
    """tools/test.py on the run's last checkpoint: the test-split metrics."""
    with open(osp.join(work_dir, 'last_checkpoint')) as handle:
        checkpoint = handle.read().strip()
    out = osp.join(work_dir, 'test_metrics.json')
    command = [sys.executable, osp.join(ROOT, 'tools', 'test.py'), config,
               checkpoint, '--work-dir', work_dir, '--out', out, '--out-item',
               'metrics', '--cfg-options', *options]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f'{" ".join(command)} failed:\n'
                           f'{result.stderr[-3000:]}')
    with open(out) as handle:
        return json.load(handle)


def run_one(name, config, options, seed, root):
    tag = name.replace(' ', '_').replace('(', '').replace(')', '') \
        .replace('.', '')
    pre_dir = osp.join(root, f'{tag}_seed{seed}', 'pretrain')
    probe_dir = osp.join(root, f'{tag}_seed{seed}', 'probe')
    start = time.time()
    train(config, pre_dir, [f'randomness.seed={seed}', *options])
    with open(osp.join(pre_dir, 'last_checkpoint')) as handle:
        checkpoint = handle.read().strip()
    probe_options = [f'randomness.seed={seed}',
                     f'model.backbone.init_cfg.checkpoint={checkpoint}']
    train(PROBE, probe_dir, probe_options)
    metrics = test(PROBE, probe_dir, probe_options)
    print(f'  done {name} seed {seed} in {time.time() - start:.0f} s', flush=True)
    return name, seed, metrics


def summarise(results, names):
    header = f'{"method":<20}' + ''.join(
        f'{col + " " + g:>17}' for col, _, _ in COLUMNS for g in GROUPS)
    lines = [header, '-' * len(header)]
    for name in names:
        runs = [m for n, _, m in results if n == name]
        cells = []
        for _, top_key, prefix in COLUMNS:
            for group in GROUPS:
                key = top_key if group == 'all' else prefix + group
                values = np.array([m[key] for m in runs if key in m])
                cells.append(f'{values.mean():7.2f} ± {values.std():5.2f}'
                             if values.size else f'{"-":>15}')
        lines.append(f'{name:<20}' + ''.join(f'{c:>17}' for c in cells))
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2, 3, 4])
    parser.add_argument('--methods', nargs='+', default=list(METHODS),
                        help=f'subset of {list(METHODS)}')
    parser.add_argument('--variant', nargs='+', action='append', default=[],
                        metavar='NAME CONFIG [KEY=VALUE]',
                        help='an extra pretraining config (file name in '
                        'configs/contrastive) with cfg options')
    parser.add_argument('--jobs', type=int, default=2)
    parser.add_argument('--work-dir',
                        default=osp.join(ROOT, 'work_dirs', 'digits_contrastive'))
    args = parser.parse_args()
    methods = {name: METHODS[name] for name in args.methods}
    for spec in args.variant:
        methods[spec[0]] = (spec[1], spec[2:])
    jobs = [(name, osp.join(CONFIGS, config), options, seed, args.work_dir)
            for seed in args.seeds for name, (config, options) in
            methods.items()]
    start = time.time()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(lambda job: run_one(*job), jobs))
    print(f'\ndigits-LT (rho = 60), ResNet-8, seeds {args.seeds}, '
          f'{time.time() - start:.0f} s wall with {args.jobs} jobs')
    print('linear probe (frozen backbone + linear head) and weighted k-NN '
          '(k = 10, T = 0.07) on the balanced test split; mean ± std (%)')
    print(summarise(results, list(methods)))


if __name__ == '__main__':
    main()
