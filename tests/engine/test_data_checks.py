"""Data checks before the Runner (reot_mm.engine.data_checks, tools/train.py,
tools/test.py): a missing dataset root, list, annotation or class-counts file
stops the run with one line naming the file, the config key and the section
of docs/data_preparation.md; present files and file-free datasets pass."""
import glob
import importlib.util
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time

import pytest
from mmengine.config import Config, DictAction

from reot_mm import counts_file
from reot_mm.engine import data_checks
from reot_mm.engine.data_checks import find_missing_data
from reot_mm.engine.hooks.class_stats_hook import ClassStatisticsHook

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
PAGE = osp.join(ROOT, 'docs', 'data_preparation.md')
IMAGENET = 'configs/imagenet_lt/reot_resnet10_110e_imagenetlt.py'
INAT = 'configs/inat2018/reot_resnet50_90e_inat2018.py'
CIFAR = 'configs/cifar_lt/reot_resnet32_682e_cifar10lt-r200.py'
LVIS = 'configs/lvis/reot_mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1.py'
ADE = 'configs/ade20k/reot_fcn_r50-d8_4xb4-160k_ade20k-512x512.py'
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def load_tool(name):
    spec = importlib.util.spec_from_file_location(
        f'{name}_tool', osp.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def train_tool():
    return load_tool('train')


@pytest.fixture(scope='module')
def test_tool():
    return load_tool('test')


def load(config, options=()):
    """The config with --cfg-options parsed as tools/train.py parses them."""
    cfg = Config.fromfile(osp.join(ROOT, config))
    parsed = {}
    for option in options:
        key, value = option.split('=', 1)
        parsed[key] = DictAction._parse_iterable(value)
    cfg.merge_from_dict(parsed)
    return cfg


def roots(root, loaders=LOADERS, inner=''):
    return [f'{loader}.dataset.{inner}data_root={root}' for loader in loaders]


# -------------------------------------------------- one family at a time
def imagenet_case(tmp):
    os.makedirs(tmp / 'imagenet')
    return (IMAGENET, roots(tmp / 'imagenet'),
            tmp / 'imagenet' / 'ImageNet_LT_train.txt',
            'list file', 'train_dataloader.dataset.ann_file', 'imagenet-lt')


def inat_case(tmp):
    os.makedirs(tmp / 'inat')
    # the train list is there, the val list is not
    (tmp / 'inat' / 'iNaturalist18_train.txt').write_text('')
    return (INAT, roots(tmp / 'inat'), tmp / 'inat' / 'iNaturalist18_val.txt',
            'list file', 'val_dataloader.dataset.ann_file', 'inaturalist-2018')


def cifar_case(tmp):
    os.makedirs(tmp / 'cifar10')
    # download=False: the dataset would not fetch the pickles itself
    options = roots(tmp / 'cifar10') + [
        f'{loader}.dataset.download=False' for loader in LOADERS]
    return (CIFAR, options,
            tmp / 'cifar10' / 'cifar-10-batches-py' / 'data_batch_1',
            'CIFAR10LT data', 'train_dataloader.dataset.data_root',
            'cifar-10-lt-and-cifar-100-lt')


def lvis_case(tmp):
    os.makedirs(tmp / 'lvis' / 'annotations')
    options = (roots(tmp / 'lvis', ['train_dataloader'], 'dataset.')
               + roots(tmp / 'lvis', LOADERS[1:]))
    return (LVIS, options, tmp / 'lvis' / 'annotations' / 'lvis_v1_train.json',
            'annotation file', 'train_dataloader.dataset.dataset.ann_file',
            'lvis-v1')


def make_ade(root):
    for kind in ('images', 'annotations'):
        for split in ('training', 'validation'):
            os.makedirs(root / kind / split)


def ade_counts_case(tmp):
    make_ade(tmp / 'ade')
    counts = tmp / 'ade' / 'reot_mm_pixel_counts.json'
    options = roots(tmp / 'ade') + [
        f'custom_hooks.0.class_counts_file={counts}']
    return (ADE, options, counts, 'class-counts file',
            'custom_hooks.0.class_counts_file', 'ade20k-pixel-counts')


def ade_folder_case(tmp):
    make_ade(tmp / 'ade')
    os.rmdir(tmp / 'ade' / 'annotations' / 'training')
    return (ADE, roots(tmp / 'ade'), tmp / 'ade' / 'annotations' / 'training',
            'data folder', 'train_dataloader.dataset.data_prefix.seg_map_path',
            'ade20k')


CASES = {'imagenet-lt': imagenet_case, 'inat2018': inat_case,
         'cifar10-lt': cifar_case, 'lvis': lvis_case,
         'ade20k-counts': ade_counts_case, 'ade20k-folder': ade_folder_case}


@pytest.mark.parametrize('name', list(CASES))
def test_train_stops_before_the_runner_with_one_line(name, tmp_path, capsys,
                                                     train_tool, monkeypatch):
    config, options, path, what, key, section = CASES[name](tmp_path)

    def no_runner(cfg):
        raise AssertionError('the Runner was built despite missing data')

    monkeypatch.setattr(train_tool, 'build_runner', no_runner)
    work_dir = tmp_path / 'work'
    with pytest.raises(SystemExit) as exit_info:
        train_tool.main([osp.join(ROOT, config), '--work-dir', str(work_dir),
                         '--cfg-options', *options])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.count('\n') == 0, err  # one line
    assert f'{what} not found: {path} (config key {key})' in err
    assert f'docs/data_preparation.md#{section}' in err
    assert '--skip-data-check' in err
    assert not work_dir.exists()
    if name == 'ade20k-counts':
        assert 'python tools/dataset_stats/pixel_class_counts.py' in err


def touch(*paths):
    for path in paths:
        os.makedirs(path.parent, exist_ok=True)
        path.write_text('{}')


def fill_imagenet(tmp):
    touch(*(tmp / 'imagenet' / f'ImageNet_LT_{s}.txt'
            for s in ('train', 'val', 'test')))


def fill_cifar(tmp):
    folder = tmp / 'cifar10' / 'cifar-10-batches-py'
    touch(*(folder / f'data_batch_{i}' for i in range(1, 6)),
          folder / 'test_batch')


def fill_lvis(tmp):
    touch(*(tmp / 'lvis' / 'annotations' / f'lvis_v1_{s}.json'
            for s in ('train', 'val')))
    # the val metric reads its own copy of the val annotations
    return [f'val_evaluator.ann_file={tmp}/lvis/annotations/lvis_v1_val.json',
            f'test_evaluator.ann_file={tmp}/lvis/annotations/lvis_v1_val.json']


def fill_ade(tmp):
    os.makedirs(tmp / 'ade' / 'annotations' / 'training', exist_ok=True)
    touch(tmp / 'ade' / 'reot_mm_pixel_counts.json')
    return [f'custom_hooks.0.class_counts_file={tmp}/ade/'
            'reot_mm_pixel_counts.json']


FILL = {'imagenet-lt': fill_imagenet,
        'inat2018': lambda tmp: touch(tmp / 'inat' / 'iNaturalist18_val.txt'),
        'cifar10-lt': fill_cifar, 'lvis': fill_lvis,
        'ade20k-counts': fill_ade, 'ade20k-folder': fill_ade}


@pytest.mark.parametrize('name', list(CASES))
def test_present_placeholders_pass(name, tmp_path):
    """Empty placeholder files and folders where the config looks: the
    check passes (it checks paths, not contents)."""
    config, options, path, *_ = CASES[name](tmp_path)
    assert find_missing_data(load(config, options)).path == str(path)
    options = options + (FILL[name](tmp_path) or [])
    assert find_missing_data(load(config, options)) is None


@pytest.mark.slow
def test_train_subprocess_exits_fast_with_a_short_stderr(tmp_path, capsys):
    """The real command: exit status 1, a few stderr lines (library
    warnings plus the one message), no work dir; the standalone check
    passes once the lists exist."""
    config, options, path, *_ = imagenet_case(tmp_path)
    env = dict(os.environ, OMP_NUM_THREADS='1')
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, 'tools/train.py', config, '--work-dir',
         str(tmp_path / 'work'), '--cfg-options', *options],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - start
    assert result.returncode == 1, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) < 10, result.stderr
    assert str(path) in lines[-1] and 'docs/data_preparation.md' in lines[-1]
    assert 'model' not in result.stdout.lower()  # no config dump, no model
    assert not (tmp_path / 'work').exists()
    # imports only (about 10 s on a loaded 2-core machine), nothing built
    assert elapsed < 120, elapsed

    for split in ('train', 'val', 'test'):
        (path.parent / f'ImageNet_LT_{split}.txt').write_text('')
    data_checks.main([osp.join(ROOT, config), '--cfg-options', *options])
    assert 'data check passed' in capsys.readouterr().out


