"""Install reot_mm, a plugin package for OpenMMLab 2.x.

Requirements here are deliberately loose so that ``pip install -e .[cls]`` (or
``pip install --no-deps -e .``) fits into an existing OpenMMLab environment. The pinned
dev/CI stack lives in ``requirements/constraints-dev.txt`` and is installed by ``make env``.
Nothing is compiled: the package is pure Python.

As OpenMMLab packages do (mmdet's ``add_mim_extension``), the configs, the tools
and ``model-index.yml`` are shipped inside the package as ``reot_mm/.mim/``:
symlinks in an editable install, copies in a wheel or sdist. That makes
``_base_ = 'reot_mm::demo/reot_resnet8_100e_digitslt.py'`` resolve from any
directory and ``mim train reot_mm configs/demo/...`` find the config and
``tools/train.py``.
"""
import os
import os.path as osp
import re
import shutil
import sys
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
# what reot_mm/.mim holds, as in mmdet / mmpretrain
MIM_FILES = ('configs', 'tools', 'model-index.yml')


def read_version():
    """Read ``__version__`` from reot_mm/version.py without importing the package.

    Importing it would import torch and mmengine, which need not be installed yet.
    """
    text = (HERE / 'reot_mm' / 'version.py').read_text(encoding='utf-8')
    match = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
    if match is None:
        raise RuntimeError('reot_mm/version.py defines no __version__')
    return match.group(1)


def read_readme():
    readme = HERE / 'README.md'
    return readme.read_text(encoding='utf-8') if readme.exists() else ''


def add_mim_extension(mode=None):
    """Put ``configs/``, ``tools/`` and ``model-index.yml`` into ``reot_mm/.mim``.

    ``mode`` is 'symlink' (editable install: the package sees the working
    tree) or 'copy' (wheel, sdist); None picks it from the setup command and
    does nothing for other commands (egg_info, clean, ...). ``reot_mm/.mim``
    is generated, so it is in .gitignore.
    """
    if mode is None:
        if {'develop', 'editable_wheel'} & set(sys.argv):
            mode = 'symlink'
        elif {'sdist', 'bdist_wheel', 'build', 'build_py', 'install'} & set(sys.argv):
            mode = 'copy'
        else:
            return
    if mode not in ('symlink', 'copy'):
        raise ValueError(f"mode must be 'symlink' or 'copy', got {mode!r}")
    mim_dir = HERE / 'reot_mm' / '.mim'
    mim_dir.mkdir(exist_ok=True)
    for name in MIM_FILES:
        source = HERE / name
        target = mim_dir / name
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.is_dir():
            shutil.rmtree(target)
        if mode == 'symlink':
            # relative, so the link survives moving the checkout
            target.symlink_to(osp.relpath(source, mim_dir))
        elif source.is_dir():
            shutil.copytree(source, target,
                            ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
        else:
            shutil.copyfile(source, target)


INSTALL_REQUIRES = [
    'torch>=2.0',
    'mmengine>=0.10,<1',
    'numpy>=1.21',
    # mmengine resolves `_base_ = 'mmdet::...'` configs through pkg_resources (gone in 82).
    'setuptools<82',
]

# mmdet 3.3 and mmseg 1.2 refuse mmcv >= 2.2 at import time.
MMCV = 'mmcv>=2.0,<2.2'

# Each tool's docstring names the extra it needs; tests/test_tool_extras.py
# checks that every third-party import of tools/ and reot_mm/ is declared here.
EXTRAS_REQUIRE = {
    # mmcv: reot_mm's CIFAR ResNet and transforms; scikit-learn: the digits-LT
    # demo data (sklearn.datasets.load_digits)
    'cls': ['mmpretrain>=1.0', MMCV, 'scikit-learn'],
    'det': ['mmdet>=3.0', MMCV, 'lvis', 'pycocotools'],
    'seg': ['mmsegmentation>=1.0', MMCV, 'ftfy', 'regex'],
    # tools/posthoc.py --method otlm (progress bar of the OTLM cost fit)
    'posthoc': ['tqdm'],
    # tools/class_barycenters.py (t-SNE, figure), tools/reot_barycenter_figure.py
    'plots': ['matplotlib', 'scikit-learn', 'scikit-image'],
}
EXTRAS_REQUIRE['all'] = sorted({req for reqs in EXTRAS_REQUIRE.values() for req in reqs})
EXTRAS_REQUIRE['dev'] = EXTRAS_REQUIRE['all'] + [
    'pytest',
    'hypothesis',
    'openmim',
    'POT',
]

if __name__ == '__main__':
    add_mim_extension()
    setup(
        name='reot_mm',
        version=read_version(),
        description=('Long-tailed recognition methods (RE-OT, OTLM, GML, BCL) as an '
                     'OpenMMLab 2.x plugin'),
        long_description=read_readme(),
        long_description_content_type='text/markdown',
        license='Apache-2.0',
        # reot_mm and its subpackages; configs/ and tools/ travel as reot_mm/.mim
        packages=find_packages(include=('reot_mm', 'reot_mm.*')),
        include_package_data=True,
        package_data={'reot_mm': ['.mim/model-index.yml', '.mim/configs/**/*.py',
                                  '.mim/configs/**/*.yml', '.mim/tools/*.py',
                                  '.mim/tools/*.sh', '.mim/tools/**/*.py']},
        python_requires='>=3.8',
        install_requires=INSTALL_REQUIRES,
        extras_require=EXTRAS_REQUIRE,
        zip_safe=False,
        keywords='long-tailed recognition, optimal transport, OpenMMLab',
        classifiers=[
            'Development Status :: 4 - Beta',
            'License :: OSI Approved :: Apache Software License',
            'Operating System :: OS Independent',
            'Programming Language :: Python :: 3',
            'Programming Language :: Python :: 3.11',
            'Intended Audience :: Science/Research',
            'Topic :: Scientific/Engineering :: Artificial Intelligence',
        ],
    )
