"""Check, before the Runner is built, that the files a config reads exist.

A full-size config run without its data would otherwise print the whole config
and then fail deep inside a dataset's ``__init__`` with a bare
``FileNotFoundError``. :func:`find_missing_data` walks the dataloaders'
dataset configs (through wrappers: ``ClassBalancedDataset``,
``RepeatDataset``, ``ConcatDataset``, ...), resolves ``data_root`` +
``ann_file`` + ``data_prefix`` as mmengine's ``BaseDataset`` does (relative
paths are joined to ``data_root``), and also checks the class-counts files
that hooks and metrics read. The first missing path becomes one message that
names the file, the config key and the section of ``docs/data_preparation.md``.

Datasets without files (``DigitsLT``: no ``data_root``, no ``ann_file``) pass.
Paths on remote storage (anything with ``://``) and datasets read through a
non-local ``backend_args`` are not checked. ``tools/train.py`` and
``tools/test.py`` run the check unless given ``--skip-data-check`` (or the
config sets ``skip_data_check = True``). On its own::

    python -m reot_mm.engine.data_checks CONFIG [--phase train val test]
        [--cfg-options k=v ...]
"""
import argparse
import os.path as osp
import sys
from typing import Iterator, List, Optional, Sequence, Tuple

DATA_PAGE = 'docs/data_preparation.md'

#: dataset class name -> section of DATA_PAGE (matched along the class MRO,
#: so subclasses find their parent's section)
SECTIONS = {
    'ImageNetLT': 'imagenet-lt',
    'INat2018': 'inaturalist-2018',
    'PlacesLT': 'places-lt',
    'LongTailedListDataset': 'long-tailed-lists-for-other-datasets',
    'CIFAR10': 'cifar-10-lt-and-cifar-100-lt',
    'CIFAR100': 'cifar-10-lt-and-cifar-100-lt',
    'LVISV05Dataset': 'lvis-v1',
    'LVISV1Dataset': 'lvis-v1',
    'CocoDataset': 'lvis-v1',
    'ADE20KDataset': 'ade20k',
}
COUNTS_SECTION = 'class-count-files'
PIXEL_COUNTS_SECTION = 'ade20k-pixel-counts'

# keys of hooks and metrics that name a class-counts file
COUNTS_KEYS = ('class_counts_file', 'train_class_counts_file')
# (dataloader, evaluator) of each phase
PHASES = {
    'train': ('train_dataloader', None),
    'val': ('val_dataloader', 'val_evaluator'),
    'test': ('test_dataloader', 'test_evaluator'),
}


class MissingData:
    """One missing path: what it is, where the config names it, where the
    data-preparation page explains it."""

    def __init__(self, what: str, path: str, key: str, section: str,
                 hint: str = ''):
        self.what = what
        self.path = path
        self.key = key
        self.section = section
        self.hint = hint

    def message(self) -> str:
        """One line: the missing path, its config key, the page section."""
        hint = f' {self.hint}' if self.hint else ''
        return (f'reot_mm data check: {self.what} not found: {self.path} '
                f'(config key {self.key}).{hint} See {DATA_PAGE}#'
                f'{self.section}; to skip this check (e.g. for a remote '
                f'storage backend) pass --skip-data-check.')


class DataNotFoundError(FileNotFoundError):
    """Raised by :func:`check_data`; carries the :class:`MissingData`."""

    def __init__(self, missing: MissingData):
        super().__init__(missing.message())
        self.missing = missing


# ------------------------------------------------------------------ paths
def _is_remote(path: str) -> bool:
    return '://' in path


def _join(data_root: str, path: str) -> str:
    """mmengine ``BaseDataset._join_prefix``: a relative path is joined to
    ``data_root`` (when there is one); ``~`` expands as in mmpretrain."""
    path = osp.expanduser(path)
    if data_root and not osp.isabs(path):
        return osp.join(osp.expanduser(data_root), path)
    return path


def _dataset_class(type_name, scope: Optional[str]):
    """The registered class of a dataset config's ``type`` (None if unknown)."""
    if isinstance(type_name, type):
        return type_name
    if not isinstance(type_name, str):
        return None
    from mmengine.registry import DATASETS
    names = [type_name] if '.' in type_name or not scope else \
        [f'{scope}.{type_name}', type_name]
    for name in names:
        try:
            found = DATASETS.get(name)
        except Exception:  # a scope whose library is not installed
            found = None
        if found is not None:
            return found
    return None


def _class_names(dataset_cfg: dict, cls) -> List[str]:
    if cls is not None:
        return [klass.__name__ for klass in cls.__mro__]
    name = dataset_cfg.get('type')
    return [name.rsplit('.', 1)[-1]] if isinstance(name, str) else []


