"""Distributed training on CPU-only machines with mmengine 0.10.7 (gloo).

mmengine 0.10.7 assumes a GPU in two places: ``init_dist`` calls
``torch.cuda.set_device`` and ``Runner.wrap_model`` passes ``device_ids`` to
``DistributedDataParallel``; both are fatal without CUDA. ``setup_distributed``
therefore initialises the process group itself before the Runner is built
(the Runner then skips its own initialisation), with the settings of
``env_cfg.dist_cfg`` that ``init_dist`` would have used (``backend``,
``timeout`` in seconds, other keys passed to ``init_process_group``; a GPU-only
backend such as the upstream default ``nccl`` becomes ``gloo``), and points the
config at ``CPUDistributedDataParallel``, which drops ``device_ids`` for CPU
modules and reverts SyncBN to BN (SyncBN has no CPU kernel). With CUDA
available nothing is changed and mmengine's own path is used.

Buffers (BatchNorm statistics) are not broadcast at every step
(``broadcast_buffers=False``, as mmengine's GPU default): running statistics do
not enter a training forward, so each rank keeps its own.
:class:`BroadcastBuffersHook` copies rank 0's buffers to every rank before each
validation, so that a distributed validation scores the model rank 0 saves.
See docs/distributed.md.
"""
import datetime
import gc
import os

import torch
import torch.distributed as torch_dist
from mmengine.dist import broadcast
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import (MMDistributedDataParallel, is_model_wrapper,
                            revert_sync_batchnorm)
from mmengine.registry import HOOKS, MODEL_WRAPPERS

