"""Check that a refactor left the numbers alone: outputs of a base commit vs this tree.

    .venv/bin/python benchmarks/check_outputs_unchanged.py --base f35b6ed

Checks out ``--base`` into a temporary ``git worktree`` (outside the repository,
removed at the end) and computes the same probes under both trees, each in its
own interpreter with ``PYTHONPATH`` pointing at that tree:

* the losses, built through mmengine's ``MODELS`` registry from config dicts:
  ``REOTLoss`` with every row of RE-OT Table 1 (vanilla, focal, A-softmax and
  the other margins, distance cost, class-balanced, LDAM, Balanced Softmax,
  the epoch-varying priors), ``constraints='ab'``, sample-wise and teacher
  priors; ``REOTRoILoss``, ``REOTPixelLoss``, ``BCLLoss``, ``GMLLoss``,
  ``REOTContrastiveLoss`` — forward values and input gradients on fixed seeds;
* ``reot_mm.ot.reot_sinkhorn`` — potentials, plan, marginal error;
* ``tools/posthoc.py --method la / ot / otlm`` on one generated compact dump
  (the refined dumps it writes are compared);
* a 3-epoch digits demo (``tools/train.py`` with ``randomness.seed=0``) — the
  final parameters and buffers; once as configured in each tree and once with
  ``train_dataloader.drop_last=True`` in both, so that a config change of the
  batches is told apart from a change of the numbers.

Every array is compared to ``--tol`` (1e-6) in max abs difference. Prints one
line per probe (probe, max abs diff, OK / DIFF / ERROR) and exits 1 when any
probe differs or fails. A probe that raises in either tree (a renamed option, a
missing name) is reported as ERROR with the message; the script goes on.
Both trees run with ``OMP_NUM_THREADS=--threads`` (1): results depend on it.
"""
import argparse
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import tempfile
import traceback

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = 'configs/demo/reot_resnet8_100e_digitslt.py'
NUM_CLASSES = 10
COUNTS = [100, 60, 40, 25, 15, 10, 6, 4, 2, 1]


# --------------------------------------------------------------------- probes
# Everything below up to the driver runs in the probed tree (``--probe``).

def _reot_loss_rows():
    """(name, config, score kind, forward kwargs) for REOTLoss."""
    counts = dict(class_counts=COUNTS)
    cosine = dict(cost='cosine', scale=16.0)
    return [
        ('vanilla softmax', dict(prior='uniform'), 'logits', {}),
        ('focal', dict(prior='uniform', supervision='focal', focal_gamma=2.0), 'logits', {}),
        ('A-softmax (multiplicative m=2)',
         dict(cosine, prior='uniform', margin_type='multiplicative', margin=2), 'cosine', {}),
        ('ArcFace margin', dict(cosine, prior='uniform', margin_type='additive', margin=0.3),
         'cosine', {}),
        ('CosFace margin', dict(cosine, prior='uniform', margin_type='cosine', margin=0.35),
         'cosine', {}),
        ('distance cost (triplet row)', dict(cost='distance', epsilon=0.1, prior='uniform'),
         'distance', {}),
        ('class-balanced', dict(counts, prior='uniform', supervision='class_balanced',
                                cb_beta=0.99), 'logits', {}),
        ('LDAM', dict(counts, prior='ldam'), 'logits', {}),
        ('Balanced Softmax', dict(counts, prior='class_ratio'), 'logits', {}),
        ('epoch-varying class ratio (λ=0.5, power 1.03)',
         dict(counts, prior='class_ratio', prior_weight=0.5, prior_power=1.03), 'logits', {}),
        ('epoch-varying batch ratio (λ=0.7)', dict(prior='batch_ratio', prior_weight=0.7),
         'logits', {}),
        ('epoch-varying interpolated (λ=0.6)',
         dict(counts, prior='interpolated', prior_weight=0.6), 'logits', {}),
        ('sample-wise prior', dict(counts, prior='sample_wise', sample_wise_g=0.5),
         'logits', {}),
        ('sample-wise on interpolated', dict(counts, prior='sample_wise',
                                             sample_wise_base='interpolated'), 'logits', {}),
        ('teacher prior', dict(prior='teacher'), 'logits', {'teacher_probs': True}),
        ('soft targets, Balanced Softmax', dict(counts, prior='class_ratio'), 'soft', {}),
        ('U(a,b) implicit', dict(counts, prior='class_ratio', constraints='ab'), 'logits', {}),
        ('U(a,b) unrolled, uniform b',
         dict(prior='uniform', constraints='ab', column_marginal='uniform',
              sinkhorn_grad='unrolled'), 'logits', {}),
        ('U(a,b) batch-ratio b', dict(prior='batch_ratio', constraints='ab',
                                      column_marginal='batch_ratio'), 'logits', {}),
    ]


