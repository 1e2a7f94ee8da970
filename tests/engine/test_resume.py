"""Kill-and-resume of real ``tools/train.py`` processes on the digits-LT configs.

* a SIGKILL in the middle of a checkpoint write, then at a random iteration (which
  may fall in a save or a validation), with ``max_keep_ckpts=1``: every ``--resume``
  finds a complete checkpoint and the run ends bit-identical to one that was never
  interrupted;
* a truncated newest checkpoint: ``--resume`` names it, takes the previous one and
  again ends bit-identical;
* BCL, the GML teacher and the GML student (three augmented views drawn from
  numpy's global generator): resuming from epoch 1 gives the uninterrupted run's
  parameters and optimizer state bit for bit (RandomStateHook).

Short schedules (3-4 epochs of 5 iterations); each process mostly spends its time
importing OpenMMLab.
"""
import os
import os.path as osp
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import mmengine  # noqa: F401
import pytest
import torch

import reot_mm.engine  # noqa: F401  (checkpoint allow-list)
from reot_mm.engine.checkpoint_safety import find_latest_intact_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.reliability]

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TRAIN = osp.join(ROOT, 'tools', 'train.py')
REOT = osp.join(ROOT, 'configs', 'demo', 'reot_resnet8_100e_digitslt.py')

# Test instrumentation, imported by the trained process through custom_imports:
# REOT_TEST_KILL_IN_SAVE=N kills the process with SIGKILL half-way through writing
# its N-th checkpoint; REOT_TEST_PROGRESS=file gets one line per trained iteration.
PROBE = textwrap.dedent('''
    import io
    import os
    import signal

    import torch
    from mmengine.runner import EpochBasedTrainLoop

    _original_save = torch.save
    _saves = [0]


    def _save(obj, f, *args, **kwargs):
        kill_at = int(os.environ.get('REOT_TEST_KILL_IN_SAVE', '0'))
        if kill_at and hasattr(f, 'write'):
            _saves[0] += 1
            if _saves[0] == kill_at:
                buffer = io.BytesIO()
                _original_save(obj, buffer, *args, **kwargs)
                data = buffer.getvalue()
                f.write(data[:len(data) // 2])
                f.flush()
                os.fsync(f.fileno())
                os.kill(os.getpid(), signal.SIGKILL)
        return _original_save(obj, f, *args, **kwargs)


    torch.save = _save
    _run_iter = EpochBasedTrainLoop.run_iter


    def run_iter(self, idx, data_batch):
        _run_iter(self, idx, data_batch)
        path = os.environ.get('REOT_TEST_PROGRESS')
        if path:
            with open(path, 'a') as handle:
                handle.write(f'{self._iter}\\n')


    EpochBasedTrainLoop.run_iter = run_iter
''')


_PROBE_DIR = []


@pytest.fixture(scope='module')
def probe_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp('probe')
    (directory / 'resume_probe.py').write_text(PROBE)
    _PROBE_DIR[:] = [str(directory)]
    return directory


def _command(config, work_dir, options, resume=None):
    # custom_imports are imported when the config file is read, before
    # --cfg-options apply: the probe comes in through a config that inherits
    probed = osp.join(_PROBE_DIR[0], 'probed_' + osp.basename(config))
    with open(probed, 'w') as handle:
        handle.write(f"_base_ = [{config!r}]\n"
                     "custom_imports = dict(imports=['reot_mm', 'resume_probe'], "
                     "allow_failed_imports=False)\n")
    command = [sys.executable, TRAIN, probed, '--work-dir', str(work_dir)]
    if resume is not None:
        command += ['--resume'] + ([] if resume == 'auto' else [str(resume)])
    return command + ['--cfg-options', 'default_hooks.logger.interval=1', *options]


def _env(probe_dir, **extra):
    return dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='',
                PYTHONPATH=f'{probe_dir}{os.pathsep}{ROOT}', **extra)


def train(probe_dir, config, work_dir, options, resume=None, **env):
    result = subprocess.run(_command(config, work_dir, options, resume),
                            env=_env(probe_dir, **env), cwd=ROOT, capture_output=True,
                            text=True, timeout=900)
    return result


def assert_ok(result):
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def assert_same_training_state(path_a, path_b):
    """Parameters, buffers and optimizer state equal bit for bit."""
    a, b = torch.load(path_a), torch.load(path_b)
    assert a['meta']['epoch'] == b['meta']['epoch']
    assert a['state_dict'].keys() == b['state_dict'].keys()
    for key in a['state_dict']:
        assert torch.equal(a['state_dict'][key], b['state_dict'][key]), key
    state_a, state_b = a['optimizer']['state'], b['optimizer']['state']
    assert state_a.keys() == state_b.keys()
    for index in state_a:
        for name, value in state_a[index].items():
            assert torch.equal(value, state_b[index][name]), (index, name)


def schedule(epochs, keep):
    return [f'train_cfg.max_epochs={epochs}', 'train_cfg.val_interval=2',
            'default_hooks.checkpoint.interval=1',
            f'default_hooks.checkpoint.max_keep_ckpts={keep}']


