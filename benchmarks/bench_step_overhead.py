"""Whole-training-step overhead of the reot_mm method configs over cross-entropy.

For each task, the cross-entropy config and every reot_mm method config of
that task are built from the repository's configs and timed on the same
synthetic batch with ``model.train_step(data, optim_wrapper)`` (data
preprocessing, forward, backward, optimizer step), interleaved: every round
runs each variant once, in a rotated order, after re-seeding torch. Printed
per variant: median ms/step over the rounds (wall clock and process CPU time)
and the overhead over CE (median of the per-round ratios; goal <= 5 %).

* cls: ResNet-50 (every variant's backbone, so only the method differs),
  1000 classes, 224x224, batch 16, from configs/imagenet_lt (CE: the RE-OT
  config with mmpretrain's CrossEntropyLoss), configs/bcl and configs/gml
  (ImageNet-LT). BCL and GML load three views of each image, so they are
  compared with CE on the same 48 images ("CE x3 views"): BCL passes all
  three through the trained backbone; GML passes two (x_cls, x_q) through the
  student and x_k through its frozen teacher, forward only (ResNet-50 here
  instead of the config's ResNeXt-101, so the teacher costs what the
  student's forward does), and embeds its whole queue (k = 16384) with the
  key MLP every step.
* det: Mask R-CNN R50-FPN, 1203 LVIS classes, one 512x512 image with a few
  boxes and masks: upstream mmdet::lvis/mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1.py
  (CE) and configs/lvis (RE-OT RoI loss, RE-OT + BCL on RoI features, GML on
  RoI features, alone and with its frozen teacher).
* seg: FCN R50-D8, 150 classes, batch 1: upstream
  mmseg::fcn/fcn_r50-d8_4xb4-160k_ade20k-512x512.py (CE) and configs/ade20k
  (RE-OT pixel loss, GML head alone and with its frozen teacher, BCL head);
  ``--seg-size`` (default 512) sets the crop.

Teacher-student configs get a randomly initialised teacher checkpoint (the
teacher's forward costs the same whatever its weights).

The optimizer runs with lr 0 so the weights stay those of the first step; the
RE-OT losses get class counts (linearly spaced 500 -> 5) and λ = 1, so the
prior path runs; SyncBN is reverted to BN (CPU). On a CPU shared with other
jobs read the CPU-time columns (one thread); on an idle machine both agree.

    python benchmarks/bench_step_overhead.py [--threads 1] [--repeats 5]
        [--tasks cls det seg] [--seg-size 512] [--device cpu]
"""
import argparse
import copy
import os
import os.path as osp
import statistics
import sys
import tempfile
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

RESNET50 = dict(type='ResNet', depth=50, num_stages=4, out_indices=(3, ),
                style='pytorch')
CLS_VARIANTS = (  # (name, config, views)
    ('CE', 'imagenet_lt/reot_resnext50_32x4d_90e_imagenetlt.py', 1),
    ('RE-OT', 'imagenet_lt/reot_resnext50_32x4d_90e_imagenetlt.py', 1),
    ('CE x3 views', 'imagenet_lt/reot_resnext50_32x4d_90e_imagenetlt.py', 3),
    ('BCL', 'bcl/bcl_resnext50_32x4d_90e_imagenetlt.py', 3),
    ('GML', 'gml/gml_resnext50_32x4d_90e_imagenetlt.py', 3),
)
DET_VARIANTS = (
    ('CE', 'mmdet::lvis/mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1.py'),
    ('RE-OT RoI', 'lvis/reot_mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1.py'),
    ('RE-OT + BCL RoI', 'lvis/reot-bcl_mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1.py'),
    ('GML RoI', 'lvis/gml_mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1.py'),
    ('GML RoI + teacher',
     'lvis/gml-teacher-student_mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1.py'),
)
SEG_VARIANTS = (
    ('CE', 'mmseg::fcn/fcn_r50-d8_4xb4-160k_ade20k-512x512.py'),
    ('RE-OT pixel', 'ade20k/reot_fcn_r50-d8_4xb4-160k_ade20k-512x512.py'),
    ('GML head', 'ade20k/gml-a0.2_fcn_r50-d8_4xb4-160k_ade20k-512x512.py'),
    ('GML head + teacher',
     'ade20k/gml-teacher-student_fcn_r50-d8_4xb4-160k_ade20k-512x512.py'),
    ('BCL head', 'ade20k/bcl_fcn_r50-d8_4xb4-160k_ade20k-512x512.py'),
)


def load_config(path, tmp):
    """A repository config, or an upstream one (``mmdet::...``) through a
    one-line config inheriting it (Config.fromfile takes files only)."""
    from mmengine.config import Config
    if '::' not in path:
        return Config.fromfile(osp.join(ROOT, 'configs', path))
    wrapper = osp.join(tmp, 'upstream_' + osp.basename(path))
    with open(wrapper, 'w') as handle:
        handle.write(f'_base_ = [{path!r}]\n')
    return Config.fromfile(wrapper)


