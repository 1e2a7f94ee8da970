"""Long-tail profile, DigitsLT, CIFAR-LT (generated pickles), list datasets."""
import math
import pickle

import numpy as np
import pytest
import torch
from mmpretrain.registry import DATASETS

import reot_mm  # noqa: F401  (registers the datasets)
from reot_mm.cls.datasets import (TEST_DISTRIBUTIONS, exponential_profile,
                                  shifted_test_counts, subsample_long_tailed)


def reference_profile(n_max, num_classes, rho):
    """The CIFAR-LT reference recipe, written independently of the package:
    ``int(img_max * (1 / rho) ** (i / (C - 1)))`` in plain Python floats."""
    return [
        int(n_max * (1.0 / rho)**(i / (num_classes - 1.0)))
        for i in range(num_classes)
    ]


# ---------------------------------------------------------------- profile
@pytest.mark.parametrize('n_max, num_classes, rho, total', [
    (5000, 10, 100, 12406),  # CIFAR-10-LT, as published (LDAM, BBN, ...)
    (500, 100, 100, 10847),  # CIFAR-100-LT, as published
])
def test_profile_matches_published_totals(n_max, num_classes, rho, total):
    counts = exponential_profile(n_max, num_classes, rho)
    assert sum(counts) == total
    assert counts[0] == n_max
    assert counts[-1] == n_max // rho


@pytest.mark.parametrize('n_max, num_classes, rho', [
    (5000, 10, 100), (5000, 10, 200), (5000, 10, 50), (500, 100, 100),
    (500, 100, 200), (500, 100, 10), (120, 10, 60), (37, 7, 3.5)
])
def test_profile_matches_reference_formula(n_max, num_classes, rho):
    assert exponential_profile(n_max, num_classes,
                               rho) == reference_profile(
                                   n_max, num_classes, rho)


def test_profile_balanced_and_single_class():
    assert exponential_profile(7, 4, 1) == [7, 7, 7, 7]
    assert exponential_profile(7, 1, 50) == [7]


@pytest.mark.parametrize('rho', [0.5, 0, -3, float('nan')])
def test_profile_rejects_imbalance_below_one(rho):
    with pytest.raises(ValueError, match=r'imbalance_factor.*>= 1'):
        exponential_profile(100, 10, rho)


def test_profile_rejects_empty_tail():
    with pytest.raises(ValueError, match='n_max / imbalance_factor'):
        exponential_profile(10, 5, 100)


# ---------------------------------------------------------------- subsample
def test_subsample_counts_determinism_and_uniqueness():
    rng = np.random.default_rng(123)
    labels = rng.integers(0, 4, size=400)
    counts = [50, 20, 5, 1]
    first = subsample_long_tailed(labels, counts, seed=3)
    again = subsample_long_tailed(labels, counts, seed=3)
    other = subsample_long_tailed(labels, counts, seed=4)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert np.unique(first).size == first.size == sum(counts)
    assert np.all(np.diff(first) > 0)  # original order kept
    assert np.bincount(labels[first], minlength=4).tolist() == counts


def test_subsample_rejects_too_many_and_bad_labels():
    labels = np.array([0, 0, 1])
    with pytest.raises(ValueError, match='exceed'):
        subsample_long_tailed(labels, [1, 2])
    with pytest.raises(ValueError, match='labels must lie'):
        subsample_long_tailed(np.array([0, 2]), [1, 1])


# ---------------------------------------------------------------- DigitsLT
def _digits_source():
    from sklearn.datasets import load_digits
    digits = load_digits()
    return digits.images, digits.target