def test_test_tool_checks_the_test_loader(tmp_path, capsys, test_tool,
                                          monkeypatch):
    os.makedirs(tmp_path / 'imagenet')
    for split in ('train', 'val'):  # testing needs only the test list
        (tmp_path / 'imagenet' / f'ImageNet_LT_{split}.txt').write_text('')
    monkeypatch.setattr(test_tool, 'build_runner', lambda cfg: 1 / 0)
    with pytest.raises(SystemExit) as exit_info:
        test_tool.main([osp.join(ROOT, IMAGENET), 'ckpt.pth', '--cfg-options',
                        *roots(tmp_path / 'imagenet')])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert 'test_dataloader.dataset.ann_file' in err
    assert str(tmp_path / 'imagenet' / 'ImageNet_LT_test.txt') in err


def test_skip_flag_and_config_option(tmp_path, train_tool, monkeypatch):
    built = []
    monkeypatch.setattr(train_tool, 'build_runner',
                        lambda cfg: built.append(cfg) or 1 / 0)
    argv = [osp.join(ROOT, IMAGENET), '--work-dir', str(tmp_path / 'w')]
    for extra in (['--skip-data-check'],
                  ['--cfg-options', 'skip_data_check=True']):
        with pytest.raises(ZeroDivisionError):  # got to the Runner
            train_tool.main(argv + extra)
    assert len(built) == 2


