"""tools/dist_train.sh, dist_test.sh and slurm_train.sh run the interpreter
named by ``PYTHON`` (e.g. a virtualenv's) with the arguments upstream's
scripts pass. A stand-in interpreter (and a stand-in ``srun``) records its
command line, so nothing is trained."""
import os
import os.path as osp
import stat
import subprocess

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOLS = osp.join(ROOT, 'tools')


def stand_in(path, body):
    path.write_text('#!/usr/bin/env bash\n' + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


@pytest.fixture
def fakes(tmp_path):
    record = tmp_path / 'argv.txt'
    python = stand_in(tmp_path / 'my-python',
                      f'printf "%s\\n" "$0" "$@" > {record}\n')
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    # srun: drop its own options (-p PARTITION, --x=y), run the task once
    stand_in(bin_dir / 'srun', 'if [ "$1" = -p ]; then shift 2; fi\n'
             'while [[ "$1" == --* ]]; do shift; done\nexec "$@"\n')
    env = dict(os.environ, PYTHON=python,
               PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
    return env, record, python


def run(script, env, *args):
    subprocess.run(['bash', osp.join(TOOLS, script), *args], env=env,
                   check=True, timeout=60, cwd=ROOT)


def test_dist_train_uses_python(fakes):
    env, record, python = fakes
    run('dist_train.sh', env, 'cfg.py', '2', '--work-dir', 'w')
    argv = record.read_text().splitlines()
    assert argv[:3] == [python, '-m', 'torch.distributed.run']
    assert '--nproc_per_node=2' in argv
    assert argv[-6:] == [osp.join(TOOLS, 'train.py'), 'cfg.py', '--launcher',
                         'pytorch', '--work-dir', 'w']


def test_dist_test_uses_python(fakes):
    env, record, python = fakes
    run('dist_test.sh', env, 'cfg.py', 'ckpt.pth', '3', '--out', 'p.npz')
    argv = record.read_text().splitlines()
    assert argv[:3] == [python, '-m', 'torch.distributed.run']
    assert '--nproc_per_node=3' in argv
    assert argv[-7:] == [osp.join(TOOLS, 'test.py'), 'cfg.py', 'ckpt.pth',
                         '--launcher', 'pytorch', '--out', 'p.npz']


def test_slurm_train_uses_python(fakes):
    env, record, python = fakes
    run('slurm_train.sh', env, 'part', 'job', 'cfg.py', 'work', '--amp')
    argv = record.read_text().splitlines()
    assert argv == [python, '-u', osp.join(TOOLS, 'train.py'), 'cfg.py',
                    '--work-dir=work', '--launcher=slurm', '--amp']
