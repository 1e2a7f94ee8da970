"""Mask R-CNN train step with the RE-OT RoI loss vs cross-entropy, side by side.

Target: ratio <= 1.05 for one Mask R-CNN train step (forward, backward,
optimizer step) with ``REOTRoILoss`` in the box head instead of upstream's
softmax ``CrossEntropyLoss``.

All variants share one set of weights (the optimizer runs with lr = 0, so the
weights never change) and one batch of the tiny LVIS fixture
(tests/det/lvis_fixture.py); each round re-seeds torch before every variant,
so RPN proposals and RoI sampling are the same for all of them. Rounds are
interleaved (the variant order rotates) so machine noise hits every variant
alike; the printed numbers are medians over rounds, and each ratio is the
median of the per-round ratios to CE. Two clocks: wall time, and the process's
CPU time — on a shared CPU machine (other jobs competing for the cores) the
latter measures the work of a single-threaded step without the waiting, so
read the CPU column there (run with OMP_NUM_THREADS=1); on an idle machine or
a GPU read the wall column.

``--model full`` (default) is the shipped config's model: R-50-FPN, 1203 LVIS
classes, 512 sampled RoIs per image, so the box head scores (1024, 1204) per
step; the images are the fixture's, resized to ``--scale``. ``--model tiny``
is the CPU test model (R-18/16 channels, 6 classes), where the loss is a
larger share of a much cheaper step.

    OMP_NUM_THREADS=1 python benchmarks/bench_det_loss.py [--model full|tiny]
        [--rounds 9] [--scale 320] [--device cpu]
"""
import argparse
import copy
import os.path as osp
import statistics
import sys
import tempfile
import time

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, 'tests', 'det'))

import reot_mm  # noqa: E402
reot_mm.register_all_modules()  # imported before mmengine: register explicitly
from lvis_fixture import CLASSES, make_lvis_fixture  # noqa: E402

TINY_MODEL = dict(
    backbone=dict(depth=18, base_channels=16),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=32),
    rpn_head=dict(in_channels=32, feat_channels=32),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=32),
        bbox_head=dict(in_channels=32, fc_out_channels=64, num_classes=6),
        mask_roi_extractor=dict(out_channels=32),
        mask_head=dict(in_channels=32, conv_out_channels=32, num_classes=6)))


def build_batch(data_root, scale, batch_size):
    from mmdet.registry import DATASETS
    from mmengine.dataset import pseudo_collate
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
        dict(type='Resize', scale=scale, keep_ratio=True),
        dict(type='PackDetInputs'),
    ]
    dataset = DATASETS.build(dict(
        type='LVISV1Dataset', data_root=data_root,
        ann_file='annotations/lvis_v1_train.json', data_prefix=dict(img=''),
        metainfo=dict(classes=CLASSES), pipeline=pipeline))
    return pseudo_collate([dataset[i] for i in range(batch_size)])


def build_models(model_kind, device, all_variants=False):
    from mmdet.registry import MODELS
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'lvis', 'reot_mask_rcnn.py'))
    cfg.model.backbone.init_cfg = None  # no download; timing only
    if model_kind == 'tiny':
        cfg.merge_from_dict(dict(model=TINY_MODEL))
    num_classes = cfg.model.roi_head.bbox_head.num_classes
    cfg.model.roi_head.bbox_head.loss_cls = dict(
        type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)
    reference = MODELS.build(cfg.model).to(device)
    counts = torch.logspace(4.7, 0, num_classes).round()

    def with_loss(**loss_cfg):
        model = copy.deepcopy(reference)
        loss = MODELS.build(dict(type='REOTRoILoss', class_counts=counts,
                                 **loss_cfg))
        loss.set_prior_schedule(loss_cfg.pop('prior_weight', 1.0))
        model.roi_head.bbox_head.loss_cls = loss.to(device)
        return model

    models = {
        'CE (upstream CrossEntropyLoss)': reference,
        'RE-OT fg-only, class ratio, λ=1 (default)': with_loss(),
        'RE-OT batch-fraction, class ratio, λ=1': with_loss(
            background='batch_fraction'),
    }
    if all_variants:
        models.update({
            'RE-OT fg-only, class ratio, λ=0.5': with_loss(prior_weight=0.5),
            'RE-OT fg-only, Eq.37 interpolated, λ=0.5': with_loss(
                prior='interpolated', prior_weight=0.5),
        })
    return models


def train_step(model, optimizer, batch, seed):
    torch.manual_seed(seed)
    data = model.data_preprocessor(batch, True)
    losses = model(**data, mode='loss')
    loss, _ = model.parse_losses(losses)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', choices=('full', 'tiny'), default='full')
    parser.add_argument('--rounds', type=int, default=9)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--scale', type=int, nargs=2, default=(320, 256),
                        metavar=('W', 'H'), help='resize target of the images')
    parser.add_argument('--batch-size', type=int, default=2)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--all', action='store_true',
                        help='also time λ = 0.5 and the Eq. 37 prior')
    args = parser.parse_args()
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_lvis_fixture(tmp)
        batch = build_batch(paths['data_root'], tuple(args.scale),
                            args.batch_size)
    models = build_models(args.model, args.device, args.all)
    optimizers = {name: torch.optim.SGD(m.parameters(), lr=0.0, momentum=0.9)
                  for name, m in models.items()}
    for model in models.values():
        model.train()
    names = list(models)
    times = {name: [] for name in names}
    cpu_times = {name: [] for name in names}
    values = {}
    sync = torch.cuda.synchronize if args.device.startswith('cuda') \
        else (lambda: None)
    for round_index in range(args.warmup + args.rounds):
        order = names[round_index % len(names):] + names[:round_index % len(names)]
        for name in order:
            sync()
            start, cpu_start = time.perf_counter(), time.process_time()
            values[name] = train_step(models[name], optimizers[name], batch,
                                      seed=round_index)
            sync()
            if round_index >= args.warmup:
                times[name].append(time.perf_counter() - start)
                cpu_times[name].append(time.process_time() - cpu_start)
    reference = names[0]
    cls_shape = (args.batch_size * 512,
                 models[reference].roi_head.bbox_head.num_classes + 1)
    print(f'Mask R-CNN train step ({args.model} model, batch {args.batch_size}, '
          f'images {tuple(args.scale)}, box-head scores {cls_shape}), '
          f'{args.rounds} rounds, torch threads {torch.get_num_threads()}, '
          f'device {args.device}')
    print(f'{"variant":<45} {"wall ms":>9} {"ratio":>7} {"CPU ms":>9} '
          f'{"ratio":>7}')
    for name in names:
        row = f'{name:<45}'
        for clock in (times, cpu_times):
            ratios = [t / r for t, r in zip(clock[name], clock[reference])]
            row += (f' {1e3 * statistics.median(clock[name]):>9.1f}'
                    f' {statistics.median(ratios):>7.3f}')
        print(row)
    print('(total losses of the last round, same weights/RoIs: '
          + ', '.join(f'{values[n]:.4f}' for n in names) + ')')


if __name__ == '__main__':
    main()
