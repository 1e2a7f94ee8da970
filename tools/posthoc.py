"""Post-hoc correction of a prediction dump (logit adjustment, OT, OTLM).

Extras: ``pip install reot_mm[posthoc]`` for ``--method otlm`` (tqdm progress bar).

Extras: ``pip install reot_mm[posthoc]`` for ``--method otlm`` (tqdm progress bar).

Classification (``--task cls``): reads ``tools/test.py --out`` dumps, either
the compact ``preds.npz`` / ``preds.pt`` (``DumpPredictions``: stacked
arrays, fast) or the upstream pickle ``preds.pkl`` (per-sample dicts with
``pred_score`` (K,) and ``gt_label`` (1,); slow for large test sets), refines
the predictions and prints top-1, balanced, many / medium / few accuracy and
KL(refined marginal ‖ target) (OTLM Table 4). The training class counts and
the many / few thresholds come with the dump (``tools/test.py --out`` stores
them: in the compact file, or ``<dump>.counts.json`` next to a pickle), or
from ``--train-counts`` (a checkpoint ``.pth`` or a counts file)::

    python tools/posthoc.py preds.npz --method ot --lam 1.0
    python tools/posthoc.py preds.npz --method la
    python tools/posthoc.py preds.pkl --method la --train-counts epoch_100.pth
    python tools/posthoc.py preds.pkl --method otlm --optimizer sgd \\
        --iters 100 --lr 0.2 --lam 1.2 --fit-split 0.2 --out refined.npz

Semantic segmentation (``--task seg``, auto-detected): reads an mmseg
``tools/test.py --out preds.pkl`` dump (per image ``seg_logits`` (C, H, W),
``gt_sem_seg`` (1, H, W)), fits the correction on ``--pixels-per-image``
randomly sampled labelled pixels per image (labels are not used, only the
``ignore_index`` mask), applies it to every pixel and prints aAcc / mIoU /
mAcc before and after (docs/methods/posthoc.md, "Per-pixel")::

    python tools/posthoc.py seg_preds.pkl --method ot --mu train \\
        --train-counts pixel_counts.json --pixels-per-image 2000

Methods: ``la`` logit adjustment (Menon et al., ICLR 2021,
``log p - τ log π_train``), ``ot`` post-hoc OT (Peng et al., ICLR 2022, OTLM
Algorithm 1: cost -log Z, λ, column marginal μ; the same Sinkhorn prediction
as RE-OT §5),
``otlm`` OTLM (Eq. 12, W fitted on the unlabeled ``--fit-split`` part, then
post-hoc OT of ``softmax(Φ W)`` on the rest). ``--mu``: ``uniform``, ``em``
(EM estimate, Saerens et al. 2002, from the training prior), ``train`` (the
training prior) or a counts / probability file.
"""
import argparse
import os.path as osp
import pickle
import sys
import time

import torch

from reot_mm.counts_file import load_counts_file
from reot_mm.engine.checkpoint_counts import (is_torch_checkpoint,
                                              read_checkpoint_counts)
from reot_mm.evaluation.dump_io import (COMPACT_SUFFIXES, PICKLE_SUFFIXES,
                                        DumpFormatError, load_predictions,
                                        read_pickle, read_side_meta,
                                        save_predictions)
from reot_mm.evaluation.seg_dump import (apply_pixel_map, load_seg_dump,
                                         sample_pixels, seg_scores)
from reot_mm.evaluation.shot_metric import (DEFAULT_FEW_THRESHOLD,
                                            DEFAULT_MANY_THRESHOLD,
                                            shot_accuracies)
from reot_mm.ot.checks import check_positive
from reot_mm.ot.otlm import apply_otlm, fit_otlm
from reot_mm.ot.test_prior import (CALIBRATION_PRIORS, check_em_smoothing,
                                   resolve_target_prior)
