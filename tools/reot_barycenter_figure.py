"""RE-OT Fig. 2 idea: barycenters between an image and noise, with and without Q.

Extras: ``pip install reot_mm[plots]`` (matplotlib, scikit-image).

Rows (RE-OT Eq. 9, weights λ_1 = λ on the image, λ_2 = 1 - λ on the noise):

1. Q = 1 (plain entropic barycenter, Benamou et al. 2015);
2. Q = P^ε, the entropic OT plan from the image b_1 to the noise b_2;
3. Q = (1 - λ)(P^ε)^T + λ P^ε (RE-OT Eq. 10).

The image is scikit-image's ``horse`` silhouette (shipped with the package),
downscaled to ``--size`` x ``--size`` pixels; the noise is i.i.d. uniform with
a fixed seed. Everything is deterministic and runs on CPU.

Example::

    python tools/reot_barycenter_figure.py work_dirs/barycenters.png
"""
import argparse
import os
import os.path as osp
import sys
import time

import numpy as np
import torch

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))

from reot_mm.ot.barycenter import deblur_prior, reot_barycenter  # noqa: E402
from reot_mm.ot.sinkhorn import reot_sinkhorn  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('out', nargs='?', default='work_dirs/barycenters.png',
                        help='output PNG path')
    parser.add_argument('--image', default='horse',
                        help='scikit-image data function name '
                        '(horse, camera, ...)')
    parser.add_argument('--size', type=int, default=16,
                        help='images are size x size pixels')
    parser.add_argument('--epsilon', type=float, default=0.01,
                        help='ε, on a grid scaled to [0, 1]^2 with squared '
                        'Euclidean cost')
    parser.add_argument('--lams', type=float, nargs='+',
                        default=[0.0, 0.25, 0.5, 0.75, 1.0],
                        help='weights λ on the image (1 - λ on the noise)')
    parser.add_argument('--floor', type=float, default=0.02,
                        help='background mass added to every image pixel '
                        '(relative to the mean), keeps every P^ε row > 0')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--max-iter', type=int, default=2000)
    return parser.parse_args(argv)


def load_image(name: str, size: int) -> np.ndarray:
    from skimage import data
    from skimage.transform import resize
    img = getattr(data, name)()
    if img.ndim == 3:
        from skimage.color import rgb2gray
        img = rgb2gray(img)
    img = img.astype(np.float64)
    img = (img - img.min()) / max(img.max() - img.min(), 1e-12)
    if name == 'horse':  # the horse is False (black) on a True background
        img = 1.0 - img
    h, w = img.shape
    side = min(h, w)  # centre crop to a square
    img = img[(h - side) // 2:(h - side) // 2 + side,
              (w - side) // 2:(w - side) // 2 + side]
    return resize(img, (size, size), anti_aliasing=True)


def grid_cost(size: int) -> torch.Tensor:
    t = torch.linspace(0, 1, size, dtype=torch.float64)
    yy, xx = torch.meshgrid(t, t, indexing='ij')
    pts = torch.stack([yy.reshape(-1), xx.reshape(-1)], -1)
    return torch.cdist(pts, pts)**2


def compute(args):
    torch.manual_seed(args.seed)
    img = load_image(args.image, args.size).reshape(-1)
    b1 = torch.from_numpy(img) + args.floor * float(img.mean())
    b1 = b1 / b1.sum()
    gen = torch.Generator().manual_seed(args.seed)
    b2 = torch.rand(args.size**2, generator=gen, dtype=torch.float64)
    b2 = b2 / b2.sum()
    hist = torch.stack([b1, b2])
    cost = grid_cost(args.size)
    eps = args.epsilon
    plan = reot_sinkhorn(cost, eps, b1, b2, tol=1e-9,
                         max_iter=args.max_iter).plan()
    log_p = plan.log()
    rows = {'Q = 1': [], 'Q = P^eps': [], 'Q = Eq. 10': []}
    stats = []
    for lam in args.lams:
        w = torch.tensor([lam, 1.0 - lam], dtype=torch.float64)
        for name, lq in (('Q = 1', None), ('Q = P^eps', log_p),
                         ('Q = Eq. 10', deblur_prior(plan, lam))):
            res = reot_barycenter(hist, cost, eps, w, log_prior=lq,
                                  tol=1e-6, max_iter=args.max_iter)
            rows[name].append(res.barycenter.reshape(args.size, args.size))
            stats.append((name, lam, res.iterations, res.error))
    return b1, b2, rows, stats


def main(argv=None):
    args = parse_args(argv)
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    t0 = time.time()
    b1, b2, rows, stats = compute(args)
    for name, lam, it, err in stats:
        print(f'{name:11s} lambda={lam:.2f} iterations={it:5d} '
              f'error={err:.1e}')
    ncol = len(args.lams)
    fig, axes = plt.subplots(3, ncol, figsize=(1.8 * ncol, 5.8))
    axes = np.asarray(axes).reshape(3, ncol)
    for r, (name, ims) in enumerate(rows.items()):
        for c, im in enumerate(ims):
            ax = axes[r, c]
            ax.imshow(im.numpy(), cmap='gray_r')
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f'λ = {args.lams[c]:g}')
            if c == 0:
                ax.set_ylabel(name)
    fig.suptitle(f'RE-OT barycenters, {args.image} (λ) vs noise (1 - λ), '
                 f'ε = {args.epsilon:g}, {args.size}x{args.size}')
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f'saved {args.out} in {time.time() - t0:.1f} s')


if __name__ == '__main__':
    main()
