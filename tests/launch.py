"""Process launching shared by the tests: free ports, forked gloo ranks,
torchrun scripts and ``tools/train.py`` / ``tools/dist_train.sh`` runs.

``tests/conftest.py`` puts this folder on ``sys.path`` (pytest runs with
``--import-mode=importlib``), so any test imports it as ``launch``.
"""
import datetime
import os
import os.path as osp
import socket
import subprocess
import sys
import time
import traceback
from typing import Callable, Optional, Sequence

import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def free_port() -> int:
    """A TCP port that was free a moment ago (for a rendezvous address)."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def subprocess_env(pythonpath: Sequence[str] = (), **extra: str) -> dict:
    """``os.environ`` for a child run on CPU: one OpenMP thread, no CUDA, the
    repository root (and ``pythonpath``) importable, and ``PYTHON``/``PORT``
    for ``tools/dist_train.sh``; ``extra`` overrides any of them."""
    paths = [str(p) for p in pythonpath] + [ROOT]
    if os.environ.get('PYTHONPATH'):
        paths.append(os.environ['PYTHONPATH'])
    env = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='',
               PYTHON=sys.executable, PORT=str(free_port()),
               PYTHONPATH=os.pathsep.join(paths))
    env.update(extra)
    return env


def run_torchrun(script, *args, nproc: int = 2, env: Optional[dict] = None,
                 timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``script`` under ``python -m torch.distributed.run`` with ``nproc``
    CPU processes on a free port; fails the test (showing the output's tail)
    unless every rank exits 0."""
    result = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run',
         f'--nproc_per_node={nproc}', f'--master_port={free_port()}',
         str(script), *map(str, args)],
        env=env if env is not None else subprocess_env(), cwd=ROOT,
        capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, \
        result.stdout[-3000:] + '\n' + result.stderr[-5000:]
    return result


def run_train(config, work_dir, *cfg_options: str, procs: int = 1,
              env: Optional[dict] = None, timeout: float = 900,
              extra_args: Sequence[str] = ()) -> str:
    """``tools/train.py`` (``procs == 1``) or ``tools/dist_train.sh`` with
    ``procs`` gloo processes on ``config``; returns stdout + stderr and fails
    the test unless the run exits 0."""
    if procs == 1:
        command = [sys.executable, osp.join(ROOT, 'tools', 'train.py'),
                   str(config)]
    else:
        command = ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'),
                   str(config), str(procs)]
    command += ['--work-dir', str(work_dir), *extra_args]
    if cfg_options:
        command += ['--cfg-options', *cfg_options]
    result = subprocess.run(
        command, cwd=ROOT, env=env if env is not None else subprocess_env(),
        capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, \
        result.stdout[-3000:] + '\n' + result.stderr[-3000:]
    return result.stdout + result.stderr


def _forked_rank(rank, worker, world, port, timeout, errors, args):
    # The parent's OpenMP thread pool does not survive the fork: the first
    # parallel region in the child (e.g. cross_entropy on a few thousand
    # entries) would wait for threads that do not exist. One thread keeps
    # every op on the calling thread.
    torch.set_num_threads(1)
    try:
        torch_dist.init_process_group(
            'gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank,
            world_size=world, timeout=datetime.timedelta(seconds=timeout))
        worker(rank, *args)
        torch_dist.barrier()
    except Exception:  # reported to the parent, which fails the test
        errors.put(f'rank {rank}:\n{traceback.format_exc()}')
    finally:
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def run_forked_gloo(worker: Callable, *args, world: int = 2,
                    timeout: float = 60) -> None:
    """Run ``worker(rank, *args)`` in ``world`` forked processes joined in a
    gloo group (no re-import of torch: a few seconds).

    A collective that one rank never joins makes the others fail after
    ``timeout`` seconds (the group's timeout) instead of hanging the test;
    the test fails with every rank's traceback.
    """
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    errors = mp.get_context('fork').SimpleQueue()
    context = mp.start_processes(_forked_rank,
                                 args=(worker, world, free_port(), timeout,
                                       errors, args),
                                 nprocs=world, join=False, start_method='fork')
    # a rank stuck outside a collective (where the group timeout cannot
    # reach it) fails the test instead of hanging the suite
    deadline = time.time() + 2 * timeout + 60
    while not context.join(timeout=1):
        if time.time() > deadline:
            for process in context.processes:
                process.kill()
            raise AssertionError(f'forked gloo ranks still running after '
                                 f'{2 * timeout + 60:.0f} s')
    messages = []
    while not errors.empty():
        messages.append(errors.get())
    assert not messages, '\n'.join(messages)
