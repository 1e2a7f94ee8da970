"""tools/posthoc.py end to end on a generated mmpretrain-style prediction dump."""
import importlib.util
import json
import math
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
    # MAP-EM: a large pseudo-count pulls the estimate towards uniform
    ml_min = float(re.search(r'EM test prior: min ([\d.e+-]+)', log).group(1))
    log = run_main(capsys, dump, '--method', 'ot', '--train-counts', counts,
                   '--mu', 'em', '--em-smoothing', '1000')
    map_min = float(re.search(r'EM test prior: min ([\d.e+-]+)', log).group(1))
    assert ml_min < map_min <= 1.0 / K
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
    assert '--em-smoothing must be a finite number >= 0' in run_main(
        capsys, dump, '--mu', 'em', '--train-counts', counts,
        '--em-smoothing', '-1', ok=False)


# ------------------------------------------------ compact vs pickle (cls)
def test_compact_and_pickle_dumps_give_the_same_result(files, capsys):
    """The fast path (.npz / .pt from DumpPredictions) and the upstream
    pickle hold the same predictions: identical metrics and refined dump."""
    from reot_mm.evaluation.dump_io import load_predictions, save_predictions
    tmp, dump, counts = files
    data = load_predictions(dump)
    logs = {}
    for suffix in ('.npz', '.pt'):
        compact = str(tmp / f'preds{suffix}')
        save_predictions(compact, {
            'pred_score': data['pred_score'].numpy(),
            'gt_label': data['gt_label'].numpy(),
            'sample_idx': data['sample_idx'].numpy()})
        logs[suffix] = run_main(capsys, compact, '--method', 'ot',
                                '--train-counts', counts, '--out',
                                str(tmp / f'refined{suffix}'))
    logs['.pkl'] = run_main(capsys, dump, '--method', 'ot', '--train-counts',
                            counts)

    def table(log):
        return [line for line in log.splitlines() if '->' in line
                or 'KL' in line]

    assert table(logs['.npz']) == table(logs['.pkl']) == table(logs['.pt'])
    assert 'dump: compact' in logs['.npz'] and 'dump: pickle' in logs['.pkl']
    refined = load_predictions(str(tmp / 'refined.npz'))
    assert refined['pred_score'].shape == (1200, K)
    assert torch.equal(refined['pred_label'],
                       refined['pred_score'].argmax(1))
    mu = refined['pred_score'].double().mean(0)
    assert (mu - 1 / K).abs().max() < 1e-5  # column marginal = uniform μ


def test_bad_compact_dump_and_out_suffix(files, capsys):
    tmp, dump, _ = files
    from reot_mm.evaluation.dump_io import save_predictions
    bad = str(tmp / 'bad.npz')
    save_predictions(bad, {'pred_score': torch.ones(3, K).numpy() / K})
    assert 'missing key gt_label' in run_main(capsys, bad, ok=False)
    assert '--out must end with one of' in run_main(
        capsys, dump, '--out', str(tmp / 'x.csv'), ok=False)
    assert 'does not exist' in run_main(capsys, str(tmp / 'nope.npz'),
                                        ok=False)
    good = str(tmp / 'good.npz')
    save_predictions(good, {'pred_score': torch.ones(3, K).numpy() / K,
                            'gt_label': torch.arange(3).numpy()})
    assert '--task seg reads mmseg pickles' in run_main(
        capsys, good, '--task', 'seg', ok=False)


# -------------------------------------------------------------- per pixel
C = 4
PIXEL_COUNTS = [6000, 2000, 600, 150]  # training pixels: long-tailed


