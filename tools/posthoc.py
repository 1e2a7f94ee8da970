"""Post-hoc correction of a prediction dump (logit adjustment, OT, OTLM).

Reads the pickle written by ``tools/test.py --out preds.pkl`` (mmpretrain
classification: a list of per-sample dicts with ``pred_score`` (K,) and
``gt_label`` (1,)), refines the predictions and prints top-1, many / medium /
few accuracy and KL(refined marginal ‖ target) (OTLM Table 4)::

    python tools/posthoc.py preds.pkl --method ot --lam 1.0
    python tools/posthoc.py preds.pkl --method la --train-counts counts.json
    python tools/posthoc.py preds.pkl --method otlm --optimizer sgd \\
        --iters 100 --lr 0.2 --lam 1.2 --fit-split 0.2 --out refined.pkl

Methods: ``la`` logit adjustment (Menon et al., ``log p - τ log π_train``),
``ot`` post-hoc OT (OTLM Algorithm 1, cost -log Z, λ, column marginal μ),
``otlm`` OTLM (Eq. 12, W fitted on the unlabeled ``--fit-split`` part, then
post-hoc OT of ``softmax(Φ W)`` on the rest). ``--mu em`` estimates the test
label distribution by EM (Saerens et al. 2002) from the training prior.
"""
import argparse
import pickle
import sys
import time

import torch

from reot_mm.counts_file import load_counts_file
from reot_mm.ot.posthoc import (apply_otlm, estimate_test_prior_em, fit_otlm,
                                kl_divergence, logit_adjustment, posthoc_ot,
                                refined_marginal)


