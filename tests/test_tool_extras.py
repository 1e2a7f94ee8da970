"""Every third-party import of tools/ and reot_mm/ is declared by setup.py,
and every tool names in its docstring the extra (``reot_mm[NAME]``) that
brings what it imports beyond install_requires."""
import ast
import functools
import glob
import importlib.metadata as metadata
import os.path as osp
import re
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOLS = sorted(glob.glob(osp.join(ROOT, 'tools', '**', '*.py'), recursive=True))
PACKAGE = sorted(glob.glob(osp.join(ROOT, 'reot_mm', '**', '*.py'), recursive=True))
# import name -> distribution, for modules whose distribution is not installed
# here (packages_distributions() knows only installed ones)
KNOWN_DISTRIBUTIONS = {'sklearn': 'scikit-learn', 'skimage': 'scikit-image',
                       'cv2': 'opencv-python', 'PIL': 'pillow', 'mmseg': 'mmsegmentation',
                       'yaml': 'pyyaml'}


def canonical(name):
    return re.sub(r'[-_.]+', '-', name).lower()


def requirement_name(requirement):
    return canonical(re.split(r'[<>=!~;\[ ]', requirement, maxsplit=1)[0])


@functools.lru_cache(maxsize=None)
def setup_requirements():
    sys.path.insert(0, ROOT)
    try:
        import setup  # guarded by __name__ == '__main__': defines, installs nothing
    finally:
        sys.path.remove(ROOT)
    core = {requirement_name(r) for r in setup.INSTALL_REQUIRES}
    extras = {name: {requirement_name(r) for r in reqs}
              for name, reqs in setup.EXTRAS_REQUIRE.items()}
    return core, extras


def third_party_imports(path):
    """Top-level names of the absolute, non-stdlib, non-reot_mm imports."""
    names = set()
    for node in ast.walk(ast.parse(open(path, encoding='utf-8').read())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split('.')[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split('.')[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != 'reot_mm'}


@functools.lru_cache(maxsize=None)
def _packages_distributions():
    return metadata.packages_distributions()


def distribution(module):
    installed = _packages_distributions().get(module)
    if installed:
        return canonical(installed[0])
    return canonical(KNOWN_DISTRIBUTIONS.get(module, module))


@functools.lru_cache(maxsize=None)
def installed_requirements(dist):
    """Unconditional requirements of an installed distribution."""
    try:
        requires = metadata.requires(dist) or []
    except metadata.PackageNotFoundError:
        return set()
    return {requirement_name(r) for r in requires if 'extra ==' not in r}


def test_requirement_names_are_canonical():
    assert requirement_name('mmcv>=2.0,<2.2') == 'mmcv'
    assert requirement_name('scikit_learn') == 'scikit-learn'
    assert distribution('sklearn') == 'scikit-learn'


@pytest.mark.parametrize('path', TOOLS + PACKAGE,
                         ids=[osp.relpath(p, ROOT) for p in TOOLS + PACKAGE])
def test_every_import_is_declared(path):
    core, extras = setup_requirements()
    declared = core.union(*extras.values())
    # a dependency that a declared distribution itself requires (pillow via
    # mmcv, opencv via mmengine) comes with it
    provided = declared.union(*(installed_requirements(d) for d in declared))
    missing = {m: distribution(m) for m in third_party_imports(path)
               if distribution(m) not in provided}
    assert not missing, (f'{osp.relpath(path, ROOT)} imports {missing}, which '
                         'neither install_requires nor an extra of setup.py brings')


@pytest.mark.parametrize('path', TOOLS, ids=[osp.relpath(p, ROOT) for p in TOOLS])
def test_tool_docstring_names_its_extra(path):
    core, extras = setup_requirements()
    needed = {distribution(m) for m in third_party_imports(path)} - core
    docstring = ast.get_docstring(ast.parse(open(path, encoding='utf-8').read())) or ''
    named = set(re.findall(r'reot_mm\[([a-z]+)\]', docstring))
    assert named <= set(extras), f'{path} names unknown extras {named - set(extras)}'
    brought = core.union(*(extras[n] for n in named))
    missing = {d for d in needed if d not in brought}
    assert not missing, (f'{osp.relpath(path, ROOT)} needs {sorted(missing)}: its '
                         'docstring should say `pip install reot_mm[EXTRA]` for an '
                         f'extra that brings them ({sorted(extras)})')


def test_posthoc_otlm_progress_bar_is_declared():
    """tools/posthoc.py --method otlm shows tqdm's progress bar
    (reot_mm.ot.otlm), which [cls] does not bring."""
    _, extras = setup_requirements()
    assert 'tqdm' in extras['posthoc'] and 'tqdm' not in extras['cls']
    docstring = ast.get_docstring(ast.parse(open(osp.join(ROOT, 'tools', 'posthoc.py')).read()))
    assert 'reot_mm[posthoc]' in docstring
