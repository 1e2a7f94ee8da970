# GML teacher for CIFAR-100-LT (imbalance factor 100): ResNet-56 with a cosine
# classifier trained by the logit-adjusted cosine cross-entropy only (GML
# Sec. 3.3, Eq. 7 with τ_s = 1/30 = REOTLoss, cosine cost, scale 30, fixed
# class-ratio prior). Same optimisation as the student (GML Sec. 4.2): batch 64,
# SGD 0.05 momentum 0.9, weight decay 5e-4, 200 epochs, lr / 10 at 160 and 180.
# gml_resnet32_200e_cifar100lt-r100.py loads this run's epoch_200.pth.
_base_ = [
    '../_base_/models/resnet56_cifar.py',
    '../_base_/datasets/cifar100_lt.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['reot_mm'], allow_failed_imports=False)

model = dict(
    head=dict(
        _delete_=True, type='CosineClsHead', num_classes=100, in_channels=64,
        scale=30.0, topk=(1, ),
        init_cfg=dict(type='Normal', layer='Linear', std=0.1),
        loss=dict(type='REOTLoss', cost='cosine', scale=30.0,
                  prior='class_ratio', prior_weight=1.0)))
train_dataloader = dict(batch_size=64, dataset=dict(imbalance_factor=100))

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=5e-4),
    # cosine weights: no decay (see gml-teacher_resnet8_100e_digitslt.py)
    paramwise_cfg=dict(custom_keys={'head.fc': dict(decay_mult=0.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=5,
         convert_to_iter_based=True),
    dict(type='MultiStepLR', by_epoch=True, milestones=[160, 180], gamma=0.1),
]
train_cfg = dict(by_epoch=True, max_epochs=200, val_interval=10)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=64, enable=False)
custom_hooks = [dict(type='ClassStatisticsHook')]
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=10, max_keep_ckpts=1))
