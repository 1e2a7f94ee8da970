"""tools/posthoc.py end to end on a generated mmpretrain-style prediction dump."""
import importlib.util
import json
import os
import os.path as osp
import pickle
import re
import subprocess
import sys

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(ROOT, 'tools', 'posthoc.py')
K = 6
COUNTS = [500, 200, 120, 60, 15, 5]  # many: 0-2, medium: 3, few: 4-5


def run_tool(*args, ok=True):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    result = subprocess.run([sys.executable, TOOL, *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    out = result.stdout + result.stderr
    assert (result.returncode == 0) == ok, out[-3000:]
    return out


def _load_tool():
    spec = importlib.util.spec_from_file_location('posthoc_tool', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOOL_MODULE = None


def run_main(capsys, *args, ok=True):
    """Same as run_tool, in-process (the subprocess start costs ~5 s)."""
    global TOOL_MODULE
    if TOOL_MODULE is None:
        TOOL_MODULE = _load_tool()
    if ok:
        TOOL_MODULE.main(list(args))
    else:
        with pytest.raises(SystemExit) as exc:
            TOOL_MODULE.main(list(args))
        assert exc.value.code != 0
        captured = capsys.readouterr()
        return str(exc.value.code) + captured.out + captured.err
    captured = capsys.readouterr()
    return captured.out + captured.err


def _write_dump(path, n=1200, seed=0):
    """Balanced test set scored by a head-biased model (softmax scores)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % K
    logits = torch.randn(n, K, generator=g)
    logits[torch.arange(n), y] += 2.0
    logits += torch.tensor(COUNTS, dtype=torch.float32).log()
    probs = torch.softmax(logits, 1)
    # clone: a pickled view would carry the whole (N, K) storage
    samples = [{'pred_score': probs[i].clone(),
                'gt_label': y[i:i + 1].clone(),
                'pred_label': probs[i].argmax().reshape(1), 'sample_idx': i}
               for i in range(n)]
    with open(path, 'wb') as handle:
        pickle.dump(samples, handle)


def _value(log, key):
    match = re.search(rf'{key}:\s+([\d.]+) ->\s+([\d.]+)', log)
    return float(match.group(1)), float(match.group(2))


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('posthoc')
    dump, counts = str(tmp / 'preds.pkl'), str(tmp / 'counts.json')
    _write_dump(dump)
    with open(counts, 'w') as handle:
        json.dump({'class_counts': COUNTS}, handle)
    return tmp, dump, counts


def test_ot_improves_balanced_accuracy_and_writes_dump(files):
    tmp, dump, counts = files
    out = str(tmp / 'refined.pkl')
    log = run_tool(dump, '--method', 'ot', '--train-counts', counts,
                   '--out', out)
    before, after = _value(log, 'top1')
    assert after > before + 5
    for key in ('many', 'medium', 'few'):
        _value(log, key)
    kl_soft = float(re.search(r'soft ([\d.e+-]+)', log).group(1))
    assert kl_soft < 1e-8  # OTLM Table 4: OT marginal matches the target
    assert osp.getsize(out) < 2e6  # per-sample tensors, not (N, K) views
    with open(out, 'rb') as handle:
        refined = pickle.load(handle)
    assert len(refined) == 1200 and refined[0]['sample_idx'] == 0
    assert refined[0]['pred_score'].shape == (K, )
    assert refined[0]['pred_label'].shape == (1, )


def test_la_and_em_and_otlm_split(files, capsys):
    tmp, dump, counts = files
    log = run_main(capsys, dump, '--method', 'la', '--train-counts', counts,
                   '--tau', '1.0')
    before, after = _value(log, 'few')
    assert after > before
    log = run_main(capsys, dump, '--method', 'ot', '--train-counts', counts,
                   '--mu', 'em')
    assert 'EM test prior' in log
    log = run_main(capsys, dump, '--method', 'otlm', '--iters', '5',
                   '--lr', '1e-2', '--fit-split', '0.5', '--no-progress')
    assert 'fitted on 600 unlabeled samples' in log
    assert 'samples: 600' in log


def test_bad_dump_subprocess(files):
    tmp, _, _ = files
    bad = str(tmp / 'bad_sub.pkl')
    with open(bad, 'wb') as handle:
        pickle.dump([{'pred_score': torch.ones(K) / K}], handle)
    log = run_tool(bad, ok=False)
    assert "error:" in log and "lacks key(s) ['gt_label']" in log


def test_bad_inputs(files, capsys):
    tmp, dump, counts = files
    bad = str(tmp / 'bad.pkl')
    with open(bad, 'wb') as handle:
        pickle.dump([{'pred_score': torch.ones(K) / K}], handle)
    log = run_main(capsys, bad, ok=False)
    assert "lacks key(s) ['gt_label']" in log
    with open(bad, 'wb') as handle:
        pickle.dump([{'pred_score': torch.ones(K) / K,
                      'gt_label': torch.tensor([0])},
                     {'pred_score': torch.ones(K + 1) / (K + 1),
                      'gt_label': torch.tensor([0])}], handle)
    log = run_main(capsys, bad, ok=False)
    assert 'sample 1 has 7 class scores, expected 6' in log
    with open(bad, 'wb') as handle:
        pickle.dump({'pred_score': 1}, handle)
    assert 'expected a non-empty list' in run_main(capsys, bad, ok=False)
    short = str(tmp / 'short.json')
    with open(short, 'w') as handle:
        json.dump(COUNTS[:-1], handle)
    log = run_main(capsys, dump, '--method', 'la', '--train-counts', short,
                   ok=False)
    assert 'has 5 entries, expected 6' in log
    assert 'needs --train-counts' in run_main(capsys, dump, '--method',
                                              'la', ok=False)
    assert 'lam must be a positive' in run_main(capsys, dump, '--lam', '0',
                                                ok=False)
