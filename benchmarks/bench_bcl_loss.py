"""BCL loss (Eq. 9, class-complement + class-averaging) vs. a plain supervised
contrastive loss, forward + backward, measured side by side in one run.

B = 256 samples x 2 views (2B = 512 anchors), D = 128, C = 100 and 1000
prototypes. The SupCon reference below is the straightforward formulation
(Khosla et al. 2020, as in the public SupConLoss): one (2B, 2B) similarity
matrix, masks, exp, log, mean over positives. Target: BCL / SupCon <= 2.

With ``--resnet50-batch N`` the same run also times one ResNet-50 forward +
backward at batch N, 224 x 224, 1000 classes (torchvision), and prints each
loss as a share of that training step: the size against which a special
kernel for the loss would have to earn its place (a fused autograd
denominator for Eq. 9 was removed after saving 0.05 % of such a step).

    python benchmarks/bench_bcl_loss.py [--repeats 30] [--threads N]
        [--resnet50-batch 16]

On a shared CPU use --threads 1: with every core busy elsewhere each
multi-threaded op waits for a time slice (~8 ms here), which then measures the
number of ops (BCL has more small ones) rather than the work.
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from reot_mm.losses.bcl_loss import BCLLoss


def supcon_loss(features: torch.Tensor, labels: torch.Tensor,
                temperature: float = 0.1) -> torch.Tensor:
    """Straightforward SupCon: features (B, V, D) un-normalised, labels (B,)."""
    batch, views = features.shape[:2]
    features = F.normalize(features, dim=2)
    contrast = torch.cat(torch.unbind(features, dim=1), dim=0)       # (VB, D)
    logits = contrast @ contrast.t() / temperature
    logits = logits - logits.max(dim=1, keepdim=True)[0].detach()
    labels = labels.repeat(views)
    mask = (labels[:, None] == labels[None, :]).float()
    logits_mask = torch.ones_like(mask).fill_diagonal_(0)
    mask = mask * logits_mask
    exp_logits = torch.exp(logits) * logits_mask
    log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
    mean_log_prob_pos = (mask * log_prob).sum(1) / mask.sum(1).clamp(min=1)
    return -mean_log_prob_pos.mean()


def timed(step, repeats, warmup=3):
    for _ in range(warmup):
        step()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def resnet50_step_ms(args, device, sync) -> float:
    """Median ms of one ResNet-50 forward + backward (cross-entropy)."""
    import torchvision
    generator = torch.Generator().manual_seed(0)
    model = torchvision.models.resnet50(num_classes=1000).to(device)
    images = torch.randn(args.resnet50_batch, 3, 224, 224,
                         generator=generator).to(device)
    labels = torch.randint(1000, (args.resnet50_batch, ),
                           generator=generator).to(device)

    def step():
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        sync()

    return timed(step, 3, warmup=1) * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--batch', type=int, default=256)
    parser.add_argument('--dim', type=int, default=128)
    parser.add_argument('--classes', type=int, nargs='+', default=[100, 1000])
    parser.add_argument('--repeats', type=int, default=30)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--resnet50-batch', type=int, default=0,
                        help='also time a ResNet-50 training step at this '
                        'batch size (0: off)')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = (torch.cuda.synchronize if device.type == 'cuda' else lambda: None)
    print(f'B={args.batch} x 2 views, D={args.dim}, device={device}, '
          f'threads={torch.get_num_threads()}, median of {args.repeats}')
    step_ms = resnet50_step_ms(args, device, sync) if args.resnet50_batch \
        else None
    if step_ms is not None:
        print(f'ResNet-50 forward + backward, batch {args.resnet50_batch}, '
              f'224x224: {step_ms:.0f} ms')
    print(f"{'C':>6} {'SupCon ms':>11} {'BCL ms':>9} {'ratio':>7}"
          + ('' if step_ms is None else f" {'BCL/step':>9}"))
    for num_classes in args.classes:
        generator = torch.Generator().manual_seed(0)
        # long-tailed labels: exponential profile over the classes
        weights = torch.exp(-torch.linspace(0, 4, num_classes))
        labels = torch.multinomial(weights, args.batch, replacement=True,
                                   generator=generator).to(device)
        features = torch.randn(args.batch, 2, args.dim, generator=generator)
        features = features.to(device).requires_grad_()
        protos = torch.randn(num_classes, args.dim, generator=generator)
        protos = protos.to(device).requires_grad_()
        bcl = BCLLoss(temperature=0.1, lc_weight=0.0, bcl_weight=1.0).to(device)

        def step_supcon():
            supcon_loss(features, labels).backward()
            sync()

        def step_bcl():
            bcl.contrastive(labels, features, protos, num_classes).backward()
            sync()

        # interleave to share any drift in machine load
        supcon_ms, bcl_ms = [], []
        for _ in range(3):
            supcon_ms.append(timed(step_supcon, args.repeats // 3) * 1e3)
            bcl_ms.append(timed(step_bcl, args.repeats // 3) * 1e3)
        s, b = statistics.median(supcon_ms), statistics.median(bcl_ms)
        share = '' if step_ms is None else f' {b / step_ms:>8.2%}'
        print(f'{num_classes:>6} {s:>11.2f} {b:>9.2f} {b / s:>7.2f}{share}')


if __name__ == '__main__':
    main()