from reot_mm.ot.test_time import (kl_divergence, logit_adjustment,
                                  refined_marginal, sinkhorn_prediction)

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('dump', help='tools/test.py --out file: .npz/.pt '
                   '(compact) or .pkl (upstream pickle; cls or mmseg)')
    p.add_argument('--task', choices=['auto', 'cls', 'seg'], default='auto',
                   help='auto: seg for pickles of mmseg samples (seg_logits)')
    p.add_argument('--method', choices=['la', 'ot', 'otlm'], default='ot',
                   help='la: logit adjustment; ot: post-hoc OT (OTLM Alg. 1);'
                   ' otlm: OT with a learned linear cost (OTLM Eq. 12)')
    p.add_argument('--train-counts', help='per-class training counts: a '
                   "checkpoint (.pth; checkpoint['meta']"
                   "['reot_mm_class_counts']) or a counts file (JSON "
                   'list, {"class_counts": [...]} or text numbers; pixel '
                   'counts for seg). Default (None): the counts stored in '
                   'the dump (tools/test.py --out writes them); needed for '
                   'la, --mu em/train and many/medium/few')
    p.add_argument('--tau', type=float, default=1.0,
                   help='logit adjustment strength τ (--method la)')
    p.add_argument('--lam', type=float, default=1.0,
                   help='entropic weight λ of post-hoc OT (the ε of the '
                   'kernel exp(log Z / λ))')
    p.add_argument('--mu', default='uniform', help="target label marginal: "
                   "'uniform', 'em' (EM estimate, Saerens et al. 2002), "
                   "'train' (the training prior) or a counts/probability "
                   'file')
    p.add_argument('--calibration-prior', choices=CALIBRATION_PRIORS,
                   default='train', help='--mu em: the label distribution '
                   'the softmax scores are calibrated for: train (a model '
                   'trained with cross-entropy; needs the training counts) or '
                   'uniform (a prior-corrected loss: RE-OT, Balanced Softmax)')
    p.add_argument('--em-smoothing', type=float, default=0.0,
                   help='--mu em: Dirichlet pseudo-count per class in the '
                   'M step (0: maximum likelihood)')
    p.add_argument('--iters', type=int, default=20, help='OTLM steps')
    p.add_argument('--lr', type=float, default=1e-3,
                   help='OTLM learning rate')
    p.add_argument('--weight-decay', type=float, default=1e-3,
                   help='OTLM weight decay of W')
    p.add_argument('--optimizer', choices=['adam', 'sgd'], default='adam',
                   help='OTLM optimiser')
    p.add_argument('--batch-size', type=int, default=None,
                   help='OTLM mini-batch (paper: 10000); None: all samples')
    p.add_argument('--fit-split', type=float, default=1.0,
                   help='cls OTLM: fraction of samples (random, --seed) used, '
                   'without labels, to fit W; metrics on the rest. 1.0 fits '
                   'and evaluates on all (transductive, as in the paper)')
    p.add_argument('--seed', type=int, default=0,
                   help='seed of the OTLM split / mini-batches and of the '
                   'seg pixel sampling')
    p.add_argument('--many-thr', type=float, default=None,
                   help='many-shot: training count > this. None: the '
                   'threshold stored in the dump (the config\'s '
                   f'ShotAccuracy), else {DEFAULT_MANY_THRESHOLD}')
    p.add_argument('--few-thr', type=float, default=None,
                   help='few-shot: training count < this. None: the '
                   'threshold stored in the dump, else '
                   f'{DEFAULT_FEW_THRESHOLD}')
    p.add_argument('--pixels-per-image', type=int, default=1000,
                   help='seg: labelled pixels sampled per image (uniformly, '
                   '--seed) to fit the correction; it is applied to all')
    p.add_argument('--ignore-index', type=int, default=255,
                   help='seg: label of unlabelled pixels')
    p.add_argument('--max-iter', type=int, default=1000,
                   help='Sinkhorn iterations at most')
    p.add_argument('--tol', type=float, default=1e-6,
                   help='Sinkhorn tolerance (L1 marginal error)')
    p.add_argument('--check-every', type=int, default=5,
                   help='Sinkhorn: check the marginal error every this many '
                   'iterations')
    p.add_argument('--memory', choices=['buffer', 'stream'],
                   default='buffer', help='Sinkhorn memory mode '
                   '(stream: no N x K temporary, slower)')
    p.add_argument('--no-progress', action='store_true',
                   help='no OTLM progress bar')
    p.add_argument('--out', default=None, help='write refined predictions: '
                   '.npz/.pt (compact) or .pkl (per-sample dicts); seg: .pkl')
    return p


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def _check_counts(values, k, name, source):
    values = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    if values.shape != (k, ):
        raise ValueError(f'{name} {source!r} has {values.numel()} entries, '
                         f'expected {k} (the class count of the dump)')
    if not torch.isfinite(values).all() or (values < 0).any() \
            or values.sum() <= 0:
        raise ValueError(f'{name} {source!r} must be finite, non-negative '
                         'with a positive sum')
    return values


