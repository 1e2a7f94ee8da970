"""Two- and three-process CPU (gloo) training through tools/dist_train.sh (torchrun):
ranks stay identical (uneven last batch, ranks that miss a class in a batch), the
dist_cfg timeout is honoured, validation scores the saved model, LR scaling."""
import json
import os
import os.path as osp
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from launch import free_port

from reot_mm.cls.datasets.long_tail import exponential_profile

pytestmark = pytest.mark.reliability

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

PROBE = textwrap.dedent('''
    """Test instrumentation: each rank writes what it holds after every epoch."""
    import json
    import os
    import os.path as osp

    import torch
    import torch.distributed as torch_dist
    from mmengine.dist import get_rank
    from mmengine.hooks import Hook
    from mmengine.model import is_model_wrapper
    from mmengine.registry import HOOKS

    from reot_mm.losses import REOTLoss


    def _module(runner):
        model = runner.model
        return model.module if is_model_wrapper(model) else model


    @HOOKS.register_module()
    class RankStateProbe(Hook):
        priority = 'LOWEST'

        def __init__(self):
            self.batches = []

        def before_train(self, runner):
            with open(osp.join(runner.work_dir, f'pid_rank{get_rank()}'), 'w') as handle:
                handle.write(str(os.getpid()))

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            self.batches.append([int(s.gt_label) for s in data_batch['data_samples']])
            with open(osp.join(runner.work_dir, f'progress_rank{get_rank()}'), 'a') as handle:
                handle.write(f'{runner.iter}\\n')

        def after_train_epoch(self, runner):
            module = _module(runner)
            loss = [m for m in module.modules() if isinstance(m, REOTLoss)][0]
            params = torch.cat([p.detach().flatten() for p in module.parameters()])
            record = dict(
                wrapper=type(runner.model).__name__,
                backend=torch_dist.get_backend(),
                counts=loss.class_counts.tolist(),
                prior_weight=float(loss.prior_weight),
                param_sum=float(params.double().sum()),
                param_abs=float(params.double().abs().sum()),
                initial_lr=runner.optim_wrapper.param_groups[0]['initial_lr'],
                labels=self.batches,
                world_size=runner.world_size)
            self.batches = []
            path = osp.join(runner.work_dir, f'rank{get_rank()}_epoch{runner.epoch + 1}.json')
            with open(path, 'w') as handle:
                json.dump(record, handle)

        def before_val_epoch(self, runner):
            # after BroadcastBuffersHook (priority HIGH): the buffers validation uses
            buffers = {name: float(b.double().sum())
                       for name, b in _module(runner).named_buffers()}
            path = osp.join(runner.work_dir, f'rank{get_rank()}_val{runner.epoch}.json')
            with open(path, 'w') as handle:
                json.dump(buffers, handle)
''')


def write_probe_config(tmp_path, epochs=3):
    (tmp_path / 'rank_probe.py').write_text(PROBE)
    config = tmp_path / 'reot_digits_probe.py'
    config.write_text(textwrap.dedent(f'''
        _base_ = ['{ROOT}/configs/demo/reot_resnet8_100e_digitslt.py']
        custom_imports = dict(imports=['reot_mm', 'rank_probe'],
                              allow_failed_imports=False)
        train_cfg = dict(max_epochs={epochs}, val_interval=3)
        # keep the uneven last batch (161 = 64 + 64 + 33 per rank on 2 ranks)
        train_dataloader = dict(drop_last=False)
        default_hooks = dict(checkpoint=dict(interval=3))
        custom_hooks = [
            dict(type='ClassStatisticsHook'),
            dict(type='REOTPriorHook', milestones=(1, 3)),
            dict(type='RankStateProbe'),
        ]
    '''))
    return config


def dist_env(tmp_path):
    return dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()),
                PYTHONPATH=f'{tmp_path}{os.pathsep}{ROOT}',
                OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')


