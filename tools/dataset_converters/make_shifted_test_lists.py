"""Write Forward-ρ / Backward-ρ test lists (test-agnostic protocol) from a balanced test list.

The test-agnostic evaluation of SADE ("Self-Supervised Aggregation of Diverse
Experts for Test-Agnostic Long-Tailed Recognition", NeurIPS 2022, arXiv
2107.09249) tests one model on test sets whose class distribution is the
training one (Forward-ρ), uniform, or reversed (Backward-ρ), ρ in 2, 5, 10,
25, 50. This script makes them for a list-based dataset (ImageNet-LT,
Places-LT, iNaturalist 2018 or your own ``path label`` lists, as
``LongTailedListDataset`` reads them):

* the classes are ranked by their training count (read from the training
  list; ties by class index);
* ``forward-R`` gives them, in that order, ``n_i = floor(n * R ** (-i /
  (C - 1)))`` test images, from ``n`` (``--per-class``, default: the
  smallest class of the test list) down to ``floor(n / R)``;
  ``backward-R`` the same counts in the reverse order; ``uniform`` ``n``
  each. The counts are ``reot_mm.cls.datasets.shifted_test_counts``, the
  rule ``DigitsLT`` and ``CIFAR10LT`` / ``CIFAR100LT`` apply in code;
* the images of each class are drawn from the test list without replacement
  with ``--seed``; kept lines stay in the input order.

One file per distribution, ``<out-dir>/<prefix>_<distribution>.txt``; use one
as the ``ann_file`` of the test dataloader::

    python tools/dataset_converters/make_shifted_test_lists.py \\
        data/imagenet/ImageNet_LT_test.txt data/imagenet/ImageNet_LT_train.txt \\
        --out-dir data/imagenet/shifted --prefix ImageNet_LT_test --seed 0
    python tools/test.py CONFIG CKPT --cfg-options \\
        test_dataloader.dataset.ann_file=shifted/ImageNet_LT_test_forward-50.txt

ImageNet-LT's test list (50 per class) and Places-LT's (100 per class) allow
all 11 distributions; iNaturalist 2018's val list (3 per class) only
``--distributions forward-2 uniform backward-2``.

Needs ``pip install reot_mm[cls]`` (the counts and the seeded subsampling are
those of ``reot_mm.cls.datasets``, which imports mmpretrain).
"""
import argparse
import os
import sys
from typing import Sequence

import numpy as np


def shifted_lists(test_labels: np.ndarray, train_counts: Sequence[int],
                  distributions: Sequence[str], per_class: int = None,
                  seed: int = 0) -> dict:
    """Indices into the test list of every shifted test set.

    Args:
        test_labels: label of every test line, shape (N,).
        train_counts: training images per class, shape (C,) (sets the order).
        distributions: names from ``TEST_DISTRIBUTIONS``.
        per_class: the most test images a class keeps; None: the smallest
            class of the test list.
        seed: seed of the draws (the same for every distribution).

    Returns:
        ``{distribution: (sorted indices, per-class counts)}``.

    Raises:
        ValueError: an unknown distribution, a class of the training list
            without test images, ``per_class`` above what a class has, or a
            ratio R above ``per_class`` (a class would keep no image).
    """
    from reot_mm.cls.datasets.long_tail import (TEST_DISTRIBUTIONS,
                                                shifted_test_counts,
                                                subsample_long_tailed)
    unknown = [d for d in distributions if d not in TEST_DISTRIBUTIONS]
    if unknown:
        raise ValueError(f'--distributions {unknown} unknown; choose from '
                         f'{list(TEST_DISTRIBUTIONS)}')
    num_classes = len(train_counts)
    available = np.bincount(test_labels, minlength=num_classes)
    if available.min() == 0:
        missing = np.flatnonzero(available == 0)
        raise ValueError(f'classes {missing[:10].tolist()} ({missing.size} in '
                         'all) have no image in the test list; a shifted test '
                         'set needs every class')
    if per_class is None:
        per_class = int(available.min())
    if not 1 <= per_class <= available.min():
        raise ValueError(f'--per-class must be in [1, {available.min()}] (the '
                         f'smallest class of the test list), got {per_class}')
    out = {}
    for dist in distributions:
        try:
            counts = shifted_test_counts(per_class, train_counts, dist)
        except ValueError as error:
            raise ValueError(f'{error} (--per-class {per_class}; drop '
                             f'{dist} from --distributions)') from None
        out[dist] = (subsample_long_tailed(test_labels, counts, seed=seed),
                     counts)
    return out


def parse_args(argv=None):
    from reot_mm.cls.datasets.long_tail import TEST_DISTRIBUTIONS
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('test_list', help='balanced "path label" test list')
    parser.add_argument('train_list', help='"path label" training list (its '
                        'class counts set the forward order)')
    parser.add_argument('--out-dir', required=True, help='folder to write')
    parser.add_argument('--prefix', default='test', help='file names: '
                        '<prefix>_<distribution>.txt')
    parser.add_argument('--distributions', nargs='+',
                        default=list(TEST_DISTRIBUTIONS),
                        help='which test sets to write')
    parser.add_argument('--per-class', type=int, default=None,
                        help='test images of the most frequent class '
                        '(default: the smallest class of the test list)')
    parser.add_argument('--num-classes', type=int, default=None,
                        help='C (default: the largest label of both lists '
                        '+ 1)')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the draws')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    from reot_mm.cls.datasets.long_tail import (read_label_list,
                                                write_label_list)
    try:
        lines, test_labels = read_label_list(args.test_list)
        _, train_labels = read_label_list(args.train_list)
        num_classes = args.num_classes or int(
            max(test_labels.max(), train_labels.max())) + 1
        if max(test_labels.max(), train_labels.max()) >= num_classes:
            raise ValueError(f'--num-classes {num_classes}: the lists have '
                             'labels up to '
                             f'{max(test_labels.max(), train_labels.max())}')
        train_counts = np.bincount(train_labels, minlength=num_classes)
        sets = shifted_lists(test_labels, train_counts, args.distributions,
                             args.per_class, args.seed)
    except (OSError, ValueError) as error:
        sys.exit(f'make_shifted_test_lists: {error}')
    os.makedirs(args.out_dir, exist_ok=True)
    for dist, (indices, counts) in sets.items():
        path = os.path.join(args.out_dir, f'{args.prefix}_{dist}.txt')
        write_label_list(path, lines, indices)
        print(f'{path}: {indices.size} images, {max(counts)} -> '
              f'{min(counts)} per class (seed {args.seed})')


if __name__ == '__main__':
    main()