def load_train_counts(path, k, name='--train-counts'):
    """(K,) float64 counts from a checkpoint or a counts file."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'{name} {path!r} does not exist')
    values = read_checkpoint_counts(path, name) if is_torch_checkpoint(path) \
        else load_counts_file(path, name)
    return _check_counts(values, k, name, path)


def _load_distribution(path, k, name):
    return _check_counts(load_counts_file(path, name), k, name, path)


def resolve_counts(args, dump_counts, k):
    """(counts or None, where they came from): --train-counts, else the dump."""
    if args.train_counts:
        return load_train_counts(args.train_counts, k), args.train_counts
    if dump_counts is not None:
        return _check_counts(dump_counts, k, 'class counts of', args.dump), \
            'the dump'
    return None, None


def resolve_thresholds(args, dump_thresholds):
    """(many, few): the options, else the dump's, else ShotAccuracy's."""
    many, few = dump_thresholds or (DEFAULT_MANY_THRESHOLD,
                                    DEFAULT_FEW_THRESHOLD)
    many = many if args.many_thr is None else args.many_thr
    few = few if args.few_thr is None else args.few_thr
    if not few <= many:
        raise ValueError(f'--few-thr must be <= --many-thr, got {few} and '
                         f'{many}')
    return many, few


def metrics(pred, labels, counts, many_thr, few_thr, k):
    """top-1, balanced and (with counts) many / medium / few accuracy.

    The computation of ``ShotAccuracy`` (group = mean of its classes'
    accuracies; a group without a tested class has no key).
    """
    return shot_accuracies(pred.numpy(), labels.numpy(),
                           None if counts is None else counts.numpy(),
                           many_thr, few_thr, num_classes=k)


def _target(args, k, counts, log_p):
    """μ from --mu: uniform, em, train (counts) or a file."""
    if args.mu == 'uniform':
        return torch.full((k, ), 1.0 / k, dtype=torch.float64)
    needs_counts = args.mu == 'train' or (
        args.mu == 'em' and args.calibration_prior == 'train')
    if needs_counts and counts is None:
        raise ValueError(f'--mu {args.mu} needs --train-counts (the dump '
                         'holds no class counts)')
    if args.mu == 'train':
        return counts / counts.sum()
    if args.mu == 'em':
        mu = resolve_target_prior('estimated', log_p, counts, name='--mu',
                                  calibration_prior=args.calibration_prior,
                                  em_smoothing=args.em_smoothing)
        print(f'EM test prior: min {mu.min():.4g} max {mu.max():.4g}')
        return mu
    mu = _load_distribution(args.mu, k, 'mu')
    return mu / mu.sum()


def _check_args(args):
    if not 0 < args.fit_split <= 1:
        raise ValueError(f'--fit-split must be in (0, 1], got '
                         f'{args.fit_split}')
    check_em_smoothing(args.em_smoothing, '--em-smoothing')
    check_positive(args.lam, '--lam')
    check_positive(args.tol, '--tol')
    for name in ('max_iter', 'check_every', 'iters'):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got "
                             f'{getattr(args, name)}')
    if args.pixels_per_image < 1:
        raise ValueError(f'--pixels-per-image must be >= 1, got '
                         f'{args.pixels_per_image}')


# ------------------------------------------------------------ classification
def run_cls(args, path, objects=None):
    t0 = time.perf_counter()
    data = load_predictions(path, objects=objects)
    scores, labels = data['pred_score'], data['gt_label']
    n, k = scores.shape
    counts, source = resolve_counts(args, data.get('class_counts'), k)
    if args.method == 'la' and counts is None:
        raise ValueError('--method la needs --train-counts (the dump holds '
                         'no class counts)')
    many_thr, few_thr = resolve_thresholds(args, data.get('shot_thresholds'))
    # log-probabilities, in place (the scores are not needed afterwards)
    log_p = scores.clamp_min_(1e-30).log_()
    log_p.sub_(torch.logsumexp(log_p, 1, keepdim=True))
    del scores
    mu = _target(args, k, counts, log_p)

    eval_idx = None
    if args.method == 'la':
        adj = logit_adjustment(log_p, (counts / counts.sum()).float(),
                               args.tau)
        probs = torch.softmax(adj, 1)
        pred = probs.argmax(1)
    elif args.method == 'ot':
        res = sinkhorn_prediction(log_p, mu, args.lam, max_iter=args.max_iter,
                                  tol=args.tol, check_every=args.check_every,
                                  memory=args.memory)
        probs, pred = res.probs, res.pred_label
    else:
        fit_idx = torch.arange(n)
        if args.fit_split < 1:
            perm = torch.randperm(n, generator=torch.Generator()
                                  .manual_seed(args.seed))
            n_fit = max(1, int(round(args.fit_split * n)))
            if n_fit >= n:
                raise ValueError('--fit-split leaves no samples to evaluate')
            fit_idx, eval_idx = perm[:n_fit].sort()[0], perm[n_fit:].sort()[0]
        fit = fit_otlm(log_p[fit_idx], mu, args.lam, args.iters, args.lr,
                       args.weight_decay, args.optimizer,
                       batch_size=args.batch_size,
                       sinkhorn_iters=args.max_iter, sinkhorn_tol=args.tol,
                       seed=args.seed, progress=not args.no_progress)
        print(f'OTLM loss {fit.losses[0]:.5f} -> {fit.losses[-1]:.5f} '
              f'({len(fit.losses)} iterations, fitted on {len(fit_idx)} '
              'unlabeled samples)')
        res = apply_otlm(fit.W, log_p if eval_idx is None
                         else log_p[eval_idx], mu, args.lam,
                         max_iter=args.max_iter, tol=args.tol,
                         check_every=args.check_every, memory=args.memory)
        probs, pred = res.probs, res.pred_label

    def subset(x):
        return x if eval_idx is None else x[eval_idx]

    y = subset(labels)
    before = metrics(subset(log_p).argmax(1), y, counts, many_thr, few_thr,
                     k)
    after = metrics(pred, y, counts, many_thr, few_thr, k)
    soft = refined_marginal(probs)
    hard = refined_marginal(probs, hard=True)
    print(f'method: {args.method}  samples: {len(y)}  classes: {k}  '
          f'dump: {data["format"]}')
    if counts is None:
        print('train counts: none (no many/medium/few; give --train-counts)')
    else:
        print(f'train counts: {source}; many > {many_thr:g}, few < '
              f'{few_thr:g} training samples')
    for key in after:
        print(f'{key:>9}: {before[key]:7.2f} -> {after[key]:7.2f}')
    print(f'KL(refined marginal || target): soft {kl_divergence(soft, mu):.3e}'
          f'  hard {kl_divergence(hard, mu):.3e}')
    print(f'time: {time.perf_counter() - t0:.2f} s')
    if args.out:
        _write_cls(args.out, data, probs, pred, eval_idx)


def _write_cls(out, data, probs, pred, eval_idx):
    rows = (torch.arange(probs.shape[0]) if eval_idx is None else eval_idx)
    if out.endswith(COMPACT_SUFFIXES):
        save_predictions(out, {
            'pred_score': probs.float().numpy(),
            'gt_label': data['gt_label'][rows].numpy(),
            'pred_label': pred.numpy(),
            'sample_idx': data['sample_idx'][rows].numpy()})
    elif out.endswith(PICKLE_SUFFIXES):
        samples = data.get('samples')
        refined = []
        for row, i in enumerate(rows.tolist()):
            item = dict(samples[i]) if samples is not None else {
                'gt_label': data['gt_label'][i:i + 1].clone(),
                'sample_idx': int(data['sample_idx'][i])}
            # clone: a pickled view would carry the whole (N, K) storage
            item['pred_score'] = probs[row].float().clone()
            item['pred_label'] = pred[row:row + 1].clone()
            refined.append(item)
        with open(out, 'wb') as handle:
            pickle.dump(refined, handle)
    else:
        raise ValueError(f'--out must end with one of '
                         f'{COMPACT_SUFFIXES + PICKLE_SUFFIXES}, got {out}')
    print(f'refined predictions written to {out}')


# -------------------------------------------------------------- per pixel
def run_seg(args, path, objects=None):
    t0 = time.perf_counter()
    images = load_seg_dump(path, args.ignore_index, objects=objects)
    c = images[0]['logits'].shape[0]
    counts, _ = resolve_counts(args, read_side_meta(path, c)['class_counts'],
                               c)
    if args.method == 'la' and counts is None:
        raise ValueError('--method la needs --train-counts (pixel counts)')
    if args.method == 'otlm' and args.fit_split < 1:
        raise ValueError('--fit-split is for classification; for seg the '
                         'correction is fitted on sampled pixels and '
                         'applied to all')
    logits = sample_pixels(images, args.pixels_per_image, args.ignore_index,
                           args.seed)
    if logits.shape[0] == 0:
        raise ValueError(f'no labelled pixels (all are ignore_index '
                         f'{args.ignore_index}) to fit the correction on')
    log_p = torch.log_softmax(logits, 1)
    mu = _target(args, c, counts, log_p)

    # every method is a per-pixel map: pred = argmax_c(logits @ W + delta)
    weight, delta, probs = None, None, None
    if args.method == 'la':
        delta = -args.tau * (counts / counts.sum()).log().float()
        probs = torch.softmax(log_p + delta, 1)
    elif args.method == 'ot':
        res = sinkhorn_prediction(log_p, mu, args.lam, max_iter=args.max_iter,
                                  tol=args.tol, check_every=args.check_every,
                                  memory=args.memory)
        # argmax(log Z / λ + g) = argmax(logits + λ g): a per-class shift
        delta, probs = (args.lam * res.g).float(), res.probs
    else:
        fit = fit_otlm(logits, mu, args.lam, args.iters, args.lr,
                       args.weight_decay, args.optimizer,
                       batch_size=args.batch_size,
                       sinkhorn_iters=args.max_iter, sinkhorn_tol=args.tol,
                       seed=args.seed, progress=not args.no_progress)
        print(f'OTLM loss {fit.losses[0]:.5f} -> {fit.losses[-1]:.5f} '
              f'({len(fit.losses)} iterations)')
        res = apply_otlm(fit.W, logits, mu, args.lam, max_iter=args.max_iter,
                         tol=args.tol, check_every=args.check_every,
                         memory=args.memory)
        weight = fit.W.float()
        delta, probs = (args.lam * res.g).float(), res.probs

    conf_before, conf_after, refined = apply_pixel_map(
        images, weight, delta, args.ignore_index, keep_maps=bool(args.out))
    before, after = seg_scores(conf_before), seg_scores(conf_after)
    print(f'method: {args.method}  images: {len(images)}  classes: {c}  '
          f'fitted on {logits.shape[0]} sampled pixels '
          f'(<= {args.pixels_per_image} per image, ignore_index '
          f'{args.ignore_index} excluded)')
    for key in ('aAcc', 'mIoU', 'mAcc'):
        print(f'{key:>9}: {before[key]:7.2f} -> {after[key]:7.2f}')
    pixels = conf_after.sum(0).double()
    print(f'KL(refined marginal || target): sampled soft '
          f'{kl_divergence(refined_marginal(probs), mu):.3e}  all pixels '
          f'hard {kl_divergence(pixels / pixels.sum(), mu):.3e}')
    print(f'time: {time.perf_counter() - t0:.2f} s')
    if args.out:
        if not args.out.endswith(PICKLE_SUFFIXES):
            raise ValueError(f'--out for seg must end with one of '
                             f'{PICKLE_SUFFIXES}, got {args.out}')
        with open(args.out, 'wb') as handle:
            pickle.dump(refined, handle)
        print(f'refined label maps written to {args.out}')


def _is_seg(objects) -> bool:
    return (isinstance(objects, (list, tuple)) and len(objects) > 0
            and isinstance(objects[0], dict) and 'seg_logits' in objects[0])


def _main(argv=None):
    args = parse_args(argv)
    _check_args(args)
    path = args.dump
    if not osp.isfile(path):
        raise FileNotFoundError(f'dump {path!r} does not exist')
    objects = None
    task = args.task
    if osp.splitext(path)[1].lower() in PICKLE_SUFFIXES:
        objects = read_pickle(path)
        if task == 'auto':
            task = 'seg' if _is_seg(objects) else 'cls'
    elif task == 'auto':
        task = 'cls'
    if task == 'seg':
        if objects is None:
            raise DumpFormatError(f'{path}: --task seg reads mmseg pickles '
                                  f'{PICKLE_SUFFIXES} (tools/test.py --out '
                                  'preds.pkl)')
        run_seg(args, path, objects)
    else:
        run_cls(args, path, objects)


def main(argv=None):
    """Entry point; input errors exit with status 1 and an 'error:' line."""
    try:
        _main(argv)
    except (ValueError, OSError) as err:
        sys.exit(f'error: {err}')


if __name__ == '__main__':
    main()