def _scores(kind, generator, batch=24):
    import torch
    if kind == 'cosine':
        return torch.tanh(torch.randn(batch, NUM_CLASSES, generator=generator))
    if kind == 'distance':
        return 4 * torch.rand(batch, NUM_CLASSES, generator=generator)
    return 2 * torch.randn(batch, NUM_CLASSES, generator=generator)


def _grad_probe(build, inputs, call):
    """Loss values and the gradients w.r.t. every floating input."""
    import torch
    module = build()
    for x in inputs.values():
        if torch.is_tensor(x) and x.is_floating_point():
            x.requires_grad_(True)
    out = call(module, inputs)
    values = out if isinstance(out, dict) else {'loss': out}
    values = {k: v for k, v in values.items() if torch.is_tensor(v)}
    total = sum(v.sum() for v in values.values() if v.requires_grad)
    total.backward()
    result = {f'value/{k}': v.detach() for k, v in values.items()}
    for k, x in inputs.items():
        if torch.is_tensor(x) and x.grad is not None:
            result[f'grad/{k}'] = x.grad
    return result


def probe_losses(out):
    import torch
    from mmengine.registry import MODELS

    def build(cfg):
        return lambda: MODELS.build(cfg)

    for name, cfg, kind, extra in _reot_loss_rows():
        def run(cfg=dict(cfg, type='REOTLoss'), kind=kind, extra=extra):
            g = torch.Generator().manual_seed(0)
            labels = torch.randint(0, NUM_CLASSES, (24,), generator=g)
            scores = _scores('logits' if kind == 'soft' else kind, g)
            target = labels
            if kind == 'soft':
                target = torch.softmax(3 * torch.randn(24, NUM_CLASSES, generator=g), 1)
            inputs = dict(cls_score=scores)
            if extra.get('teacher_probs'):
                inputs['teacher_probs'] = torch.softmax(
                    torch.randn(24, NUM_CLASSES, generator=g), 1)
            return _grad_probe(build(cfg), inputs, lambda m, x: m(
                x['cls_score'], target, teacher_probs=x.get('teacher_probs')))
        out[f'REOTLoss: {name}'] = run

    def roi(background):
        g = torch.Generator().manual_seed(1)
        labels = torch.randint(0, NUM_CLASSES + 1, (40,), generator=g)  # C = background
        inputs = dict(cls_score=2 * torch.randn(40, NUM_CLASSES + 1, generator=g))
        cfg = dict(type='REOTRoILoss', num_classes=NUM_CLASSES, class_counts=COUNTS,
                   background=background)
        return _grad_probe(build(cfg), inputs, lambda m, x: m(
            x['cls_score'], labels, weight=torch.ones(40), avg_factor=40.0))
    out['REOTRoILoss: foreground_only'] = lambda: roi('foreground_only')
    out['REOTRoILoss: batch_fraction'] = lambda: roi('batch_fraction')

    def pixel():
        g = torch.Generator().manual_seed(2)
        label = torch.randint(0, NUM_CLASSES, (2, 8, 8), generator=g)
        label[:, :2] = 255
        inputs = dict(seg_logits=2 * torch.randn(2, NUM_CLASSES, 8, 8, generator=g))
        cfg = dict(type='REOTPixelLoss', class_counts=COUNTS)
        return _grad_probe(build(cfg), inputs, lambda m, x: m(
            x['seg_logits'], label, ignore_index=255))
    out['REOTPixelLoss: class ratio, ignore 255'] = pixel

    def bcl(**options):
        g = torch.Generator().manual_seed(3)
        labels = torch.randint(0, NUM_CLASSES, (16,), generator=g)
        inputs = dict(cls_score=2 * torch.randn(16, NUM_CLASSES, generator=g),
                      embeddings=torch.randn(16, 2, 8, generator=g),
                      prototypes=torch.randn(NUM_CLASSES, 8, generator=g))
        cfg = dict(type='BCLLoss', class_counts=COUNTS, **options)
        return _grad_probe(build(cfg), inputs, lambda m, x: m(
            x['cls_score'], labels, x['embeddings'], x['prototypes']))
    for form in ('L1', 'L2', 'L3'):
        out[f'BCLLoss: form {form}'] = lambda form=form: bcl(form=form)
    out['BCLLoss: no class-averaging'] = lambda: bcl(class_averaging=False)

    def gml(**options):
        g = torch.Generator().manual_seed(4)
        labels = torch.randint(0, NUM_CLASSES, (12,), generator=g)
        key_labels = torch.arange(60) % NUM_CLASSES
        normal = torch.nn.functional.normalize
        inputs = dict(cls_score=torch.tanh(torch.randn(12, NUM_CLASSES, generator=g)),
                      query=normal(torch.randn(12, 8, generator=g), dim=1),
                      keys=normal(torch.randn(60, 8, generator=g), dim=1))
        teacher = torch.tanh(torch.randn(12, NUM_CLASSES, generator=g))
        cfg = dict(type='GMLLoss', num_classes=NUM_CLASSES, class_counts=COUNTS, **options)
        return _grad_probe(build(cfg), inputs, lambda m, x: m(
            x['cls_score'], labels, x['query'], x['keys'], key_labels,
            key_indices=torch.arange(60), sample_indices=torch.arange(12) * 5,
            teacher_scores=teacher))
    out['GMLLoss: α=1, trainable τ_g'] = lambda: gml()
    out['GMLLoss: α=0.2, KD'] = lambda: gml(alpha=0.2, kd_weight=0.5)

    def contrastive(**options):
        g = torch.Generator().manual_seed(5)
        labels = torch.randint(0, NUM_CLASSES, (16,), generator=g)
        inputs = dict(features=torch.randn(16, 2, 8, generator=g))
        cfg = dict(type='REOTContrastiveLoss', **options)
        return _grad_probe(build(cfg), inputs, lambda m, x: m(x['features'], labels))
    out['REOTContrastiveLoss: self-supervised'] = lambda: contrastive()
    out['REOTContrastiveLoss: supervised, class ratio'] = lambda: contrastive(
        supervision='supervised', prior='class_ratio', class_counts=COUNTS)
    out['REOTContrastiveLoss: U(a,b)'] = lambda: contrastive(constraints='ab')