@pytest.fixture(scope='module')
def reot_reference(probe_dir, tmp_path_factory):
    """RE-OT, 4 epochs, never interrupted, every checkpoint kept."""
    work_dir = tmp_path_factory.mktemp('reot_reference')
    assert_ok(train(probe_dir, REOT, work_dir, schedule(4, -1)))
    return work_dir


def _kill_at_iteration(probe_dir, work_dir, options, iteration, progress, log):
    with open(log, 'w') as handle:
        process = subprocess.Popen(_command(REOT, work_dir, options, resume='auto'),
                                   env=_env(probe_dir, REOT_TEST_PROGRESS=str(progress)),
                                   cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.time() + 900
    try:
        while time.time() < deadline and process.poll() is None:
            done = progress.read_text().split() if progress.exists() else []
            if done and int(done[-1]) >= iteration:
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
        return process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()


def test_sigkill_in_a_save_and_at_a_random_iteration_then_resume(probe_dir, tmp_path,
                                                                 reot_reference):
    work_dir = tmp_path / 'work'
    options = schedule(4, 1)
    # 1. killed half-way through writing epoch_2.pth (the second save)
    result = train(probe_dir, REOT, work_dir, options, REOT_TEST_KILL_IN_SAVE='2')
    assert result.returncode == -signal.SIGKILL
    names = sorted(os.listdir(work_dir))
    assert 'epoch_1.pth' in names and 'epoch_2.pth' not in names, names
    assert any(name.startswith('.epoch_2.pth.tmp-') for name in names), names
    assert find_latest_intact_checkpoint(str(work_dir)) == str(work_dir / 'epoch_1.pth')
    # 2. resumed, then killed at a random iteration of epochs 2-4 (iterations 6-20
    # with drop_last's 5 iterations per epoch, 7-24 without)
    iteration = random.Random(int(os.environ.get('REOT_TEST_SEED', 0))).randint(7, 18)
    log = tmp_path / 'killed.log'
    returncode = _kill_at_iteration(probe_dir, work_dir, options, iteration,
                                    tmp_path / 'progress.txt', log)
    assert returncode == -signal.SIGKILL, log.read_text()[-3000:]
    assert find_latest_intact_checkpoint(str(work_dir)) is not None
    # 3. resumed to the end: the same model as the run that was never interrupted
    result = train(probe_dir, REOT, work_dir, options, resume='auto')
    assert_ok(result)
    assert sorted(n for n in os.listdir(work_dir) if n.endswith('.pth')) == ['epoch_4.pth']
    assert_same_training_state(work_dir / 'epoch_4.pth', reot_reference / 'epoch_4.pth')


def test_truncated_newest_checkpoint_falls_back_to_the_previous(probe_dir, tmp_path,
                                                                reot_reference):
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    for name in ('epoch_2.pth', 'epoch_3.pth'):
        shutil.copy(reot_reference / name, work_dir / name)
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'epoch_3.pth'))
    data = (work_dir / 'epoch_3.pth').read_bytes()
    (work_dir / 'epoch_3.pth').write_bytes(data[:len(data) // 3])
    result = train(probe_dir, REOT, work_dir, schedule(4, -1), resume='auto')
    assert_ok(result)
    log = result.stdout + result.stderr
    assert f'Skipping checkpoint {work_dir / "epoch_3.pth"}' in log
    assert f'Auto resumed from the latest checkpoint {work_dir / "epoch_2.pth"}' in log
    assert_same_training_state(work_dir / 'epoch_4.pth', reot_reference / 'epoch_4.pth')


def _resume_is_exact(probe_dir, tmp_path, config, extra=()):
    options = [*schedule(3, -1), 'train_cfg.val_interval=1', *extra]
    reference = tmp_path / 'reference'
    assert_ok(train(probe_dir, config, reference, options))
    resumed = tmp_path / 'resumed'
    resumed.mkdir()
    shutil.copy(reference / 'epoch_1.pth', resumed / 'epoch_1.pth')
    result = train(probe_dir, config, resumed, options, resume=resumed / 'epoch_1.pth')
    assert_ok(result)
    assert 'Random generator states restored' in result.stdout + result.stderr
    assert_same_training_state(resumed / 'epoch_3.pth', reference / 'epoch_3.pth')
    return reference / 'epoch_3.pth'


def test_bcl_resume_is_bit_identical(probe_dir, tmp_path):
    _resume_is_exact(probe_dir, tmp_path,
                     osp.join(ROOT, 'configs', 'bcl', 'bcl_resnet8_100e_digitslt.py'))


def test_gml_teacher_and_student_resume_is_bit_identical(probe_dir, tmp_path):
    teacher = _resume_is_exact(
        probe_dir, tmp_path / 'teacher',
        osp.join(ROOT, 'configs', 'gml', 'gml-teacher_resnet8_100e_digitslt.py'))
    _resume_is_exact(probe_dir, tmp_path / 'student',
                     osp.join(ROOT, 'configs', 'gml', 'gml_resnet8_100e_digitslt.py'),
                     [f'model.teacher_checkpoint={teacher}'])