# backends that need a GPU; on a CPU-only machine they are replaced by gloo
_GPU_BACKENDS = ('nccl', 'hccl', 'cncl', 'mccl')


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` for modules that live on the CPU."""

    def __init__(self, module, device_ids=None, **kwargs):
        module = revert_sync_batchnorm(module)
        on_cpu = all(not p.is_cuda for p in module.parameters())
        super().__init__(module=module, device_ids=None if on_cpu else device_ids,
                         **kwargs)


def _slurm_environment() -> None:
    """Translate SLURM variables into the env:// variables torch expects."""
    os.environ.setdefault('RANK', os.environ['SLURM_PROCID'])
    os.environ.setdefault('WORLD_SIZE', os.environ['SLURM_NTASKS'])
    os.environ.setdefault('LOCAL_RANK', os.environ.get('SLURM_LOCALID', '0'))
    if 'MASTER_ADDR' not in os.environ:
        import subprocess
        node_list = os.environ['SLURM_NODELIST']
        os.environ['MASTER_ADDR'] = subprocess.getoutput(
            f'scontrol show hostname {node_list} | head -n1')
    os.environ.setdefault('MASTER_PORT', '29500')


def _init_process_group(dist_cfg: dict) -> dict:
    """Initialise the default group as mmengine's ``init_dist`` would, on CPU.

    Returns the settings used (``backend``, ``timeout``).
    """
    dist_cfg = dict(dist_cfg)
    backend = dist_cfg.pop('backend', 'gloo')
    if backend in _GPU_BACKENDS:
        print_log(f"env_cfg.dist_cfg.backend={backend!r} needs a GPU: using 'gloo'.",
                  logger='current')
        backend = 'gloo'
    timeout = dist_cfg.pop('timeout', None)
    if timeout is not None:
        if isinstance(timeout, datetime.timedelta):
            timeout = timeout.total_seconds()
        if not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValueError('env_cfg.dist_cfg.timeout must be a positive number '
                             f'of seconds, got {timeout!r}')
        dist_cfg['timeout'] = datetime.timedelta(seconds=timeout)
    dist_cfg.setdefault('init_method', 'env://')
    torch_dist.init_process_group(backend=backend, **dist_cfg)
    return dict(backend=backend, timeout=timeout)


def setup_distributed(cfg, launcher: str) -> None:
    """Prepare ``cfg`` (in place) for a distributed run on this machine.

    On CPU-only machines: initialise the process group from the launcher's
    environment and ``env_cfg.dist_cfg`` (backend, timeout), record the
    backend used in ``env_cfg.dist_cfg.backend`` and use
    ``CPUDistributedDataParallel``. Does nothing for ``launcher='none'`` or
    when CUDA is available.
    """
    if launcher == 'none' or torch.cuda.is_available():
        return
    if launcher not in ('pytorch', 'slurm'):
        raise ValueError(f"CPU distributed runs support launcher 'pytorch' or "
                         f"'slurm', got {launcher!r}")
    if launcher == 'slurm':
        _slurm_environment()
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    if not torch_dist.is_initialized():
        used = _init_process_group(dist_cfg)
        dist_cfg['backend'] = used['backend']
        print_log(f"Process group: backend {used['backend']}, world size "
                  f'{torch_dist.get_world_size()}, timeout '
                  f"{used['timeout'] if used['timeout'] is not None else 'torch default'} s.",
                  logger='current')
    else:
        dist_cfg['backend'] = torch_dist.get_backend()
    wrapper = cfg.get('model_wrapper_cfg') or {}
    if wrapper.get('type', 'MMDistributedDataParallel') in (
            'MMDistributedDataParallel', MMDistributedDataParallel):
        wrapper = dict(wrapper, type='CPUDistributedDataParallel')
        # mmengine's default on GPUs too; BroadcastBuffersHook syncs before
        # validation instead of at every forward
        wrapper.setdefault('broadcast_buffers', False)
        wrapper.setdefault('find_unused_parameters',
                           cfg.get('find_unused_parameters', False))
    cfg.model_wrapper_cfg = wrapper


@HOOKS.register_module()
class BroadcastBuffersHook(Hook):
    """Copy rank 0's model buffers to every rank before each validation.

    With ``broadcast_buffers=False`` each rank's BatchNorm running statistics
    follow its own batches; validation shards the data over the ranks, so
    without this every rank would score a slightly different model from the
    one rank 0 saves. Buffers that are the same on every rank (class counts,
    λ, GML's gathered queues) are unchanged by the copy; training is unchanged
    too (running statistics do not enter a training forward).
    """

    priority = 'HIGH'

    def before_val_epoch(self, runner) -> None:
        if runner.world_size <= 1:
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        for buffer in model.buffers():
            if buffer.dtype == torch.bool:
                as_bytes = buffer.to(torch.uint8)
                broadcast(as_bytes, src=0)
                buffer.copy_(as_bytes.bool())
            else:
                broadcast(buffer, src=0)


def check_lr_scaling(runner) -> None:
    """Warn when the global batch differs from the one the learning rate is for.

    ``auto_scale_lr.base_batch_size`` is the total batch size the config's
    learning rate was set for. With scaling off (the default; ``tools/train.py
    --auto-scale-lr`` turns it on) a run on more processes, or with another
    per-process batch, trains with the same learning rate on a larger global
    batch.
    """
    scaling = runner.cfg.get('auto_scale_lr') or {}
    base = scaling.get('base_batch_size')
    loader = runner.cfg.get('train_dataloader') or {}
    per_process = loader.get('batch_size')
    if base is None or per_process is None or scaling.get('enable', False):
        return
    global_batch = runner.world_size * per_process
    if global_batch != base:
        runner.logger.warning(
            f'The global batch size is {global_batch} ({runner.world_size} '
            f'process(es) x {per_process}) but the learning rate is set for '
            f'auto_scale_lr.base_batch_size={base}, and learning-rate scaling is '
            f'off: pass --auto-scale-lr to scale it by {global_batch / base:g} '
            '(docs/distributed.md).')


def teardown_distributed() -> None:
    """Wait for every rank, then destroy the process group.

    Without it a rank that finishes first (e.g. a non-zero rank while rank 0
    still writes ``--out``) exits and closes its gloo sockets under the others,
    which then abort.
    """
    if torch_dist.is_available() and torch_dist.is_initialized():
        # free objects that still hold the group (a dropped Runner's DDP
        # reducer sits in reference cycles) before the group goes away
        gc.collect()
        torch_dist.barrier()
        torch_dist.destroy_process_group()
