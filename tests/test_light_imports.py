"""``import reot_mm.ot`` and ``import reot_mm.losses`` stay light.

Each check runs in a fresh interpreter in which mmpretrain, mmdet, mmseg and
mmcv (and, for ``reot_mm.ot``, mmengine too) are made unimportable by a
meta-path finder, as if they were not installed. torch is imported first, so
the time measured is what reot_mm adds; it is CPU time of the process, which a
loaded machine does not inflate the way it inflates wall time.
"""
import json
import subprocess
import sys
import textwrap

import pytest

# the light imports must stay well under a second on top of torch
CPU_SECONDS_LIMIT = 1.0


def _run(blocked, statement, baseline='import torch'):
    """Run ``statement`` after ``baseline`` with ``blocked`` unimportable.

    Returns the top-level and full module names the statement added to
    sys.modules and the CPU seconds it took."""
    code = '\n'.join([
        textwrap.dedent(f'''
            import json, sys, time

            class BlockLibraries:
                """Meta-path finder: the blocked packages are not installed."""
                blocked = {tuple(blocked)!r}

                def find_spec(self, name, path=None, target=None):
                    if name.split('.')[0] in self.blocked:
                        raise ModuleNotFoundError(f'No module named {{name!r}} (blocked)')
                    return None

            sys.meta_path.insert(0, BlockLibraries())
        '''),
        baseline,
        'before = set(sys.modules)',
        'start = time.process_time()',
        textwrap.dedent(statement),
        'seconds = time.process_time() - start',
        'added = sorted(set(sys.modules) - before)',
        'print(json.dumps(dict(added=added, seconds=seconds)))',
    ])
    result = subprocess.run([sys.executable, '-c', code], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _third_party(modules):
    """Top-level names that are neither stdlib nor reot_mm."""
    tops = {m.split('.')[0] for m in modules}
    return {t for t in tops - set(sys.stdlib_module_names) if t != 'reot_mm'}


MM_LIBRARIES = ('mmpretrain', 'mmdet', 'mmseg', 'mmcv')


def test_ot_imports_torch_only():
    out = _run(MM_LIBRARIES + ('mmengine',),
               'from reot_mm.ot import reot_sinkhorn')
    assert _third_party(out['added']) == set(), out['added']
    assert out['seconds'] < CPU_SECONDS_LIMIT, out


def test_package_import_alone_is_light():
    """``import reot_mm`` before mmengine imports nothing but itself."""
    out = _run(MM_LIBRARIES + ('mmengine',), 'import reot_mm', baseline='pass')
    assert _third_party(out['added']) == set(), out['added']
    assert {'reot_mm.engine', 'reot_mm.losses'}.isdisjoint(out['added'])


def test_losses_import_torch_and_mmengine_registry_only():
    # what mmengine's registry itself needs is allowed, nothing more of mmengine
    registry = _run(MM_LIBRARIES, 'import mmengine.registry')['added']
    out = _run(MM_LIBRARIES, 'from reot_mm.losses import REOTLoss, BCLLoss, GMLLoss')
    extra = {m for m in out['added']
             if not m.startswith('reot_mm') and m not in registry}
    assert extra == set(), sorted(extra)
    for part in ('reot_mm.engine', 'reot_mm.evaluation', 'reot_mm.cls',
                 'reot_mm.det', 'reot_mm.seg'):
        assert part not in out['added']
    assert out['seconds'] < CPU_SECONDS_LIMIT, out


@pytest.mark.parametrize('statement', [
    'import reot_mm.ot', 'import reot_mm.losses'])
def test_light_import_then_explicit_registration(statement):
    """After a light import, register_all_modules() registers every type."""
    out = _run((), statement + textwrap.dedent('''
        import reot_mm
        from mmengine.registry import HOOKS, METRICS, MODELS
        assert HOOKS.get('REOTPriorHook') is None
        reot_mm.register_all_modules()
        reot_mm.register_all_modules()  # twice is harmless
        assert HOOKS.get('REOTPriorHook') is not None
        assert METRICS.get('ShotAccuracy') is not None
        assert MODELS.get('REOTLoss') is not None'''))
    assert 'reot_mm.engine' in out['added']
