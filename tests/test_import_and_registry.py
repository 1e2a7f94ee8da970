"""reot_mm imports without the task libraries and registers into root registries."""
import subprocess
import sys
import textwrap

import pytest

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
        import reot_mm
        from mmengine.registry import HOOKS, MODELS
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
