# GML teacher for ImageNet-LT (GML Table A.1: ResNeXt-101 teacher for the
# ResNeXt-50 student): mmpretrain's ResNeXt-101 32x4d with a cosine classifier
# trained by the logit-adjusted cosine cross-entropy only (Eq. 7, τ_s = 1/30:
# REOTLoss with the cosine cost, scale 30 and the class-ratio prior), with the
# student's optimisation (batch 128, SGD 0.05, weight decay 5e-4, cosine, 90
# epochs). gml_resnext50_32x4d_90e_imagenetlt.py loads epoch_90.pth.
_base_ = [
    'mmpretrain::_base_/models/resnext101_32x4d.py',
    '../_base_/datasets/imagenet_lt.py',
    'mmpretrain::_base_/schedules/imagenet_bs256.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['reot_mm'], allow_failed_imports=False)

model = dict(
    head=dict(
        _delete_=True, type='CosineClsHead', num_classes=1000,
        in_channels=2048, scale=30.0, topk=(1, 5),
        init_cfg=dict(type='Normal', layer='Linear', std=0.02),
        loss=dict(type='REOTLoss', cost='cosine', scale=30.0,
                  prior='class_ratio', prior_weight=1.0)))
train_dataloader = dict(batch_size=32)  # 4 GPUs x 32 = 128
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=5e-4),
    # cosine weights: no decay (see gml-teacher_resnet8_100e_digitslt.py)
    paramwise_cfg=dict(custom_keys={'head.fc': dict(decay_mult=0.0)}))
param_scheduler = dict(
    _delete_=True, type='CosineAnnealingLR', T_max=90, by_epoch=True,
    begin=0, end=90)
train_cfg = dict(by_epoch=True, max_epochs=90, val_interval=5)
auto_scale_lr = dict(base_batch_size=128, enable=False)
custom_hooks = [dict(type='ClassStatisticsHook')]
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=5, max_keep_ckpts=1))