def _section(names: Sequence[str]) -> str:
    for name in names:
        if name in SECTIONS:
            return SECTIONS[name]
    return 'other-datasets'


def _local_backend(dataset_cfg: dict) -> bool:
    backend_args = dataset_cfg.get('backend_args') or \
        dataset_cfg.get('file_client_args')
    return not backend_args or backend_args.get('backend', 'local') == 'local'


# --------------------------------------------------------------- datasets
def iter_datasets(dataset_cfg, key: str) -> Iterator[Tuple[dict, str]]:
    """(dataset config, config key) of every dataset below the wrappers."""
    if not isinstance(dataset_cfg, dict):
        return
    inner = dataset_cfg.get('dataset')
    inners = dataset_cfg.get('datasets')
    if isinstance(inner, dict):
        yield from iter_datasets(inner, f'{key}.dataset')
    elif isinstance(inners, (list, tuple)):
        for i, item in enumerate(inners):
            yield from iter_datasets(item, f'{key}.datasets.{i}')
    else:
        yield dataset_cfg, key


def check_dataset(dataset_cfg: dict, key: str,
                  scope: Optional[str]) -> Optional[MissingData]:
    """The first missing path of one (unwrapped) dataset config, or None."""
    if not _local_backend(dataset_cfg):
        return None
    cls = _dataset_class(dataset_cfg.get('type'), scope)
    names = _class_names(dataset_cfg, cls)
    is_cifar = cls is not None and hasattr(cls, 'base_folder') and \
        hasattr(cls, 'train_list')
    if is_cifar and dataset_cfg.get('download', True):
        return None  # mmpretrain's CIFAR downloads what is missing
    section = _section(names)
    data_root = dataset_cfg.get('data_root') or ''
    if not isinstance(data_root, str) or _is_remote(data_root):
        return None
    if data_root and not osp.exists(osp.expanduser(data_root)):
        return MissingData('dataset root', data_root, f'{key}.data_root',
                           section)

    ann_file = dataset_cfg.get('ann_file') or ''
    if isinstance(ann_file, str) and ann_file and not _is_remote(ann_file):
        path = _join(data_root, ann_file)
        if not osp.isfile(path):
            what = ('list file' if 'LongTailedListDataset' in names
                    else 'annotation file')
            return MissingData(what, path, f'{key}.ann_file', section)

    prefix = dataset_cfg.get('data_prefix') or {}
    if isinstance(prefix, str):
        prefix = {'': prefix}
    for name, folder in prefix.items():
        if not isinstance(folder, str) or not folder or _is_remote(folder):
            continue
        path = _join(data_root, folder)
        if not osp.exists(path):
            suffix = f'.{name}' if name else ''
            return MissingData('data folder', path,
                               f'{key}.data_prefix{suffix}', section)

    if is_cifar:
        return _check_cifar(dataset_cfg, key, cls, section)
    return None


def _check_cifar(dataset_cfg: dict, key: str, cls,
                 section: str) -> Optional[MissingData]:
    """mmpretrain's CIFAR with ``download=False``: the pickles must lie in
    ``<root>/<base_folder>``. (With ``download=True``, mmpretrain's default,
    the dataset fetches them itself, so :func:`check_dataset` lets it pass.)
    """
    prefix = dataset_cfg.get('data_prefix') or ''
    root = _join(dataset_cfg.get('data_root') or '',
                 prefix if isinstance(prefix, str) else '')
    for filename, _ in list(cls.train_list) + list(cls.test_list):
        path = osp.join(root, cls.base_folder, filename)
        if not osp.isfile(path):
            return MissingData(
                f'{cls.__name__} data', path, f'{key}.data_root', section,
                hint='download=False, so the dataset will not fetch it.')
    return None


# ------------------------------------------------------------ counts files
def _iter_counts_files(cfg, phases: Sequence[str]) -> Iterator[tuple]:
    """(path, config key, count_type) of every counts file hooks / metrics read."""
    for i, hook in enumerate(cfg.get('custom_hooks') or []):
        if isinstance(hook, dict):
            for name in COUNTS_KEYS:
                if hook.get(name):
                    yield (hook[name], f'custom_hooks.{i}.{name}',
                           hook.get('count_type'))
    for phase in phases:
        loader_key, evaluator_key = PHASES[phase]
        if evaluator_key and isinstance(cfg.get(loader_key), dict):
            yield from _evaluator_counts(cfg.get(evaluator_key), evaluator_key)


def _evaluator_counts(evaluator, key: str) -> Iterator[tuple]:
    if isinstance(evaluator, (list, tuple)):
        for i, item in enumerate(evaluator):
            yield from _evaluator_counts(item, f'{key}.{i}')
    elif isinstance(evaluator, dict):
        for name in COUNTS_KEYS:
            if evaluator.get(name):
                yield evaluator[name], f'{key}.{name}', None
        if evaluator.get('metrics') is not None:  # wrappers, Evaluator dicts
            yield from _evaluator_counts(evaluator['metrics'], f'{key}.metrics')


