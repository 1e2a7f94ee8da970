"""Evaluate a checkpoint with an OpenMMLab config and reot_mm.

Same command line as upstream ``tools/test.py``. ``--out`` dumps the raw
predictions for post-hoc tools (``tools/posthoc.py``,
``tools/class_barycenters.py``):

* ``--out preds.pkl`` (or ``.pickle``): mmengine's ``DumpResults``, a pickle of
  per-sample dicts, as mmpretrain / mmdet / mmseg write it (any task; slow to
  read for large test sets: one object per sample);
* ``--out preds.npz`` (or ``.pt``): reot_mm's ``DumpPredictions``, the
  classification predictions stacked into arrays (``pred_score`` (N, K),
  ``gt_label``, ``pred_label``, ``sample_idx``); ``--dump-features`` also
  stores the head's pre-logit features (N, d).
"""
import argparse

import reot_mm
from reot_mm.engine.cli import (add_common_args, build_runner, load_config,
                                skip_teacher_for_test)
from reot_mm.engine.distributed import teardown_distributed

# reot_mm was imported before mmengine, so it registers nothing by itself
reot_mm.register_all_modules()

PICKLE = ('.pkl', '.pickle')
COMPACT = ('.npz', '.pt')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--out', help='dump predictions: .pkl/.pickle (upstream DumpResults, '
        'any task) or .npz/.pt (compact arrays, classification)')
    parser.add_argument('--out-item', choices=['pred', 'metrics'],
                        default='pred', help='what --out dumps')
    parser.add_argument(
        '--dump-features', action='store_true',
        help='with --out x.npz/.pt: also store the head\'s pre-logit '
        'features (for tools/class_barycenters.py)')
    add_common_args(parser)
    return parser.parse_args(argv)


def _check_out(args):
    """The --out suffix picks the writer; reject what cannot work early."""
    if args.dump_features and (args.out is None or args.out_item != 'pred'
                               or not args.out.endswith(COMPACT)):
        raise ValueError(f'--dump-features needs --out ending with one of '
                         f'{COMPACT} (compact dump), got --out {args.out}')
    if args.out is not None and args.out_item == 'pred' and \
            not args.out.endswith(PICKLE + COMPACT):
        raise ValueError(f'--out must end with one of {PICKLE + COMPACT}, '
                         f'got {args.out}')


def main(argv=None):
    args = parse_args(argv)
    _check_out(args)
    cfg = load_config(args)
    cfg.load_from = args.checkpoint
    if skip_teacher_for_test(cfg):
        print('tools/test.py: TeacherStudent predicts with the student only; '
              'the teacher checkpoint is not loaded')
    if args.out is not None and args.out_item == 'pred':
        if args.out.endswith(PICKLE):
            dump = dict(type='DumpResults', out_file_path=args.out)
        else:
            dump = dict(type='DumpPredictions', out_file_path=args.out,
                        dump_features=args.dump_features)
        evaluator = cfg.test_evaluator
        if isinstance(evaluator, (list, tuple)):
            cfg.test_evaluator = list(evaluator) + [dump]
        else:
            cfg.test_evaluator = [evaluator, dump]
    runner = build_runner(cfg)
    if args.dump_features:
        from reot_mm.evaluation.dump import attach_pre_logits
        attach_pre_logits(runner.model)
    metrics = runner.test()
    if args.out is not None and args.out_item == 'metrics':
        import mmengine
        mmengine.dump(metrics, args.out)
    # the DDP wrapper (and its reducer) must go before its process group
    del runner
    teardown_distributed()


if __name__ == '__main__':
    main()
