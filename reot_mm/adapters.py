"""Import the library adapters whose library is installed.

``reot_mm`` itself needs only torch and mmengine. Each adapter package speaks one
OpenMMLab library's contract and is imported only when that library can be
imported, so ``import reot_mm`` works in an environment that has, say, mmpretrain
but no mmdet or mmseg.
"""
import importlib
import importlib.util

# adapter module -> the library it needs
_ADAPTERS = {
    'reot_mm.cls': 'mmpretrain',
    'reot_mm.det': 'mmdet',
    'reot_mm.seg': 'mmseg',
}


def available_adapters():
    """Return the adapter modules whose library is installed (and which exist)."""
    found = []
    for module, library in _ADAPTERS.items():
        if importlib.util.find_spec(library) is None:
            continue
        if importlib.util.find_spec(module) is None:
            continue
        found.append(module)
    return found


def import_adapters():
    """Import every available adapter; errors inside an adapter propagate."""
    return [importlib.import_module(m) for m in available_adapters()]
