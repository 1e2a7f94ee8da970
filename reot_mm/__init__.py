"""reot_mm: long-tailed recognition methods (RE-OT, OTLM, GML, BCL) for OpenMMLab 2.x.

What ``import reot_mm`` does depends on whether mmengine is already imported:

* **inside OpenMMLab** (a config's ``custom_imports = dict(imports=['reot_mm'])``,
  a Runner, a script that imported mmengine / mmpretrain / mmdet / mmseg first):
  it calls :func:`register_all_modules`, which registers every plugin type —
  losses, hooks, metrics and model wrappers in mmengine's root registries (so
  ``type='REOTLoss'`` resolves from the mmpretrain, mmdet and mmseg scopes
  alike), datasets, backbones and heads in the library's own registry for each
  installed library (see :mod:`reot_mm.adapters`);
* **otherwise** it imports nothing, so the plain-torch parts stay light:
  ``from reot_mm.ot import reot_sinkhorn`` imports torch only and
  ``from reot_mm.losses import REOTLoss`` torch and mmengine's registry.

A script that imports ``reot_mm`` before mmengine and then builds plugin types
through a registry calls ``reot_mm.register_all_modules()`` itself, as with
``mmdet.utils.register_all_modules()``; calling it twice is harmless.
"""
import importlib
import pkgutil
import sys

from .adapters import available_adapters, import_adapters
from .version import __license__, __version__, version_info

# the task-agnostic packages: every module in them is imported by
# register_all_modules(), so a type declared in a new module is registered
# without a list to keep up to date
TASK_AGNOSTIC_PACKAGES = ('engine', 'losses', 'models', 'evaluation')


def register_all_modules():
    """Import every reot_mm module that registers a type (idempotent).

    Imports each module of the engine (OpenMMLab compatibility fixes, hooks,
    wrappers), the losses, the task-agnostic models and the metrics, then the
    adapter of every installed OpenMMLab library. Returns the adapter modules.
    """
    for name in TASK_AGNOSTIC_PACKAGES:
        package = importlib.import_module(f'{__name__}.{name}')
        for module in pkgutil.walk_packages(package.__path__, f'{package.__name__}.'):
            importlib.import_module(module.name)
    return import_adapters()


if 'mmengine' in sys.modules:
    register_all_modules()

__all__ = ['__version__', '__license__', 'version_info', 'available_adapters',
           'import_adapters', 'register_all_modules']
