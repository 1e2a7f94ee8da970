"""Lets configs name reot_mm's shipped configs as ``reot_mm::<folder>/<file>.py``.

mmengine resolves ``_base_ = 'mmdet::...'`` only for the packages listed in
``mmengine.config.utils.MODULE2PACKAGE``; adding reot_mm there (importing
this module, which ``reot_mm.register_all_modules()`` does, as tools/train.py
and tools/test.py do) makes ``_base_ = 'reot_mm::demo/reot_resnet8_100e_digitslt.py'``
resolve to ``reot_mm/.mim/configs/demo/...``, which setup.py installs. A
user's script imports reot_mm (with mmengine) before ``Config.fromfile``: the
config's own ``custom_imports`` take effect only after its bases are read.
"""
import os.path as osp

from mmengine.config import config as _config_module
from mmengine.config import utils as _config_utils

PACKAGE = 'reot_mm'
_config_utils.MODULE2PACKAGE.setdefault(PACKAGE, PACKAGE)

_upstream_installed_path = _config_module.get_installed_path


def get_installed_path(package: str) -> str:
    """mmengine's ``get_installed_path``, exact for reot_mm.

    mmengine joins the distribution's location with the package name, which
    for an editable install (pip's PEP 660 finder, ``pip install -e .``) is
    ``site-packages/reot_mm``, a folder that does not exist; the imported
    package's own folder is where ``.mim`` is in every kind of install.
    """
    if package == PACKAGE:
        return osp.dirname(osp.dirname(osp.abspath(__file__)))
    return _upstream_installed_path(package)


if getattr(_upstream_installed_path, '__module__', None) != __name__:
    _config_module.get_installed_path = get_installed_path
