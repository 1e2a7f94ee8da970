"""Shifted test splits (SADE's test-agnostic protocol) of CIFAR-LT and the
list-based datasets: counts, order, seeding, and the list writer."""
import os.path as osp
import pickle
import sys

import numpy as np
import pytest
from mmpretrain.registry import DATASETS

from reot_mm.cls.datasets import TEST_DISTRIBUTIONS, shifted_test_counts
from reot_mm.cls.datasets.long_tail import read_label_list, write_label_list

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCRIPT = osp.join(ROOT, 'tools', 'dataset_converters',
                  'make_shifted_test_lists.py')
sys.path.insert(0, osp.dirname(SCRIPT))
import make_shifted_test_lists as lists_tool  # noqa: E402


def sade_counts(per_class, ratio, num_classes):
    """SADE's Forward-ρ profile written out independently of the package:
    n_i = floor(n * ρ^(-i / (C - 1))) in training order."""
    return [int(np.floor(per_class * ratio ** (-i / (num_classes - 1)) + 1e-9))
            for i in range(num_classes)]


# ---------------------------------------------------------------- CIFAR-LT
def _write_fake_cifar10(root, train_per_class, test_per_class):
    """CIFAR-10 python pickles; the first 3 bytes of an image are its id."""
    rng = np.random.default_rng(0)

    def make(count, offset):
        labels = rng.permutation(np.repeat(np.arange(10), count))
        ids = np.arange(labels.size) + offset
        data = np.zeros((labels.size, 3072), dtype=np.uint8)
        data[:, 0], data[:, 1], data[:, 2] = ids // 65536, ids // 256 % 256, \
            ids % 256
        return data, labels.tolist()

    folder = root / 'cifar-10-batches-py'
    folder.mkdir(parents=True)
    data, labels = make(train_per_class, 0)
    parts = np.array_split(np.arange(len(labels)), 5)
    for i, part in enumerate(parts):
        (folder / f'data_batch_{i + 1}').write_bytes(pickle.dumps(
            {'data': data[part], 'labels': [labels[j] for j in part]}))
    data, labels = make(test_per_class, 10**5)
    (folder / 'test_batch').write_bytes(pickle.dumps(
        {'data': data, 'labels': labels}))
    (folder / 'batches.meta').write_bytes(pickle.dumps(
        {'label_names': [f'c{i}' for i in range(10)]}))
    return root


@pytest.fixture(scope='module')
def fake_cifar10(tmp_path_factory):
    return _write_fake_cifar10(tmp_path_factory.mktemp('cifar'), 6, 60)


def _cifar(root, **kwargs):
    return DATASETS.build(dict(type='CIFAR10LT', data_root=str(root),
                               check_integrity=False, **kwargs))


def _ids(dataset):
    # CIFAR's bytes are channel-major: bytes 0..2 are pixels (0, 0..2) of R
    return {int(d['img'][0, 0, 0]) * 65536 + int(d['img'][0, 1, 0]) * 256
            + int(d['img'][0, 2, 0]) for d in dataset}


@pytest.mark.parametrize('dist', ['forward-50', 'forward-5', 'backward-10',
                                  'backward-50'])
def test_cifar_shifted_test_counts_follow_the_training_order(fake_cifar10,
                                                             dist):
    """Forward-ρ: class 0 (the training head) keeps the most test images,
    the last class n/ρ; Backward-ρ the reverse (SADE, NeurIPS 2022, §5.1)."""
    dataset = _cifar(fake_cifar10, split='test', test_distribution=dist)
    labels = np.array([d['gt_label'] for d in dataset])
    counts = np.bincount(labels, minlength=10).tolist()
    ratio = float(dist.split('-')[1])
    expected = sade_counts(60, ratio, 10)
    if dist.startswith('backward'):
        expected = expected[::-1]
    assert counts == expected == dataset.test_counts
    assert len(dataset) == sum(expected)


def test_cifar_shifted_test_is_a_seeded_subset(fake_cifar10):
    uniform = _cifar(fake_cifar10, split='test')
    assert len(uniform) == 600 and uniform.test_counts is None
    first = _cifar(fake_cifar10, split='test', test_distribution='forward-10')
    again = _cifar(fake_cifar10, split='test', test_distribution='forward-10')
    other = _cifar(fake_cifar10, split='test', test_distribution='forward-10',
                   seed=1)
    assert _ids(first) <= _ids(uniform)
    assert _ids(first) == _ids(again)
    assert _ids(first) != _ids(other)
    assert 'forward-10' in repr(first)


def test_cifar_train_split_ignores_the_test_distribution(fake_cifar10):
    plain = _cifar(fake_cifar10, split='train', imbalance_factor=6)
    shifted = _cifar(fake_cifar10, split='train', imbalance_factor=6,
                     test_distribution='backward-2')
    assert _ids(plain) == _ids(shifted)
    assert plain.class_counts == shifted.class_counts


