"""Plain argmax vs RE-OT Sinkhorn inference on digits-LT, over several seeds.

For every seed: train the RE-OT demo config once with tools/train.py
(``configs/demo/reot_resnet8_100e_digitslt.py``), then evaluate its final
checkpoint with tools/test.py and
``configs/demo/reot-sinkhorn_resnet8_100e_digitslt.py`` (whole-test-set
Sinkhorn, ``report_plain=True``), with b uniform and with b estimated by EM
from the predictions (EM told that the RE-OT model's softmax
is calibrated for a uniform prior, as the config says, and, for comparison,
Saerens' default that it is calibrated for the training prior). Prints mean ±
std of balanced, many-, medium- and few-shot accuracy for each prediction.

    python benchmarks/digits_sinkhorn_inference.py [--seeds 0 1 2 3 4] [--jobs 1]
        [--reuse]   # evaluate existing checkpoints instead of training
        [--train-config ce_resnet8_100e_digitslt]   # another demo model
        [--em-smoothing 1.0]   # also MAP-EM rows with this pseudo-count
"""
import argparse
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, 'tools'))
from run_demo import run  # noqa: E402

DEMO = osp.join(ROOT, 'configs', 'demo')
TEST_CONFIG = osp.join(ROOT, 'configs', 'demo',
                       'reot-sinkhorn_resnet8_100e_digitslt.py')
KEYS = ('shot/balanced', 'shot/many', 'shot/medium', 'shot/few')


def evaluate(checkpoint: str, work_dir: str, target_prior: str,
             calibration_prior: str = 'uniform',
             em_smoothing: float = 0.0) -> dict:
    out = osp.join(work_dir, f'metrics_{target_prior}_{calibration_prior}'
                   f'_{em_smoothing:g}.json')
    command = [sys.executable, osp.join(ROOT, 'tools', 'test.py'), TEST_CONFIG,
               checkpoint, '--work-dir', work_dir, '--out', out,
               '--out-item', 'metrics', '--cfg-options',
               f'test_evaluator.target_prior={target_prior}',
               f'test_evaluator.calibration_prior={calibration_prior}',
               f'test_evaluator.em_smoothing={em_smoothing}']
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    with open(out) as handle:
        return json.load(handle)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument('--jobs', type=int, default=1,
                        help='parallel seeds (each then uses one thread)')
    parser.add_argument('--train-config', default='reot_resnet8_100e_digitslt',
                        help='demo config (configs/demo/<name>.py) to train')
    parser.add_argument('--reuse', action='store_true',
                        help='skip training where epoch_100.pth exists')
    parser.add_argument('--em-smoothing', type=float, nargs='*', default=[],
                        help='extra rows: MAP-EM with these Dirichlet '
                        'pseudo-counts per class (both calibration priors)')
    parser.add_argument('--work-dir', default=osp.join(
        ROOT, 'work_dirs', 'digits_sinkhorn_inference'))
    args = parser.parse_args()
    train_config = osp.join(DEMO, f'{args.train_config}.py')
    if args.jobs > 1:
        os.environ['OMP_NUM_THREADS'] = '1'

    def one(seed):
        work_dir = osp.join(args.work_dir, f'seed{seed}')
        checkpoint = osp.join(work_dir, 'epoch_100.pth')
        train_metrics = {}
        if not (args.reuse and osp.isfile(checkpoint)):
            train_metrics = run(train_config, work_dir, seed, quiet=True)
        uniform = evaluate(checkpoint, work_dir, 'uniform')
        estimated = evaluate(checkpoint, work_dir, 'estimated', 'uniform')
        estimated_train = evaluate(checkpoint, work_dir, 'estimated', 'train')
        # the plain numbers of tools/test.py must be those of the training run
        for key in KEYS:
            if key in train_metrics and abs(
                    train_metrics[key] - uniform[f'plain/{key}']) > 1e-6:
                raise RuntimeError(f'seed {seed}: plain {key} differs between '
                                   'the last validation and tools/test.py')
        rows = {
            'plain argmax': {k: uniform[f'plain/{k}'] for k in KEYS},
            'Sinkhorn, b uniform': {k: uniform[k] for k in KEYS},
            'Sinkhorn, b EM (calib. uniform)': {k: estimated[k] for k in KEYS},
            'Sinkhorn, b EM (calib. train)': {
                k: estimated_train[k] for k in KEYS},
        }
        for alpha in args.em_smoothing:
            for calibration in ('uniform', 'train'):
                smoothed = evaluate(checkpoint, work_dir, 'estimated',
                                    calibration, alpha)
                rows[f'b MAP-EM a={alpha:g} (c. {calibration})'] = {
                    k: smoothed[k] for k in KEYS}
        return seed, rows

    with ThreadPoolExecutor(args.jobs) as pool:
        results = dict(pool.map(one, args.seeds))
    print(f'\ndigits-LT (rho=60), {args.train_config}, balanced test split '
          f'(500 images), seeds {args.seeds}')
    print(f"{'inference':<32}" + ''.join(f'{k.split("/")[1]:>16}' for k in KEYS))
    for name in results[args.seeds[0]]:
        row = f'{name:<32}'
        for key in KEYS:
            values = [results[s][name][key] for s in args.seeds]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            row += f'{statistics.mean(values):>10.2f} ± {spread:4.1f}'
        print(row)
    print('\nper seed (balanced accuracy): ' + '; '.join(
        f'seed {s}: ' + ', '.join(f'{results[s][n]["shot/balanced"]:.1f}'
                                  for n in results[s]) for s in args.seeds))


if __name__ == '__main__':
    main()
