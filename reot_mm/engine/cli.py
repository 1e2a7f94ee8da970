"""Command-line plumbing shared by ``tools/train.py`` and ``tools/test.py``.

The options and their meaning follow upstream OpenMMLab ``tools/`` scripts.
"""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction

from reot_mm.engine.distributed import (BroadcastBuffersHook, check_lr_scaling,
                                        setup_distributed)
from reot_mm.engine.random_state import RandomStateHook


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings in the config, key=value (xxx=yyy format)')
    parser.add_argument('--launcher', default='none',
                        choices=['none', 'pytorch', 'slurm', 'mpi'],
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def load_config(args) -> Config:
    """Read the config, apply --cfg-options and --work-dir, set the launcher."""
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    return cfg


def build_runner(cfg):
    """Prepare distributed state for this machine, then build the Runner."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    setup_distributed(cfg, cfg.launcher)
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def add_training_hooks(runner) -> None:
    """Hooks every training run needs, unless the config already has them.

    ``RandomStateHook``: random generator states in checkpoints (exact resume);
    ``BroadcastBuffersHook`` (distributed runs): validation scores the model
    rank 0 saves. Also warns when the global batch does not match
    ``auto_scale_lr.base_batch_size`` and scaling is off.
    """
    present = {type(hook) for hook in runner.hooks}
    if RandomStateHook not in present:
        runner.register_hook(RandomStateHook())
    if runner.world_size > 1 and BroadcastBuffersHook not in present:
        runner.register_hook(BroadcastBuffersHook())
    check_lr_scaling(runner)


def enable_lr_scaling(cfg) -> None:
    """``--auto-scale-lr``: mmengine scales the learning rate by
    global batch / ``auto_scale_lr.base_batch_size``."""
    scaling = cfg.get('auto_scale_lr') or {}
    if 'base_batch_size' not in scaling:
        raise ValueError(
            '--auto-scale-lr needs auto_scale_lr.base_batch_size in the config (the '
            'total batch size its learning rate was set for), e.g. '
            "--cfg-options auto_scale_lr.base_batch_size=256")
    cfg.auto_scale_lr = dict(scaling, enable=True)


def skip_teacher_for_test(cfg) -> bool:
    """Testing a ``TeacherStudent`` model: do not load the teacher.

    Prediction runs the student only, so ``tools/test.py`` needs neither the
    teacher's weights nor the file that ``model.teacher_checkpoint`` names
    (often a work dir of another machine). The teacher is still built (the
    model's structure is the training one) and takes any ``teacher.`` keys
    the tested checkpoint has (``save_teacher=True``). Returns True when the
    config was changed.
    """
    model = cfg.get('model', None)
    if not model or model.get('type') != 'TeacherStudent' or \
            model.get('teacher_checkpoint') is None:
        return False
    model.teacher_checkpoint = None
    return True
