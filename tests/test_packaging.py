"""Packaging as OpenMMLab packages do it: configs, tools and model-index.yml
ship as reot_mm/.mim (symlinks in an editable install, copies in a wheel), so
``_base_ = 'reot_mm::...'`` resolves from a user's directory and
``mim train reot_mm configs/...`` runs; model-index.yml lists every config."""
import ast
import glob
import os
import os.path as osp
import shutil
import subprocess
import sys
import zipfile

import pytest
import yaml

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
MIM = osp.join(ROOT, 'reot_mm', '.mim')
DEMO = 'demo/reot_resnet8_100e_digitslt.py'
USER_CONFIG = f"""_base_ = ['reot_mm::{DEMO}']
train_cfg = dict(max_epochs=1)
"""
LOAD_USER_CONFIG = """
import mmengine, reot_mm
from mmengine.config import Config
cfg = Config.fromfile('user_config.py')
print(cfg.model.head.loss.type, cfg.train_cfg.max_epochs, cfg.optim_wrapper.optimizer.lr)
"""


def shipped_configs():
    return sorted(osp.relpath(p, ROOT).replace(os.sep, '/')
                  for p in glob.glob(osp.join(ROOT, 'configs', '*', '*.py'))
                  if '/_base_/' not in p.replace(os.sep, '/'))


def metafile_models():
    with open(osp.join(ROOT, 'model-index.yml')) as handle:
        index = yaml.safe_load(handle)
    models = []
    for meta in index['Import']:
        assert osp.isfile(osp.join(ROOT, meta)), f'model-index.yml: {meta} missing'
        with open(osp.join(ROOT, meta)) as handle:
            metafile = yaml.safe_load(handle)
        collections = {c['Name']: c for c in metafile['Collections']}
        for model in metafile['Models']:
            models.append((meta, model, collections.get(model.get('In Collection'))))
    return models


def test_every_config_is_listed_once_and_every_listed_file_exists():
    models = metafile_models()
    listed = [model['Config'] for _, model, _ in models]
    for meta, model, collection in models:
        config = model['Config']
        assert osp.isfile(osp.join(ROOT, config)), f'{meta}: {config} does not exist'
        # each metafile lists the configs of its own folder
        assert osp.dirname(config) == osp.dirname(meta), (meta, config)
        assert model['Name'] == osp.splitext(osp.basename(config))[0], model
        assert collection is not None, f'{meta}: {model["Name"]} has no collection'
        assert collection['Paper']['Title'], collection
        assert model['Metadata']['Task'] in (
            'Image Classification', 'Representation Learning',
            'Instance Segmentation', 'Semantic Segmentation'), model
    assert sorted(listed) == shipped_configs(), \
        'model-index.yml must list every config exactly once'


def test_setup_declares_license_classifiers_and_mim_package_data():
    tree = ast.parse(open(osp.join(ROOT, 'setup.py')).read())
    call = next(node for node in ast.walk(tree) if isinstance(node, ast.Call)
                and getattr(node.func, 'id', None) == 'setup')
    keywords = {k.arg: k.value for k in call.keywords}
    assert ast.literal_eval(keywords['license']) == 'Apache-2.0'
    classifiers = ast.literal_eval(keywords['classifiers'])
    assert 'License :: OSI Approved :: Apache Software License' in classifiers
    package_data = ast.literal_eval(keywords['package_data'])['reot_mm']
    assert '.mim/model-index.yml' in package_data
    assert any(p.startswith('.mim/configs/') for p in package_data)
    assert any(p.startswith('.mim/tools/') for p in package_data)
    with open(osp.join(ROOT, '.gitignore')) as handle:
        assert '/reot_mm/.mim/' in handle.read().split()


def test_editable_install_links_configs_tools_and_index():
    if not osp.isdir(MIM):
        pytest.fail('reot_mm/.mim is missing: `pip install -e .` (make env) '
                    'creates it; or python -c "import setup; '
                    "setup.add_mim_extension('symlink')\"")
    for name in ('configs', 'tools', 'model-index.yml'):
        assert osp.realpath(osp.join(MIM, name)) == osp.realpath(osp.join(ROOT, name))


