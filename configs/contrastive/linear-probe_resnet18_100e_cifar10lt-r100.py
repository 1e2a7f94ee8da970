# Linear probe on CIFAR-10-LT (imbalance factor 100), RE-OT Table 3 "Lin."
# protocol: the ResNet-18 backbone of a contrastive checkpoint, frozen (no
# gradient, batch norm in eval mode), with a linear head trained by
# cross-entropy on the long-tailed training set (crop + flip) for 100
# epochs; evaluated with Accuracy, ShotAccuracy (many > 100 / few < 20) and
# the k-NN accuracy of the same frozen features.
# Point the checkpoint at another run with
#   --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/.../epoch_500.pth
_base_ = [
    '../_base_/datasets/cifar10_lt.py',
    'mmpretrain::_base_/schedules/cifar10_bs128.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['reot_mm'], allow_failed_imports=False)

train_dataloader = dict(dataset=dict(imbalance_factor=100))
model = dict(
    type='LinearProbeClassifier',
    frozen=('backbone', 'neck'),
    backbone=dict(
        type='ResNet_CIFAR', depth=18,
        init_cfg=dict(
            type='Pretrained', prefix='backbone.',
            checkpoint='work_dirs/reot-sup_resnet18_500e_cifar10lt-r100/'
            'epoch_500.pth')),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=512,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
              topk=(1, )),
)

val_evaluator = [
    dict(type='Accuracy', topk=(1, )),
    dict(type='ShotAccuracy', many_threshold=100, few_threshold=20),
    dict(type='KNNAccuracy', k=200, temperature=0.07, many_threshold=100,
         few_threshold=20),
]
test_evaluator = val_evaluator

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=1.0, momentum=0.9, weight_decay=0.0))
param_scheduler = dict(
    _delete_=True, type='CosineAnnealingLR', T_max=100, by_epoch=True,
    begin=0, end=100)
train_cfg = dict(by_epoch=True, max_epochs=100, val_interval=10)
# the batch of mmpretrain's cifar10_bs128 schedule (1 GPU x 128)
auto_scale_lr = dict(base_batch_size=128, enable=False)

custom_hooks = [
    dict(type='ClassStatisticsHook'),
    dict(type='FeatureBankHook'),
]
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=10, max_keep_ckpts=1))