def test_digits_configs_pass():
    configs = sorted(glob.glob(osp.join(ROOT, 'configs', '*', '*digitslt.py')))
    assert len(configs) >= 10
    for config in configs:
        assert find_missing_data(Config.fromfile(config)) is None, config


def test_cifar_with_download_passes_without_the_pickles(tmp_path):
    """mmpretrain's CIFAR fetches missing pickles when download=True (its
    default), so the check does not stop that run."""
    cfg = load(CIFAR, roots(tmp_path / 'absent'))
    assert find_missing_data(cfg) is None
    cfg.train_dataloader.dataset.download = False
    assert find_missing_data(cfg).key == 'train_dataloader.dataset.data_root'


def test_wrappers_are_walked_and_keys_named(tmp_path):
    inner = dict(type='ImageNetLT', data_root=str(tmp_path), ann_file='a.txt')
    cfg = dict(train_dataloader=dict(dataset=dict(
        type='ConcatDataset',
        datasets=[dict(type='RepeatDataset', times=2, dataset=inner)])),
        default_scope='mmpretrain')
    missing = find_missing_data(cfg)
    assert missing.key == \
        'train_dataloader.dataset.datasets.0.dataset.ann_file'
    assert missing.path == str(tmp_path / 'a.txt')
    assert missing.what == 'list file'
    with pytest.raises(data_checks.DataNotFoundError,
                       match='list file not found') as error:
        data_checks.check_data(cfg)
    assert isinstance(error.value, FileNotFoundError)
    # an absolute ann_file is not joined to data_root (mmengine's rule)
    (tmp_path / 'b.txt').write_text('')
    inner['ann_file'] = str(tmp_path / 'b.txt')
    inner['data_root'] = str(tmp_path / 'elsewhere')
    assert find_missing_data(cfg).key.endswith('.data_root')
    inner['data_root'] = str(tmp_path)
    assert find_missing_data(cfg) is None


