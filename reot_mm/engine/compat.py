"""Compatibility fixes for running the last OpenMMLab 2.x releases on current torch/numpy.

mmengine 0.10.7, mmdet 3.3.0 and the ``lvis`` 0.5.3 evaluation API predate torch 2.6 and
numpy 2. Each fix below is narrow (it changes one documented behaviour and nothing else),
idempotent, and has a test in ``tests/engine/test_compat.py`` that fails without it.
:func:`install` applies all of them; ``reot_mm.engine`` calls it at import time, so
``custom_imports = dict(imports=['reot_mm'])`` in a config is enough. See also
``docs/compat.md``.

1. **Runner checkpoints under ``weights_only=True``** (torch >= 2.6 default).
   mmengine's ``save_checkpoint`` pickles more than tensors: the message hub holds
   :class:`mmengine.logging.HistoryBuffer` objects (numpy arrays, numpy dtypes, and the
   buffer's statistic methods, pickled as ``getattr(HistoryBuffer, 'min')``), and
   ``runtime_info`` holds numpy scalars. torch's restricted unpickler refuses all of these,
   so ``runner.resume()`` and ``load_from`` fail with ``UnpicklingError``. The fix
   allow-lists exactly the types found in real Runner checkpoints
   (``torch.serialization.get_unsafe_globals_in_checkpoint``) with
   ``torch.serialization.add_safe_globals``; weights-only loading stays on, so a checkpoint
   that would run code is still refused. The allow-list (:func:`checkpoint_safe_globals`):

   * ``numpy.ndarray``, ``numpy.dtype`` and the dtype classes of bool, integer, float and
     complex dtypes (``numpy.dtypes.Float64DType`` ...): needed to rebuild arrays;
   * ``numpy._core.multiarray._reconstruct`` and ``numpy._core.multiarray.scalar``, also
     under their numpy 1 names ``numpy.core.multiarray.*`` so checkpoints written with
     numpy 1.x load too;
   * ``mmengine.logging.HistoryBuffer``;
   * a stand-in for ``builtins.getattr`` that returns only ``HistoryBuffer.min/max/
     current/mean`` and raises ``UnpicklingError`` for anything else. The real ``getattr``
     is never allow-listed (with it a pickle could reach any attribute of any allowed
     object).

   :func:`safe_checkpoint_globals` scopes the same list to a ``with`` block for code that
   does not want the process-wide registration.

2. **``lvis`` 0.5.3 on numpy >= 1.24.** ``lvis.eval.LVISEval.accumulate`` calls
   ``astype(dtype=np.float)``; numpy 1.24 removed that alias, so every LVIS evaluation
   (mmdet ``LVISMetric``) raises ``AttributeError``. It is the only removed alias the
   package uses (``grep`` of lvis 0.5.3: ``eval.py`` lines 361-362). The fix replaces the
   ``np`` global of the ``lvis`` modules, not numpy itself, with a proxy that delegates to
   numpy and, for names numpy no longer has, resolves the removed builtin aliases
   (``float``, ``int``, ``bool``, ``object``, ``str``, ``complex``, ``long``, ``unicode``) to
   the builtins they always were. It is applied only when ``lvis`` is importable.
"""
import contextlib
import importlib
import importlib.util
import pickle
import sys
from typing import Any, Callable, Iterator, List, Optional, Tuple, Union

import numpy
import torch

__all__ = [
    'checkpoint_safe_globals', 'safe_checkpoint_globals', 'install_checkpoint_safe_globals',
    'patch_lvis_numpy_aliases', 'install'
]

SafeGlobal = Union[Callable, Tuple[Callable, str]]

# HistoryBuffer.__getstate__ stores its class-level ``_statistics_methods`` dict, whose
# default entries are these functions; pickle writes each as getattr(HistoryBuffer, name).
_HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')

# numpy 1.20 deprecated and 1.24 removed these aliases of Python builtins.
_REMOVED_NUMPY_ALIASES = {
    'bool': bool,
    'int': int,
    'float': float,
    'complex': complex,
    'object': object,
    'str': str,
    'long': int,
    'unicode': str,
}


def _numpy_multiarray():
    """Return numpy's ``multiarray`` module under its numpy 2 or numpy 1 path."""
    try:
        return importlib.import_module('numpy._core.multiarray')
    except ImportError:
        return importlib.import_module('numpy.core.multiarray')


