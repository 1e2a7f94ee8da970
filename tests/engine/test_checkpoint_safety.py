"""Atomic checkpoint writes, deferred deletion and the fallback to the newest complete
checkpoint (reot_mm.engine.checkpoint_safety). The kill-and-resume runs of real
``tools/train.py`` processes are in test_resume.py."""
import logging
import os

import mmengine  # noqa: F401  (reot_mm registers its fixes when mmengine is loaded)
import pytest
import torch
from mmengine.hooks import CheckpointHook
from mmengine.logging import MMLogger

import reot_mm.engine  # noqa: F401  (installs the fixes)
from reot_mm.engine.checkpoint_safety import (atomic_save_checkpoint, checkpoint_problem,
                                              find_latest_intact_checkpoint)

pytestmark = pytest.mark.reliability


def _write_checkpoint(path, value):
    atomic_save_checkpoint({'meta': {'epoch': value},
                            'state_dict': {'w': torch.full((64,), float(value))}}, str(path))


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError('interrupted in the middle of the write')


def test_mmengine_uses_the_atomic_save_and_the_fallback():
    import mmengine.runner.checkpoint as checkpoint_module
    import mmengine.runner.runner as runner_module
    assert runner_module.save_checkpoint is atomic_save_checkpoint
    assert checkpoint_module.save_checkpoint is atomic_save_checkpoint
    assert runner_module.find_latest_checkpoint is find_latest_intact_checkpoint
    assert CheckpointHook._save_checkpoint_with_step._reot_mm_deferred


def test_interrupted_save_keeps_the_previous_file_and_leaves_no_partial_file(tmp_path):
    path = tmp_path / 'epoch_1.pth'
    _write_checkpoint(path, 1)
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match='interrupted'):
        atomic_save_checkpoint({'state_dict': {'bad': _Unpicklable()}}, str(path))
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ['epoch_1.pth']
    assert torch.load(path)['meta']['epoch'] == 1


def test_checkpoint_problem_names_truncation_and_corruption(tmp_path):
    path = tmp_path / 'epoch_1.pth'
    _write_checkpoint(path, 1)
    assert checkpoint_problem(str(path)) is None
    assert 'does not exist' in checkpoint_problem(str(tmp_path / 'epoch_9.pth'))
    _truncate(path)
    assert 'not a complete zip archive' in checkpoint_problem(str(path))
    # same length, flipped payload bytes: the CRC check catches it
    _write_checkpoint(path, 1)
    data = bytearray(path.read_bytes())
    start = data.index(torch.full((64,), 1.0).numpy().tobytes())
    data[start:start + 8] = b'\xff' * 8
    path.write_bytes(bytes(data))
    assert 'CRC' in checkpoint_problem(str(path))


def test_legacy_format_checkpoints_are_accepted(tmp_path):
    path = tmp_path / 'epoch_1.pth'
    torch.save({'state_dict': {'w': torch.ones(3)}}, path,
               _use_new_zipfile_serialization=False)
    assert checkpoint_problem(str(path)) is None


@pytest.fixture
def captured_log():
    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logger = MMLogger.get_current_instance()
    handler = Collect()
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def test_truncated_newest_falls_back_to_previous_with_a_message(tmp_path, captured_log):
    for epoch in (1, 2, 3):
        _write_checkpoint(tmp_path / f'epoch_{epoch}.pth', epoch)
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_3.pth'))
    assert find_latest_intact_checkpoint(str(tmp_path)) == str(tmp_path / 'epoch_3.pth')
    _truncate(tmp_path / 'epoch_3.pth')
    assert find_latest_intact_checkpoint(str(tmp_path)) == str(tmp_path / 'epoch_2.pth')
    assert any('Skipping checkpoint' in m and 'epoch_3.pth' in m for m in captured_log)


def test_pointer_to_a_deleted_file_falls_back(tmp_path, captured_log):
    """The probe's failure: last_checkpoint names epoch_22.pth, which is gone."""
    _write_checkpoint(tmp_path / 'epoch_21.pth', 21)
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_22.pth'))
    assert find_latest_intact_checkpoint(str(tmp_path)) == str(tmp_path / 'epoch_21.pth')
    assert any('epoch_22.pth' in m and 'does not exist' in m for m in captured_log)


def test_pointer_wins_over_newer_files_and_steps_sort_numerically(tmp_path):
    for epoch in (2, 10, 9):
        _write_checkpoint(tmp_path / f'epoch_{epoch}.pth', epoch)
    assert find_latest_intact_checkpoint(str(tmp_path)) == str(tmp_path / 'epoch_10.pth')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_9.pth'))
    assert find_latest_intact_checkpoint(str(tmp_path)) == str(tmp_path / 'epoch_9.pth')


def test_no_complete_checkpoint_means_none_and_partial_files_are_removed(tmp_path):
    _write_checkpoint(tmp_path / 'epoch_1.pth', 1)
    _truncate(tmp_path / 'epoch_1.pth')
    partial = tmp_path / '.epoch_2.pth.tmp-123'
    partial.write_bytes(b'PK')
    assert find_latest_intact_checkpoint(str(tmp_path)) is None
    assert not partial.exists()
    assert find_latest_intact_checkpoint(str(tmp_path / 'missing')) is None


class _Runner:
    """What CheckpointHook._save_checkpoint_with_step uses of a Runner."""

    def __init__(self, work_dir, events):
        self.work_dir = str(work_dir)
        self.events = events
        from mmengine.logging import MessageHub
        self.message_hub = MessageHub.get_instance(f'ckpt-test-{work_dir}')

    def save_checkpoint(self, out_dir, filename, *args, **kwargs):
        self.events.append(('save', filename, sorted(os.listdir(out_dir))))
        _write_checkpoint(os.path.join(out_dir, filename), 0)


def test_old_checkpoint_is_deleted_only_after_the_new_one_is_complete(tmp_path):
    events = []
    runner = _Runner(tmp_path, events)
    hook = CheckpointHook(interval=1, max_keep_ckpts=1)
    hook.out_dir = str(tmp_path)
    from mmengine.fileio import get_file_backend
    backend = hook.file_backend = get_file_backend(str(tmp_path))
    hook.filename_tmpl = 'epoch_{}.pth'
    from collections import deque
    hook.keep_ckpt_ids = deque([], 1)
    hook._save_checkpoint_with_step(runner, 1, {})
    hook._save_checkpoint_with_step(runner, 2, {})
    # while epoch_2.pth was written, epoch_1.pth was still there (upstream deletes first)
    assert events[1] == ('save', 'epoch_2.pth', ['epoch_1.pth', 'last_checkpoint'])
    assert sorted(os.listdir(tmp_path)) == ['epoch_2.pth', 'last_checkpoint']
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'epoch_2.pth')
    assert runner.message_hub.get_info('keep_ckpt_ids') == [2]
    assert hook.file_backend is backend


def test_random_state_survives_a_weights_only_load(tmp_path):
    from reot_mm.engine.random_state import (META_KEY, capture_random_state,
                                             restore_random_state)
    import random

    import numpy as np
    path = tmp_path / 'epoch_1.pth'
    atomic_save_checkpoint({'meta': {META_KEY: dict(ranks=[capture_random_state()])}},
                           str(path))
    expected = (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist())
    state = torch.load(path, weights_only=True)['meta'][META_KEY]['ranks'][0]
    restore_random_state(state)
    assert (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()) == expected