def probe_sinkhorn(out):
    import torch

    def run(constraints, memory='buffer', batched=False):
        from reot_mm.ot import reot_sinkhorn
        g = torch.Generator().manual_seed(6)
        shape = (3, 30, 12) if batched else (30, 12)
        cost = torch.rand(*shape, generator=g, dtype=torch.float64)
        a = torch.softmax(torch.randn(*shape[:-1], generator=g, dtype=torch.float64), -1)
        b = torch.softmax(torch.randn(*shape[:-2], shape[-1], generator=g,
                                      dtype=torch.float64), -1)
        log_prior = torch.log_softmax(torch.randn(*shape, generator=g,
                                                  dtype=torch.float64), -1)
        result = reot_sinkhorn(cost, 0.05, a, b, log_prior, constraints=constraints,
                               memory=memory, max_iter=500, tol=1e-9)
        return {'f': result.f, 'g': result.g, 'log_plan': result.log_plan(),
                'marginal_error': result.marginal_error,
                'iterations': torch.tensor(float(result.iterations))}
    out['reot_sinkhorn: U(a,b)'] = lambda: run('ab')
    out['reot_sinkhorn: U(a)'] = lambda: run('a')
    out['reot_sinkhorn: U(a,b) streamed'] = lambda: run('ab', memory='stream')
    out['reot_sinkhorn: U(a,b) batched'] = lambda: run('ab', batched=True)


