"""Sinkhorn, RE-OT loss and training-step timings, device and CPU side by side.

One run measures every case on the CPU and on ``--device`` (default cuda)
with the same inputs and prints both times and their ratio, so the numbers
compare like with like:

* ``reot_sinkhorn`` (RE-OT NeurIPS 2023 Eq. 6-8) on -log_softmax costs of
  long-tailed logits, fp32 (buffer and stream) and fp64, ε = 1, tol 1e-6,
  plus an fp32 problem with |C|/ε = 1e6 (the fp64 finish of the honest
  convergence check);
* the RE-OT loss (Eq. 16 U(a), Eq. 14 U(a, b)) forward + backward against
  ``F.cross_entropy`` on (B, C) = (256, 1000) logits;
* a whole training step (forward, backward, SGD) of the CIFAR ResNet-32
  (batch 128, 100 classes) with the cross-entropy head, the RE-OT U(a) head
  and the RE-OT U(a, b) head, and the RE-OT U(a) step under bf16 autocast:
  the loss's share of a step, as ``step / CE step``.

    python benchmarks/bench_gpu.py [--device cuda] [--quick] [--threads N]

``--quick`` shrinks every size (a smoke run, e.g. on a CPU-only machine with
``--device cpu``).
"""
import argparse
import os.path as osp
import time

import torch
import torch.nn.functional as F

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def sync(device):
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize()


def timed(fn, device, repeats, warmup=1):
    """Mean seconds per call after ``warmup`` calls; returns (s, last out)."""
    out = None
    for _ in range(warmup):
        out = fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    sync(device)
    return (time.perf_counter() - start) / repeats, out


def make_cost(n, m, seed=0):
    """-log_softmax of long-tailed logits (as bench_sinkhorn.py)."""
    gen = torch.Generator().manual_seed(seed)
    counts = torch.logspace(3, 0, m)
    logits = torch.randn(n, m, generator=gen) * 2 + counts.log()
    return -torch.log_softmax(logits, dim=-1)


def row(name, t_cpu, t_dev, note=''):
    print(f'  {name:<34} cpu {t_cpu * 1e3:9.2f} ms   device '
          f'{t_dev * 1e3:9.2f} ms   cpu/device {t_cpu / t_dev:7.1f}x  '
          f'{note}', flush=True)


def bench_sinkhorn(device, quick, repeats):
    from reot_mm.ot import reot_sinkhorn
    print('reot_sinkhorn (eps 1, tol 1e-6, uniform marginals)')
    sizes = [(2000, 100)] if quick else [(10000, 1000), (50000, 1000)]
    for n, m in sizes:
        cost = make_cost(n, m)
        for dtype, memory in ((torch.float32, 'buffer'),
                              (torch.float32, 'stream'),
                              (torch.float64, 'buffer')):
            c_cpu = cost.to(dtype)
            c_dev = c_cpu.to(device)
            times, notes = [], []
            for c in (c_cpu, c_dev):
                t, res = timed(lambda: reot_sinkhorn(c, 1.0, memory=memory),
                               c.device, repeats)
                times.append(t)
                notes.append(f'{res.iterations} it, err '
                             f'{res.marginal_error.item():.1e}, converged '
                             f'{res.converged}')
            row(f'{n}x{m} {str(dtype)[6:]} {memory}', *times,
                'device: ' + notes[1])
    n, m = (200, 20) if quick else (1000, 100)
    cost = 1e3 * (1 + 1e-3 * torch.rand(n, m, generator=torch.Generator()
                                        .manual_seed(1)))
    times, notes = [], []
    for c in (cost, cost.to(device)):
        t, res = timed(lambda: reot_sinkhorn(c, 1e-3), c.device, repeats)
        times.append(t)
        notes.append(f'{res.iterations} it, err '
                     f'{res.marginal_error.item():.1e}, converged '
                     f'{res.converged}')
    row(f'{n}x{m} fp32 |C|/eps 1e6', *times, 'device: ' + notes[1])