def prepare(model, num_classes):
    """Class counts and λ = 1 on every count-aware module (the RE-OT prior
    path runs, as after the prior hook's ramp); GML queue segments."""
    import torch
    counts = torch.linspace(500, 5, num_classes).round()
    for module in model.modules():
        if hasattr(module, 'set_class_counts'):
            module.set_class_counts(counts)
        if hasattr(module, 'set_prior_schedule'):
            module.set_prior_schedule(1.0)
        if hasattr(module, 'build_segments'):
            module.build_segments(counts)
    return model


def build(cfg, model_cfg, device):
    from mmengine.model import revert_sync_batchnorm
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import MODELS
    model = revert_sync_batchnorm(MODELS.build(model_cfg)).to(device)
    optim_cfg = copy.deepcopy(cfg.optim_wrapper)
    optim_cfg.optimizer.lr = 0.0  # same weights at every step
    optim_cfg.pop('clip_grad', None)
    return model, build_optim_wrapper(model, optim_cfg)


def with_random_teacher(model_cfg, tmp, name):
    """A TeacherStudent config gets a randomly initialised teacher saved as its
    ``teacher_checkpoint`` (the timing does not depend on the weights)."""
    import torch
    from mmengine.registry import MODELS
    from reot_mm.engine.teacher_student import teacher_model_config
    if model_cfg.get('type') != 'TeacherStudent':
        return model_cfg
    if isinstance(model_cfg.teacher, str):
        model_cfg.teacher = teacher_model_config(model_cfg.teacher)
    teacher = MODELS.build(copy.deepcopy(model_cfg.teacher))
    checkpoint = osp.join(tmp, name.replace(' ', '_') + '_teacher.pth')
    torch.save({'state_dict': teacher.state_dict()}, checkpoint)
    model_cfg.teacher_checkpoint = checkpoint
    return model_cfg


def cls_variants(args, tmp):
    import torch
    from mmengine.registry import MODELS, init_default_scope
    from mmpretrain.structures import DataSample
    init_default_scope('mmpretrain')
    batch, size = args.cls_batch, 224
    samples = [DataSample(metainfo=dict(sample_idx=i)).set_gt_label(i % 1000)
               for i in range(batch)]
    images = [torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
              for _ in range(3)]
    variants = []
    for name, config, views in CLS_VARIANTS:
        cfg = load_config(config, tmp)
        model_cfg = copy.deepcopy(cfg.model)
        if model_cfg.type == 'TeacherStudent':
            model_cfg.student.backbone = dict(RESNET50)
            model_cfg.teacher.backbone = dict(RESNET50)
            model_cfg = with_random_teacher(model_cfg, tmp, name)
        else:
            model_cfg.backbone = dict(RESNET50)
        if name.startswith('CE'):
            model_cfg.head.loss = dict(type='CrossEntropyLoss', loss_weight=1.0)
        model_cfg.data_preprocessor = cfg.data_preprocessor
        if name == 'CE x3 views':  # one view of 3x the images
            data = dict(inputs=torch.cat(images), data_samples=[
                DataSample(metainfo=dict(sample_idx=i)).set_gt_label(i % 1000)
                for i in range(3 * batch)])
        elif views == 3:
            data = dict(inputs=images, data_samples=samples)
        else:
            data = dict(inputs=images[0], data_samples=samples)
        model, optim = build(cfg, model_cfg, args.device)
        variants.append((name, prepare(model, 1000), optim, data))
    return variants


def det_variants(args, tmp):
    import numpy as np
    import torch
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.registry import init_default_scope
    from mmengine.structures import InstanceData
    init_default_scope('mmdet')
    size = 512
    boxes = torch.tensor([[40., 60., 200., 220.], [250., 80., 480., 300.],
                          [100., 300., 260., 500.], [300., 350., 420., 470.]])
    masks = np.zeros((len(boxes), size, size), np.uint8)
    for mask, (x1, y1, x2, y2) in zip(masks, boxes.int().tolist()):
        mask[y1:y2, x1:x2] = 1
    variants = []
    for name, config in DET_VARIANTS:
        cfg = load_config(config, tmp)
        sample = DetDataSample(metainfo=dict(
            img_shape=(size, size), ori_shape=(size, size), scale_factor=(1.0, 1.0),
            pad_shape=(size, size), img_id=0))
        instances = InstanceData()
        instances.bboxes = boxes.clone()
        instances.labels = torch.tensor([0, 5, 600, 1202])
        instances.masks = BitmapMasks(masks.copy(), size, size)
        sample.gt_instances = instances
        sample.gt_ignore_flags = torch.zeros(len(boxes), dtype=torch.bool)
        image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8)
        data = dict(inputs=[image], data_samples=[sample])
        model_cfg = with_random_teacher(copy.deepcopy(cfg.model), tmp, name)
        model, optim = build(cfg, model_cfg, args.device)
        variants.append((name, prepare(model, 1203), optim, data))
    return variants


