"""The Makefile's benchmark targets: ``make bench`` runs the speed and memory
benchmarks only (not the base-commit comparison, which needs ``--base``, nor
the accuracy scripts, which train several seeds); ``make accuracy`` runs
those. Read from ``make -n`` (dry run), with the environment target taken as
up to date, so nothing is installed or run."""
import glob
import os.path as osp
import re
import shutil
import subprocess

import pytest
from launch import ROOT

pytestmark = pytest.mark.skipif(shutil.which('make') is None,
                                reason='GNU make is not installed')


def dry_run(target):
    result = subprocess.run(
        ['make', '-n', '-o', 'env', '-o', '.venv/.stamp-dev', target],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return set(re.findall(r'benchmarks/[\w.]+\.py', result.stdout))


def scripts(pattern):
    return {osp.relpath(p, ROOT)
            for p in glob.glob(osp.join(ROOT, 'benchmarks', pattern))}


def test_bench_runs_the_speed_and_memory_benchmarks_only():
    ran = dry_run('bench')
    assert ran == scripts('bench_*.py') - {'benchmarks/bench_gpu.py'}
    assert 'benchmarks/check_outputs_unchanged.py' not in ran


def test_accuracy_runs_digits_accuracy_scripts():
    ran = dry_run('accuracy')
    assert ran and ran <= scripts('digits_*.py')
    assert 'benchmarks/digits_lt_accuracy.py' in ran
    assert not ran & scripts('bench_*.py')