def _seg_samples(n_images=6, h=24, w=32, seed=0, ignore_frac=0.1):
    """mmseg 1.2.2 SegDataSample.to_dict() of a head-biased model.

    Ground truth: horizontal bands of the 4 classes with areas 40/30/20/10 %
    plus ignore_index 255 pixels; logits: signal on the true class, noise,
    and a bias towards frequent training classes (log pixel counts).
    """
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(seed)
    bias = torch.tensor(PIXEL_COUNTS, dtype=torch.float32).log()
    bias = bias - bias.mean()
    out = []
    for i in range(n_images):
        gt = torch.zeros(h, w, dtype=torch.long)
        edges = [int(h * f) for f in (0.4, 0.7, 0.9)]
        for c, (lo, hi) in enumerate(zip([0] + edges, edges + [h])):
            gt[lo:hi] = c
        gt[torch.rand(h, w, generator=g) < ignore_frac] = 255
        onehot = torch.nn.functional.one_hot(gt.clamp_max(C - 1), C)
        logits = 2.0 * onehot.permute(2, 0, 1).float() \
            + 1.2 * torch.randn(C, h, w, generator=g) + bias[:, None, None]
        sample = SegDataSample(metainfo=dict(
            img_path=f'img_{i}.jpg', ori_shape=(h, w), img_shape=(h, w),
            reduce_zero_label=True))
        sample.gt_sem_seg = PixelData(data=gt[None])
        sample.seg_logits = PixelData(data=logits)
        sample.pred_sem_seg = PixelData(data=logits.argmax(0)[None])
        out.append(sample.to_dict())
    return out


@pytest.fixture(scope='module')
def seg_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('seg')
    dump, counts = str(tmp / 'seg.pkl'), str(tmp / 'pixels.json')
    with open(dump, 'wb') as handle:
        pickle.dump(_seg_samples(), handle)
    with open(counts, 'w') as handle:
        json.dump(PIXEL_COUNTS, handle)
    return tmp, dump, counts


def test_seg_scores_equal_mmseg_iou_metric():
    """aAcc / mIoU / mAcc from the confusion matrix = mmseg's IoUMetric."""
    from mmseg.evaluation import IoUMetric
    from reot_mm.evaluation.seg_dump import seg_confusion, seg_scores
    samples = _seg_samples(n_images=3, seed=5)
    metric = IoUMetric()
    metric.dataset_meta = {'classes': tuple('abcd')}
    metric.process({}, samples)
    expected = metric.compute_metrics(metric.results)
    conf = sum(seg_confusion(s['pred_sem_seg']['data'][0],
                             s['gt_sem_seg']['data'][0], C) for s in samples)
    ours = seg_scores(conf)
    for key in ('aAcc', 'mIoU', 'mAcc'):
        assert abs(ours[key] - expected[key]) < 0.006, (key, ours, expected)


def test_seg_ot_and_la_improve_mean_accuracy(seg_files, capsys):
    """Per-pixel logit adjustment, post-hoc OT with the test pixel marginal
    μ (OTLM Alg. 1) and with μ estimated by EM (Saerens et al.): the bias to
    frequent training classes is removed, mAcc and mIoU rise; EM recovers the
    planted pixel marginal (40/30/20/10 %) within 0.02."""
    tmp, dump, counts = seg_files
    log = run_main(capsys, dump, '--method', 'la', '--train-counts', counts)
    assert 'method: la  images: 6  classes: 4' in log
    before, after = _value(log, 'mAcc')
    assert after > before + 5
    # the test set's own pixel marginal (40/30/20/10 %), as a file
    mu_file = str(tmp / 'mu.json')
    with open(mu_file, 'w') as handle:
        json.dump([0.4, 0.3, 0.2, 0.1], handle)
    log = run_main(capsys, dump, '--method', 'ot', '--mu', mu_file,
                   '--pixels-per-image', '300')
    assert 'fitted on 1800 sampled pixels (<= 300 per image' in log
    before, after = _value(log, 'mAcc')
    assert after > before + 5
    before_iou, after_iou = _value(log, 'mIoU')
    assert after_iou > before_iou
    kl = float(re.search(r'sampled soft ([\d.e+-]+)', log).group(1))
    assert kl < 1e-8
    log = run_main(capsys, dump, '--method', 'ot', '--mu', 'em',
                   '--train-counts', counts)
    low, high = (float(x) for x in re.search(
        r'EM test prior: min ([\d.]+) max ([\d.]+)', log).groups())
    assert abs(low - 0.1) < 0.02 and abs(high - 0.4) < 0.02
    before, after = _value(log, 'mIoU')
    assert after > before + 5
    log = run_main(capsys, dump, '--method', 'otlm', '--mu', mu_file,
                   '--iters', '3', '--lr', '1e-2', '--no-progress')
    assert 'OTLM loss' in log and 'mIoU' in log