def seg_variants(args, tmp):
    import torch
    from mmengine.registry import init_default_scope
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    init_default_scope('mmseg')
    size = args.seg_size
    variants = []
    for name, config in SEG_VARIANTS:
        cfg = load_config(config, tmp)
        model_cfg = with_random_teacher(copy.deepcopy(cfg.model), tmp, name)
        preprocessor = (model_cfg.student if model_cfg.type == 'TeacherStudent'
                        else model_cfg).data_preprocessor
        preprocessor.size = (size, size)
        generator = torch.Generator().manual_seed(0)
        sample = SegDataSample(metainfo=dict(
            img_shape=(size, size), ori_shape=(size, size), pad_shape=(size, size)))
        # blocks of classes, as in a real label map (not per-pixel noise)
        blocks = torch.randint(0, 150, (1, size // 32, size // 32), generator=generator)
        sample.gt_sem_seg = PixelData(
            data=blocks.repeat_interleave(32, 1).repeat_interleave(32, 2))
        image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8,
                              generator=generator)
        data = dict(inputs=[image], data_samples=[sample])
        model, optim = build(cfg, model_cfg, args.device)
        variants.append((name, prepare(model, 150), optim, data))
    return variants


def time_rounds(variants, repeats, warmup):
    """{name: [(wall_s, cpu_s), ...]} over ``repeats`` interleaved rounds."""
    import torch
    times = {name: [] for name, *_ in variants}
    for round_ in range(warmup + repeats):
        shift = round_ % len(variants)
        for name, model, optim, data in variants[shift:] + variants[:shift]:
            torch.manual_seed(round_)
            model.train()
            wall, cpu = time.perf_counter(), time.process_time()
            model.train_step(copy.copy(data), optim)
            if torch.cuda.is_available() and next(model.parameters()).is_cuda:
                torch.cuda.synchronize()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if round_ >= warmup:
                times[name].append((wall, cpu))
    return times


def table(task, times, references):
    lines = [f'\n### {task}\n',
             '| variant | ms/step wall | ms/step CPU | overhead vs | wall % | CPU % |',
             '|---|---|---|---|---|---|']
    for name, samples in times.items():
        wall = statistics.median(s[0] for s in samples) * 1e3
        cpu = statistics.median(s[1] for s in samples) * 1e3
        reference = references.get(name)
        if reference is None:
            lines.append(f'| {name} | {wall:.0f} | {cpu:.0f} | reference | | |')
            continue
        ratios = [(s[0] / r[0], s[1] / r[1]) for s, r in zip(samples, times[reference])]
        over_wall = (statistics.median(r[0] for r in ratios) - 1) * 100
        over_cpu = (statistics.median(r[1] for r in ratios) - 1) * 100
        lines.append(f'| {name} | {wall:.0f} | {cpu:.0f} | {reference} | '
                     f'{over_wall:+.1f} | {over_cpu:+.1f} |')
    return '\n'.join(lines)


REFERENCES = {
    'cls': {'RE-OT': 'CE', 'CE x3 views': 'CE', 'BCL': 'CE x3 views',
            'GML': 'CE x3 views'},
    'det': {'RE-OT RoI': 'CE', 'RE-OT + BCL RoI': 'CE', 'GML RoI': 'CE',
            'GML RoI + teacher': 'CE'},
    'seg': {'RE-OT pixel': 'CE', 'GML head': 'CE', 'GML head + teacher': 'CE',
            'BCL head': 'CE'},
}
BUILDERS = {'cls': cls_variants, 'det': det_variants, 'seg': seg_variants}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--threads', type=int, default=1,
                        help='torch intra-op threads (also OMP_NUM_THREADS)')
    parser.add_argument('--repeats', type=int, default=5,
                        help='timed rounds (each runs every variant once)')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--tasks', nargs='+', default=['cls', 'det', 'seg'],
                        choices=sorted(BUILDERS))
    parser.add_argument('--cls-batch', type=int, default=16)
    parser.add_argument('--seg-size', type=int, default=512)
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args()
    if args.threads < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error('--threads and --repeats must be >= 1, --warmup >= 0')
    os.environ['OMP_NUM_THREADS'] = str(args.threads)
    import torch
    torch.set_num_threads(args.threads)
    import mmengine  # noqa: F401  (reot_mm registers its types when mmengine is loaded)
    import reot_mm
    reot_mm.register_all_modules()
    print(f'# whole train_step, reot_mm method configs vs CE\n\n'
          f'threads: {torch.get_num_threads()}, device: {args.device}, '
          f'rounds: {args.repeats} (+{args.warmup} warm-up), '
          f'cls batch {args.cls_batch} at 224x224, det one 512x512 image, '
          f'seg batch 1 at {args.seg_size}x{args.seg_size}; torch {torch.__version__}')
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            variants = BUILDERS[task](args, tmp)
            times = time_rounds(variants, args.repeats, args.warmup)
            print(table(task, times, REFERENCES[task]), flush=True)
            del variants


if __name__ == '__main__':
    sys.exit(main())
