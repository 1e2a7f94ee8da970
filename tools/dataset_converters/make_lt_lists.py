"""Make ImageNet-LT-style long-tailed list files from a full (balanced) list.

For datasets whose long-tailed lists are not distributed. The input and the
outputs are ``path label`` lists, one image a line, as
``LongTailedListDataset`` (``ImageNetLT``, ``INat2018``, ``PlacesLT``) reads
them. Class ``i`` (in class-index order, or in a seeded random order with
``--class-order random``) keeps ``n_i`` images, drawn without replacement with
``--seed``; kept lines stay in the input order. Profiles, with ``n_max`` the
head count and ``rho = n_max / n_min`` the imbalance factor:

* ``pareto`` (default): a power-law (Pareto / Lomax-shaped) decay of shape
  ``alpha``, ``n_i = floor(n_max * (1 + t_i * (rho ** (1 / alpha) - 1)) **
  (-alpha))`` with ``t_i = i / (C - 1)``, from ``n_max`` down to
  ``floor(n_max / rho)``. ``alpha = 6`` is the Pareto shape stated for
  ImageNet-LT in "Large-Scale Long-Tailed Recognition in an Open World" (Liu
  et al., CVPR 2019, arXiv 1904.05160, Sec. 5), whose exact sampling recipe is
  not published: this profile has ImageNet-LT's head, tail and shape
  parameter, not its exact lists (use the distributed lists for ImageNet-LT
  and Places-LT).
* ``exponential``: ``n_i = floor(n_max * rho ** (-t_i))``, the CIFAR-LT recipe
  (``reot_mm.cls.datasets.long_tail.exponential_profile``).

``--val-per-class K`` also writes a balanced list of ``K`` images per class
drawn from the images the long-tailed list did not take (as ImageNet-LT's val
list was drawn from ImageNet's train images)::

    python tools/dataset_converters/make_lt_lists.py full_train.txt \\
        --out data/mydata/mydata_LT_train.txt --val-out data/mydata/mydata_LT_val.txt \\
        --max-per-class 1280 --imbalance-factor 256 --profile pareto --alpha 6 \\
        --val-per-class 20 --seed 0

Needs ``pip install reot_mm[cls]`` (the exponential profile and the seeded
subsampling are those of ``reot_mm.cls.datasets``, which imports mmpretrain).
"""
import argparse
import sys
from typing import List, Sequence, Tuple

import numpy as np

PROFILES = ('pareto', 'exponential')


def pareto_profile(n_max: int, num_classes: int, imbalance_factor: float,
                   alpha: float = 6.0) -> List[int]:
    """Per-class counts of a power-law (Pareto / Lomax-shaped) long tail.

    ``n_i = floor(n_max * (1 + t_i * (rho ** (1 / alpha) - 1)) ** (-alpha))``,
    ``t_i = i / (C - 1)``: ``n_0 = n_max``, ``n_{C-1} = floor(n_max / rho)``;
    ``alpha -> inf`` gives the exponential profile ``n_max * rho ** (-t_i)``.

    Raises:
        ValueError: ``imbalance_factor < 1``, ``alpha <= 0``, ``n_max`` or
            ``num_classes`` not an integer >= 1, or a tail below one image.
    """
    if not float(imbalance_factor) >= 1.0:
        raise ValueError(f'imbalance_factor must be a number >= 1, got '
                         f'{imbalance_factor!r}')
    if not float(alpha) > 0:
        raise ValueError(f'alpha must be > 0, got {alpha!r}')
    if int(n_max) != n_max or n_max < 1:
        raise ValueError(f'n_max must be an integer >= 1, got {n_max!r}')
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f'num_classes must be an integer >= 1, got '
                         f'{num_classes!r}')
    if num_classes == 1:
        return [int(n_max)]
    t = np.arange(num_classes, dtype=np.float64) / (num_classes - 1)
    base = 1.0 + t * (float(imbalance_factor) ** (1.0 / alpha) - 1.0)
    # log domain: base ** -alpha for large alpha stays finite; the 1e-9
    # guard keeps exact integers (n_max / rho) from rounding down by one
    values = n_max * np.exp(-alpha * np.log(base))
    counts = np.floor(values + 1e-9).astype(np.int64)
    if counts[-1] < 1:
        raise ValueError(
            f'n_max / imbalance_factor must be >= 1 so that every class keeps '
            f'an image, got n_max={n_max}, imbalance_factor={imbalance_factor}')
    return counts.tolist()


def profile_counts(profile: str, n_max: int, num_classes: int,
                   imbalance_factor: float, alpha: float) -> List[int]:
    """Counts of ``profile`` (one of :data:`PROFILES`) in head-to-tail order."""
    if profile == 'pareto':
        return pareto_profile(n_max, num_classes, imbalance_factor, alpha)
    if profile == 'exponential':
        from reot_mm.cls.datasets.long_tail import exponential_profile
        return exponential_profile(n_max, num_classes, imbalance_factor)
    raise ValueError(f'profile must be one of {PROFILES}, got {profile!r}')