def test_add_mim_extension_copies_and_links(tmp_path):
    """setup.add_mim_extension on a copy of the files it ships."""
    for name in ('configs', 'tools'):
        shutil.copytree(osp.join(ROOT, name), tmp_path / name, symlinks=True)
    shutil.copyfile(osp.join(ROOT, 'model-index.yml'), tmp_path / 'model-index.yml')
    shutil.copyfile(osp.join(ROOT, 'setup.py'), tmp_path / 'setup.py')
    (tmp_path / 'reot_mm').mkdir()
    code = 'import sys, setup; setup.add_mim_extension(sys.argv[1])'
    subprocess.run([sys.executable, '-c', code, 'copy'], cwd=tmp_path, check=True)
    mim = tmp_path / 'reot_mm' / '.mim'
    assert (mim / 'configs' / DEMO).is_file()
    assert not (mim / 'configs').is_symlink()
    assert (mim / 'tools' / 'train.py').is_file()
    subprocess.run([sys.executable, '-c', code, 'symlink'], cwd=tmp_path, check=True)
    assert (mim / 'configs').is_symlink()
    assert (mim / 'configs' / DEMO).resolve() == (tmp_path / 'configs' / DEMO).resolve()
    bad = subprocess.run([sys.executable, '-c', code, 'hardlink'], cwd=tmp_path,
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "mode must be 'symlink' or 'copy'" in bad.stderr


def test_reot_mm_base_resolves_from_a_user_directory(tmp_path):
    (tmp_path / 'user_config.py').write_text(USER_CONFIG)
    result = subprocess.run([sys.executable, '-c', LOAD_USER_CONFIG], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-3:] == ['REOTLoss', '1', '0.1']


def _copy_source_tree(dest):
    """The working tree's files (tracked and new, not ignored) under ``dest``."""
    files = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard', '-z'],
                           cwd=ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split('\0')):
        source = osp.join(ROOT, rel)
        if osp.isfile(source):
            os.makedirs(osp.dirname(osp.join(dest, rel)), exist_ok=True)
            shutil.copyfile(source, osp.join(dest, rel))


@pytest.mark.slow
def test_wheel_ships_mim_files_and_mim_train_runs(tmp_path):
    """Build the wheel, install it into a folder, and from a directory
    without the repository: resolve a reot_mm:: base and run
    ``mim train reot_mm configs/demo/...`` for one epoch."""
    source, wheels, target, run = (tmp_path / n for n in ('src', 'wheel', 'site', 'run'))
    _copy_source_tree(source)
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps',
                    '--no-build-isolation', '--disable-pip-version-check', '-q',
                    '-w', str(wheels), str(source)], check=True)
    wheel = next(wheels.glob('reot_mm-*.whl'))
    names = zipfile.ZipFile(wheel).namelist()
    for config in shipped_configs():
        assert f'reot_mm/.mim/{config}' in names, config
    assert 'reot_mm/.mim/model-index.yml' in names
    assert 'reot_mm/.mim/tools/train.py' in names
    subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '-q',
                    '--disable-pip-version-check', '--target', str(target),
                    str(wheel)], check=True)
    run.mkdir()
    env = dict(os.environ, PYTHONPATH=str(target), OMP_NUM_THREADS='1')
    (run / 'user_config.py').write_text(USER_CONFIG)
    loaded = subprocess.run([sys.executable, '-c', LOAD_USER_CONFIG], cwd=run,
                            env=env, capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.split()[-3:] == ['REOTLoss', '1', '0.1']
    mim = osp.join(osp.dirname(sys.executable), 'mim')
    trained = subprocess.run(
        [mim, 'train', 'reot_mm', f'configs/{DEMO}',
         '--cfg-options', 'train_cfg.max_epochs=1'],
        cwd=run, env=env, capture_output=True, text=True)
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    # mim found the config in the installed package, not in a checkout
    assert str(target) in trained.stdout
    assert (run / 'work_dirs' / 'reot_resnet8_100e_digitslt' / 'epoch_1.pth').is_file()
