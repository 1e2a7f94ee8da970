"""Class barycenters in feature space from a coupling (RE-OT Eq. 17-18).

Extras: ``pip install reot_mm[plots]`` (matplotlib, scikit-learn for t-SNE).

Reads a compact dump with features (``tools/test.py CONFIG CKPT --out
preds.npz --dump-features``), builds a coupling P between the N test samples
and the K labels, computes the label barycenters

    T'(y_j) = Σ_i P_ij f_i / Σ_i P_ij                         (RE-OT Eq. 18)

with :func:`reot_mm.ot.label_barycenters`, and plots a 2-D embedding (PCA, or
t-SNE with scikit-learn) of the features and the barycenters to a PNG, in the
spirit of RE-OT Fig. 4::

    python tools/class_barycenters.py preds.npz --out-dir work_dirs/bary
    python tools/class_barycenters.py preds.npz --plan ot --lam 0.5 \\
        --embed tsne --out-dir work_dirs/bary

Couplings (``--plan``):

* ``ua`` (default): the classifier's own coupling under the relaxation U(a)
  (RE-OT Eq. 16), ``P_ij = (1/N) softmax(s_i)_j`` = ``pred_score / N``; then
  T'(y_j) is the probability-weighted mean feature of class j;
* ``ot``: the U(a, b) plan of post-hoc OT (OTLM Algorithm 1) with column
  marginal ``--mu`` (uniform by default) and entropic weight ``--lam``.

Writes ``barycenters.npz`` (``barycenters`` (K, d), ``class_means`` (K, d) of
the ground-truth classes, NaN rows for classes without test samples,
``class_mass`` (K,) = Σ_i P_ij) and ``barycenters_<embed>.png`` into
``--out-dir``, and prints, per class, the distance between barycenter and
class mean.
"""
import argparse
import os
import os.path as osp
import sys

import numpy as np
import torch

from reot_mm.counts_file import load_counts_file
from reot_mm.evaluation.dump_io import load_predictions
from reot_mm.ot import label_barycenters, sinkhorn_prediction
from reot_mm.ot.checks import check_positive


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('dump', help='compact dump with features (.npz / .pt, '
                   'tools/test.py --out preds.npz --dump-features)')
    p.add_argument('--out-dir', required=True)
    p.add_argument('--plan', choices=['ua', 'ot'], default='ua')
    p.add_argument('--lam', type=float, default=1.0,
                   help='entropic weight for --plan ot')
    p.add_argument('--mu', default='uniform', help="column marginal for "
                   "--plan ot: 'uniform' or a counts/probability file")
    p.add_argument('--tol', type=float, default=1e-9,
                   help='Sinkhorn tolerance (L1 marginal error, fp64) for '
                   '--plan ot')
    p.add_argument('--embed', choices=['pca', 'tsne'], default='pca')
    p.add_argument('--max-points', type=int, default=5000,
                   help='samples drawn in the plot (all are used for the '
                   'barycenters)')
    p.add_argument('--seed', type=int, default=0)
    return p.parse_args(argv)


def log_coupling(scores: torch.Tensor, plan: str = 'ua', lam: float = 1.0,
                 mu=None, tol: float = 1e-9) -> torch.Tensor:
    """(N, K) log P of the chosen coupling.

    Args:
        scores: (N, K) softmax scores Z (rows sum to 1).
        plan: ``'ua'``: ``log P = log Z - log N`` (U(a), RE-OT Eq. 16);
            ``'ot'``: post-hoc OT plan with column marginal ``mu``, whose
            rows are the refined probabilities divided by N.
        lam: entropic weight for ``'ot'``.
        mu: (K,) column marginal for ``'ot'``, None = uniform.
        tol: Sinkhorn tolerance for ``'ot'`` (fp64, up to 10000 iterations).
    """
    n = scores.shape[0]
    log_z = scores.double().clamp_min(1e-300).log()  # fp64: sums over N
    if plan == 'ua':
        return log_z - torch.logsumexp(log_z, 1, keepdim=True) - np.log(n)
    if plan != 'ot':
        raise ValueError(f"plan must be 'ua' or 'ot', got {plan!r}")
    res = sinkhorn_prediction(log_z, mu, lam, tol=tol, max_iter=10000,
                              check_every=5)
    # rows of the plan: softmax_j(log Z_ij / λ + g_j) / N (f_i cancels)
    log_rows = log_z.double() / lam + res.g.double()
    return log_rows - torch.logsumexp(log_rows, 1, keepdim=True) - np.log(n)


def class_means(features: torch.Tensor, labels: torch.Tensor,
                k: int) -> torch.Tensor:
    """(K, d) mean feature per ground-truth class; NaN rows if absent."""
    sums = torch.zeros(k, features.shape[1], dtype=torch.float64)
    sums.index_add_(0, labels, features.double())
    counts = torch.bincount(labels, minlength=k).double()
    return sums / counts[:, None]  # 0 / 0 = NaN for absent classes


def compute(data: dict, plan: str = 'ua', lam: float = 1.0, mu=None,
            tol: float = 1e-9) -> dict:
    """Barycenters (RE-OT Eq. 18) and ground-truth class means of a dump.

    Args:
        data: :func:`reot_mm.evaluation.dump_io.load_predictions` output with
            ``features``.

    Returns:
        dict of numpy arrays: ``barycenters`` (K, d), ``class_mass`` (K,),
        ``class_means`` (K, d) (NaN rows: no test sample of that class).
    """
    features = data['features'].double()
    log_plan = log_coupling(data['pred_score'], plan, lam, mu, tol)
    bary = label_barycenters(log_plan, features, log=True)
    k = log_plan.shape[1]
    out = {'barycenters': bary.numpy(),
           'class_mass': torch.logsumexp(log_plan, 0).exp().numpy()}
    labels = data['gt_label']
    if (labels >= 0).all():
        out['class_means'] = class_means(features, labels, k).numpy()
    return out