class DumpError(ValueError):
    """The prediction dump does not have the expected format."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('dump', help='pickle from tools/test.py --out')
    p.add_argument('--method', choices=['la', 'ot', 'otlm'], default='ot')
    p.add_argument('--train-counts', help='per-class training counts (JSON '
                   'list, {"class_counts": [...]} or text numbers); needed '
                   'for la, --mu em and many/medium/few')
    p.add_argument('--tau', type=float, default=1.0, help='LA strength τ')
    p.add_argument('--lam', type=float, default=1.0, help='entropic weight λ')
    p.add_argument('--mu', default='uniform', help="target label marginal: "
                   "'uniform', 'em' or a counts/probability file")
    p.add_argument('--iters', type=int, default=20, help='OTLM steps')
    p.add_argument('--lr', type=float, default=1e-3, help='OTLM lr')
    p.add_argument('--weight-decay', type=float, default=1e-3)
    p.add_argument('--optimizer', choices=['adam', 'sgd'], default='adam')
    p.add_argument('--batch-size', type=int, default=None,
                   help='OTLM mini-batch (paper: 10000); default all')
    p.add_argument('--fit-split', type=float, default=1.0,
                   help='OTLM: fraction of samples (random, --seed) used, '
                   'without labels, to fit W; metrics on the rest. 1.0 fits '
                   'and evaluates on all (transductive, as in the paper)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--many-thr', type=float, default=100,
                   help='many-shot: training count > this')
    p.add_argument('--few-thr', type=float, default=20,
                   help='few-shot: training count < this')
    p.add_argument('--max-iter', type=int, default=1000,
                   help='Sinkhorn iterations')
    p.add_argument('--tol', type=float, default=1e-6, help='Sinkhorn tol')
    p.add_argument('--no-progress', action='store_true')
    p.add_argument('--out', help='write refined predictions (same format)')
    return p.parse_args(argv)


def load_dump(path):
    """Return (samples, scores (N, K) float32, labels (N,) int64).

    Raises:
        DumpError: not a non-empty list of dicts with ``pred_score`` (K,)
            and ``gt_label`` (1,) or scalar, consistent K, labels in [0, K).
    """
    with open(path, 'rb') as handle:
        samples = pickle.load(handle)
    if not isinstance(samples, (list, tuple)) or len(samples) == 0:
        raise DumpError(f'{path}: expected a non-empty list of per-sample '
                        f'dicts (tools/test.py --out), got '
                        f'{type(samples).__name__}')
    scores, labels = [], []
    k = None
    for i, s in enumerate(samples):
        if not isinstance(s, dict):
            raise DumpError(f'{path}: sample {i} is a {type(s).__name__}, '
                            'expected a dict')
        missing = {'pred_score', 'gt_label'} - set(s)
        if missing:
            raise DumpError(f'{path}: sample {i} lacks key(s) '
                            f'{sorted(missing)}; expected pred_score (K,) and '
                            f'gt_label (1,), got keys {sorted(s)}')
        score = torch.as_tensor(s['pred_score'])
        if score.ndim != 1:
            raise DumpError(f'{path}: sample {i} pred_score must have shape '
                            f'(K,), got {tuple(score.shape)}')
        if k is None:
            k = score.shape[0]
        elif score.shape[0] != k:
            raise DumpError(f'{path}: sample {i} has {score.shape[0]} class '
                            f'scores, expected {k} (class count of sample 0)')
        label = torch.as_tensor(s['gt_label']).reshape(-1)
        if label.numel() != 1:
            raise DumpError(f'{path}: sample {i} gt_label must have shape '
                            f'(1,), got {tuple(label.shape)}')
        scores.append(score)
        labels.append(label)
    scores = torch.stack(scores).float()
    labels = torch.cat(labels).long()
    if ((labels < 0) | (labels >= k)).any():
        raise DumpError(f'{path}: gt_label out of range [0, {k}): '
                        f'{labels.min().item()}..{labels.max().item()}')
    if not torch.isfinite(scores).all() or (scores < 0).any():
        raise DumpError(f'{path}: pred_score must be finite probabilities '
                        '(softmax scores)')
    return list(samples), scores, labels


def _load_distribution(path, k, name):
    values = torch.tensor(load_counts_file(path, name), dtype=torch.float64)
    if values.shape != (k, ):
        raise ValueError(f'{name} {path!r} has {values.numel()} entries, '
                         f'expected {k} (the class count of the dump)')
    if (values < 0).any() or values.sum() <= 0:
        raise ValueError(f'{name} {path!r} must be non-negative with a '
                         'positive sum')
    return values


def metrics(pred, labels, counts, many_thr, few_thr, k):
    """top-1, balanced accuracy and (with counts) many / medium / few."""
    correct = (pred == labels).double()
    out = {'top1': correct.mean().item() * 100}
    per_class = torch.zeros(k, dtype=torch.float64).index_add_(
        0, labels, correct)
    n_class = torch.bincount(labels, minlength=k).double()
    present = n_class > 0
    out['balanced'] = (per_class[present] / n_class[present]).mean().item() \
        * 100
    if counts is not None:
        groups = {'many': counts > many_thr, 'few': counts < few_thr}
        groups['medium'] = ~(groups['many'] | groups['few'])
        for name in ('many', 'medium', 'few'):
            mask = groups[name][labels]
            out[name] = (correct[mask].mean().item() * 100
                         if mask.any() else float('nan'))
    return out


def _main(argv=None):
    args = parse_args(argv)
    t0 = time.perf_counter()
    try:
        samples, scores, labels = load_dump(args.dump)
    except (DumpError, pickle.UnpicklingError, EOFError) as error:
        sys.exit(f'error: {error}')
    n, k = scores.shape
    counts = None
    if args.train_counts:
        counts = _load_distribution(args.train_counts, k, 'train-counts')
    if args.method == 'la' and counts is None:
        sys.exit('error: --method la needs --train-counts')
    log_p = scores.clamp_min(1e-30).log()
    log_p = log_p - torch.logsumexp(log_p, 1, keepdim=True)

    if args.mu == 'uniform':
        mu = torch.full((k, ), 1.0 / k, dtype=torch.float64)
    elif args.mu == 'em':
        if counts is None:
            sys.exit('error: --mu em needs --train-counts')
        mu = estimate_test_prior_em(log_p.exp(), counts / counts.sum())
        print(f'EM test prior: min {mu.min():.4g} max {mu.max():.4g}')
    else:
        mu = _load_distribution(args.mu, k, 'mu')
        mu = mu / mu.sum()

    eval_idx = torch.arange(n)
    if args.method == 'la':
        adj = logit_adjustment(log_p, (counts / counts.sum()).float(),
                               args.tau)
        probs = torch.softmax(adj, 1)
        pred = probs.argmax(1)
    elif args.method == 'ot':
        res = posthoc_ot(log_p, mu, args.lam, max_iter=args.max_iter,
                         tol=args.tol)
        probs, pred = res.probs, res.pred
    else:
        if not 0 < args.fit_split <= 1:
            sys.exit(f'error: --fit-split must be in (0, 1], got '
                     f'{args.fit_split}')
        fit_idx = eval_idx
        if args.fit_split < 1:
            perm = torch.randperm(n, generator=torch.Generator()
                                  .manual_seed(args.seed))
            n_fit = max(1, int(round(args.fit_split * n)))
            if n_fit >= n:
                sys.exit('error: --fit-split leaves no samples to evaluate')
            fit_idx, eval_idx = perm[:n_fit].sort()[0], perm[n_fit:].sort()[0]
        fit = fit_otlm(log_p[fit_idx], mu, args.lam, args.iters, args.lr,
                       args.weight_decay, args.optimizer,
                       batch_size=args.batch_size,
                       sinkhorn_iters=args.max_iter, sinkhorn_tol=args.tol,
                       seed=args.seed, progress=not args.no_progress)
        print(f'OTLM loss {fit.losses[0]:.5f} -> {fit.losses[-1]:.5f} '
              f'({len(fit.losses)} iterations, fitted on {len(fit_idx)} '
              'unlabeled samples)')
        res = apply_otlm(fit.W, log_p[eval_idx], mu, args.lam,
                         max_iter=args.max_iter, tol=args.tol)
        probs, pred = res.probs, res.pred

    y = labels[eval_idx]
    before = metrics(log_p[eval_idx].argmax(1), y, counts, args.many_thr,
                     args.few_thr, k)
    after = metrics(pred, y, counts, args.many_thr, args.few_thr, k)
    soft = refined_marginal(probs)
    hard = refined_marginal(probs, hard=True)
    print(f'method: {args.method}  samples: {len(eval_idx)}  classes: {k}')
    for key in after:
        print(f'{key:>9}: {before[key]:7.2f} -> {after[key]:7.2f}')
    print(f'KL(refined marginal || target): soft {kl_divergence(soft, mu):.3e}'
          f'  hard {kl_divergence(hard, mu):.3e}')
    print(f'time: {time.perf_counter() - t0:.2f} s')

    if args.out:
        refined = []
        for row, i in enumerate(eval_idx.tolist()):
            item = dict(samples[i])
            # clone: a pickled view would carry the whole (N, K) storage
            item['pred_score'] = probs[row].float().clone()
            item['pred_label'] = pred[row:row + 1].clone()
            refined.append(item)
        with open(args.out, 'wb') as handle:
            pickle.dump(refined, handle)
        print(f'refined predictions written to {args.out}')


def main(argv=None):
    """Entry point; input errors exit with status 1 and an 'error:' line."""
    try:
        _main(argv)
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f'error: {err}')


if __name__ == '__main__':
    main()