def test_seg_ot_applies_lambda_g_to_every_pixel(seg_files, capsys):
    """With every labelled pixel sampled, the refined maps written by --out
    are argmax_c(logits + λ g_c), g the column potentials of post-hoc OT
    (OTLM Alg. 1) on those pixels."""
    from reot_mm.ot import sinkhorn_prediction
    tmp, dump, _ = seg_files
    out = str(tmp / 'refined_seg.pkl')
    run_main(capsys, dump, '--method', 'ot', '--lam', '0.5',
             '--pixels-per-image', '100000', '--out', out)
    with open(dump, 'rb') as handle:
        samples = pickle.load(handle)
    rows = []
    for s in samples:
        valid = s['gt_sem_seg']['data'][0].reshape(-1) != 255
        rows.append(s['seg_logits']['data'].reshape(C, -1)[:, valid].T)
    res = sinkhorn_prediction(torch.log_softmax(torch.cat(rows), 1), None, 0.5,
                              check_every=5)
    with open(out, 'rb') as handle:
        refined = pickle.load(handle)
    assert [r['img_path'] for r in refined] == [s['img_path']
                                                for s in samples]
    for s, r in zip(samples, refined):
        expected = (s['seg_logits']['data']
                    + 0.5 * res.g[:, None, None]).argmax(0)
        assert torch.equal(r['pred_sem_seg']['data'][0], expected)


def test_seg_bad_dumps(seg_files, capsys):
    tmp, dump, counts = seg_files
    good = _seg_samples(n_images=2)
    bad = str(tmp / 'bad_seg.pkl')

    def check(samples, match, *extra):
        with open(bad, 'wb') as handle:
            pickle.dump(samples, handle)
        log = run_main(capsys, bad, '--task', 'seg', *extra, ok=False)
        assert re.search(match, log), log

    broken = [dict(good[0]), dict(good[1])]
    del broken[1]['gt_sem_seg']
    check(broken, r"image 1 lacks gt_sem_seg=\{'data': \.\.\.\}")
    broken = [dict(good[0]), dict(good[1])]
    broken[1]['gt_sem_seg'] = {'data': torch.zeros(1, 5, 5, dtype=torch.long)}
    check(broken, r'image 1 gt_sem_seg has shape \(5, 5\), expected '
          r'\(1, H, W\) = \(1, 24, 32\)')
    broken = [dict(good[0]), dict(good[1])]
    broken[1]['seg_logits'] = {'data': torch.zeros(3, 24, 32)}
    check(broken, r'image 1 has 3 classes, expected 4')
    broken = [dict(good[0])]
    broken[0]['seg_logits'] = {'data': torch.zeros(1, 24, 32)}
    check(broken, r'C = 1 channel \(a sigmoid binary head\)')
    broken = [dict(good[0])]
    broken[0]['gt_sem_seg'] = {'data': torch.full((1, 24, 32), 7)}
    check(broken, r'labels outside \[0, 4\) other than ignore_index 255')
    broken = [dict(good[0])]
    broken[0]['seg_logits'] = {'data': torch.full((4, 24, 32), math.nan)}
    check(broken, 'non-finite')
    check([dict(good[0])], r'--out for seg must end with one of',
          '--out', str(tmp / 'x.npz'))
    check([dict(good[0])], 'has 3 entries, expected 4', '--method', 'la',
          '--train-counts', _short_counts(tmp))
    assert '--pixels-per-image must be >= 1' in run_main(
        capsys, dump, '--pixels-per-image', '0', ok=False)