def test_cifar_rejects_a_bad_test_distribution(fake_cifar10):
    with pytest.raises(ValueError, match='test_distribution must be one of'):
        _cifar(fake_cifar10, split='test', test_distribution='forward-3')


# ------------------------------------------------------------ list files
def _write_lists(tmp_path, test_per_class=20):
    """A balanced test list and a training list whose head is class 3."""
    train_counts = [5, 9, 30, 80, 2, 12, 1, 40, 3, 7]
    test = [f'test/c{c}/{i}.jpg {c}' for i in range(test_per_class)
            for c in range(10)]
    train = [f'train/c{c}/{i}.jpg {c}' for c in range(10)
             for i in range(train_counts[c])]
    (tmp_path / 'test.txt').write_text('\n'.join(test) + '\n')
    (tmp_path / 'train.txt').write_text('\n'.join(train) + '\n')
    return tmp_path / 'test.txt', tmp_path / 'train.txt', train_counts


def _run(*args):
    """The script's main in this process (a subprocess would import
    mmpretrain again): exit status and the error line."""
    try:
        lists_tool.main([str(a) for a in args])
    except SystemExit as stop:
        return 1, str(stop.code)
    return 0, ''


def test_list_writer_orders_classes_by_training_count(tmp_path):
    test, train, train_counts = _write_lists(tmp_path)
    out = tmp_path / 'shifted'
    status, error = _run(test, train, '--out-dir', out, '--prefix', 'mine',
                         '--distributions', 'forward-10', 'uniform',
                         'backward-10')
    assert status == 0, error
    by_train = np.argsort(-np.asarray(train_counts), kind='stable')
    profile = sade_counts(20, 10, 10)
    for dist in ('forward-10', 'backward-10'):
        written = (out / f'mine_{dist}.txt').read_text().splitlines()
        counts = np.bincount([int(line.rsplit(' ', 1)[1]) for line in written],
                             minlength=10)
        ranked = profile if dist.startswith('forward') else profile[::-1]
        assert counts[by_train].tolist() == ranked
        # lines come from the test list, in its order
        source = test.read_text().splitlines()
        positions = [source.index(line) for line in written]
        assert positions == sorted(positions)
    assert len((out / 'mine_uniform.txt').read_text().splitlines()) == 200
    # the class with the most training images (3) keeps all 20 forward
    forward = (out / 'mine_forward-10.txt').read_text()
    assert forward.count(' 3\n') == 20 and forward.count(' 6\n') == 2


def test_list_writer_is_seeded(tmp_path):
    test, train, _ = _write_lists(tmp_path)
    texts = []
    for seed, folder in ((0, 'a'), (0, 'b'), (1, 'c')):
        assert _run(test, train, '--out-dir', tmp_path / folder,
                    '--distributions', 'backward-5', '--seed',
                    seed)[0] == 0
        texts.append((tmp_path / folder / 'test_backward-5.txt').read_text())
    assert texts[0] == texts[1] != texts[2]


def test_shifted_list_loads_through_ann_file(tmp_path):
    test, train, train_counts = _write_lists(tmp_path)
    lines, labels = read_label_list(str(test))
    sets = lists_tool.shifted_lists(labels, train_counts, ['backward-2'])
    indices, counts = sets['backward-2']
    path = tmp_path / 'b2.txt'
    write_label_list(str(path), lines, indices)
    dataset = DATASETS.build(dict(type='LongTailedListDataset',
                                  ann_file=str(path), num_classes=10,
                                  check_files=False))
    loaded = np.bincount([d['gt_label'] for d in dataset], minlength=10)
    assert loaded.tolist() == counts == shifted_test_counts(20, train_counts,
                                                            'backward-2')


@pytest.mark.parametrize('args, message', [
    (['--distributions', 'forward-25'], 'drop forward-25'),
    (['--distributions', 'sideways-2'], 'unknown'),
    (['--per-class', '30'], '--per-class must be in'),
])
def test_list_writer_bad_input(tmp_path, args, message):
    test, train, _ = _write_lists(tmp_path)
    status, error = _run(test, train, '--out-dir', tmp_path / 'out', *args)
    assert status != 0 and message in error
    assert not (tmp_path / 'out').exists()


def test_list_writer_needs_every_class_in_the_test_list(tmp_path):
    test, train, _ = _write_lists(tmp_path)
    kept = [line for line in test.read_text().splitlines()
            if not line.endswith(' 4')]
    test.write_text('\n'.join(kept) + '\n')
    status, error = _run(test, train, '--out-dir', tmp_path / 'out')
    assert status != 0 and 'no image in the test list' in error


def test_every_distribution_is_offered():
    assert len(TEST_DISTRIBUTIONS) == 11
    assert lists_tool.parse_args(['a', 'b', '--out-dir', 'c']
                                 ).distributions == list(TEST_DISTRIBUTIONS)