def test_remote_paths_and_backends_are_not_checked():
    dataset = dict(type='ImageNetLT', data_root='s3://bucket/imagenet',
                   ann_file='ImageNet_LT_train.txt')
    cfg = dict(train_dataloader=dict(dataset=dataset))
    assert find_missing_data(cfg) is None
    dataset.update(data_root='data/absent',
                   backend_args=dict(backend='petrel'))
    assert find_missing_data(cfg) is None
    dataset['backend_args'] = dict(backend='local')
    assert find_missing_data(cfg).key == 'train_dataloader.dataset.data_root'
    cfg['custom_hooks'] = [dict(type='ClassStatisticsHook',
                                class_counts_file='s3://b/counts.json')]
    dataset['backend_args'] = dict(backend='petrel')
    assert find_missing_data(cfg) is None


def test_metric_files_are_checked(tmp_path):
    cfg = dict(val_evaluator=[
        dict(type='Accuracy'),
        dict(type='SinkhornInferenceMetric', metrics=[dict(
            type='ShotAccuracy', class_counts_file=str(tmp_path / 'c.json'))])],
        test_evaluator=dict(type='LVISMetric',
                            ann_file=str(tmp_path / 'val.json')),
        val_dataloader=dict(batch_size=1), test_dataloader=dict(batch_size=1))
    missing = find_missing_data(cfg, ('val', ))
    assert missing.key == 'val_evaluator.1.metrics.0.class_counts_file'
    assert missing.section == 'class-count-files'
    missing = find_missing_data(cfg, ('test', ))
    assert missing.key == 'test_evaluator.ann_file'
    assert find_missing_data(cfg, ('train', )) is None
    # no loader (train.py --no-validate): the Runner builds no evaluator
    cfg['val_dataloader'] = None
    assert find_missing_data(cfg, ('val', )) is None


def test_bad_phase_is_named():
    with pytest.raises(ValueError, match=r"phases must be among .*'bogus'"):
        find_missing_data({}, ('train', 'bogus'))


def test_every_section_named_exists_on_the_page():
    with open(PAGE, encoding='utf-8') as handle:
        headings = re.findall(r'^#+ (.+)$', handle.read(), re.M)
    slugs = {re.sub(r'[^a-z0-9 -]', '', h.lower()).replace(' ', '-')
             for h in headings}
    named = set(data_checks.SECTIONS.values()) | {
        data_checks.COUNTS_SECTION, data_checks.PIXEL_COUNTS_SECTION,
        'other-datasets'}
    assert named <= slugs, named - slugs


# ------------------------------------------------- the counts-file message
def test_missing_counts_file_says_file_not_found(tmp_path):
    absent = str(tmp_path / 'reot_mm_pixel_counts.json')
    with pytest.raises(FileNotFoundError, match='file not found'):
        counts_file.load_counts_record(absent, 'pixel')
    hook = ClassStatisticsHook(class_counts_file=absent, count_type='pixel')
    with pytest.raises(FileNotFoundError, match='file not found') as info:
        hook.resolve_counts(runner=None)
    assert 'entry' not in str(info.value)
    # a present file without the entry keeps its own message
    with open(absent, 'w') as handle:
        json.dump({'class_counts': [1, 2]}, handle)
    with pytest.raises(ValueError, match="no 'pixel_counts' entry"):
        hook.resolve_counts(runner=None)