def make_lists(labels: np.ndarray, counts_by_rank: Sequence[int],
               class_order: str = 'index', val_per_class: int = 0,
               seed: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of the long-tailed list and of the balanced val list.

    Args:
        labels: label of every input line, shape (N,), values 0..C-1.
        counts_by_rank: the profile, head first, length C.
        class_order: ``'index'`` (class 0 is the head) or ``'random'`` (a
            permutation drawn with ``seed`` decides which class gets which
            count).
        val_per_class: images per class of the val list (0: none), taken
            from the images the long-tailed list left out.
        seed: seed of the class order and of both draws.

    Returns:
        (train indices, val indices, per-class train counts), indices sorted.
    """
    from reot_mm.cls.datasets.long_tail import subsample_long_tailed
    num_classes = len(counts_by_rank)
    counts = np.asarray(counts_by_rank, dtype=np.int64)
    if class_order == 'random':
        order = np.random.default_rng(seed).permutation(num_classes)
        counts = np.empty_like(counts)
        counts[order] = np.asarray(counts_by_rank, dtype=np.int64)
    elif class_order != 'index':
        raise ValueError(f"class_order must be 'index' or 'random', got "
                         f'{class_order!r}')
    available = np.bincount(labels, minlength=num_classes)
    short = np.flatnonzero(available < counts + val_per_class)
    if short.size:
        c = int(short[0])
        raise ValueError(
            f'class {c} has {available[c]} images, fewer than the {counts[c]} '
            f'the profile gives it plus --val-per-class {val_per_class} '
            f'({short.size} classes short): lower --max-per-class')
    train = subsample_long_tailed(labels, counts, seed=seed)
    val = np.zeros(0, dtype=np.int64)
    if val_per_class:
        rest = np.setdiff1d(np.arange(labels.size), train)
        picked = subsample_long_tailed(
            labels[rest], np.full(num_classes, val_per_class), seed=seed + 1)
        val = rest[picked]
    return train, val, counts


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('full_list', help='balanced "path label" list')
    parser.add_argument('--out', required=True,
                        help='long-tailed "path label" list to write')
    parser.add_argument('--profile', choices=PROFILES, default='pareto',
                        help='shape of the per-class counts')
    parser.add_argument('--alpha', type=float, default=6.0,
                        help='shape of the pareto profile')
    parser.add_argument('--imbalance-factor', type=float, default=256.0,
                        help='n_max / n_min (ImageNet-LT: 1280 / 5 = 256)')
    parser.add_argument('--max-per-class', type=int, default=None,
                        help='head count n_max (default: the smallest class '
                        'of the full list, minus --val-per-class)')
    parser.add_argument('--class-order', choices=('index', 'random'),
                        default='index',
                        help='which classes get the large counts: class 0 '
                        'first, or a seeded random order')
    parser.add_argument('--val-out', default=None,
                        help='balanced "path label" list to write from the '
                        'images the long-tailed list left out')
    parser.add_argument('--val-per-class', type=int, default=0,
                        help='images per class of --val-out')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the class order and the draws')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    from reot_mm.cls.datasets.long_tail import (read_label_list,
                                                write_label_list)
    if bool(args.val_out) != bool(args.val_per_class):
        sys.exit('make_lt_lists: --val-out and --val-per-class go together '
                 f'(got --val-out {args.val_out}, --val-per-class '
                 f'{args.val_per_class})')
    if args.val_per_class < 0:
        sys.exit(f'make_lt_lists: --val-per-class must be >= 0, got '
                 f'{args.val_per_class}')
    try:
        lines, labels = read_label_list(args.full_list)
        num_classes = int(labels.max()) + 1
        available = np.bincount(labels, minlength=num_classes)
        n_max = args.max_per_class
        if n_max is None:
            n_max = int(available.min()) - args.val_per_class
        counts = profile_counts(args.profile, n_max, num_classes,
                                args.imbalance_factor, args.alpha)
        train, val, per_class = make_lists(labels, counts, args.class_order,
                                           args.val_per_class, args.seed)
    except (OSError, ValueError) as error:
        sys.exit(f'make_lt_lists: {error}')
    write_label_list(args.out, lines, train)
    print(f'{args.out}: {train.size} images, {num_classes} classes, '
          f'{per_class.max()} -> {per_class.min()} per class '
          f'({args.profile} profile, seed {args.seed})')
    if args.val_out:
        write_label_list(args.val_out, lines, val)
        print(f'{args.val_out}: {val.size} images, {args.val_per_class} per '
              'class')


if __name__ == '__main__':
    main()
