"""Evaluate a checkpoint with an OpenMMLab config and reot_mm.

Same command line as upstream ``tools/test.py``; ``--out`` dumps the raw
predictions (a pickle of per-sample dicts, as mmpretrain/mmdet/mmseg do) for
post-hoc tools.
"""
import argparse

import reot_mm  # noqa: F401  (registers the plugin's modules)
from reot_mm.engine.cli import add_common_args, build_runner, load_config
from reot_mm.engine.distributed import teardown_distributed


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='dump predictions to this pickle file')
    parser.add_argument('--out-item', choices=['pred', 'metrics'],
                        default='pred', help='what --out dumps')
    add_common_args(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args)
    cfg.load_from = args.checkpoint
    if args.out is not None and args.out_item == 'pred':
        if not args.out.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--out must end with .pkl or .pickle, got {args.out}')
        evaluator = cfg.test_evaluator
        dump = dict(type='DumpResults', out_file_path=args.out)
        if isinstance(evaluator, (list, tuple)):
            cfg.test_evaluator = list(evaluator) + [dump]
        else:
            cfg.test_evaluator = [evaluator, dump]
    runner = build_runner(cfg)
    metrics = runner.test()
    if args.out is not None and args.out_item == 'metrics':
        import mmengine
        mmengine.dump(metrics, args.out)
    teardown_distributed()


if __name__ == '__main__':
    main()
