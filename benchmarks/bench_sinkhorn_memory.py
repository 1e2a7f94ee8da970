"""Peak memory of reot_sinkhorn and sinkhorn_prediction against one n x m matrix.

Target: the solver works for n x m from 2 x 2 to 50k x 8142 without
materialising more than one n x m temporary at a time. This script builds an
ImageNet-LT/iNat-sized cost (default 50000 x 8142 fp32, 1.63 GB) block by
block, then for each call measures the process's peak resident memory
(``VmHWM``, reset through ``/proc/self/clear_refs`` before each call) above the
resident memory just before the call, and prints that excess divided by the
size of one n x m matrix::

    extra n x m = (peak RSS during the call - RSS before the call) / (4 n m)

Expected: ``memory='buffer'`` 1 (its kernel buffer), ``memory='stream'`` 0,
``log_plan()`` 1 (its output), ``sinkhorn_prediction`` 2 with the buffer
(output + buffer) and 1 with streaming (its output); the check of the
returned plan that ends every call runs in row blocks. Linux only
(``/proc``); run it alone, other processes do not disturb RSS but do disturb
the times printed alongside.

    .venv/bin/python benchmarks/bench_sinkhorn_memory.py [--n 50000 --m 8142]
        [--cases buffer stream log_plan posthoc_buffer posthoc_stream]
"""
import argparse
import re
import time

import torch

from reot_mm.ot import reot_sinkhorn, sinkhorn_prediction

CASES = ('buffer', 'stream', 'log_plan', 'posthoc_buffer', 'posthoc_stream')


def _status_bytes(key):
    with open('/proc/self/status') as handle:
        text = handle.read()
    return int(re.search(rf'{key}:\s+(\d+) kB', text).group(1)) * 1024


def reset_peak():
    """Reset VmHWM to the current RSS (Linux >= 4.0, clear_refs value 5)."""
    with open('/proc/self/clear_refs', 'w') as handle:
        handle.write('5')


def measure(fn):
    """(result, seconds, peak RSS above the RSS before the call, bytes)."""
    reset_peak()
    before = _status_bytes('VmRSS')
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    return out, seconds, _status_bytes('VmHWM') - before


def make_cost(n, m, seed=0, rows=2048):
    """-log_softmax of long-tailed logits, written block by block.

    Building it in one expression would need three n x m temporaries and set
    the peak RSS above what the solver needs.
    """
    gen = torch.Generator().manual_seed(seed)
    log_counts = torch.logspace(3, 0, m).log()  # 1000 ... 1 images/class
    cost = torch.empty(n, m)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        block = torch.randn(stop - start, m, generator=gen).mul_(2)
        block.add_(log_counts)
        cost[start:stop] = torch.log_softmax(block, 1).neg_()
    return cost


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--n', type=int, default=50000)
    parser.add_argument('--m', type=int, default=8142)
    parser.add_argument('--epsilon', type=float, default=1.0)
    parser.add_argument('--tol', type=float, default=1e-6)
    parser.add_argument('--cases', nargs='+', choices=CASES,
                        default=list(CASES))
    args = parser.parse_args()
    n, m = args.n, args.m
    try:
        reset_peak()
    except OSError as error:
        raise SystemExit(f'cannot reset the peak RSS ({error}); this '
                         'benchmark needs Linux /proc/self/clear_refs')
    matrix = 4 * n * m
    print(f'torch {torch.__version__}, threads {torch.get_num_threads()}, '
          f'{n} x {m} fp32: one matrix = {matrix / 2**30:.2f} GiB, '
          f'eps {args.epsilon}, tol {args.tol}')
    t0 = time.perf_counter()
    cost = make_cost(n, m)
    print(f'cost built in {time.perf_counter() - t0:.1f} s; RSS '
          f'{_status_bytes("VmRSS") / 2**30:.2f} GiB')
    print(f'{"case":<16} {"extra n x m":>11} {"extra GiB":>9} {"time s":>7} '
          f'{"it":>4} {"marginal err":>12}')

    def report(name, seconds, extra, iterations, error):
        print(f'{name:<16} {extra / matrix:11.3f} {extra / 2**30:9.3f} '
              f'{seconds:7.2f} {iterations:4d} {error:12.2e}', flush=True)

    kwargs = dict(tol=args.tol, max_iter=1000, check_every=10)
    results = {}
    for memory in ('buffer', 'stream'):
        if memory in args.cases or (memory == 'buffer'
                                    and 'log_plan' in args.cases):
            res, seconds, extra = measure(lambda: reot_sinkhorn(
                cost, args.epsilon, memory=memory, **kwargs))
            results[memory] = res
            if memory in args.cases:
                report(f'sinkhorn {memory}', seconds, extra, res.iterations,
                       res.marginal_error.item())
    if 'buffer' in results and 'stream' in results:
        diff = (results['buffer'].g - results['stream'].g).abs().max()
        print(f'  max |g_buffer - g_stream| = {diff.item():.2e}')
    if 'log_plan' in args.cases:
        res = results['buffer']
        out, seconds, extra = measure(res.log_plan)
        report('log_plan()', seconds, extra, res.iterations,
               res.marginal_error.item())
        del out
    results.clear()

    log_probs = cost.neg_()  # reuse the memory: the predictions log Z
    del cost
    for memory in ('buffer', 'stream'):
        if f'posthoc_{memory}' not in args.cases:
            continue
        res, seconds, extra = measure(lambda: sinkhorn_prediction(
            log_probs, None, args.epsilon, tol=args.tol, memory=memory))
        report(f'posthoc {memory}', seconds, extra, res.iterations,
               res.marginal_error)
        del res


if __name__ == '__main__':
    main()
