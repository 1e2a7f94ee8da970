"""Long-tailed class profiles and subsampling (pure numpy, no OpenMMLab import).

The CIFAR-LT benchmarks (Cui et al. 2019, Cao et al. 2019 "LDAM") and the
long-tailed digits split used by the tests share one recipe: class ``i`` of ``C``
keeps ``n_i = floor(n_max * rho ** (-i / (C - 1)))`` training images, where
``rho = n_max / n_min`` is the imbalance factor, and the kept images of each class
are drawn without replacement with a fixed seed.
"""
from typing import List, Sequence, Tuple

import numpy as np

# Guard for ``floor``: values that are integers in exact arithmetic (e.g.
# ``n_max / rho`` for the tail class) must not drop by one through a floating
# point error of a few ulps. Counts are at most ~1e6, where one ulp is ~1e-10.
_FLOOR_EPS = 1e-9


def exponential_profile(n_max: int, num_classes: int,
                        imbalance_factor: float) -> List[int]:
    """Per-class image counts of an exponentially decaying long tail.

    ``n_i = floor(n_max * imbalance_factor ** (-i / (num_classes - 1)))`` for
    ``i = 0 .. num_classes - 1``: class 0 is the head with ``n_max`` images, the
    last class the tail with ``floor(n_max / imbalance_factor)`` images. This is
    the rounding of the reference CIFAR-LT code (``int()`` of the real value,
    i.e. floor), so CIFAR-10-LT (``n_max=5000``) has 12406 / 11203 training
    images at ``imbalance_factor`` 100 / 200 and CIFAR-100-LT (``n_max=500``)
    10847 / 9502. A 1e-9 guard keeps exact integers from rounding down by one.

    Args:
        n_max (int): Images of the head class (class 0), >= 1.
        num_classes (int): Number of classes ``C``, >= 1.
        imbalance_factor (float): ``rho = n_max / n_min`` >= 1; 1 gives a
            balanced profile.

    Returns:
        list[int]: ``C`` non-increasing counts, ``counts[0] == n_max``.

    Raises:
        ValueError: If ``imbalance_factor < 1``, ``n_max < 1``,
            ``num_classes < 1``, or if the tail class would get no image
            (``n_max / imbalance_factor < 1``).
    """
    if not float(imbalance_factor) >= 1.0:  # also rejects nan
        raise ValueError(
            f'imbalance_factor must be a number >= 1 (1 = balanced), '
            f'got {imbalance_factor!r}')
    if int(n_max) != n_max or n_max < 1:
        raise ValueError(f'n_max must be an integer >= 1, got {n_max!r}')
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(
            f'num_classes must be an integer >= 1, got {num_classes!r}')
    if num_classes == 1:
        return [int(n_max)]
    exponents = -np.arange(num_classes, dtype=np.float64) / (num_classes - 1)
    values = n_max * np.power(float(imbalance_factor), exponents)
    counts = np.floor(values + _FLOOR_EPS).astype(np.int64)
    if counts[-1] < 1:
        raise ValueError(
            f'n_max / imbalance_factor must be >= 1 so that every class keeps '
            f'an image, got n_max={n_max}, imbalance_factor={imbalance_factor}')
    return counts.tolist()


def subsample_long_tailed(labels: Sequence[int], counts: Sequence[int],
                          seed: int = 0) -> np.ndarray:
    """Pick ``counts[c]`` samples of every class ``c``, without replacement.

    Deterministic for a fixed ``seed`` (one ``np.random.default_rng(seed)``
    stream, classes visited in index order). The result is sorted, so the
    subset keeps the original order of the data.

    Args:
        labels (Sequence[int]): Class index of every sample, shape (N,),
            values in ``[0, len(counts))``.
        counts (Sequence[int]): Wanted samples per class, shape (C,);
            ``counts[c]`` must not exceed the samples of class ``c``.
        seed (int): Seed of the random choice. Defaults to 0.

    Returns:
        np.ndarray: Sorted int64 indices into ``labels``, shape (sum(counts),).

    Raises:
        ValueError: If a label is outside ``[0, C)``, a count is negative or a
            class has fewer samples than requested.
    """
    labels = np.asarray(labels)
    counts = np.asarray(counts)
    if labels.ndim != 1 or counts.ndim != 1:
        raise ValueError(
            f'labels and counts must be 1-D, got shapes {labels.shape} and '
            f'{counts.shape}')
    if labels.size and (labels.min() < 0 or labels.max() >= counts.size):
        raise ValueError(
            f'labels must lie in [0, {counts.size}) (len(counts)), got range '
            f'[{labels.min()}, {labels.max()}]')
    if (counts < 0).any():
        raise ValueError(f'counts must be >= 0, got {counts.tolist()}')
    available = np.bincount(labels.astype(np.int64), minlength=counts.size)
    short = np.flatnonzero(available < counts)
    if short.size:
        raise ValueError(
            'counts exceed the available samples for classes '
            f'{short[:10].tolist()}: requested '
            f'{counts[short[:10]].tolist()}, available '
            f'{available[short[:10]].tolist()}')
    rng = np.random.default_rng(seed)
    # One argsort groups the sample indices by class; the per-class loop is
    # over classes (dataset init only), not samples.
    order = np.argsort(labels, kind='stable')
    starts = np.concatenate([[0], np.cumsum(available)[:-1]])
    chosen = [
        rng.choice(order[start:start + size], size=int(count), replace=False)
        for start, size, count in zip(starts, available, counts)
    ]
    if not chosen:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(chosen)).astype(np.int64)


