"""Figures of long-tailed runs: per-class accuracy, training curves, confusion, shift.

Extras: ``pip install reot_mm[plots]`` (matplotlib).

Subcommands (each writes one PNG, ``--out``)::

    # per-class accuracy against the training count (log scale), one series
    # per dump, many / medium / few bands shaded (tools/test.py --out x.npz)
    python tools/analysis/plot_long_tail.py per-class ce.npz reot.npz \\
        --labels CE RE-OT --out per_class.png
    # the loss and RE-OT's λ(t) over training, from mmengine work dirs
    # (<work_dir>/<timestamp>/vis_data/scalars.json; REOTPriorHook logs λ as
    # reot_lambda), and the validation accuracy where it was logged
    python tools/analysis/plot_long_tail.py training work_dirs/ce \\
        work_dirs/reot --labels CE RE-OT --out training.png
    # confusion matrix of a dump (rows: true class, normalised per row;
    # classes ordered by training count when the dump holds the counts)
    python tools/analysis/plot_long_tail.py confusion reot.npz --out conf.png
    # accuracy against the test-prior shift, from the results file of
    # benchmarks/digits_shifted_test.py (one line per method x inference)
    python tools/analysis/plot_long_tail.py shift results.json --out shift.png

Bad input (a dump without class counts for ``per-class``, a work dir
without a scalar log, a results file of another format) exits with status 1
and an ``error:`` line naming the file and what was expected.
"""
import argparse
import json
import os
import os.path as osp
import sys

import numpy as np

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))

from reot_mm.counts_file import load_counts_file  # noqa: E402
from reot_mm.evaluation.dump_io import load_predictions  # noqa: E402
from reot_mm.evaluation.shot_metric import (  # noqa: E402
    DEFAULT_FEW_THRESHOLD, DEFAULT_MANY_THRESHOLD, shot_accuracies)

#: screen-readable at README width, and a few tens of KB as PNG
DPI = 110
#: band colours of the few / medium / many training-count groups
BANDS = (('few', '#fbe3d6'), ('medium', '#eeeeee'), ('many', '#dbe9f6'))


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')  # files only; works without a display
    import matplotlib.pyplot as plt
    return plt


def _labels(labels, paths, option='--labels'):
    if labels is None:
        return [osp.splitext(osp.basename(osp.normpath(p)))[0] for p in paths]
    if len(labels) != len(paths):
        raise ValueError(f'{option} got {len(labels)} names for {len(paths)} '
                         'inputs; give one name per input')
    return list(labels)


def _save(fig, out):
    folder = osp.dirname(osp.abspath(out))
    os.makedirs(folder, exist_ok=True)
    fig.savefig(out, dpi=DPI, bbox_inches='tight')
    print(f'figure written to {out} ({osp.getsize(out) / 1024:.0f} KB)')


# ------------------------------------------------------------ per-class
def _dump_counts(path, data, train_counts):
    """(K,) training counts: --train-counts, else the dump's, else an error."""
    k = data['pred_score'].shape[1]
    if train_counts is not None:
        counts = np.asarray(load_counts_file(train_counts, '--train-counts'),
                            dtype=np.float64)
        if counts.shape != (k, ):
            raise ValueError(f'--train-counts {train_counts!r} has '
                             f'{counts.size} entries, but {path} has {k} '
                             'classes')
        return counts
    if data.get('class_counts') is None:
        raise ValueError(
            f'{path} holds no class_counts (the training count per class); '
            'per-class needs them: write the dump with tools/test.py --out '
            'preds.npz from a run with ClassStatisticsHook, or pass '
            '--train-counts FILE')
    return data['class_counts'].numpy()