def _short_counts(tmp):
    path = str(tmp / 'short_pixels.json')
    with open(path, 'w') as handle:
        json.dump([1, 2, 3], handle)
    return path


# ------------------------------------- class counts travel with the dump
def _compact_with_counts(tmp, name, counts=COUNTS, thresholds=(100, 20)):
    from reot_mm.evaluation.dump_io import save_predictions
    g = torch.Generator().manual_seed(1)
    y = torch.arange(600) % K
    logits = torch.randn(600, K, generator=g)
    logits[torch.arange(600), y] += 2.0
    logits += torch.tensor(COUNTS, dtype=torch.float32).log()
    arrays = {'pred_score': torch.softmax(logits, 1).numpy(),
              'gt_label': y.numpy()}
    if counts is not None:
        arrays['class_counts'] = torch.tensor(counts).double().numpy()
    if thresholds is not None:
        arrays['shot_thresholds'] = torch.tensor(thresholds).double().numpy()
    path = str(tmp / name)
    save_predictions(path, arrays)
    return path


def _groups(log):
    return {key for key in ('many', 'medium', 'few')
            if re.search(rf'^\s*{key}:', log, re.M)}


def test_la_without_flags_takes_counts_and_thresholds_from_the_dump(
        tmp_path, capsys):
    """A dump with class_counts / shot_thresholds needs no --train-counts;
    its thresholds group the classes (ShotAccuracy's rule: many > t_many,
    few < t_few) unless --many-thr / --few-thr override them."""
    dump = _compact_with_counts(tmp_path, 'counted.npz')
    log = run_main(capsys, dump, '--method', 'la')
    assert 'train counts: the dump; many > 100, few < 20' in log
    assert _groups(log) == {'many', 'medium', 'few'}
    before, after = _value(log, 'few')
    assert after > before
    # thresholds 10 / 1: every class is many-shot except the one with 5
    dump = _compact_with_counts(tmp_path, 'thr.npz', thresholds=(10, 1))
    log = run_main(capsys, dump, '--method', 'la')
    assert 'many > 10, few < 1' in log and _groups(log) == {'many', 'medium'}
    log = run_main(capsys, dump, '--method', 'la', '--many-thr', '1000',
                   '--few-thr', '100')
    assert 'many > 1000, few < 100' in log
    assert _groups(log) == {'medium', 'few'}
    # without counts in the dump: no groups, and la says what it needs
    bare = _compact_with_counts(tmp_path, 'bare.npz', counts=None,
                                thresholds=None)
    log = run_main(capsys, bare, '--method', 'ot')
    assert 'train counts: none' in log and _groups(log) == set()
    assert 'needs --train-counts' in run_main(capsys, bare, '--method', 'la',
                                              ok=False)
    # EM (Saerens et al. 2002) needs the training prior only for scores
    # calibrated under it; a prior-corrected model's scores need none
    assert '--mu em needs --train-counts' in run_main(capsys, bare, '--mu',
                                                      'em', ok=False)
    log = run_main(capsys, bare, '--mu', 'em', '--calibration-prior',
                   'uniform')
    assert 'EM test prior' in log


