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

Both carry the training class counts of the run (from ``ClassStatisticsHook``
or the checkpoint, or a ``ShotAccuracy`` config's ``class_counts``) and the
many / few thresholds of the config's ``ShotAccuracy`` (or its defaults):
inside the compact file, or in ``<out>.counts.json`` next to a pickle, so
``tools/posthoc.py`` reports many / medium / few without further options.

Before the Runner is built, the test dataloader's data files and the
class-counts files are checked (``reot_mm.engine.data_checks``;
``--skip-data-check`` turns this off).
"""
import argparse

import reot_mm
from reot_mm.engine.cli import (add_common_args, build_runner, load_config,
                                skip_teacher_for_test)
from reot_mm.engine.data_checks import add_skip_argument, exit_if_data_missing
from reot_mm.engine.distributed import teardown_distributed

# reot_mm was imported before mmengine, so it registers nothing by itself
reot_mm.register_all_modules()

PICKLE = ('.pkl', '.pickle')
COMPACT = ('.npz', '.pt')


def find_shot_metric(evaluator) -> dict:
    """The first ``ShotAccuracy`` config in an evaluator config ({} if none).

    Looks into lists and into wrappers' ``metrics`` (``SinkhornInferenceMetric``).
    """
    if isinstance(evaluator, (list, tuple)):
        for item in evaluator:
            found = find_shot_metric(item)
            if found:
                return found
        return {}
    if not isinstance(evaluator, dict):
        return {}
    if evaluator.get('type') == 'ShotAccuracy':
        return dict(evaluator)
    return find_shot_metric(evaluator.get('metrics', []))


def shot_settings(evaluator):
    """(class_counts or None, (many, few)) of the config's ShotAccuracy."""
    from reot_mm.counts_file import load_counts_file
    from reot_mm.evaluation.shot_metric import (DEFAULT_FEW_THRESHOLD,
                                                DEFAULT_MANY_THRESHOLD)
    shot = find_shot_metric(evaluator)
    counts = shot.get('class_counts')
    if counts is None and shot.get('class_counts_file') is not None:
        counts = load_counts_file(shot['class_counts_file'])
    thresholds = (shot.get('many_threshold', DEFAULT_MANY_THRESHOLD),
                  shot.get('few_threshold', DEFAULT_FEW_THRESHOLD))
    return (None if counts is None else list(counts)), thresholds


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
    add_skip_argument(parser)
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
    # missing data: one line naming the file, not a config dump and a traceback
    exit_if_data_missing(cfg, ('test', ), skip=args.skip_data_check)
    cfg.load_from = args.checkpoint
    if skip_teacher_for_test(cfg):
        print('tools/test.py: TeacherStudent predicts with the student only; '
              'the teacher checkpoint is not loaded')
    dump_preds = args.out is not None and args.out_item == 'pred'
    if dump_preds:
        config_counts, thresholds = shot_settings(cfg.get('test_evaluator'))
        if args.out.endswith(PICKLE):
            dump = dict(type='DumpResults', out_file_path=args.out)
        else:
            dump = dict(type='DumpPredictions', out_file_path=args.out,
                        dump_features=args.dump_features,
                        class_counts=config_counts,
                        shot_thresholds=thresholds)
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
    if dump_preds and args.out.endswith(PICKLE):
        _write_pickle_meta(runner, args.out, config_counts, thresholds)
    if args.out is not None and args.out_item == 'metrics':
        import mmengine
        mmengine.dump(metrics, args.out)
    # the DDP wrapper (and its reducer) must go before its process group
    del runner
    teardown_distributed()


def _write_pickle_meta(runner, out, config_counts, thresholds):
    """``<out>.counts.json``: the counts DumpResults cannot hold (rank 0)."""
    from mmengine.dist import is_main_process
    from reot_mm.evaluation.dump_io import meta_path, write_dump_meta
    from reot_mm.evaluation.shot_metric import CLASS_COUNTS_INFO_KEY
    counts = config_counts
    if counts is None:
        counts = runner.message_hub.get_info(CLASS_COUNTS_INFO_KEY)
    if counts is not None and is_main_process():
        write_dump_meta(meta_path(out), counts, thresholds)
        print(f'class counts and shot thresholds written to {meta_path(out)}')


if __name__ == '__main__':
    main()