def run_probes(tree, path):
    """Compute every probe under the reot_mm of ``tree``; save to ``path``."""
    import torch
    import mmengine  # noqa: F401  (reot_mm registers its types after mmengine)
    import reot_mm
    if not osp.abspath(reot_mm.__file__).startswith(osp.abspath(tree) + os.sep):
        raise RuntimeError(f'reot_mm came from {reot_mm.__file__}, not {tree}')
    getattr(reot_mm, 'register_all_modules', lambda: None)()
    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '1')))
    probes = {}
    probe_losses(probes)
    probe_sinkhorn(probes)
    results = {}
    for name, probe in probes.items():
        try:
            results[name] = {k: v.detach().double().cpu() for k, v in probe().items()}
        except Exception:  # noqa: BLE001  (reported as a probe error)
            results[name] = {'__error__': traceback.format_exc(limit=2)[-1200:]}
    torch.save(results, path)


# --------------------------------------------------------------------- driver

def _run(command, tree, threads, cwd=None):
    env = dict(os.environ, PYTHONPATH=tree, OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    return subprocess.run(command, cwd=cwd or tree, env=env, capture_output=True,
                          text=True, timeout=1800)


def _error(result):
    text = (result.stderr or result.stdout).strip().splitlines()
    return f'exit {result.returncode}: ' + (text[-1] if text else '')


def write_dump(folder):
    """A compact test dump: balanced test set, head-biased softmax scores."""
    import numpy as np
    rng = np.random.default_rng(0)
    n = 600
    gt = np.arange(n) % NUM_CLASSES
    logits = rng.standard_normal((n, NUM_CLASSES)) + np.log(COUNTS)
    logits[np.arange(n), gt] += 2.0
    scores = np.exp(logits - logits.max(1, keepdims=True))
    scores = (scores / scores.sum(1, keepdims=True)).astype(np.float32)
    dump, counts = osp.join(folder, 'preds.npz'), osp.join(folder, 'counts.json')
    with open(dump, 'wb') as handle:
        np.savez(handle, pred_score=scores, gt_label=gt.astype(np.int64),
                 pred_label=scores.argmax(1).astype(np.int64),
                 sample_idx=np.arange(n, dtype=np.int64),
                 reot_mm_dump_version=np.array(1, dtype=np.int64))
    with open(counts, 'w') as handle:
        json.dump({'class_counts': COUNTS}, handle)
    return dump, counts


def tool_outputs(tree, folder, dump, counts, threads, demo):
    """posthoc refined dumps and the demo's final parameters under ``tree``."""
    import numpy as np
    import torch
    results = {}
    methods = {'la': [], 'ot': [], 'otlm': ['--iters', '5', '--lr', '1e-2']}
    for method, extra in methods.items():
        out = osp.join(folder, f'refined_{method}.npz')
        res = _run([sys.executable, 'tools/posthoc.py', dump, '--method', method,
                    '--train-counts', counts, '--no-progress', '--out', out, *extra],
                   tree, threads)
        name = f'tools/posthoc.py --method {method}'
        if res.returncode != 0 or not osp.exists(out):
            results[name] = {'__error__': _error(res)}
            continue
        with np.load(out) as data:
            results[name] = {k: torch.from_numpy(np.asarray(data[k])).double()
                             for k in data.files if data[k].dtype.kind in 'fiub'}
    if demo:
        # as configured, and with the data loader's drop_last pinned in both trees, which
        # separates a change of the numbers from a change of the config's batches
        variants = {'': [], ', drop_last=True in both': ['train_dataloader.drop_last=True']}
        for index, (label, options) in enumerate(variants.items()):
            work_dir = osp.join(folder, f'demo{index}')
            res = _run([sys.executable, 'tools/train.py', DEMO_CONFIG, '--work-dir', work_dir,
                        '--cfg-options', 'train_cfg.max_epochs=3', 'randomness.seed=0',
                        *options], tree, threads)
            name = f'tools/train.py digits demo, 3 epochs{label}: parameters'
            checkpoint = osp.join(work_dir, 'epoch_3.pth')
            if res.returncode != 0 or not osp.exists(checkpoint):
                results[name] = {'__error__': _error(res)}
                continue
            # our own file, written by mmengine a moment ago
            state = torch.load(checkpoint, map_location='cpu', weights_only=False)
            results[name] = {k: v.double() for k, v in state['state_dict'].items()
                             if torch.is_tensor(v) and v.dtype != torch.bool}
    return results


def compare(base, new, tol):
    """Rows (probe, max abs diff or message, status) over both trees' probes."""
    import torch
    rows = [('probe script', f'{label}: {results["probe script"]["__error__"]}', 'ERROR')
            for label, results in (('base', base), ('new', new)) if 'probe script' in results]
    for name in dict.fromkeys([*base, *new]):
        if name == 'probe script':
            continue
        old, cur = base.get(name), new.get(name)
        if old is None or cur is None:
            label, results = ('base', base) if old is None else ('new', new)
            crash = results.get('probe script', {}).get('__error__')
            rows.append((name, f'{label}: probe script failed: {crash}' if crash
                         else f'{label}: no such probe', 'ERROR'))
            continue
        errors = [f'{label}: {r["__error__"].strip().splitlines()[-1]}'
                  for label, r in (('base', old), ('new', cur)) if '__error__' in r]
        if errors:
            rows.append((name, '; '.join(errors), 'ERROR'))
            continue
        worst, worst_key, notes = 0.0, '', []
        for key in dict.fromkeys([*old, *cur]):
            if key not in old or key not in cur:
                notes.append(f'{key} only in {"base" if key in old else "this tree"}')
            elif old[key].shape != cur[key].shape:
                notes.append(f'{key} shape {tuple(old[key].shape)} -> '
                             f'{tuple(cur[key].shape)}')
            elif old[key].numel():
                diff = (old[key] - cur[key]).abs()
                both_nan = old[key].isnan() & cur[key].isnan()
                diff = torch.where(both_nan | (old[key] == cur[key]),
                                   torch.zeros_like(diff), diff)
                largest = float(diff.nan_to_num(float('inf')).max())
                if largest > worst:
                    worst, worst_key = largest, key
        status = 'OK' if worst <= tol and not notes else 'DIFF'
        if status == 'DIFF' and worst_key:
            notes.insert(0, f'largest in {worst_key}')
        rows.append((name, f'{worst:.3e}' + (' ' + '; '.join(notes) if notes else ''),
                     status))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--base', default='f35b6ed', help='git commit to compare with')
    parser.add_argument('--tol', type=float, default=1e-6, help='max abs difference')
    parser.add_argument('--threads', type=int, default=1, help='OMP_NUM_THREADS of both runs')
    parser.add_argument('--skip-demo', action='store_true', help='no digits training run')
    parser.add_argument('--probe', nargs=2, metavar=('TREE', 'OUT'), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        return run_probes(*args.probe)

    import torch
    scratch = tempfile.mkdtemp(prefix='reot_mm_outputs_')
    base_tree = osp.join(scratch, 'tree_base')
    try:
        subprocess.run(['git', '-C', ROOT, 'worktree', 'add', '--detach', base_tree,
                        args.base], check=True, capture_output=True, text=True)
        dump, counts = write_dump(scratch)
        outputs = {}
        for label, tree in (('base', base_tree), ('new', ROOT)):
            folder = osp.join(scratch, f'out_{label}')
            os.makedirs(folder)
            path = osp.join(folder, 'probes.pt')
            res = _run([sys.executable, osp.abspath(__file__), '--probe', tree, path],
                       tree, args.threads)
            if res.returncode == 0:
                results = torch.load(path, weights_only=True)
            else:
                results = {'probe script': {'__error__': _error(res)}}
            results.update(tool_outputs(tree, folder, dump, counts, args.threads,
                                        not args.skip_demo))
            outputs[label] = results
    finally:
        subprocess.run(['git', '-C', ROOT, 'worktree', 'remove', '--force', base_tree],
                       capture_output=True)
        subprocess.run(['git', '-C', ROOT, 'worktree', 'prune'], capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)

    rows = compare(outputs['base'], outputs['new'], args.tol)
    width = max(len(r[0]) for r in rows)
    print(f'base {args.base} vs this tree, tolerance {args.tol:g}, '
          f'OMP_NUM_THREADS={args.threads}')
    print(f'{"probe":<{width}}  {"max abs diff":<14}  status')
    for name, diff, status in rows:
        print(f'{name:<{width}}  {diff:<14}  {status}')
    bad = [r for r in rows if r[2] != 'OK']
    print(f'{len(rows) - len(bad)} OK, {sum(r[2] == "DIFF" for r in rows)} DIFF, '
          f'{sum(r[2] == "ERROR" for r in rows)} ERROR')
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
