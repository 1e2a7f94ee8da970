"""Install reot_mm, a plugin package for OpenMMLab 2.x.

Requirements here are deliberately loose so that ``pip install -e .[cls]`` (or
``pip install --no-deps -e .``) fits into an existing OpenMMLab environment. The pinned
dev/CI stack lives in ``requirements/constraints-dev.txt`` and is installed by ``make env``.
Nothing is compiled: the package is pure Python.
"""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


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


INSTALL_REQUIRES = [
    'torch>=2.0',
    'mmengine>=0.10,<1',
    'numpy>=1.21',
    # mmengine resolves `_base_ = 'mmdet::...'` configs through pkg_resources (gone in 82).
    'setuptools<82',
]

# mmdet 3.3 and mmseg 1.2 refuse mmcv >= 2.2 at import time.
MMCV = 'mmcv>=2.0,<2.2'

EXTRAS_REQUIRE = {
    'cls': ['mmpretrain>=1.0'],
    'det': ['mmdet>=3.0', MMCV, 'lvis', 'pycocotools'],
    'seg': ['mmsegmentation>=1.0', MMCV, 'ftfy', 'regex'],
}
EXTRAS_REQUIRE['all'] = sorted({req for reqs in EXTRAS_REQUIRE.values() for req in reqs})
EXTRAS_REQUIRE['dev'] = EXTRAS_REQUIRE['all'] + [
    'pytest',
    'POT',
    'scikit-learn',
    'scikit-image',
    'matplotlib',
]

setup(
    name='reot_mm',
    version=read_version(),
    description=('Long-tailed recognition methods (RE-OT, OTLM, GML, BCL) as an '
                 'OpenMMLab 2.x plugin'),
    long_description=read_readme(),
    long_description_content_type='text/markdown',
    # reot_mm and its subpackages only: tests/, tools/, configs/ are not installed.
    packages=find_packages(include=('reot_mm', 'reot_mm.*')),
    python_requires='>=3.8',
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    zip_safe=False,
    classifiers=[
        'Programming Language :: Python :: 3',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
)
