"""Cost of the U(a, b) RE-OT loss relative to the U(a) loss, side by side.

No target: the full-constraint loss (``REOTLoss(constraints='ab')``, RE-OT
Eq. 14 with both marginals) runs a differentiable Sinkhorn per batch; this
script measures how much that costs against the closed-form U(a) loss
(Eq. 16) on the same logits, forward + backward, for the implicit and the
unrolled gradient. Candidates are interleaved in rounds in one process;
printed times are medians over rounds, ratios are against U(a).

    python benchmarks/bench_reot_loss_ab.py [--rounds 5] [--device cpu]
"""
import argparse
import statistics

import torch
from torch.utils import benchmark

from reot_mm.losses import REOTLoss
from reot_mm.losses.reot_loss_ab import reot_column_potentials

SHAPES = ((128, 100), (512, 1000))
CANDIDATES = (
    ('U(a)', dict()),
    ('U(a,b) implicit', dict(constraints='ab', sinkhorn_grad='implicit')),
    ('U(a,b) unrolled', dict(constraints='ab', sinkhorn_grad='unrolled')),
)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    for batch, classes in SHAPES:
        logits = (torch.randn(batch, classes, generator=generator) * 2).to(
            args.device)
        labels = torch.randint(0, classes, (batch, ),
                               generator=generator).to(args.device)
        times = {name: [] for name, _ in CANDIDATES}
        for _ in range(args.rounds):
            for name, kwargs in CANDIDATES:
                loss = REOTLoss(prior='batch_ratio', **kwargs)

                def step():
                    x = logits.clone().requires_grad_(True)
                    loss(x, labels).backward()

                timer = benchmark.Timer(stmt='step()', globals=dict(step=step))
                times[name].append(timer.blocked_autorange(
                    min_run_time=0.3).median)
        # Sinkhorn iterations of one batch plan, for the record
        b = torch.bincount(labels, minlength=classes).double()
        _, result = reot_column_potentials(logits, b / b.sum())
        base = statistics.median(times['U(a)'])
        cells = [f'{name} {statistics.median(t) * 1e3:7.2f} ms '
                 f'({statistics.median(t) / base:4.1f}x)'
                 for name, t in times.items()]
        print(f'B={batch:4d} C={classes:5d} ({result.iterations} Sinkhorn iterations, '
              f'{int((b > 0).sum())} classes in the batch): ' + ', '.join(cells))


if __name__ == '__main__':
    main()