def test_train_counts_from_a_checkpoint(tmp_path, capsys):
    """--train-counts epoch_N.pth reads checkpoint['meta'] with
    torch.load(weights_only=True); it wins over the dump's counts."""
    dump = _compact_with_counts(tmp_path, 'counted.npz',
                                counts=[1, 1, 1, 1, 1, 1])
    ckpt = str(tmp_path / 'epoch_3.pth')
    torch.save({'meta': {'reot_mm_class_counts': COUNTS, 'epoch': 3},
                'state_dict': {'w': torch.ones(2)}}, ckpt)
    log = run_main(capsys, dump, '--method', 'la', '--train-counts', ckpt)
    assert f'train counts: {ckpt}; many > 100' in log
    assert _groups(log) == {'many', 'medium', 'few'}
    without = str(tmp_path / 'no_meta.pth')
    torch.save({'state_dict': {'w': torch.ones(2)}}, without)
    log = run_main(capsys, dump, '--train-counts', without, ok=False)
    assert "has no meta['reot_mm_class_counts']" in log
    # a checkpoint that would run code is refused, not executed
    evil = str(tmp_path / 'evil.pth')
    torch.save({'meta': {'reot_mm_class_counts': COUNTS},
                'x': _RunsCode()}, evil)
    log = run_main(capsys, dump, '--train-counts', evil, ok=False)
    assert 'not a readable checkpoint' in log


class _RunsCode:
    def __reduce__(self):
        return (print, ('ran code',))


def test_pickle_dump_takes_counts_from_its_side_file(files, capsys):
    from reot_mm.evaluation.dump_io import meta_path, write_dump_meta
    tmp, dump, _ = files
    copy = str(tmp / 'with_meta.pkl')
    with open(dump, 'rb') as src, open(copy, 'wb') as dst:
        dst.write(src.read())
    write_dump_meta(meta_path(copy), COUNTS, (100, 20))
    log = run_main(capsys, copy, '--method', 'la')
    assert 'train counts: the dump; many > 100, few < 20' in log
    assert _groups(log) == {'many', 'medium', 'few'}


def _truncated(path, tmp, name):
    data = open(path, 'rb').read()
    out = tmp / name
    out.write_bytes(data[:len(data) // 2])
    return str(out)


def test_unreadable_dumps_give_a_short_error_naming_the_file(tmp_path, capsys):
    """Empty, truncated and garbage files: one 'error:' line naming the file
    and what was expected, exit status != 0, no traceback and no numpy
    advice about allow_pickle."""
    good = _compact_with_counts(tmp_path, 'good.npz')
    (tmp_path / 'empty.npz').write_bytes(b'')
    (tmp_path / 'garbage.npz').write_bytes(b'this is not an archive\n' * 9)
    (tmp_path / 'empty.pkl').write_bytes(b'')
    (tmp_path / 'garbage.pt').write_bytes(b'\x00\x01garbage' * 20)
    pkl = str(tmp_path / 'good.pkl')
    with open(pkl, 'wb') as handle:
        pickle.dump([{'pred_score': torch.ones(K) / K,
                      'gt_label': torch.tensor([0])}] * 50, handle)
    cases = {
        str(tmp_path / 'empty.npz'): 'empty file',
        _truncated(good, tmp_path, 'cut.npz'): 'not a readable .npz',
        str(tmp_path / 'garbage.npz'): 'not a readable .npz',
        str(tmp_path / 'empty.pkl'): 'empty file',
        _truncated(pkl, tmp_path, 'cut.pkl'): 'not a readable pickle',
        str(tmp_path / 'garbage.pt'): 'not a readable .pt',
    }
    for path, reason in cases.items():
        log = run_main(capsys, path, ok=False)
        assert f'error: {path}: {reason}' in log, log
        assert 'expected' in log and 'allow_pickle' not in log, log
        assert 'Traceback' not in log and len(log) < 400, log
    # the same through a real process: exit status and stderr
    out = run_tool(str(tmp_path / 'cut.npz'), ok=False)
    assert 'not a readable .npz archive' in out and 'Traceback' not in out


def test_every_option_has_help_and_shows_its_default():
    parser = _load_tool().build_parser()
    options = parser.format_help().split('options:', 1)[1]
    for action in parser._actions:
        if not action.option_strings or action.dest == 'help':
            continue
        assert action.help, action.dest
        # the option's entry: from its line to the next option's line
        entry = re.search(rf'^  {action.option_strings[-1]}\b.*?(?=^  -|\Z)',
                          options, re.M | re.S)
        assert entry and '(default:' in entry.group(0), action.dest