def per_class(args):
    plt = _pyplot()
    names = _labels(args.labels, args.dumps)
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    lowest, highest, thresholds = np.inf, 0.0, None
    markers = 'osD^vP*X'
    for i, (path, name) in enumerate(zip(args.dumps, names)):
        data = load_predictions(path)
        counts = _dump_counts(path, data, args.train_counts)
        if (counts <= 0).any():
            raise ValueError(f'{path}: classes '
                             f'{np.flatnonzero(counts <= 0)[:10].tolist()} '
                             'have no training image; a log-scaled count axis '
                             'cannot show them')
        if thresholds is None:
            thresholds = data.get('shot_thresholds') or (
                DEFAULT_MANY_THRESHOLD, DEFAULT_FEW_THRESHOLD)
        pred = data['pred_score'].argmax(1).numpy()
        acc = np.asarray(shot_accuracies(
            pred, data['gt_label'].numpy(), counts, *thresholds,
            per_class=True)['per_class'])
        order = np.argsort(counts, kind='stable')
        tested = order[~np.isnan(acc[order])]
        ax.plot(counts[tested], acc[tested], marker=markers[i % len(markers)],
                ms=5, lw=1.2, label=name, alpha=0.9)
        lowest, highest = min(lowest, counts.min()), max(highest, counts.max())
    many, few = args.many_thr, args.few_thr
    many = thresholds[0] if many is None else many
    few = thresholds[1] if few is None else few
    left, right = lowest / 1.5, highest * 1.5
    edges = {'few': (left, few), 'medium': (few, many),
             'many': (many, right)}
    for group, colour in BANDS:
        lo, hi = max(edges[group][0], left), min(edges[group][1], right)
        if hi > lo:
            ax.axvspan(lo, hi, color=colour, zorder=0)
            ax.text(np.sqrt(lo * hi), 101, group, ha='center', va='bottom',
                    fontsize=9, color='0.3')
    ax.set_xscale('log')
    ax.set_xlim(left, right)
    # plain numbers (1, 2, 5, 10, ...) rather than powers of ten
    ticks = [m * 10 ** e for e in range(0, 8) for m in (1, 2, 5)
             if left <= m * 10 ** e <= right]
    ax.set_xticks(ticks, [f'{t:g}' for t in ticks])
    ax.minorticks_off()
    ax.set_ylim(-2, 100 + 9)
    ax.set_yticks(range(0, 101, 20))
    ax.set_xlabel('training images of the class (log scale)')
    ax.set_ylabel('per-class accuracy (%)')
    ax.set_title(args.title or 'Per-class test accuracy', fontsize=11)
    ax.legend(loc='lower right', fontsize=8, framealpha=0.9)
    ax.grid(True, which='major', alpha=0.3)
    _save(fig, args.out)


# -------------------------------------------------------------- training
def scalar_log(path):
    """The scalars.json of a work dir (its newest run) or the file itself."""
    if osp.isfile(path):
        return path
    if not osp.isdir(path):
        raise FileNotFoundError(f'work dir {path!r} does not exist')
    runs = sorted(d for d in os.listdir(path)
                  if osp.isfile(osp.join(path, d, 'vis_data', 'scalars.json')))
    if not runs:
        raise ValueError(f'{path} has no <timestamp>/vis_data/scalars.json '
                         '(an mmengine work dir of a training run was '
                         'expected)')
    return osp.join(path, runs[-1], 'vis_data', 'scalars.json')


def read_scalars(path):
    """(train records, validation records) of an mmengine scalars.json."""
    train, val = [], []
    with open(path) as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                raise ValueError(f'{path}:{number}: not a JSON record '
                                 '(an mmengine scalars.json was expected)'
                                 ) from None
            if 'loss' in record and 'iter' in record:
                train.append(record)
            elif any('/' in key for key in record):
                val.append(record)
    if not train:
        raise ValueError(f'{path} has no training record with "loss" and '
                         '"iter"')
    return train, val


