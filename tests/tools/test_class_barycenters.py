"""tools/class_barycenters.py on synthetic dumps: RE-OT Eq. 18 numerically
(against numpy and against a POT plan), the plot, and bad input."""
import importlib.util
import json
import os.path as osp

import numpy as np
import pytest
import torch

from reot_mm.evaluation.dump_io import save_predictions

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
K, D_FEAT = 4, 5


def _tool():
    spec = importlib.util.spec_from_file_location(
        'class_barycenters_tool',
        osp.join(ROOT, 'tools', 'class_barycenters.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOOL = _tool()


def _dump(path, n=160, sharpness=1.0, labels=True, features=True, seed=0,
          spread=3.0):
    """Gaussian class clusters; scores from a linear model on the features
    with a head-class bias (long-tailed predictions on a balanced set)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % K
    centers = rng.normal(0, spread, (K, D_FEAT))
    feats = centers[y] + rng.normal(0, 1, (n, D_FEAT))
    # nearest-centre scores: -|f - c_j|^2 / 2 up to a per-row constant
    logits = sharpness * (feats @ centers.T - 0.5 * (centers**2).sum(1)) \
        / spread + np.linspace(1.5, -1.5, K)
    z = np.exp(logits - logits.max(1, keepdims=True))
    z /= z.sum(1, keepdims=True)
    arrays = {'pred_score': z.astype(np.float32),
              'gt_label': y if labels else np.full(n, -1)}
    if features:
        arrays['features'] = feats.astype(np.float32)
    save_predictions(path, arrays)
    # what the tool reads: fp32 scores, rows renormalised in fp64
    z = z.astype(np.float32).astype(np.float64)
    return z / z.sum(1, keepdims=True), \
        feats.astype(np.float32).astype(np.float64), y


def _run(capsys, *args, ok=True):
    if ok:
        TOOL.main(list(args))
        return capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        TOOL.main(list(args))
    assert exc.value.code != 0
    return str(exc.value.code)


def test_eq18_ua_barycenters_and_pca_plot(tmp_path, capsys):
    """U(a) plan P = Z / N (RE-OT Eq. 16): T'(y_j) = Σ_i Z_ij f_i / Σ_i Z_ij
    (Eq. 18), the class mass is the mean score, class means are exact."""
    path = str(tmp_path / 'd.npz')
    z, feats, y = _dump(path)
    out = str(tmp_path / 'out')
    log = _run(capsys, path, '--out-dir', out, '--max-points', '50')
    assert 'plan: ua  samples: 160  classes: 4  feature dim: 5' in log
    assert 'mean distance' in log
    res = np.load(osp.join(out, 'barycenters.npz'))
    np.testing.assert_allclose(res['barycenters'],
                               (z.T @ feats) / z.sum(0)[:, None], rtol=1e-9)
    np.testing.assert_allclose(res['class_mass'], z.mean(0), rtol=1e-9)
    np.testing.assert_allclose(
        res['class_means'], np.stack([feats[y == j].mean(0)
                                      for j in range(K)]), rtol=1e-9)
    assert osp.getsize(osp.join(out, 'barycenters_pca.png')) > 10000


def test_confident_classifier_barycenters_tend_to_class_means(tmp_path):
    """One-hot-like scores: the coupling pairs each sample with its class,
    so T'(y_j) approaches the ground-truth class mean."""
    data_far, data_near = [], []
    for sharpness, store in ((1.0, data_far), (30.0, data_near)):
        path = str(tmp_path / f's{sharpness}.npz')
        _dump(path, n=400, sharpness=sharpness, seed=1, spread=10.0)
        from reot_mm.evaluation.dump_io import load_predictions
        res = TOOL.compute(load_predictions(path, need_features=True))
        store.append(np.linalg.norm(res['barycenters'] - res['class_means'],
                                    axis=1).max())
    assert data_near[0] < 0.05 < data_far[0]


def test_eq18_ot_plan_matches_pot(tmp_path, capsys):
    """--plan ot: the U(a, b) plan of post-hoc OT (cost -log Z, λ, column
    marginal μ), checked against POT's log-domain Sinkhorn plan."""
    ot = pytest.importorskip('ot')
    path = str(tmp_path / 'd.npz')
    z, feats, _ = _dump(path, seed=2)
    mu = np.array([1.0, 2.0, 3.0, 4.0])
    mu_file = str(tmp_path / 'mu.json')
    with open(mu_file, 'w') as handle:
        json.dump(mu.tolist(), handle)
    out = str(tmp_path / 'out')
    _run(capsys, path, '--out-dir', out, '--plan', 'ot', '--lam', '0.5',
         '--mu', mu_file)
    res = np.load(osp.join(out, 'barycenters.npz'))
    n = len(z)
    plan = ot.sinkhorn(np.full(n, 1.0 / n), mu / mu.sum(), -np.log(z), 0.5,
                       method='sinkhorn_log', stopThr=1e-12,
                       numItermax=100000)
    np.testing.assert_allclose(res['class_mass'], mu / mu.sum(), atol=1e-7)
    np.testing.assert_allclose(res['barycenters'],
                               (plan.T @ feats) / plan.sum(0)[:, None],
                               rtol=1e-6, atol=1e-6)


def test_tsne_and_unlabelled_dump(tmp_path, capsys):
    pytest.importorskip('sklearn')
    path = str(tmp_path / 'd.npz')
    _dump(path, n=60, labels=False)
    out = str(tmp_path / 'out')
    log = _run(capsys, path, '--out-dir', out, '--embed', 'tsne')
    assert 'mean distance' not in log  # no labels: no class means
    res = np.load(osp.join(out, 'barycenters.npz'))
    assert 'class_means' not in res.files and res['barycenters'].shape == (
        K, D_FEAT)
    assert osp.getsize(osp.join(out, 'barycenters_tsne.png')) > 10000


def test_bad_input(tmp_path, capsys):
    path = str(tmp_path / 'nofeat.npz')
    _dump(path, features=False)
    out = str(tmp_path / 'out')
    assert 'has no features; write it with tools/test.py --out preds.npz ' \
        '--dump-features' in _run(capsys, path, '--out-dir', out, ok=False)
    pkl = str(tmp_path / 'preds.pkl')
    import pickle
    with open(pkl, 'wb') as handle:
        pickle.dump([{'pred_score': torch.ones(K) / K,
                      'gt_label': torch.tensor([0])}], handle)
    assert 'has no features' in _run(capsys, pkl, '--out-dir', out, ok=False)
    path = str(tmp_path / 'd.npz')
    _dump(path)
    short = str(tmp_path / 'mu.json')
    with open(short, 'w') as handle:
        json.dump([1, 2, 3], handle)
    assert 'mu ' in _run(capsys, path, '--out-dir', out, '--plan', 'ot',
                         '--mu', short, ok=False)
    assert 'has 3 entries, expected 4' in _run(
        capsys, path, '--out-dir', out, '--plan', 'ot', '--mu', short,
        ok=False)
    assert '--max-points must be >= 1' in _run(
        capsys, path, '--out-dir', out, '--max-points', '0', ok=False)
    assert 'lam must be a positive' in _run(
        capsys, path, '--out-dir', out, '--plan', 'ot', '--lam', '-1',
        ok=False)
    assert 'does not exist' in _run(capsys, str(tmp_path / 'no.npz'),
                                    '--out-dir', out, ok=False)
