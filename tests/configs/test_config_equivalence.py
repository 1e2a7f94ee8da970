"""The shared ``_base_`` blocks (SimAugment views, CIFAR-10 / iNat data
fields, GML students inheriting their teachers, the CIFAR-LT RE-OT recipe)
changed how the configs are written, not what they build: every config of
the reference commit still exists and builds the same model, data, schedule,
hooks and runtime (fingerprints of ``Config.to_dict()``; the snapshot and the
normalised deliberate changes are in config_fingerprints.py)."""
import json
import os.path as osp
import sys

import pytest

import reot_mm  # noqa: F401

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(osp.dirname(HERE))
CONFIGS = osp.join(ROOT, 'configs')
sys.path.insert(0, HERE)
from config_fingerprints import config_fingerprints, config_names  # noqa: E402

with open(osp.join(HERE, 'config_fingerprints_f35b6ed.json')) as _handle:
    REFERENCE = json.load(_handle)['configs']


def test_every_reference_config_still_exists():
    missing = sorted(set(REFERENCE) - set(config_names(CONFIGS)))
    assert not missing, f'configs removed since the reference: {missing}'


@pytest.mark.parametrize('name', sorted(REFERENCE))
def test_config_builds_what_it_built(name):
    current = config_fingerprints(CONFIGS, name)
    expected = dict(REFERENCE[name])
    if expected['auto_scale_lr'] is None:
        # a config without auto_scale_lr gained one (test_auto_scale_lr)
        current['auto_scale_lr'] = None
    changed = sorted(k for k in expected if current[k] != expected[k])
    assert not changed, (
        f'{name}: {changed} differ from the reference commit; '
        'see tests/configs/config_fingerprints.py')