def training(args):
    plt = _pyplot()
    names = _labels(args.labels, args.work_dirs)
    logs = [read_scalars(scalar_log(p)) for p in args.work_dirs]
    has_lambda = any('reot_lambda' in r for train, _ in logs for r in train)
    has_val = any(args.val_key in r for _, val in logs for r in val)
    panels = 1 + has_lambda + has_val
    fig, axes = plt.subplots(panels, 1, figsize=(6.4, 2.2 * panels + 0.4),
                             sharex=True, squeeze=False)
    axes = axes[:, 0]
    for (train, val), name in zip(logs, names):
        iters = np.array([r['iter'] for r in train])
        line, = axes[0].plot(iters, [r['loss'] for r in train], lw=1.2,
                             label=name)
        row = 1
        if has_lambda:
            if 'reot_lambda' in train[0]:
                axes[row].plot(iters, [r['reot_lambda'] for r in train],
                               lw=1.5, color=line.get_color(), label=name)
            row += 1
        if has_val:
            points = [r for r in val if args.val_key in r]
            # a validation record's step is the epoch; scale to iterations
            per_epoch = iters.max() / max(r['epoch'] for r in train)
            axes[row].plot([r['step'] * per_epoch for r in points],
                           [r[args.val_key] for r in points], lw=1.2,
                           color=line.get_color(), label=name)
    axes[0].set_ylabel('training loss')
    axes[0].set_yscale('linear' if args.linear_loss else 'log')
    axes[0].legend(fontsize=8)
    row = 1
    if has_lambda:
        axes[row].set_ylabel('RE-OT λ(t)')
        axes[row].set_ylim(-0.05, 1.05)
        row += 1
    if has_val:
        axes[row].set_ylabel(f'val {args.val_key}')
    for ax in axes:
        ax.grid(True, alpha=0.3)
    axes[-1].set_xlabel('iteration')
    axes[0].set_title(args.title or 'Training', fontsize=11)
    _save(fig, args.out)


# ------------------------------------------------------------- confusion
def confusion(args):
    plt = _pyplot()
    data = load_predictions(args.dump)
    k = data['pred_score'].shape[1]
    if k > 200:
        raise ValueError(f'{args.dump} has {k} classes; a confusion matrix '
                         'of more than 200 classes is unreadable')
    labels = data['gt_label'].numpy()
    pred = data['pred_score'].argmax(1).numpy()
    matrix = np.bincount(labels * k + pred, minlength=k * k).reshape(k, k)
    counts = data.get('class_counts')
    order = np.arange(k)
    if counts is not None:
        counts = counts.numpy()
        order = np.argsort(-counts, kind='stable')  # head first
    matrix = matrix[order][:, order].astype(np.float64)
    rows = matrix.sum(1, keepdims=True)
    share = np.divide(100 * matrix, rows, out=np.zeros_like(matrix),
                      where=rows > 0)
    size = min(9.0, 3.0 + 0.35 * k)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    image = ax.imshow(share, cmap='Blues', vmin=0, vmax=100)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04,
                 label='% of the true class')
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    ax.text(j, i, f'{share[i, j]:.0f}', ha='center',
                            va='center', fontsize=7,
                            color='white' if share[i, j] > 60 else 'black')
        ticks = [f'{c}' if counts is None else f'{c} ({counts[c]:g})'
                 for c in order]
        ax.set_xticks(range(k), [str(c) for c in order], fontsize=8)
        ax.set_yticks(range(k), ticks, fontsize=8)
    ax.set_xlabel('predicted class')
    ax.set_ylabel('true class' + (' (training images)' if counts is not None
                                  else ''))
    ax.set_title(args.title or f'Confusion: {osp.basename(args.dump)}',
                 fontsize=11)
    _save(fig, args.out)