def _history_buffer_statistic(owner: Any, name: str) -> Callable:
    """Resolve ``getattr(HistoryBuffer, name)`` for the default statistic methods only.

    Registered under the name ``builtins.getattr`` for torch's weights-only unpickler,
    which then calls this function wherever a checkpoint calls ``getattr``.

    Args:
        owner: The object whose attribute the pickle asks for.
        name: The attribute name.

    Returns:
        The function ``HistoryBuffer.<name>``.

    Raises:
        pickle.UnpicklingError: For any other object or attribute, so that the stand-in
            cannot be used to reach arbitrary attributes.
    """
    from mmengine.logging import HistoryBuffer
    if owner is HistoryBuffer and name in _HISTORY_BUFFER_STATISTICS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'reot_mm checkpoint allow-list: getattr({owner!r}, {name!r}) is not allowed; only '
        f'HistoryBuffer.{{{", ".join(_HISTORY_BUFFER_STATISTICS)}}} may be resolved.')


def _numpy_dtype_classes() -> List[type]:
    """Return the classes of numpy's bool, integer, float and complex dtypes."""
    typecodes = '?' + numpy.typecodes['AllInteger'] + numpy.typecodes['AllFloat']
    classes = {type(numpy.dtype(code)) for code in typecodes}
    return sorted(classes, key=lambda cls: f'{cls.__module__}.{cls.__qualname__}')


def checkpoint_safe_globals() -> List[SafeGlobal]:
    """Return the globals an mmengine Runner checkpoint needs under ``weights_only=True``.

    Entries are either a class/function (torch names it ``module.qualname``) or a
    ``(function, 'full.path')`` pair for a name under which the pickle refers to it.

    Returns:
        The list, in a stable order, suitable for
        ``torch.serialization.add_safe_globals``.
    """
    from mmengine.logging import HistoryBuffer
    multiarray = _numpy_multiarray()
    safe: List[SafeGlobal] = [numpy.ndarray, numpy.dtype]
    safe.extend(_numpy_dtype_classes())
    for module_path in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        safe.append((multiarray._reconstruct, f'{module_path}._reconstruct'))
        safe.append((multiarray.scalar, f'{module_path}.scalar'))
    safe.append(HistoryBuffer)
    safe.append((_history_buffer_statistic, 'builtins.getattr'))
    return safe


def _supports_safe_globals() -> bool:
    # torch < 2.6 loads with weights_only=False by default, so mmengine needs no help, and
    # its allow-list API (if any) does not accept the (function, name) entries used here.
    return torch.torch_version.TorchVersion(torch.__version__) >= (2, 6)


def install_checkpoint_safe_globals() -> bool:
    """Register :func:`checkpoint_safe_globals` process-wide (idempotent).

    Returns:
        True if registered, False on torch < 2.6 (which does not load weights-only by
        default and needs no allow-list).
    """
    if not _supports_safe_globals():
        return False
    torch.serialization.add_safe_globals(checkpoint_safe_globals())
    return True


@contextlib.contextmanager
def safe_checkpoint_globals() -> Iterator[None]:
    """Allow-list :func:`checkpoint_safe_globals` inside a ``with`` block only.

    Entries that are already registered (for example by :func:`install`) are left out of
    the scoped set, because torch's ``safe_globals`` removes its entries on exit and would
    otherwise undo the process-wide registration.

    Yields:
        None.
    """
    if not _supports_safe_globals():
        yield
        return
    registered = set(torch.serialization.get_safe_globals())
    missing = [entry for entry in checkpoint_safe_globals() if entry not in registered]
    with torch.serialization.safe_globals(missing):
        yield


class _NumpyWithBuiltinAliases:
    """numpy as seen by code written for numpy < 1.24: removed builtin aliases resolve.

    Every attribute is numpy's own, looked up on each access so the proxy never goes
    stale; only names numpy lacks fall back to ``_REMOVED_NUMPY_ALIASES``.

    Args:
        numpy_module: The real numpy module to delegate to.
    """

    __slots__ = ('_numpy', )

    def __init__(self, numpy_module: Any):
        object.__setattr__(self, '_numpy', numpy_module)

    def __getattr__(self, name: str) -> Any:
        try:
            return getattr(self._numpy, name)
        except AttributeError:
            # numpy 2 reuses some names (np.bool, np.long) for numpy types: numpy wins.
            if name in _REMOVED_NUMPY_ALIASES:
                return _REMOVED_NUMPY_ALIASES[name]
            raise

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError('the numpy alias proxy is read-only')

    def __dir__(self) -> List[str]:
        return sorted(set(dir(self._numpy)) | set(_REMOVED_NUMPY_ALIASES))

    def __repr__(self) -> str:
        return f'<numpy {self._numpy.__version__} with builtin aliases (reot_mm.compat)>'