#: Test-class distributions of the test-agnostic protocol (SADE, "Self-
#: Supervised Aggregation of Diverse Experts for Test-Agnostic Long-Tailed
#: Recognition", NeurIPS 2022, arXiv 2107.09249, Sec. 5.1): 'uniform', or an
#: exponential profile of ratio rho_t that follows the training order
#: ('forward-rho_t': the training head keeps the most test images) or runs
#: against it ('backward-rho_t').
TEST_DISTRIBUTIONS = ('forward-50', 'forward-25', 'forward-10', 'forward-5',
                      'forward-2', 'uniform', 'backward-2', 'backward-5',
                      'backward-10', 'backward-25', 'backward-50')


def shifted_test_counts(per_class: int, train_counts: Sequence[int],
                        distribution: str = 'uniform') -> List[int]:
    """Per-class test counts of a shifted test distribution (SADE protocol).

    ``'uniform'`` keeps ``per_class`` images of every class. ``'forward-R'``
    gives the classes, sorted by their training counts from most to fewest
    (ties by class index), the counts ``exponential_profile(per_class, C, R)``
    from ``per_class`` down to ``floor(per_class / R)``; ``'backward-R'``
    gives the same counts in the reverse order (the training tail keeps the
    most). The order comes from ``train_counts``, not from the class index, so
    the rule holds for datasets whose head is not class 0.

    Args:
        per_class (int): Test images per class of the balanced test split,
            the most any class keeps.
        train_counts (Sequence[int]): Training images per class, shape (C,).
        distribution (str): One of :data:`TEST_DISTRIBUTIONS`.
            Defaults to ``'uniform'``.

    Returns:
        list[int]: ``C`` counts, indexed by class.

    Raises:
        ValueError: If ``distribution`` is not one of
            :data:`TEST_DISTRIBUTIONS`, or the profile leaves a class without
            a test image (``per_class / R < 1``).
    """
    if distribution not in TEST_DISTRIBUTIONS:
        raise ValueError(
            f'test_distribution must be one of {list(TEST_DISTRIBUTIONS)}, '
            f'got {distribution!r}')
    train_counts = np.asarray(train_counts)
    num_classes = train_counts.size
    if distribution == 'uniform':
        return [int(per_class)] * num_classes
    direction, ratio = distribution.split('-')
    if per_class < float(ratio):
        raise ValueError(
            f'test_distribution {distribution!r} needs at least {ratio} test '
            f'images per class so that every class keeps one, got {per_class}')
    profile = exponential_profile(per_class, num_classes, float(ratio))
    # most training images first; a stable sort breaks ties by class index
    by_train = np.argsort(-train_counts, kind='stable')
    if direction == 'backward':
        profile = profile[::-1]
    counts = np.zeros(num_classes, dtype=np.int64)
    counts[by_train] = profile
    return counts.tolist()


def read_label_list(path: str) -> Tuple[List[str], np.ndarray]:
    """Lines (stripped, non-empty) and labels of a ``<path> <label>`` list file
    (the format of ImageNet-LT / Places-LT / iNat lists and of the tools in
    ``tools/dataset_converters``).

    Raises:
        ValueError: a line is not ``<path> <label>`` with a label >= 0, or
            the list is empty.
    """
    lines, labels = [], []
    with open(path, encoding='utf-8') as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.rsplit(' ', 1)
            if len(parts) != 2 or not parts[1].isdigit():
                raise ValueError(f'{path}:{number}: expected "<path> <label>" '
                                 f'with a label >= 0, got {line!r}')
            lines.append(line)
            labels.append(int(parts[1]))
    if not lines:
        raise ValueError(f'{path} lists no image')
    return lines, np.asarray(labels, dtype=np.int64)


def write_label_list(path: str, lines: Sequence[str],
                     indices: Sequence[int]) -> None:
    """Write ``lines[i]`` for ``i`` in ``indices``, one per line."""
    with open(path, 'w', encoding='utf-8') as handle:
        handle.writelines(lines[i] + '\n' for i in indices)