def _evaluator_ann_files(evaluator, key: str) -> Iterator[tuple]:
    """(ann_file, config key) of metrics reading annotations (COCO / LVIS)."""
    if isinstance(evaluator, (list, tuple)):
        for i, item in enumerate(evaluator):
            yield from _evaluator_ann_files(item, f'{key}.{i}')
    elif isinstance(evaluator, dict):
        if isinstance(evaluator.get('ann_file'), str) and evaluator['ann_file']:
            yield evaluator['ann_file'], f'{key}.ann_file'
        if evaluator.get('metrics') is not None:
            yield from _evaluator_ann_files(evaluator['metrics'],
                                            f'{key}.metrics')


# ------------------------------------------------------------------- whole
def find_missing_data(cfg, phases: Sequence[str] = ('train', 'val', 'test')
                      ) -> Optional[MissingData]:
    """The first missing file of ``cfg`` for the given phases, or None.

    Args:
        cfg: the loaded config (``mmengine.Config`` or dict).
        phases: any of ``'train'``, ``'val'``, ``'test'``: whose dataloader
            and evaluator to check. Class-counts files of ``custom_hooks``
            are always checked (train and test runs read them).
    """
    unknown = set(phases) - set(PHASES)
    if unknown:
        raise ValueError(f'phases must be among {tuple(PHASES)}, got '
                         f'{sorted(unknown)}')
    scope = cfg.get('default_scope')
    for phase in phases:
        loader_key, evaluator_key = PHASES[phase]
        loader = cfg.get(loader_key)
        if not isinstance(loader, dict):
            # None (train.py --no-validate): the Runner builds neither the
            # loader nor the phase's evaluator
            continue
        for dataset_cfg, key in iter_datasets(loader.get('dataset'),
                                              f'{loader_key}.dataset'):
            missing = check_dataset(dataset_cfg, key, scope)
            if missing is not None:
                return missing
        if evaluator_key:
            for path, key in _evaluator_ann_files(cfg.get(evaluator_key),
                                                  evaluator_key):
                if not _is_remote(path) and not osp.isfile(
                        osp.expanduser(path)):
                    return MissingData('annotation file', path, key,
                                       SECTIONS['LVISV1Dataset'])
    for path, key, count_type in _iter_counts_files(cfg, phases):
        if not isinstance(path, str) or _is_remote(path) or \
                osp.isfile(osp.expanduser(path)):
            continue
        if count_type in ('pixel', 'image'):
            config = getattr(cfg, 'filename', None) or 'CONFIG'
            return MissingData(
                'class-counts file', path, key, PIXEL_COUNTS_SECTION,
                hint=f'Count the training set once with: python '
                f'tools/dataset_stats/pixel_class_counts.py {config}')
        return MissingData('class-counts file', path, key, COUNTS_SECTION)
    return None


def check_data(cfg, phases: Sequence[str] = ('train', 'val', 'test')) -> None:
    """Raise :class:`DataNotFoundError` for the first missing file."""
    missing = find_missing_data(cfg, phases)
    if missing is not None:
        raise DataNotFoundError(missing)


def add_skip_argument(parser: argparse.ArgumentParser) -> None:
    """``--skip-data-check`` for ``tools/train.py`` / ``tools/test.py``."""
    parser.add_argument(
        '--skip-data-check', action='store_true',
        help='do not check that the data files exist before building the '
        'Runner (for storage backends the check cannot see)')


def exit_if_data_missing(cfg, phases: Sequence[str],
                         skip: bool = False) -> None:
    """The command-line check: print one line to stderr and exit with 1.

    Skipped when ``skip`` is true or the config sets ``skip_data_check``.
    """
    if skip or cfg.get('skip_data_check', False):
        return
    missing = find_missing_data(cfg, phases)
    if missing is not None:
        print(missing.message(), file=sys.stderr)
        raise SystemExit(1)


def main(argv=None) -> None:
    from mmengine.config import Config, DictAction
    parser = argparse.ArgumentParser(
        prog='python -m reot_mm.engine.data_checks',
        description='Check that the data files a config reads exist.')
    parser.add_argument('config', help='config file')
    parser.add_argument('--phase', nargs='+', choices=tuple(PHASES),
                        default=list(PHASES),
                        help='which dataloaders to check (default: all)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings in the config (key=value)')
    args = parser.parse_args(argv)
    import reot_mm
    reot_mm.register_all_modules()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    exit_if_data_missing(cfg, args.phase)
    print(f'data check passed: {args.config} ({", ".join(args.phase)})')


if __name__ == '__main__':
    main()