def patch_lvis_numpy_aliases() -> bool:
    """Give every loaded ``lvis`` module a numpy that still has the removed aliases.

    Only module globals bound to the numpy module are replaced; numpy itself is untouched.

    Returns:
        True if ``lvis`` is importable (and is now patched), False otherwise.
    """
    if 'lvis' not in sys.modules and importlib.util.find_spec('lvis') is None:
        return False
    try:
        importlib.import_module('lvis')
    except ImportError:
        return False
    # lvis/__init__ imports all its submodules, so they are all in sys.modules now.
    for module_name, module in list(sys.modules.items()):
        if module is None or not (module_name == 'lvis' or module_name.startswith('lvis.')):
            continue
        for attribute, value in list(vars(module).items()):
            if value is numpy:
                setattr(module, attribute, _NumpyWithBuiltinAliases(numpy))
    return True


def _hue_shift(hue_factor: float):
    """The uint8 rotation of the hue channel that numpy 1 computed from
    ``np.uint8(hue_factor * 255)``: truncation towards zero, then modulo 256."""
    return numpy.uint8(int(hue_factor * 255) % 256)


def adjust_hue(img, hue_factor: float, backend: Optional[str] = None):
    """``mmcv.adjust_hue`` that also works for negative ``hue_factor`` under numpy 2.

    mmcv 2.1 rotates the uint8 hue channel by ``np.uint8(hue_factor * 255)``; numpy 2
    raises ``OverflowError`` for negative values (numpy 1 wrapped them), so every
    ``ColorJitter(hue=h)`` crashes on roughly half its draws. This keeps mmcv's checks and
    both backends and computes the same wrapped shift numpy 1 did.
    """
    import cv2
    from mmcv.image import photometric
    from PIL import Image
    if hue_factor >= 0:  # unchanged path: numpy 2 handles it
        return _ORIGINAL_ADJUST_HUE[0](img, hue_factor, backend=backend)
    if backend is None:
        backend = photometric.imread_backend
    if backend not in ('cv2', 'pillow'):
        raise ValueError(f'backend: {backend} is not supported.'
                         "Supported backends are 'cv2', 'pillow'")
    if not -0.5 <= hue_factor <= 0.5:
        raise ValueError(f'hue_factor:{hue_factor} is not in [-0.5, 0.5].')
    if not (isinstance(img, numpy.ndarray) and img.ndim in (2, 3)):
        raise TypeError('img should be ndarray with dim=[2 or 3].')
    shift = _hue_shift(hue_factor)
    if backend == 'pillow':
        assert img.dtype == numpy.uint8, 'Pillow backend only support uint8 type'
        pil_image = Image.fromarray(img[..., ::-1], mode='RGB')
        h, s, v = pil_image.convert('HSV').split()
        np_h = numpy.array(h, dtype=numpy.uint8)
        with numpy.errstate(over='ignore'):
            np_h += shift
        pil_image = Image.merge('HSV', (Image.fromarray(np_h, 'L'), s, v))
        return numpy.array(pil_image.convert('RGB'), dtype=img.dtype)[..., ::-1]
    dtype = img.dtype
    hsv_img = cv2.cvtColor(img.astype(numpy.uint8), cv2.COLOR_BGR2HSV_FULL)
    h, s, v = cv2.split(hsv_img)
    h = h.astype(numpy.uint8)
    with numpy.errstate(over='ignore'):
        h += shift
    return cv2.cvtColor(cv2.merge([h, s, v]), cv2.COLOR_HSV2BGR_FULL).astype(dtype)


_ORIGINAL_ADJUST_HUE: list = []


def patch_mmcv_adjust_hue() -> bool:
    """Route ``mmcv.adjust_hue`` (and ``mmcv.image.adjust_hue``) through :func:`adjust_hue`.

    mmpretrain's ``ColorJitter`` calls ``mmcv.adjust_hue`` by attribute, so patching the
    module attributes is enough. Idempotent.

    Returns:
        True if mmcv is importable (and is now patched), False otherwise.
    """
    if importlib.util.find_spec('mmcv') is None:
        return False
    import mmcv
    import mmcv.image
    from mmcv.image import photometric
    if not _ORIGINAL_ADJUST_HUE:
        _ORIGINAL_ADJUST_HUE.append(photometric.adjust_hue)
    for module in (mmcv, mmcv.image, photometric):
        module.adjust_hue = adjust_hue
    return True


def install() -> None:
    """Apply every fix in this module and the checkpoint fixes of
    :mod:`reot_mm.engine.checkpoint_safety`. Safe to call any number of times."""
    from .checkpoint_safety import install as install_checkpoint_safety
    install_checkpoint_safety()
    install_checkpoint_safe_globals()
    patch_lvis_numpy_aliases()
    patch_mmcv_adjust_hue()