def dist_train(tmp_path, world, *options):
    config = write_probe_config(tmp_path)
    work_dir = tmp_path / 'work'
    command = ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), str(config), str(world),
               '--work-dir', str(work_dir), *options]
    result = subprocess.run(command, env=dist_env(tmp_path), cwd=ROOT, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return config, work_dir, result.stdout + result.stderr


def check_ranks_agree(work_dir, world):
    """Identical class counts, λ and parameters on every rank after every epoch,
    with an uneven last batch and batches where a rank sees no sample of a class
    that another rank has."""
    lacks_a_class = False
    for epoch in (1, 2, 3):
        records = [json.loads((work_dir / f'rank{r}_epoch{epoch}.json').read_text())
                   for r in range(world)]
        assert records[0]['world_size'] == world
        assert records[0]['wrapper'] == 'CPUDistributedDataParallel'
        # the configs' nccl is GPU-only: the CPU path uses gloo
        assert records[0]['backend'] == 'gloo'
        for other in records[1:]:
            assert other['counts'] == records[0]['counts']
            assert other['prior_weight'] == records[0]['prior_weight']
            # DDP kept the replicas in sync
            assert other['param_sum'] == records[0]['param_sum']
            assert other['param_abs'] == records[0]['param_abs']
        sizes = [[len(batch) for batch in r['labels']] for r in records]
        per_rank = -(-267 // world)  # DefaultSampler pads to a multiple of world
        assert sizes == [sizes[0]] * world and sum(sizes[0]) == per_rank
        assert sizes[0][-1] < 64  # uneven last batch
        for batches in zip(*(r['labels'] for r in records)):
            seen = [set(batch) for batch in batches]
            if any(s < set().union(*seen) for s in seen):
                lacks_a_class = True
    assert lacks_a_class
    assert [json.loads((work_dir / f'rank0_epoch{e}.json').read_text())
            ['prior_weight'] for e in (1, 2, 3)] == [0.0, 0.5, 1.0]
    assert sum(json.loads((work_dir / 'rank0_epoch1.json').read_text())
               ['counts']) == sum(exponential_profile(100, 10, 60))


@pytest.mark.slow
def test_two_process_gloo_run_keeps_ranks_identical(tmp_path):
    config, work_dir, log = dist_train(tmp_path, 2)
    check_ranks_agree(work_dir, 2)
    # rank 0 evaluated the whole balanced val split (200 images)
    assert 'shot/few' in log
    # 2 x 64 images per step with the learning rate of batch 64: said, with both numbers
    assert ('The global batch size is 128 (2 process(es) x 64) but the learning rate is '
            'set for auto_scale_lr.base_batch_size=64') in log
    assert json.loads((work_dir / 'rank0_epoch1.json').read_text())['initial_lr'] == 0.1
    # validation used rank 0's buffers on both ranks: those of the saved model
    buffers = [json.loads((work_dir / f'rank{r}_val3.json').read_text()) for r in (0, 1)]
    assert buffers[0] == buffers[1]
    import mmengine  # noqa: F401
    import torch

    import reot_mm.engine  # noqa: F401  (checkpoint allow-list)
    saved = torch.load(work_dir / 'epoch_3.pth')['state_dict']
    running = [name for name in buffers[0] if name.endswith('running_mean')]
    assert running
    for name in running:
        assert buffers[0][name] == float(saved[name].double().sum()), name

    # tools/dist_test.sh on the checkpoint: both ranks predict, rank 0 dumps;
    # on the val split (20 per class) that the run validated on
    out = tmp_path / 'preds.pkl'
    result = subprocess.run(
        ['bash', osp.join(ROOT, 'tools', 'dist_test.sh'), str(config),
         str(work_dir / 'epoch_3.pth'), '2', '--work-dir', str(work_dir),
         '--out', str(out), '--cfg-options', 'test_dataloader.dataset.split=val'],
        env=dist_env(tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with open(out, 'rb') as handle:
        predictions = pickle.load(handle)
    assert len(predictions) == 200
    assert sorted(int(p['gt_label']) for p in predictions) == \
        sorted([c for c in range(10) for _ in range(20)])
    # the distributed validation scored the saved model (same accuracy as the test)
    val = [line for line in log.splitlines() if 'Epoch(val) [3]' in line][-1]
    test = [line for line in (result.stdout + result.stderr).splitlines()
            if 'Epoch(test)' in line][-1]
    assert val.split('accuracy/top1:')[1].split()[0] == \
        test.split('accuracy/top1:')[1].split()[0]


@pytest.mark.slow
def test_three_processes_with_auto_scale_lr(tmp_path):
    _, work_dir, log = dist_train(tmp_path, 3, '--auto-scale-lr')
    check_ranks_agree(work_dir, 3)
    # mmengine's linear scaling: 0.1 x (3 x 64) / 64, and no warning
    assert json.loads((work_dir / 'rank0_epoch1.json').read_text())['initial_lr'] == \
        pytest.approx(0.3)
    assert 'The global batch size is' not in log


@pytest.mark.slow
def test_stopped_rank_makes_the_other_fail_within_the_timeout(tmp_path):
    """env_cfg.dist_cfg.timeout reaches the gloo group: a SIGSTOPped rank 1 makes
    rank 0 fail after about that long instead of the 30-minute default."""
    timeout = 20
    config = write_probe_config(tmp_path, epochs=200)
    work_dir = tmp_path / 'work'
    command = ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), str(config), '2',
               '--work-dir', str(work_dir), '--cfg-options',
               f'env_cfg.dist_cfg.timeout={timeout}']
    log_file = tmp_path / 'log.txt'
    with open(log_file, 'w') as log:
        process = subprocess.Popen(command, env=dist_env(tmp_path), cwd=ROOT, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    stopped, pids = None, []
    try:
        deadline = time.time() + 600
        while time.time() < deadline and process.poll() is None:
            progress = [work_dir / f'progress_rank{r}' for r in (0, 1)]
            if all(p.exists() and len(p.read_text().split()) >= 3 for p in progress):
                break
            time.sleep(0.1)
        assert process.poll() is None, log_file.read_text()[-3000:]
        pids += [int((work_dir / f'pid_rank{r}').read_text()) for r in (0, 1)]
        os.kill(pids[1], signal.SIGSTOP)
        stopped = time.time()
        while os.path.exists(f'/proc/{pids[0]}') and time.time() - stopped < 600:
            with open(f'/proc/{pids[0]}/stat') as handle:
                if handle.read().split(')')[-1].split()[0] == 'Z':
                    break
            time.sleep(0.1)
        waited = time.time() - stopped
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        # torchrun may start its workers in their own sessions: the stopped
        # rank would outlive the test
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait(timeout=60)
    output = log_file.read_text()
    assert waited < timeout + 30, f'rank 0 still waiting after {waited:.0f} s'
    assert waited > timeout / 2, f'rank 0 ended after {waited:.0f} s, before the timeout'
    assert 'timed out' in output.lower() or 'timeout' in output.lower(), output[-3000:]


@pytest.mark.slow
def test_plain_mmengine_launch_fails_on_cpu_without_the_fix(tmp_path):
    """The same launch through mmengine's own Runner set-up (no
    setup_distributed) dies on this CPU-only machine: this is the problem
    reot_mm.engine.distributed fixes."""
    script = tmp_path / 'plain_train.py'
    script.write_text(textwrap.dedent(f'''
        import sys
        from mmengine.config import Config
        from mmengine.runner import Runner
        cfg = Config.fromfile('{ROOT}/configs/demo/reot_resnet8_100e_digitslt.py')
        cfg.launcher = 'pytorch'
        cfg.work_dir = sys.argv[1]
        cfg.train_cfg.max_epochs = 1
        Runner.from_cfg(cfg).train()
    '''))
    env = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    result = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
         f'--master_port={free_port()}', str(script), str(tmp_path / 'work')],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert 'cuda' in (result.stdout + result.stderr).lower()
