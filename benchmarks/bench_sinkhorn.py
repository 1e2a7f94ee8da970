"""reot_sinkhorn vs POT's log-domain Sinkhorn, side by side in one run.

Target: >= 5x faster than ``ot.sinkhorn(..., method='sinkhorn_log')``
(torch backend) at equal final marginal error, fp32, ε = 1, uniform marginals,
stopThr 1e-6, cost = -log_softmax of long-tailed-looking logits, at 10k x 1000
and 50k x 1000. Also prints the time per Sinkhorn iteration against one
n x m fp32 read (a ``cost.sum()`` pass, the memory-bandwidth floor), the
time of ``memory='stream'`` (no n x m buffer; peak memory is measured by
``benchmarks/bench_sinkhorn_memory.py``), and the time of the bare buffer
iterations (``sinkhorn_buffer``, no input checks and no check of the returned
plan) as a ratio of the full call: the cost of the validation and of the
honest ``converged`` flag.

Both final errors are recomputed here from the returned plans with the same
metric (L1 row + L1 column mismatch of the fp32 plan, summed in fp64); the
solvers' own reports are printed too (POT: L2 norm of the column mismatch at
its last check; ours: the L1 row + column mismatch of the returned plan, the
same metric as here).

    python benchmarks/bench_sinkhorn.py [--sizes 10000x1000 50000x1000]
        [--repeats 3] [--threads N]
"""
import argparse
import time

import torch

from reot_mm.ot import reot_sinkhorn
from reot_mm.ot.sinkhorn_buffer import sinkhorn_buffer


def make_cost(n, m, seed=0):
    gen = torch.Generator().manual_seed(seed)
    counts = torch.logspace(3, 0, m)  # long tail: 1000 ... 1 samples/class
    logits = torch.randn(n, m, generator=gen) * 2 + counts.log()
    return -torch.log_softmax(logits, dim=-1)


def l1_error(plan, a, b):
    plan, a, b = plan.double(), a.double(), b.double()
    rows = (plan.sum(1) - a).abs().sum()
    return (rows + (plan.sum(0) - b).abs().sum()).item()


def best_time(fn, repeats):
    best, out = float('inf'), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def best_times_interleaved(fns, repeats):
    """Best time of each function, calls alternating (fair under load)."""
    best = [float('inf')] * len(fns)
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', nargs='+',
                        default=['10000x1000', '50000x1000'])
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--pot-repeats', type=int, default=1)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--epsilon', type=float, default=1.0)
    parser.add_argument('--tol', type=float, default=1e-6)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import ot
    print(f'torch {torch.__version__}, POT {ot.__version__}, '
          f'threads {torch.get_num_threads()}, eps {args.epsilon}, '
          f'tol {args.tol}, fp32')
    for size in args.sizes:
        n, m = (int(x) for x in size.split('x'))
        cost = make_cost(n, m)
        a = torch.full((n, ), 1.0 / n)
        b = torch.full((m, ), 1.0 / m)
        t_read, _ = best_time(lambda: cost.sum(), 5)

        t_ours, res = best_time(
            lambda: reot_sinkhorn(cost, args.epsilon, a, b, tol=args.tol,
                                  max_iter=1000, check_every=10), args.repeats)
        err_ours = l1_error(res.plan(), a, b)

        def pot():
            return ot.sinkhorn(a, b, cost, args.epsilon, method='sinkhorn_log',
                               stopThr=args.tol, numItermax=1000, log=True)

        t_stream, res_stream = best_time(
            lambda: reot_sinkhorn(cost, args.epsilon, a, b, tol=args.tol,
                                  max_iter=1000, check_every=10,
                                  memory='stream'), args.repeats)

        t_full, t_bare = best_times_interleaved([
            lambda: reot_sinkhorn(cost, args.epsilon, a, b, tol=args.tol,
                                  max_iter=1000, check_every=10),
            lambda: sinkhorn_buffer(cost[None], args.epsilon, a[None],
                                    b[None], None, None, 1000, args.tol, 10,
                                    torch.float32)], args.repeats)

        t_pot, (plan_pot, log_pot) = best_time(pot, args.pot_repeats)
        err_pot = l1_error(plan_pot, a, b)
        it_ours, it_pot = res.iterations, log_pot['niter']
        print(f'\n{n}x{m}: one n*m fp32 read (cost.sum) {t_read * 1e3:.1f} ms')
        print(f'  reot_sinkhorn    {t_ours:7.3f} s  {it_ours:4d} it  '
              f'{t_ours / it_ours * 1e3:7.1f} ms/it '
              f'({t_ours / it_ours / t_read:5.1f} reads)  '
              f'L1 error {err_ours:.2e} (own check '
              f'{res.marginal_error.item():.2e})')
        it_stream = res_stream.iterations
        print(f'  memory="stream"  {t_stream:7.3f} s  {it_stream:4d} it  '
              f'{t_stream / it_stream * 1e3:7.1f} ms/it '
              f'({t_stream / it_stream / t_read:5.1f} reads)  no n x m '
              f'buffer; {t_stream / t_ours:.1f}x the time of the default')
        print(f'  bare iterations  {t_bare:7.3f} s  full call / bare = '
              f'{t_full / t_bare:.3f} (input checks + returned-plan check; '
              f'calls alternating)')
        print(f'  POT sinkhorn_log {t_pot:7.3f} s  {it_pot:4d} it  '
              f'{t_pot / it_pot * 1e3:7.1f} ms/it '
              f'({t_pot / it_pot / t_read:5.1f} reads)  '
              f'L1 error {err_pot:.2e} (own check, L2 col '
              f'{log_pot["err"][-1]:.2e})')
        print(f'  speed-up {t_pot / t_ours:.1f}x  '
              f'(max |P_ours - P_pot| = '
              f'{(res.plan() - plan_pot).abs().max().item():.2e})')
        del plan_pot, log_pot, res


if __name__ == '__main__':
    main()
