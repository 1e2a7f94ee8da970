"""Is resume bit-identical, and is an uninterrupted run unchanged, for every digits-LT config?

For each config, in this one process (imports once): train ``--epochs`` epochs with a
checkpoint and a validation after every epoch (reference); train a copy resumed from the
epoch-1 checkpoint; train once more without ``RandomStateHook`` (what the run was before
the hook: no saved generator states, validation not forked). Prints, per config, whether
the resumed run and the hook-less run end with the reference's parameters, buffers and
optimizer state bit for bit.

    OMP_NUM_THREADS=1 python benchmarks/digits_resume_check.py --epochs 3
    OMP_NUM_THREADS=1 python benchmarks/digits_resume_check.py --control --configs \
        bcl/bcl_resnet8_100e_digitslt gml/gml-teacher_resnet8_100e_digitslt

``--control`` adds a resume without the hook (what ``--resume`` did before it).

The GML student uses the GML teacher's reference checkpoint as its teacher, the linear
probe the RE-OT supervised pretraining's.
"""
import argparse
import os.path as osp
import shutil
import sys
import tempfile

import mmengine  # noqa: F401  (reot_mm registers everything when mmengine is loaded)
import torch
from mmengine.config import Config
from mmengine.runner import Runner

import reot_mm

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
reot_mm.register_all_modules()

from reot_mm.engine.cli import add_training_hooks  # noqa: E402
from reot_mm.engine.random_state import RandomStateHook  # noqa: E402

CONFIGS = [
    'demo/ce_resnet8_100e_digitslt', 'demo/bsoftmax_resnet8_100e_digitslt',
    'demo/reot_resnet8_100e_digitslt', 'demo/reot-sinkhorn_resnet8_100e_digitslt',
    'demo/asoftmax_resnet8_100e_digitslt', 'bcl/bcl_resnet8_100e_digitslt',
    'gml/gml-teacher_resnet8_100e_digitslt', 'gml/gml_resnet8_100e_digitslt',
    'contrastive/simclr_resnet8_100e_digitslt', 'contrastive/supcon_resnet8_100e_digitslt',
    'contrastive/reot-ssl_resnet8_100e_digitslt', 'contrastive/reot-sup_resnet8_100e_digitslt',
    'contrastive/linear-probe_resnet8_30e_digitslt',
]


def train(config, work_dir, epochs, name, resume=None, hook=True, options=None):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', config + '.py'))
    cfg.merge_from_dict(dict({'train_cfg.max_epochs': epochs, 'train_cfg.val_interval': 1,
                              'default_hooks.checkpoint.interval': 1,
                              'default_hooks.checkpoint.max_keep_ckpts': -1},
                             **(options or {})))
    cfg.work_dir = work_dir
    cfg.experiment_name = name
    cfg.launcher = 'none'
    if resume:
        cfg.resume, cfg.load_from = True, resume
    runner = Runner.from_cfg(cfg)
    if hook:
        add_training_hooks(runner)
    assert hook == any(isinstance(h, RandomStateHook) for h in runner.hooks)
    runner.train()
    return osp.join(work_dir, f'epoch_{epochs}.pth')


def same_state(path_a, path_b):
    a, b = torch.load(path_a), torch.load(path_b)
    if a['state_dict'].keys() != b['state_dict'].keys():
        return False
    if not all(torch.equal(a['state_dict'][k], b['state_dict'][k]) for k in a['state_dict']):
        return False
    state_a, state_b = a['optimizer']['state'], b['optimizer']['state']
    return state_a.keys() == state_b.keys() and all(
        torch.equal(v, state_b[i][n]) for i in state_a for n, v in state_a[i].items())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--epochs', type=int, default=3)
    parser.add_argument('--configs', nargs='+', default=CONFIGS)
    parser.add_argument('--control', action='store_true',
                        help='also resume without RandomStateHook (the old behaviour)')
    args = parser.parse_args()
    rows, finals = [], {}
    with tempfile.TemporaryDirectory() as scratch:
        for index, config in enumerate(args.configs):
            options = {}
            if config.startswith('gml/gml_'):
                options['model.teacher_checkpoint'] = finals[
                    'gml/gml-teacher_resnet8_100e_digitslt']
            if config.startswith('contrastive/linear-probe'):
                options['model.backbone.init_cfg.checkpoint'] = finals[
                    'contrastive/reot-sup_resnet8_100e_digitslt']
            base = osp.join(scratch, str(index))
            reference = train(config, base + '_ref', args.epochs, f'{index}ref',
                              options=options)
            finals[config] = reference
            resumed_dir = base + '_resumed'
            shutil.copytree(base + '_ref', resumed_dir)
            resumed = train(config, resumed_dir, args.epochs, f'{index}res',
                            resume=osp.join(resumed_dir, 'epoch_1.pth'), options=options)
            plain = train(config, base + '_plain', args.epochs, f'{index}plain', hook=False,
                          options=options)
            row = [config, same_state(reference, resumed), same_state(reference, plain)]
            if args.control:  # what a resume gave before RandomStateHook
                control_dir = base + '_control'
                shutil.copytree(base + '_ref', control_dir)
                control = train(config, control_dir, args.epochs, f'{index}ctl', hook=False,
                                resume=osp.join(control_dir, 'epoch_1.pth'), options=options)
                row.append(same_state(reference, control))
            rows.append(row)
    print(f'\n{args.epochs} epochs, resume from epoch 1, validation after every epoch')
    header = ['config', 'resumed == uninterrupted',
              'uninterrupted == uninterrupted without RandomStateHook']
    if args.control:
        header.append('resumed without RandomStateHook == uninterrupted')
    print('| ' + ' | '.join(header) + ' |')
    print('|' + '---|' * len(header))
    for config, *same in rows:
        print(f'| {config} | ' + ' | '.join('bit-identical' if s else 'DIFFERS' for s in same)
              + ' |')
    if not all(row[1] and row[2] for row in rows):
        raise SystemExit(1)


if __name__ == '__main__':
    main()