def embed_2d(points: np.ndarray, extra: np.ndarray, method: str,
             seed: int = 0):
    """2-D coordinates of ``points`` (n, d) and ``extra`` (k, d).

    PCA is fitted on ``points`` and applied to both; t-SNE (scikit-learn)
    embeds the concatenation, since it cannot map new points.
    """
    if method == 'pca':
        mean = points.mean(0, keepdims=True)
        _, _, vt = np.linalg.svd(points - mean, full_matrices=False)
        basis = vt[:2].T
        if basis.shape[1] < 2:  # 1-D features: pad a zero axis
            basis = np.concatenate([basis, np.zeros_like(basis)], 1)
        return (points - mean) @ basis, (extra - mean) @ basis
    from sklearn.manifold import TSNE
    both = np.concatenate([points, extra])
    perplexity = float(min(30.0, max(2.0, (len(both) - 1) / 3.0)))
    coords = TSNE(n_components=2, perplexity=perplexity, init='pca',
                  random_state=seed).fit_transform(both)
    return coords[:len(points)], coords[len(points):]


def plot(path, coords, labels, bary_xy, means_xy, title):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    k = len(bary_xy)
    cmap = plt.get_cmap('tab20' if k > 10 else 'tab10')
    colors = [cmap(j % cmap.N) for j in range(k)]
    fig, ax = plt.subplots(figsize=(7, 7))
    ax.scatter(coords[:, 0], coords[:, 1], s=6, alpha=0.35,
               c=[colors[int(j) % k] for j in labels], linewidths=0)
    ax.scatter(bary_xy[:, 0], bary_xy[:, 1], s=220, marker='*',
               c=colors, edgecolors='black', linewidths=0.8,
               label="barycenter T'(y_j) (Eq. 18)")
    if means_xy is not None:
        ok = np.isfinite(means_xy).all(1)
        ax.scatter(means_xy[ok, 0], means_xy[ok, 1], s=70, marker='X',
                   c=[colors[j] for j in np.flatnonzero(ok)],
                   edgecolors='black', linewidths=0.6,
                   label='ground-truth class mean')
    for j, (x, y) in enumerate(bary_xy):
        ax.annotate(str(j), (x, y), textcoords='offset points',
                    xytext=(6, 6), fontsize=8)
    ax.set_title(title)
    ax.legend(loc='best', fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _mu(arg, k):
    if arg == 'uniform':
        return None
    values = torch.tensor(load_counts_file(arg, 'mu'), dtype=torch.float64)
    if values.shape != (k, ):
        raise ValueError(f'mu {arg!r} has {values.numel()} entries, '
                         f'expected {k} (the class count of the dump)')
    if (values < 0).any() or values.sum() <= 0:
        raise ValueError(f'mu {arg!r} must be non-negative with a positive '
                         'sum')
    return values / values.sum()


def _main(argv=None):
    args = parse_args(argv)
    if args.max_points < 1:
        raise ValueError(f'--max-points must be >= 1, got {args.max_points}')
    check_positive(args.lam, '--lam')
    data = load_predictions(args.dump, need_labels=False, need_features=True)
    n, k = data['pred_score'].shape
    result = compute(data, args.plan, args.lam, _mu(args.mu, k), args.tol)
    os.makedirs(args.out_dir, exist_ok=True)
    np.savez(osp.join(args.out_dir, 'barycenters.npz'), **result)

    features = data['features'].double().numpy()
    labels = data['gt_label'].numpy()
    colour_by = labels if (labels >= 0).all() else \
        data['pred_score'].argmax(1).numpy()
    rng = np.random.default_rng(args.seed)
    shown = np.sort(rng.permutation(n)[:args.max_points])
    means = result.get('class_means')
    extra = result['barycenters'] if means is None else np.concatenate(
        [result['barycenters'], np.nan_to_num(means)])
    xy, extra_xy = embed_2d(features[shown], extra, args.embed, args.seed)
    means_xy = None
    if means is not None:
        means_xy = extra_xy[k:].copy()
        means_xy[~np.isfinite(means).all(1)] = np.nan
    png = osp.join(args.out_dir, f'barycenters_{args.embed}.png')
    plot(png, xy, colour_by[shown], extra_xy[:k], means_xy,
         f'{osp.basename(args.dump)}: plan {args.plan}, {args.embed}, '
         f'{n} samples, {k} classes')

    print(f'plan: {args.plan}  samples: {n}  classes: {k}  feature dim: '
          f'{features.shape[1]}')
    if means is not None:
        dist = np.linalg.norm(result['barycenters'] - means, axis=1)
        spread = np.linalg.norm(features - features.mean(0), axis=1).mean()
        print('class  mass      |T\'(y_j) - class mean|')
        for j in range(k):
            print(f'{j:5d}  {result["class_mass"][j]:.4f}  {dist[j]:.4f}')
        print(f'mean distance {np.nanmean(dist):.4f} (mean distance of a '
              f'feature to the global mean: {spread:.4f})')
    print(f'written: {osp.join(args.out_dir, "barycenters.npz")}, {png}')


def main(argv=None):
    """Entry point; input errors exit with status 1 and an 'error:' line."""
    try:
        _main(argv)
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f'error: {err}')


if __name__ == '__main__':
    main()