def test_digits_lt_splits():
    train = DATASETS.build(dict(type='DigitsLT', split='train'))
    val = DATASETS.build(dict(type='DigitsLT', split='val'))
    test = DATASETS.build(dict(type='DigitsLT', split='test'))
    expected_train = reference_profile(100, 10, 60)
    assert expected_train == [100, 63, 40, 25, 16, 10, 6, 4, 2, 1]
    assert np.bincount(train.get_gt_labels(),
                       minlength=10).tolist() == expected_train
    assert np.bincount(val.get_gt_labels(), minlength=10).tolist() == [20] * 10
    assert np.bincount(test.get_gt_labels(), minlength=10).tolist() == [50] * 10
    assert len(train) == sum(expected_train) == 267
    # the three splits never share an image
    for first, second in ((train, val), (train, test), (val, test)):
        assert np.intersect1d(first.source_indices,
                              second.source_indices).size == 0
    assert train.metainfo['classes'] == tuple('0123456789')

    images, targets = _digits_source()
    for split in (train, val, test):
        assert np.unique(split.source_indices).size == len(split)
        # Every item is the scaled source image with its own label.
        for index in (0, len(split) // 2, len(split) - 1):
            info = split.get_data_info(index)
            source = split.source_indices[index]
            assert info['img'].shape == (8, 8, 1)
            assert info['img'].dtype == np.uint8
            assert info['gt_label'] == targets[source]
            np.testing.assert_array_equal(
                info['img'][..., 0], np.rint(images[source] * 255 / 16))


def test_digits_lt_test_split_independent_of_val_and_train():
    """The test draw comes first: neither the val size nor the train profile
    changes which images are test images (the test split of the version
    without a val split, which drew test then train the same way)."""
    test = DATASETS.build(dict(type='DigitsLT', split='test'))
    other = DATASETS.build(dict(type='DigitsLT', split='test', val_per_class=5,
                                max_per_class=60, imbalance_factor=10))
    np.testing.assert_array_equal(test.source_indices, other.source_indices)
    _, targets = _digits_source()
    rng = np.random.default_rng(0)
    expected = np.sort(np.concatenate([
        rng.choice(np.flatnonzero(targets == c), 50, replace=False)
        for c in range(10)]))
    np.testing.assert_array_equal(test.source_indices, expected)


def test_digits_lt_is_deterministic_and_seeded():
    for split in ('train', 'val', 'test'):
        first = DATASETS.build(dict(type='DigitsLT', split=split, seed=5))
        again = DATASETS.build(dict(type='DigitsLT', split=split, seed=5))
        other = DATASETS.build(dict(type='DigitsLT', split=split, seed=6))
        np.testing.assert_array_equal(first.source_indices,
                                      again.source_indices)
        assert not np.array_equal(first.source_indices, other.source_indices)


@pytest.mark.parametrize('distribution', ['forward-50', 'forward-5',
                                          'backward-2', 'backward-50'])
def test_digits_lt_shifted_test_split(distribution):
    """SADE's shifted test sets: a subset of the uniform test split whose
    counts fall (forward) or rise (backward) along the training order."""
    uniform = DATASETS.build(dict(type='DigitsLT', split='test'))
    shifted = DATASETS.build(dict(type='DigitsLT', split='test',
                                  test_distribution=distribution))
    counts = np.bincount(shifted.get_gt_labels(), minlength=10)
    direction, ratio = distribution.split('-')
    profile = reference_profile(50, 10, int(ratio))
    # digits' class 0 is the training head
    expected = profile if direction == 'forward' else profile[::-1]
    assert counts.tolist() == expected
    assert np.isin(shifted.source_indices, uniform.source_indices).all()
    again = DATASETS.build(dict(type='DigitsLT', split='test',
                                test_distribution=distribution))
    np.testing.assert_array_equal(shifted.source_indices, again.source_indices)
    # the train and val splits ignore the test distribution
    train = DATASETS.build(dict(type='DigitsLT', split='train',
                                test_distribution=distribution))
    np.testing.assert_array_equal(
        train.source_indices,
        DATASETS.build(dict(type='DigitsLT', split='train')).source_indices)


def test_shifted_test_counts_follow_training_order_not_index():
    # the head is class 2, the tail class 0; a tie (classes 1 and 3) keeps
    # the class-index order
    train = [5, 50, 100, 50]
    forward = shifted_test_counts(40, train, 'forward-10')
    backward = shifted_test_counts(40, train, 'backward-10')
    profile = reference_profile(40, 4, 10)  # [40, 18, 8, 4]
    assert forward == [profile[3], profile[1], profile[0], profile[2]]
    assert backward == [profile[0], profile[2], profile[3], profile[1]]
    assert shifted_test_counts(40, train, 'uniform') == [40] * 4
    assert sum(forward) == sum(backward) == sum(profile)
    assert set(TEST_DISTRIBUTIONS) == {'uniform'} | {
        f'{d}-{r}' for d in ('forward', 'backward') for r in (2, 5, 10, 25, 50)}


@pytest.mark.parametrize('bad', ['forward-3', 'Uniform', 'backward', None])
def test_shifted_test_counts_rejects_unknown_distribution(bad):
    with pytest.raises(ValueError, match='test_distribution must be one of'):
        shifted_test_counts(50, [10, 5], bad)


def test_digits_lt_pipeline_upscale_and_lazy_init():
    dataset = DATASETS.build(
        dict(
            type='DigitsLT',
            split='test',
            upscale=4,
            test_per_class=3,
            pipeline=[dict(type='PackInputs')]))
    item = dataset[0]
    assert item['inputs'].shape == (1, 32, 32)
    assert item['inputs'].dtype == torch.uint8
    raw = dataset.get_data_info(0)['img'][..., 0]
    # Nearest-neighbour upscaling: each source pixel is a constant 4x4 block.
    blocks = raw.reshape(8, 4, 8, 4)
    assert (blocks == blocks[:, :1, :, :1]).all()
    assert item['data_samples'].gt_label.item() == dataset.get_data_info(
        0)['gt_label']

    lazy = DATASETS.build(dict(type='DigitsLT', lazy_init=True))
    assert not lazy._fully_initialized
    assert len(lazy.metainfo['classes']) == 10
    assert len(lazy) == sum(reference_profile(100, 10, 60))


@pytest.mark.parametrize('kwargs, match', [
    (dict(split='validation'), 'split'),
    (dict(imbalance_factor=0.5), 'imbalance_factor'),
    (dict(upscale=0), 'upscale'),
    (dict(val_per_class=0), 'val_per_class'),
    (dict(test_distribution='forward-100'), 'test_distribution'),
    # 50 test + 20 val + 105 train > 174, the smallest digits class
    (dict(max_per_class=105), 'val_per_class'),
    # 20 / 25 < 1: a shifted test class would keep no image
    (dict(test_per_class=20, test_distribution='forward-25'),
     'test_distribution .* needs at least 25'),
])
def test_digits_lt_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DATASETS.build(dict(type='DigitsLT', **kwargs))


# ---------------------------------------------------------------- CIFAR-LT
def _write_fake_cifar(root, cifar100, per_class, test_per_class):
    """Write pickles in the CIFAR python format (str keys, as the originals
    load with ``encoding='latin1'``; 3072 uint8 bytes per image). The first
    three bytes of each image encode a unique id, byte 3 its label."""
    num_classes = 100 if cifar100 else 10
    rng = np.random.default_rng(0)

    def make(count, id_offset):
        labels = rng.permutation(np.repeat(np.arange(num_classes), count))
        ids = np.arange(labels.size) + id_offset
        data = np.zeros((labels.size, 3072), dtype=np.uint8)
        data[:, 0], data[:, 1], data[:, 2] = ids // 65536, ids // 256 % 256, \
            ids % 256
        data[:, 3] = labels
        return data, labels.tolist()

    label_key = 'fine_labels' if cifar100 else 'labels'
    folder = root / ('cifar-100-python' if cifar100 else 'cifar-10-batches-py')
    folder.mkdir(parents=True)
    train_data, train_labels = make(per_class, 0)
    test_data, test_labels = make(test_per_class, 10**6)
    if cifar100:
        batches = [('train', train_data, train_labels)]
        test_name, meta_name, names_key = 'test', 'meta', 'fine_label_names'
    else:
        parts = np.array_split(np.arange(len(train_labels)), 5)
        batches = [(f'data_batch_{i + 1}', train_data[p],
                    [train_labels[j] for j in p]) for i, p in enumerate(parts)]
        test_name, meta_name, names_key = ('test_batch', 'batches.meta',
                                           'label_names')
    batches.append((test_name, test_data, test_labels))
    for name, data, labels in batches:
        entry = {'data': data, label_key: labels}
        if cifar100:
            entry['coarse_labels'] = [label // 5 for label in labels]
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    (folder / meta_name).write_bytes(
        pickle.dumps({names_key: [f'c{i}' for i in range(num_classes)]},
                     protocol=2))
    return root


@pytest.fixture(scope='module')
def fake_cifar10(tmp_path_factory):
    return _write_fake_cifar(
        tmp_path_factory.mktemp('cifar10'), False, per_class=400,
        test_per_class=7)


@pytest.fixture(scope='module')
def fake_cifar100(tmp_path_factory):
    # 200 per class is the least that still leaves one tail image at rho=200.
    return _write_fake_cifar(
        tmp_path_factory.mktemp('cifar100'), True, per_class=200,
        test_per_class=3)


@pytest.mark.parametrize('cifar100, rho', [(False, 100), (False, 200),
                                           (True, 100), (True, 200)])
def test_cifar_lt_train_counts(fake_cifar10, fake_cifar100, cifar100, rho):
    root = fake_cifar100 if cifar100 else fake_cifar10
    num_classes, per_class = (100, 200) if cifar100 else (10, 400)
    dataset = DATASETS.build(
        dict(
            type='CIFAR100LT' if cifar100 else 'CIFAR10LT',
            data_root=str(root),
            imbalance_factor=rho,
            check_integrity=False,
            download=False))
    expected = reference_profile(per_class, num_classes, rho)
    labels = dataset.get_gt_labels()
    assert np.bincount(labels, minlength=num_classes).tolist() == expected
    assert dataset.class_counts == expected
    # Images still belong to their labels and none is repeated. In CHW order
    # byte 3 of the flat image is channel 0, row 0, column 3.
    infos = [dataset.get_data_info(i) for i in range(len(dataset))]
    imgs = np.stack([info['img'] for info in infos])
    assert imgs.shape[1:] == (32, 32, 3)
    np.testing.assert_array_equal(imgs[:, 0, 3, 0], labels)
    ids = (imgs[:, 0, 0, 0].astype(np.int64) * 65536 +
           imgs[:, 0, 1, 0].astype(np.int64) * 256 + imgs[:, 0, 2, 0])
    assert np.unique(ids).size == len(ids)
    assert (ids < 10**6).all()  # all from the train pickles


def test_cifar_lt_test_split_untouched_and_seeded(fake_cifar10):
    common = dict(
        type='CIFAR10LT',
        data_root=str(fake_cifar10),
        check_integrity=False,
        download=False)
    test = DATASETS.build(dict(common, split='test', imbalance_factor=200))
    assert np.bincount(test.get_gt_labels()).tolist() == [7] * 10
    assert test.class_counts is None
    first = DATASETS.build(dict(common, seed=1))
    second = DATASETS.build(dict(common, seed=2))
    ids = [[info['img'][0, :3, 0].tobytes() for info in
            (d.get_data_info(i) for i in range(len(d)))]
           for d in (first, second)]
    assert sorted(ids[0]) != sorted(ids[1])


def test_cifar_lt_checks_md5_by_default(fake_cifar10):
    with pytest.raises(RuntimeError):
        DATASETS.build(
            dict(type='CIFAR10LT', data_root=str(fake_cifar10),
                 download=False))


def test_cifar_lt_rejects_bad_imbalance(fake_cifar10):
    with pytest.raises(ValueError, match='imbalance_factor'):
        DATASETS.build(
            dict(
                type='CIFAR10LT',
                data_root=str(fake_cifar10),
                imbalance_factor=0.9,
                check_integrity=False))


# ---------------------------------------------------------------- list datasets
@pytest.fixture
def image_list(tmp_path):
    """Five PNGs under images/ and a ``path label`` list in the LT style."""
    from PIL import Image
    prefix = tmp_path / 'images'
    entries = [('train/a/0.png', 0), ('train/a/1.png', 0),
               ('train/b/2 with space.png', 2), ('train/c/3.png', 4),
               ('train/c/4.png', 4)]
    for path, label in entries:
        file = prefix / path
        file.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((6, 5, 3), label * 40, np.uint8)).save(file)
    ann = tmp_path / 'list.txt'
    ann.write_text(''.join(f'{p} {label}\n' for p, label in entries) + '\n')
    return tmp_path, entries


def test_list_dataset_loads(image_list):
    root, entries = image_list
    dataset = DATASETS.build(
        dict(
            type='PlacesLT',
            data_root=str(root),
            ann_file='list.txt',
            data_prefix='images',
            pipeline=[dict(type='LoadImageFromFile'),
                      dict(type='PackInputs')]))
    assert len(dataset) == len(entries)
    assert dataset.get_gt_labels().tolist() == [e[1] for e in entries]
    assert dataset.get_data_info(2)['img_path'].endswith('2 with space.png')
    assert len(dataset.metainfo['classes']) == 365
    item = dataset[3]
    assert item['inputs'].shape == (3, 6, 5)
    assert int(item['inputs'].max()) == 4 * 40


def test_list_dataset_generic_infers_classes(image_list):
    root, _ = image_list
    dataset = DATASETS.build(
        dict(
            type='LongTailedListDataset',
            ann_file=str(root / 'list.txt'),
            data_prefix=str(root / 'images')))
    assert dataset.metainfo['classes'] == ('0', '1', '2', '3', '4')


def test_list_dataset_aliases_class_numbers(image_list):
    root, _ = image_list
    common = dict(data_root=str(root), ann_file='list.txt',
                  data_prefix='images')
    imagenet = DATASETS.build(dict(common, type='ImageNetLT'))
    inat = DATASETS.build(dict(common, type='INat2018', lazy_init=True))
    assert len(imagenet.metainfo['classes']) == 1000
    assert imagenet.metainfo['classes'][0].startswith('tench')
    assert len(inat.metainfo['classes']) == 8142


def test_list_dataset_label_out_of_range(image_list):
    root, _ = image_list
    with pytest.raises(ValueError, match=r'\[0, 4\).*\[0, 4\]'):
        DATASETS.build(
            dict(
                type='LongTailedListDataset',
                data_root=str(root),
                ann_file='list.txt',
                data_prefix='images',
                num_classes=4))


def test_list_dataset_missing_files(image_list):
    root, entries = image_list
    (root / 'images' / entries[0][0]).unlink()
    (root / 'images' / entries[3][0]).unlink()
    common = dict(type='ImageNetLT', data_root=str(root),
                  ann_file='list.txt', data_prefix='images')
    with pytest.raises(FileNotFoundError) as error:
        DATASETS.build(common)
    message = str(error.value)
    assert '2 of 5' in message
    assert entries[0][0] in message and entries[3][0] in message
    assert 'check_files=False' in message
    assert len(DATASETS.build(dict(common, check_files=False))) == 5


def test_list_dataset_malformed_line(tmp_path):
    ann = tmp_path / 'bad.txt'
    ann.write_text('a.png 0\nb.png\n')
    with pytest.raises(ValueError, match='bad.txt:2'):
        DATASETS.build(
            dict(type='LongTailedListDataset', ann_file=str(ann),
                 check_files=False))


def test_list_dataset_class_name_count_mismatch(image_list):
    root, _ = image_list
    with pytest.raises(ValueError, match='3 class names'):
        DATASETS.build(
            dict(
                type='PlacesLT',
                data_root=str(root),
                ann_file='list.txt',
                data_prefix='images',
                metainfo=dict(classes=('a', 'b', 'c'))))


def test_reference_profile_is_floor_of_the_real_value():
    # Guards the test oracle itself: exact arithmetic for one entry.
    assert reference_profile(5000, 10, 100)[1] == math.floor(
        5000 / 100**(1 / 9))


def test_digits_base_config_validates_on_val_and_tests_on_test():
    """Periodic validation (and every hyper-parameter choice) sees the val
    split; tools/test.py the balanced test split."""
    import os.path as osp

    from mmengine.config import Config
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    cfg = Config.fromfile(
        osp.join(root, 'configs', 'demo', 'ce_resnet8_100e_digitslt.py'))
    assert cfg.val_dataloader.dataset.split == 'val'
    assert cfg.test_dataloader.dataset.split == 'test'
    assert cfg.test_dataloader.dataset.test_distribution == 'uniform'
    assert cfg.train_dataloader.dataset.split == 'train'
    assert cfg.train_dataloader.dataset.max_per_class == 100