# ----------------------------------------------------------------- shift
def read_results(path):
    """The results file of benchmarks/digits_shifted_test.py, validated."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'results file {path!r} does not exist')
    try:
        with open(path) as handle:
            record = json.load(handle)
    except ValueError:
        raise ValueError(f'{path}: not JSON; expected the results file of '
                         'benchmarks/digits_shifted_test.py') from None
    if not isinstance(record, dict) or not {'distributions', 'results'} <= \
            set(record):
        raise ValueError(f'{path}: expected keys "distributions" and '
                         '"results" (method -> inference -> distribution -> '
                         'accuracy per seed), as benchmarks/'
                         'digits_shifted_test.py writes')
    for method, rows in record['results'].items():
        for inference, row in rows.items():
            missing = [d for d in record['distributions'] if d not in row]
            if missing:
                raise ValueError(f'{path}: {method} / {inference} has no '
                                 f'accuracy for {missing}')
    return record


def _pick(wanted, available, option):
    if not wanted:
        return list(available)
    unknown = [w for w in wanted if w not in available]
    if unknown:
        raise ValueError(f'{option} {unknown} not in the results file; it '
                         f'holds {list(available)}')
    return list(wanted)


def shift(args):
    plt = _pyplot()
    record = read_results(args.results)
    dists = record['distributions']
    methods = _pick(args.methods, record['results'], '--methods')
    fig, axes = plt.subplots(1, len(methods), sharey=True, squeeze=False,
                             figsize=(3.6 * len(methods) + 1.0, 3.9))
    x = np.arange(len(dists))
    styles = ['-', '--', '-.', ':']
    handles = {}
    for ax, method in zip(axes[0], methods):
        rows = record['results'][method]
        for i, inference in enumerate(_pick(args.inferences, rows,
                                            '--inferences')):
            values = np.array([rows[inference][d] for d in dists], dtype=float)
            mean = values.mean(1)
            line, = ax.plot(x, mean, marker='o', ms=3, lw=1.4,
                            ls=styles[(i // 10) % len(styles)],
                            color=f'C{i % 10}', label=inference)
            if values.shape[1] > 1:
                std = values.std(1, ddof=1)
                ax.fill_between(x, mean - std, mean + std, alpha=0.12,
                                color=line.get_color(), lw=0)
            handles.setdefault(inference, line)
        ax.set_title(method, fontsize=10)
        ax.set_xticks(x, [d.replace('forward-', 'F').replace('backward-', 'B')
                          .replace('uniform', 'U') for d in dists],
                      fontsize=8)
        ax.axvline(dists.index('uniform') if 'uniform' in dists else -1,
                   color='0.6', lw=0.8, ls=':')
        ax.grid(True, alpha=0.3)
        ax.set_xlabel('test distribution (F: forward, B: backward ρ)',
                      fontsize=8)
    axes[0][0].set_ylabel('top-1 accuracy (%)')
    fig.legend(handles.values(), handles.keys(), loc='lower center',
               ncol=min(4, len(handles)), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, -0.02 - 0.045 * ((len(handles) - 1) // 4)))
    fig.suptitle(args.title or record.get('title', 'Accuracy under test-prior '
                                          'shift'), fontsize=11)
    fig.tight_layout(rect=(0, 0.05 + 0.045 * ((len(handles) - 1) // 4), 1, 1))
    _save(fig, args.out)


# ------------------------------------------------------------------- cli
def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest='command', required=True)

    p = sub.add_parser('per-class', help='per-class accuracy vs training '
                       'count, from prediction dumps')
    p.add_argument('dumps', nargs='+', help='tools/test.py --out dumps '
                   '(.npz / .pt / .pkl with its .counts.json)')
    p.add_argument('--labels', nargs='+', help='one legend name per dump')
    p.add_argument('--train-counts', help='counts file used for every dump '
                   '(default: the counts stored in each dump)')
    p.add_argument('--many-thr', type=float, help='many: count > this '
                   "(default: the dump's ShotAccuracy threshold)")
    p.add_argument('--few-thr', type=float, help='few: count < this')
    p.set_defaults(func=per_class)

    p = sub.add_parser('training', help='loss and λ(t) over training, from '
                       'mmengine work dirs')
    p.add_argument('work_dirs', nargs='+', help='work dirs (or scalars.json '
                   'files)')
    p.add_argument('--labels', nargs='+', help='one legend name per work dir')
    p.add_argument('--val-key', default='shot/balanced', help='validation '
                   'scalar of the third panel (shown where logged)')
    p.add_argument('--linear-loss', action='store_true',
                   help='linear loss axis (default: log scale)')
    p.set_defaults(func=training)

    p = sub.add_parser('confusion', help='confusion matrix of a dump')
    p.add_argument('dump')
    p.set_defaults(func=confusion)

    p = sub.add_parser('shift', help='accuracy vs test-prior shift from the '
                       'results of benchmarks/digits_shifted_test.py')
    p.add_argument('results', help='results JSON of the benchmark')
    p.add_argument('--methods', nargs='+', help='training methods to show '
                   '(default: all)')
    p.add_argument('--inferences', nargs='+', help='inference rows to show '
                   '(default: all)')
    p.set_defaults(func=shift)

    for p in sub.choices.values():
        p.add_argument('--out', required=True, help='output PNG')
        p.add_argument('--title', help='figure title')
    return parser


def main(argv=None):
    """Entry point; input errors exit with status 1 and an 'error:' line."""
    args = build_parser().parse_args(argv)
    if not args.out.lower().endswith('.png'):
        sys.exit(f'error: --out must end with .png, got {args.out}')
    try:
        args.func(args)
    except (ValueError, OSError) as err:
        sys.exit(f'error: {err}')


if __name__ == '__main__':
    main()