def bench_loss(device, quick, repeats):
    import reot_mm
    from mmengine.registry import MODELS
    reot_mm.register_all_modules()
    b, c = (64, 100) if quick else (256, 1000)
    print(f'loss forward + backward, ({b}, {c}) logits')
    gen = torch.Generator().manual_seed(2)
    counts = torch.logspace(3, 0, c).round().tolist()
    logits = torch.randn(b, c, generator=gen) * 3
    labels = torch.randint(c, (b, ), generator=gen)
    cases = {
        'cross_entropy': None,
        'REOTLoss U(a) interpolated': dict(prior='interpolated'),
        'REOTLoss U(a,b) interpolated': dict(prior='interpolated',
                                             constraints='ab'),
    }
    base = {}
    for name, kwargs in cases.items():
        times = []
        for dev in ('cpu', device):
            x = logits.to(dev).requires_grad_(True)
            y = labels.to(dev)
            if kwargs is None:
                def loss_fn():
                    return F.cross_entropy(x, y)
            else:
                module = MODELS.build(dict(type='REOTLoss',
                                           class_counts=counts,
                                           **kwargs)).to(dev)

                def loss_fn():
                    return module(x, y)

            def step():
                x.grad = None
                loss = loss_fn()
                loss.backward()
                return loss
            times.append(timed(step, dev, repeats)[0])
        base.setdefault('ce', times)
        row(name, *times, f'device / CE {times[1] / base["ce"][1]:.2f}')


def _resnet32(loss_cfg, device):
    import reot_mm
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    reot_mm.register_all_modules()
    cfg = Config.fromfile(osp.join(ROOT, 'configs', '_base_', 'models',
                                   'resnet32_cifar.py'))
    cfg.model.head.loss = loss_cfg
    torch.manual_seed(0)
    return MODELS.build(cfg.model).to(device).train()


def bench_training_step(device, quick, repeats):
    from mmpretrain.structures import DataSample
    batch, classes = (16, 100) if quick else (128, 100)
    print(f'training step, CIFAR ResNet-32, batch {batch}, {classes} '
          f'classes (forward, backward, SGD)')
    counts = torch.logspace(3, 0, classes).round().tolist()
    heads = {
        'CE': (dict(type='CrossEntropyLoss', loss_weight=1.0), False),
        'RE-OT U(a)': (dict(type='REOTLoss', prior='interpolated',
                            class_counts=counts), False),
        'RE-OT U(a,b)': (dict(type='REOTLoss', prior='interpolated',
                              class_counts=counts, constraints='ab'), False),
        'RE-OT U(a) bf16 autocast': (dict(type='REOTLoss',
                                          prior='interpolated',
                                          class_counts=counts), True),
    }
    gen = torch.Generator().manual_seed(3)
    images = torch.rand(batch, 3, 32, 32, generator=gen)
    labels = torch.randint(classes, (batch, ), generator=gen)
    ce = None
    for name, (loss_cfg, amp) in heads.items():
        times = []
        for dev in ('cpu', device):
            model = _resnet32(loss_cfg, dev)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
            x = images.to(dev)
            samples = [DataSample().set_gt_label(int(y)).to(dev)
                       for y in labels]

            def step():
                with torch.autocast(torch.device(dev).type,
                                    dtype=torch.bfloat16, enabled=amp):
                    losses = model(x, samples, mode='loss')
                loss = sum(v for k, v in losses.items() if 'loss' in k)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                return loss
            times.append(timed(step, dev, repeats)[0])
        ce = ce or times
        row(name, *times, f'device step / CE step {times[1] / ce[1]:.3f}')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--quick', action='store_true')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--cases', nargs='+',
                        default=['sinkhorn', 'loss', 'step'],
                        choices=['sinkhorn', 'loss', 'step'])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if torch.device(args.device).type == 'cuda':
        if not torch.cuda.is_available():
            raise SystemExit('no CUDA device; pass --device cpu for a smoke '
                             'run')
        name = torch.cuda.get_device_name()
        # fp32 means fp32 here (no TF32), as on the CPU
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    else:
        name = 'cpu'
    print(f'torch {torch.__version__}, device {args.device} ({name}), CPU '
          f'threads {torch.get_num_threads()}, repeats {args.repeats}')
    cases = dict(sinkhorn=bench_sinkhorn, loss=bench_loss,
                 step=bench_training_step)
    for name in args.cases:
        try:
            cases[name](args.device, args.quick, args.repeats)
        except ImportError as error:  # a bare GPU image without OpenMMLab
            print(f'{name}: skipped, {error}')


if __name__ == '__main__':
    main()
