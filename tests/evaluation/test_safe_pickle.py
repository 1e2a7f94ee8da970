"""Prediction pickles are read without running code (every tool that opens one)."""
import io
import os
import os.path as osp
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from reot_mm.evaluation.dump_io import DumpFormatError, load_predictions, read_pickle
from reot_mm.evaluation.safe_pickle import RestrictedUnpickler

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


class _RunsCommand:
    """Pickles as a call of ``os.system`` — what a crafted dump would carry."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}', )


def _cls_samples(n=8, k=3, payload=None):
    g = torch.Generator().manual_seed(0)
    samples = []
    for i in range(n):
        sample = {'pred_score': torch.softmax(torch.randn(k, generator=g), 0),
                  'gt_label': torch.tensor([i % k]), 'sample_idx': i,
                  'img_shape': (4, 4), 'scale_factor': np.array([1.0, 1.0], np.float32)}
        samples.append(sample)
    if payload is not None:
        samples[-1]['img_path'] = payload
    return samples


def _malicious_dump(tmp_path, name='preds.pkl'):
    marker = tmp_path / 'code_ran'
    path = tmp_path / name
    with open(path, 'wb') as handle:
        pickle.dump(_cls_samples(payload=_RunsCommand(marker)), handle)
    return str(path), marker


def _nested_storage_dump(tmp_path):
    """A tensor storage whose embedded bytes are themselves a code-running pickle.

    ``torch.storage._load_from_bytes`` is on the allow-list; upstream it calls
    ``torch.load(weights_only=False)`` on those bytes.
    """
    marker = tmp_path / 'code_ran_nested'
    inner = io.BytesIO()
    pickle.dump(_RunsCommand(marker), inner)

    class _Storage:
        def __reduce__(self):
            return torch.storage._load_from_bytes, (inner.getvalue(), )

    path = tmp_path / 'nested.pkl'
    with open(path, 'wb') as handle:
        pickle.dump([{'pred_score': _Storage(), 'gt_label': torch.tensor([0])}], handle)
    return str(path), marker


def test_plain_pickle_would_run_the_command(tmp_path):
    """The fixture is a real attack: unrestricted pickle.load runs it."""
    path, marker = _malicious_dump(tmp_path)
    with open(path, 'rb') as handle:
        pickle.load(handle)
    assert marker.exists()


def test_read_pickle_refuses_code_and_names_the_global(tmp_path):
    path, marker = _malicious_dump(tmp_path)
    with pytest.raises(DumpFormatError, match=r'refused to load the global (posix|os)\.system'):
        read_pickle(path)
    assert not marker.exists()
    with pytest.raises(DumpFormatError, match='refused'):
        load_predictions(path)
    assert not marker.exists()


def test_nested_storage_bytes_are_loaded_weights_only(tmp_path):
    path, marker = _nested_storage_dump(tmp_path)
    with pytest.raises(DumpFormatError):
        read_pickle(path)
    assert not marker.exists()


def test_real_dumps_round_trip(tmp_path):
    """mmpretrain / mmseg data samples, as DumpResults writes them, still load exactly."""
    from mmengine.evaluator.metric import _to_cpu
    from mmengine.fileio import dump
    from mmengine.structures import PixelData
    from mmpretrain.structures import DataSample
    from mmseg.structures import SegDataSample

    cls = DataSample().set_pred_score(torch.rand(5)).set_gt_label(2)
    cls.set_metainfo(dict(img_path='a.png', ori_shape=(3, 4), sample_idx=3,
                          scale_factor=np.array([1.0, 2.0], np.float32)))
    seg = SegDataSample()
    seg.seg_logits = PixelData(data=torch.rand(3, 4, 4, dtype=torch.float64))
    seg.gt_sem_seg = PixelData(data=torch.zeros(1, 4, 4, dtype=torch.long))
    seg.set_metainfo(dict(img_path='x.png', reduce_zero_label=True, scale_factor=(1.0, 1.0)))
    extra = {'f': np.float64(3.5), 'i': np.int64(2), 'a': np.arange(3), 's': {1, 2},
             'b': torch.ones(2, dtype=torch.bfloat16), 'h': torch.zeros(2, dtype=torch.half)}
    objects = [_to_cpu(cls.to_dict()), _to_cpu(seg.to_dict()), extra]
    path = str(tmp_path / 'real.pkl')
    dump(objects, path)
    with open(path, 'rb') as handle:
        expected = pickle.load(handle)
    loaded = read_pickle(path)
    assert torch.equal(loaded[0]['pred_score'], expected[0]['pred_score'])
    assert torch.equal(loaded[1]['seg_logits']['data'], expected[1]['seg_logits']['data'])
    assert loaded[1]['seg_logits']['data'].dtype == torch.float64
    assert loaded[0]['scale_factor'].dtype == np.float32
    assert loaded[2]['s'] == {1, 2} and loaded[2]['f'] == 3.5
    assert loaded[2]['b'].dtype == torch.bfloat16 and loaded[2]['h'].dtype == torch.half


def test_unpickler_allows_no_builtins_that_call():
    for module, name in [('builtins', 'eval'), ('builtins', 'getattr'), ('os', 'system'),
                         ('subprocess', 'Popen'), ('torch', 'load'), ('numpy', 'load')]:
        with pytest.raises(pickle.UnpicklingError, match=f'{module}.{name}'):
            RestrictedUnpickler(io.BytesIO(b'')).find_class(module, name)


@pytest.mark.parametrize('tool,args', [
    ('posthoc.py', ['--method', 'la', '--train-counts', '[1, 1, 1]']),
    ('posthoc.py', ['--method', 'ot']),
    ('posthoc.py', ['--task', 'seg', '--method', 'ot']),
    ('class_barycenters.py', ['--out-dir', 'out']),
])
def test_every_tool_refuses_a_malicious_dump(tmp_path, tool, args):
    path, marker = _malicious_dump(tmp_path)
    env = dict(os.environ, OMP_NUM_THREADS='1')
    result = subprocess.run([sys.executable, osp.join(ROOT, 'tools', tool), path, *args],
                            cwd=str(tmp_path), env=env, capture_output=True, text=True,
                            timeout=180)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out[-2000:]
    assert 'refused to load the global' in out, out[-2000:]
    assert not marker.exists()
