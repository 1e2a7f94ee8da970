"""Read prediction pickles without running code from them.

``pickle.load`` calls whatever function a pickle names, so a crafted ``preds.pkl`` can run a
shell command the moment a tool opens it. The dumps reot_mm reads (upstream ``DumpResults``
pickles of mmpretrain and mmseg data samples, after ``to_dict()``) hold only plain containers,
numpy arrays and scalars and torch tensors. :class:`RestrictedUnpickler` resolves exactly those
globals and refuses every other one with :class:`pickle.UnpicklingError` naming it.

A torch tensor pickles its storage through ``torch.storage._load_from_bytes``, which itself
calls ``torch.load(..., weights_only=False)`` on the embedded bytes; the allow-list maps that
name to a stand-in that reads the same bytes with ``weights_only=True``.
"""
import _compat_pickle
import collections
import importlib
import io
import pickle
from typing import Any, Callable, Dict, Tuple

import numpy
import torch

__all__ = ['RestrictedUnpickler', 'safe_pickle_load', 'allowed_globals']


def _storage_from_bytes(data: bytes):
    """``torch.storage._load_from_bytes`` under torch's restricted unpickler."""
    return torch.load(io.BytesIO(data), weights_only=True)


def _codecs_encode(obj, encoding='utf-8', errors='strict'):
    """``_codecs.encode``, which numpy uses to store raw bytes in protocol-2 pickles."""
    if not isinstance(obj, str) or not isinstance(encoding, str):
        raise pickle.UnpicklingError('_codecs.encode is allowed for (str, encoding) only')
    return obj.encode(encoding, errors)


def _numpy_globals() -> Dict[Tuple[str, str], Callable]:
    found = {}
    for module_name in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for name in ('_reconstruct', 'scalar'):
            if hasattr(module, name):
                found[(module_name, name)] = getattr(module, name)
    found[('numpy', 'ndarray')] = numpy.ndarray
    found[('numpy', 'dtype')] = numpy.dtype
    # numpy >= 1.25 pickles dtypes through their classes in numpy.dtypes
    dtypes = getattr(numpy, 'dtypes', None)
    if dtypes is not None:
        for name in dir(dtypes):
            obj = getattr(dtypes, name)
            if isinstance(obj, type) and issubclass(obj, numpy.dtype):
                found[('numpy.dtypes', name)] = obj
    return found


def _torch_globals() -> Dict[Tuple[str, str], Any]:
    found = {
        ('torch._utils', '_rebuild_tensor_v2'): torch._utils._rebuild_tensor_v2,
        ('torch._utils', '_rebuild_parameter'): torch._utils._rebuild_parameter,
        ('torch.storage', '_load_from_bytes'): _storage_from_bytes,
        ('torch', 'Size'): torch.Size,
        ('torch', 'device'): torch.device,
    }
    for name in dir(torch):
        value = getattr(torch, name, None)
        if isinstance(value, torch.dtype):
            found[('torch', name)] = value
    return found


def allowed_globals() -> Dict[Tuple[str, str], Any]:
    """Return the ``(module, name) -> object`` map the restricted unpickler resolves."""
    allowed: Dict[Tuple[str, str], Any] = {
        ('builtins', 'set'): set,
        ('builtins', 'frozenset'): frozenset,
        ('builtins', 'complex'): complex,
        ('builtins', 'slice'): slice,
        ('builtins', 'bytearray'): bytearray,
        ('collections', 'OrderedDict'): collections.OrderedDict,
        ('_codecs', 'encode'): _codecs_encode,
    }
    allowed.update(_numpy_globals())
    allowed.update(_torch_globals())
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only containers, numpy arrays/scalars and torch tensors."""

    _allowed = None

    def find_class(self, module: str, name: str):
        if RestrictedUnpickler._allowed is None:
            RestrictedUnpickler._allowed = allowed_globals()
        # protocol 0-2 pickles (mmengine's dump) name Python 2 modules, e.g. __builtin__.set
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        try:
            return RestrictedUnpickler._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f'refused to load the global {module}.{name}: a prediction dump may hold only '
                'lists, dicts, numbers, strings, numpy arrays and torch tensors (a pickle that '
                'names other functions can run code when opened)') from None


def safe_pickle_load(handle) -> Any:
    """Unpickle from an open binary file with :class:`RestrictedUnpickler`."""
    return RestrictedUnpickler(handle).load()
