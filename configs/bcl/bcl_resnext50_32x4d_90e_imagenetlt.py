# BCL (Zhu et al., CVPR 2022) on ImageNet-LT with ResNeXt-50 32x4d (BCL Sec. 4.2, Table 6):
# λ 1.0, μ 0.35, τ 0.07, cosine classifier (scale 30), projection MLP
# 2048 -> 2048 -> 1024, batch 256, SGD momentum 0.9, lr 0.1, weight decay 5e-4,
# cosine schedule, 90 epochs. Views: v1 = RandAugment for the classifier,
# v2 / v3 = SimAugment (SimCLR-style crop, flip, colour jitter, grayscale).
# Model, schedule and runtime from mmpretrain's resnext50-32x4d_8xb32_in1k.py
# pieces; data from ../_base_/datasets/imagenet_lt.py.
_base_ = [
    'mmpretrain::_base_/models/resnext50_32x4d.py',
    '../_base_/datasets/imagenet_lt.py',
    '../_base_/pipelines/simaugment.py',
    'mmpretrain::_base_/schedules/imagenet_bs256.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['reot_mm'], allow_failed_imports=False)

model = dict(
    type='BCLClassifier',
    num_views=3,
    head=dict(_delete_=True, type='CosineClsHead', num_classes=1000,
              in_channels=2048, scale=30.0, topk=(1, 5)),
    projector=dict(type='ProjectionMLP', in_channels=2048,
                   hidden_channels=2048, out_channels=1024),
    loss=dict(type='BCLLoss', temperature=0.07, lc_weight=1.0, bcl_weight=0.35),
)
data_preprocessor = dict(type='MultiViewClsDataPreprocessor', num_views=3)

classifier_view = [
    dict(type='RandomResizedCrop', scale=224, backend='pillow'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandAugment', policies='timm_increasing', num_policies=2,
         total_level=10, magnitude_level=9, magnitude_std=0.5,
         hparams=dict(pad_val=[104, 116, 124], interpolation='bicubic')),
]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='MultiView', num_views=[1, 2],
         transforms=[classifier_view, {{_base_.simaugment_imagenet}}]),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=32,  # 8 GPUs x 32 = 256; BCLLoss all-gathers the global batch
    dataset=dict(pipeline=train_pipeline))

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=5e-4))
param_scheduler = dict(
    _delete_=True, type='CosineAnnealingLR', T_max=90, by_epoch=True,
    begin=0, end=90)
train_cfg = dict(by_epoch=True, max_epochs=90, val_interval=5)
auto_scale_lr = dict(base_batch_size=256, enable=False)
custom_hooks = [dict(type='ClassStatisticsHook')]
