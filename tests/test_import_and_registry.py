"""reot_mm imports without the task libraries and registers into root registries.

``custom_imports = dict(imports=['reot_mm'])`` registers every type the package
declares; the light imports of ``reot_mm.ot`` / ``reot_mm.losses`` are tested in
tests/test_light_imports.py.
"""
import ast
import json
import os.path as osp
import subprocess
import sys
import textwrap

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

def _hide(blocked):
    """Code that makes the ``blocked`` packages invisible to the import system
    (as if not installed): the path finder no longer finds them."""
    return textwrap.dedent(f'''
        import importlib.machinery
        _find = importlib.machinery.PathFinder.find_spec
        def _hidden(name, path=None, target=None):
            if name.split('.')[0] in {blocked!r}:
                return None
            return _find(name, path, target)
        importlib.machinery.PathFinder.find_spec = staticmethod(_hidden)
    ''')


@pytest.mark.parametrize('blocked', [('mmdet', 'mmseg', 'lvis'),
                                     ('mmdet', 'mmseg', 'lvis', 'mmpretrain')])
def test_import_without_task_libraries(blocked):
    code = _hide(blocked) + textwrap.dedent(f'''
        import importlib.util
        assert all(importlib.util.find_spec(b) is None for b in {blocked!r})
        from mmengine.registry import HOOKS, MODELS
        import reot_mm  # after mmengine: registers everything
        MODELS.build(dict(type='REOTLoss', prior='uniform'))
        HOOKS.build(dict(type='REOTPriorHook'))
        import sys
        assert not any(m.split('.')[0] in {blocked!r} for m in sys.modules)
        print('adapters', reot_mm.available_adapters())
    ''')
    result = subprocess.run([sys.executable, '-c', code],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = [] if 'mmpretrain' in blocked else ['reot_mm.cls']
    assert f'adapters {expected}' in result.stdout


@pytest.mark.parametrize('library', ['mmpretrain', 'mmdet', 'mmseg'])
def test_plugin_types_resolve_from_every_scope(library):
    import importlib

    import reot_mm  # noqa: F401
    registry = importlib.import_module(f'{library}.registry')
    loss = registry.MODELS.build(dict(type='REOTLoss', prior='uniform'))
    assert type(loss).__name__ == 'REOTLoss'
    hook = registry.HOOKS.build(dict(type='ClassStatisticsHook'))
    assert type(hook).__name__ == 'ClassStatisticsHook'
    metric = registry.METRICS.build(dict(type='ShotAccuracy', class_counts=[1, 2]))
    assert type(metric).__name__ == 'ShotAccuracy'


def declared_types():
    """Names of every class or function in reot_mm decorated with
    ``<REGISTRY>.register_module(...)`` (the ``name=`` argument if given)."""
    import glob
    names = set()
    for path in glob.glob(osp.join(ROOT, 'reot_mm', '**', '*.py'), recursive=True):
        with open(path, encoding='utf-8') as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if not isinstance(node, (ast.ClassDef, ast.FunctionDef)):
                continue
            for deco in node.decorator_list:
                if (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute)
                        and deco.func.attr == 'register_module'):
                    given = [k.value.value for k in deco.keywords if k.arg == 'name']
                    names.add(given[0] if given else node.name)
    return names


REGISTERED_BY_CUSTOM_IMPORTS = textwrap.dedent('''
    import json, sys
    from mmengine.config import Config
    from mmengine.registry import Registry
    Config.fromfile(sys.argv[1])  # processes custom_imports
    import mmengine.registry, mmpretrain.registry, mmdet.registry, mmseg.registry
    names = set()
    for module in (mmengine.registry, mmpretrain.registry, mmdet.registry,
                   mmseg.registry):
        for registry in vars(module).values():
            if isinstance(registry, Registry):
                names.update(key for key, obj in registry.module_dict.items()
                             if getattr(obj, '__module__', '').startswith('reot_mm'))
    print(json.dumps(sorted(names)))
''')


def test_custom_imports_registers_every_declared_type(tmp_path):
    """A config's ``custom_imports=['reot_mm']`` (mmengine imported first, as
    in every OpenMMLab entry point) registers each type reot_mm declares."""
    config = tmp_path / 'plugin.py'
    config.write_text("custom_imports = dict(imports=['reot_mm'], "
                      "allow_failed_imports=False)\n")
    result = subprocess.run(
        [sys.executable, '-c', REGISTERED_BY_CUSTOM_IMPORTS, str(config)],
        capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    registered = set(json.loads(result.stdout.strip().splitlines()[-1]))
    declared = declared_types()
    assert {'REOTLoss', 'REOTPriorHook', 'ClassStatisticsHook',
            'ShotAccuracy', 'SinkhornInferenceMetric'} <= declared
    assert declared - registered == set()
