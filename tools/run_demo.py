"""`make demo`: train RE-OT on digits-LT with tools/train.py and print the metrics.

Runs the real mmengine Runner on CPU (about a minute on 2 cores; the periodic
validation sees the val split), then tools/test.py on the final checkpoint,
and prints overall, balanced, many-, medium- and few-shot accuracy of the
final model on the balanced test split.

    python tools/run_demo.py [--config CONFIG] [--work-dir DIR] [--seed N]
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEFAULT_CONFIG = osp.join(ROOT, 'configs', 'demo', 'reot_resnet8_100e_digitslt.py')
KEYS = ('accuracy/top1', 'shot/balanced', 'shot/many', 'shot/medium', 'shot/few')


def final_metrics(work_dir: str) -> dict:
    """Metrics of the last validation (val split) in the newest run under
    ``work_dir``."""
    runs = sorted(d for d in os.listdir(work_dir)
                  if osp.isdir(osp.join(work_dir, d, 'vis_data')))
    if not runs:
        raise FileNotFoundError(f'no run with a scalar log under {work_dir}')
    log = osp.join(work_dir, runs[-1], 'vis_data', 'scalars.json')
    last = None
    with open(log) as handle:
        for line in handle:
            record = json.loads(line)
            if 'shot/balanced' in record:
                last = record
    if last is None:
        raise RuntimeError(f'{log} has no validation metrics')
    return last


def run(config: str, work_dir: str, seed: int, quiet: bool = False) -> dict:
    """Train ``config``, then test its final checkpoint.

    Returns:
        dict: the test-split metrics of the final model (tools/test.py).
    """
    command = [sys.executable, osp.join(ROOT, 'tools', 'train.py'), config,
               '--work-dir', work_dir, '--cfg-options', f'randomness.seed={seed}']
    output = subprocess.DEVNULL if quiet else None
    subprocess.run(command, check=True, cwd=ROOT, stdout=output)
    with open(osp.join(work_dir, 'last_checkpoint')) as handle:
        checkpoint = handle.read().strip()
    out = osp.join(work_dir, 'test_metrics.json')
    subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'test.py'), config,
                    checkpoint, '--work-dir', work_dir, '--out', out,
                    '--out-item', 'metrics', '--cfg-options',
                    f'randomness.seed={seed}'],
                   check=True, cwd=ROOT, stdout=output)
    with open(out) as handle:
        return json.load(handle)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default=DEFAULT_CONFIG)
    parser.add_argument('--work-dir', default=osp.join(ROOT, 'work_dirs', 'demo'))
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    metrics = run(args.config, args.work_dir, args.seed)
    print('\n' + '=' * 60)
    print(f'{osp.basename(args.config)}  (seed {args.seed})')
    print('balanced digits-LT test split, 50 images per class')
    for key in KEYS:
        if key in metrics:
            print(f'  {key:<16} {metrics[key]:6.2f}')
    print('=' * 60)


if __name__ == '__main__':
    main()
