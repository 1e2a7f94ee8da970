"""tools/dataset_converters/make_lt_lists.py: ImageNet-LT-style long-tailed
lists (Pareto-shaped or exponential profile) from a balanced list."""
import importlib.util
import os.path as osp

import numpy as np
import pytest

from reot_mm.cls.datasets.long_tail import exponential_profile

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(ROOT, 'tools', 'dataset_converters', 'make_lt_lists.py')


@pytest.fixture(scope='module')
def tool():
    spec = importlib.util.spec_from_file_location('make_lt_lists', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def full_list(tmp_path):
    """10 classes x 60 images; paths with a space (split at the last one)."""
    path = tmp_path / 'full.txt'
    lines = [f'train/class {c}/img_{i:03d}.jpg {c}'
             for i in range(60) for c in range(10)]
    path.write_text('\n'.join(lines) + '\n\n')
    return path


def read_labels(path):
    lines = path.read_text().splitlines()
    return lines, np.array([int(line.rsplit(' ', 1)[1]) for line in lines])


def test_pareto_profile_golden_values_and_limits(tool):
    # n_max 100, 3 classes, rho 4, alpha 2: rho ** (1/2) = 2, bases 1, 1.5, 2
    assert tool.pareto_profile(100, 3, 4, alpha=2) == [100, 44, 25]
    counts = tool.pareto_profile(1280, 1000, 256, alpha=6)
    assert counts[0] == 1280 and counts[-1] == 5
    assert np.all(np.diff(counts) <= 0)
    assert sum(counts) == 166769  # the figure docs/data_preparation.md gives
    # alpha -> infinity: the exponential (CIFAR-LT) profile
    large = tool.pareto_profile(1280, 1000, 256, alpha=1e7)
    assert np.abs(np.subtract(large, exponential_profile(1280, 1000, 256))).max() <= 1
    # rho = 1: balanced
    assert tool.pareto_profile(7, 4, 1.0) == [7] * 4


@pytest.mark.parametrize('kwargs, match', [
    (dict(imbalance_factor=0.5), 'imbalance_factor must be'),
    (dict(alpha=0), 'alpha must be > 0'),
    (dict(n_max=0), 'n_max must be'),
    (dict(num_classes=2.5), 'num_classes must be'),
    (dict(n_max=10, imbalance_factor=20), 'every class keeps an image'),
])
def test_pareto_profile_bad_input(tool, kwargs, match):
    args = dict(n_max=100, num_classes=5, imbalance_factor=10, alpha=6)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        tool.pareto_profile(**args)


@pytest.mark.parametrize('profile', ['pareto', 'exponential'])
def test_list_has_the_profile_and_is_deterministic(tool, full_list, tmp_path,
                                                   profile, capsys):
    args = [str(full_list), '--profile', profile, '--max-per-class', '50',
            '--imbalance-factor', '10', '--val-per-class', '5', '--seed', '3']
    out, val = tmp_path / 'lt.txt', tmp_path / 'val.txt'
    tool.main(args + ['--out', str(out), '--val-out', str(val)])
    lines, labels = read_labels(out)
    expected = (tool.pareto_profile(50, 10, 10, 6.0) if profile == 'pareto'
                else exponential_profile(50, 10, 10))
    assert np.bincount(labels, minlength=10).tolist() == expected
    assert expected[0] == 50 and expected[-1] == 5
    full = full_list.read_text().splitlines()
    # lines kept verbatim and in input order
    positions = [full.index(line) for line in lines]
    assert positions == sorted(positions)
    val_lines, val_labels = read_labels(val)
    assert np.bincount(val_labels, minlength=10).tolist() == [5] * 10
    assert not set(val_lines) & set(lines)
    assert f'{sum(expected)} images, 10 classes, 50 -> 5 per class' in \
        capsys.readouterr().out

    # same seed: the same files; another seed: other images, same counts
    again, val_again = tmp_path / 'lt2.txt', tmp_path / 'val2.txt'
    tool.main(args + ['--out', str(again), '--val-out', str(val_again)])
    assert again.read_bytes() == out.read_bytes()
    assert val_again.read_bytes() == val.read_bytes()
    other = tmp_path / 'lt3.txt'
    tool.main(args[:-1] + ['4', '--out', str(other), '--val-out',
                           str(tmp_path / 'val3.txt')])
    assert other.read_bytes() != out.read_bytes()
    assert np.bincount(read_labels(other)[1]).tolist() == expected


def test_random_class_order_and_default_head(tool, full_list, tmp_path):
    out = tmp_path / 'lt.txt'
    tool.main([str(full_list), '--out', str(out), '--imbalance-factor', '12',
               '--class-order', 'random', '--seed', '1'])
    counts = np.bincount(read_labels(out)[1], minlength=10)
    # default head: the smallest class of the full list (60 images)
    expected = tool.pareto_profile(60, 10, 12)
    assert sorted(counts.tolist(), reverse=True) == expected
    assert counts.tolist() != expected  # the head is not class 0
    order = np.random.default_rng(1).permutation(10)
    assert counts[order].tolist() == expected


def test_bad_inputs_exit_with_a_message(tool, full_list, tmp_path):
    out = str(tmp_path / 'lt.txt')
    bad = tmp_path / 'bad.txt'
    bad.write_text('a.jpg 0\nb.jpg\n')
    with pytest.raises(SystemExit, match=r'bad.txt:2: expected "<path> <label>"'):
        tool.main([str(bad), '--out', out])
    with pytest.raises(SystemExit, match='class 0 has 60 images, fewer than '
                       'the 58 .* plus --val-per-class 5'):
        tool.main([str(full_list), '--out', out, '--max-per-class', '58',
                   '--imbalance-factor', '10', '--val-per-class', '5', '--val-out', out + '.val'])
    with pytest.raises(SystemExit, match='--val-out and --val-per-class go '
                       'together'):
        tool.main([str(full_list), '--out', out, '--val-per-class', '5'])
    with pytest.raises(SystemExit, match='every class keeps an image'):
        tool.main([str(full_list), '--out', out, '--imbalance-factor', '100'])
    assert not osp.exists(out)
