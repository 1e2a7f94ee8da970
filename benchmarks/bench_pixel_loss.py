"""RE-OT pixel loss forward+backward time relative to mmseg's CrossEntropyLoss.

Target: ratio <= 1.2 for a 16×150×128×128 batch (B×C×H×W, ADE20K's
150 classes). Both losses see the same logits and labels, with 10 % of the
pixels set to ignore_index=255 (ADE20K's "other" after reduce_zero_label).

Two settings:

* ``loss only``: the (B, C, H, W) logits are a leaf tensor;
* ``decode head``: the head's 1/8-resolution logits are bilinearly upsampled to
  the label size first, as ``BaseDecodeHead.loss_by_feat`` does, and the
  gradient flows back through the resize (the cost a training step sees).

Every candidate is timed in the same process with torch.utils.benchmark,
interleaved in rounds so machine noise hits all of them alike; the printed
ratios are medians over rounds. On the CPU, unless ``--system-malloc`` is
given, the script re-executes itself with glibc's trimming thresholds raised so
that large buffers are recycled (as under CUDA's caching allocator) instead of
being returned to the kernel and page-faulted again on every step (see
benchmarks/bench_reot_loss.py).

    python benchmarks/bench_pixel_loss.py [--device cuda] [--rounds 7] [--threads 1]

On a CPU shared with other jobs, use ``--threads 1``: with more threads than
free cores every parallel region waits for descheduled threads, and the
timings of all candidates (CE included) become slower and erratic.
"""
import argparse
import os
import statistics
import sys

import torch
import torch.nn.functional as F
from torch.utils import benchmark

from reot_mm.losses import REOTPixelLoss

IGNORE = 255


def make_candidates(num_classes, device):
    from mmseg.models.losses import CrossEntropyLoss
    counts = torch.logspace(5, 1, num_classes).round()
    fixed = REOTPixelLoss(prior='class_ratio', class_counts=counts).to(device)
    ramp = REOTPixelLoss(prior='class_ratio', class_counts=counts).to(device)
    ramp.set_prior_schedule(0.5)
    all_pixels = REOTPixelLoss(prior='class_ratio', class_counts=counts,
                               avg_non_ignore=False).to(device)
    ce = CrossEntropyLoss(avg_non_ignore=False)
    ce_non_ignore = CrossEntropyLoss(avg_non_ignore=True)
    log_q = (counts / counts.sum()).log().to(device)[:, None, None]

    def floor(logits, labels, ignore_index):
        # the cost model "CE plus one add of the prior", written directly
        return F.cross_entropy(logits + log_q, labels, ignore_index=ignore_index)
    return {
        'mmseg CrossEntropyLoss': ce,
        'mmseg CrossEntropyLoss(avg_non_ignore)': ce_non_ignore,
        'floor: F.cross_entropy(s + log Q)': floor,
        'REOTPixelLoss class ratio, λ=1': fixed,
        'REOTPixelLoss class ratio, λ=0.5': ramp,
        'REOTPixelLoss λ=1, avg over all pixels': all_pixels,
    }


def step_leaf(loss_fn, logits, labels, size):
    logits.grad = None
    loss_fn(logits, labels, ignore_index=IGNORE).backward()


def step_resize(loss_fn, logits, labels, size):
    logits.grad = None
    upsampled = F.interpolate(logits, size=size, mode='bilinear',
                              align_corners=False)
    loss_fn(upsampled, labels, ignore_index=IGNORE).backward()


def time_setting(title, step, logits, labels, size, candidates, args):
    times = {name: [] for name in candidates}
    for _ in range(args.rounds):
        for name, fn in candidates.items():
            timer = benchmark.Timer(
                stmt='step(fn, logits, labels, size)',
                num_threads=torch.get_num_threads(),
                globals=dict(step=step, fn=fn, logits=logits, labels=labels,
                             size=size))
            times[name].append(
                timer.blocked_autorange(min_run_time=args.min_run_time).median)
    baseline = statistics.median(times['mmseg CrossEntropyLoss'])
    print(f'\n{title}: fwd+bwd, median of {args.rounds} rounds')
    for name, values in times.items():
        median = statistics.median(values)
        print(f'  {name:<42} {median * 1e3:9.2f} ms   ratio '
              f'{median / baseline:5.3f}')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--classes', type=int, default=150)
    parser.add_argument('--size', type=int, default=128)
    parser.add_argument('--rounds', type=int, default=7)
    parser.add_argument('--min-run-time', type=float, default=0.5)
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads (default: torch\'s choice); 1 '
                        'is robust on a shared, oversubscribed machine')
    parser.add_argument('--system-malloc', action='store_true',
                        help="keep glibc's default trimming (noisier on CPU)")
    args = parser.parse_args()
    if not args.system_malloc and 'MALLOC_TRIM_THRESHOLD_' not in os.environ:
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(2**32),
                   MALLOC_TRIM_THRESHOLD_=str(2**32))
        os.execve(sys.executable, [sys.executable] + sys.argv, env)
    import warnings
    warnings.filterwarnings('ignore', message='Default ``avg_non_ignore``')
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch, classes, size = args.batch, args.classes, args.size
    print(f'device={args.device} torch={torch.__version__} '
          f'threads={torch.get_num_threads()} '
          f"malloc={'system' if args.system_malloc else 'no-trim'} "
          f'B={batch} C={classes} H=W={size}')
    labels = torch.randint(0, classes, (batch, size, size), device=args.device)
    labels[torch.rand(labels.shape, device=args.device) < 0.1] = IGNORE
    candidates = make_candidates(classes, args.device)

    logits = (torch.randn(batch, classes, size, size, device=args.device) * 3
              ).requires_grad_(True)
    time_setting(f'loss only, logits {tuple(logits.shape)}', step_leaf,
                 logits, labels, None, candidates, args)
    del logits

    low = (torch.randn(batch, classes, size // 8, size // 8,
                       device=args.device) * 3).requires_grad_(True)
    time_setting(f'decode head, {tuple(low.shape)} upsampled to {size}×{size}',
                 step_resize, low, labels, (size, size), candidates, args)


if __name__ == '__main__':
    main()
