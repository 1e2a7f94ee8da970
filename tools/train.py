"""Train with an OpenMMLab config (mmpretrain / mmdet / mmseg) and reot_mm.

Same command line as upstream ``tools/train.py``. ``reot_mm`` is imported first,
so plugin types resolve and its checkpoint fixes apply (atomic saves, resume
from the newest complete checkpoint: ``reot_mm.engine.checkpoint_safety``); on
CPU-only machines distributed launches use gloo with ``env_cfg.dist_cfg``
(``reot_mm.engine.distributed``). Every run gets ``RandomStateHook`` (exact
resume) and, when distributed, ``BroadcastBuffersHook``. Before the Runner is
built, the data files of the train and val dataloaders and the class-counts
files are checked (``reot_mm.engine.data_checks``; ``--skip-data-check`` turns
this off).
"""
import argparse

import reot_mm
from reot_mm.engine.cli import (add_common_args, add_training_hooks, build_runner,
                                enable_lr_scaling, load_config)
from reot_mm.engine.data_checks import add_skip_argument, exit_if_data_missing
from reot_mm.engine.distributed import teardown_distributed

# reot_mm was imported before mmengine, so it registers nothing by itself
reot_mm.register_all_modules()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from the given checkpoint, or from the newest complete '
        'checkpoint in the work dir if no path is given')
    parser.add_argument('--amp', action='store_true',
                        help='enable automatic mixed precision training')
    parser.add_argument('--no-validate', action='store_true',
                        help='do not evaluate checkpoints during training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate by the actual batch size')
    add_common_args(parser)
    add_skip_argument(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args)
    if args.amp:
        if cfg.optim_wrapper.get('type', 'OptimWrapper') != 'AmpOptimWrapper':
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    if args.no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None
    if args.auto_scale_lr:
        enable_lr_scaling(cfg)
    # missing data: one line naming the file, not a config dump and a traceback
    exit_if_data_missing(cfg, ('train', 'val'), skip=args.skip_data_check)
    runner = build_runner(cfg)
    add_training_hooks(runner)
    runner.train()
    # the DDP wrapper (and its reducer) must go before its process group
    del runner
    teardown_distributed()


if __name__ == '__main__':
    main()
