# Linear probe on digits-LT (RE-OT Table 3 "Lin." protocol): the ResNet-8
# backbone of a contrastive checkpoint, frozen (no gradient, batch norm in
# eval mode), with a linear head trained by cross-entropy on the
# non-augmented long-tailed training set for 30 epochs. Reports Accuracy and
# ShotAccuracy (many/medium/few) of the probe and k-NN accuracy of the same
# frozen features (KNNAccuracy with the bank from FeatureBankHook).
#
# The checkpoint defaults to the RE-OT (supervised) pretraining run; point it
# at another run with
#   --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/.../epoch_100.pth
_base_ = [
    '../_base_/models/resnet8_digits.py',
    '../_base_/datasets/digits_lt.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['reot_mm'], allow_failed_imports=False)

model = dict(
    type='LinearProbeClassifier',
    frozen=('backbone', 'neck'),
    backbone=dict(init_cfg=dict(
        type='Pretrained', prefix='backbone.',
        checkpoint='work_dirs/reot-sup_resnet8_100e_digitslt/epoch_100.pth')))

val_evaluator = [
    dict(type='Accuracy', topk=(1, )),
    dict(type='ShotAccuracy', many_threshold=40, few_threshold=10),
    dict(type='KNNAccuracy', k=10, temperature=0.07, many_threshold=40,
         few_threshold=10),
]
test_evaluator = val_evaluator

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.5, momentum=0.9, weight_decay=0.0))
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=30, by_epoch=True, begin=0, end=30),
]
train_cfg = dict(by_epoch=True, max_epochs=30, val_interval=30)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=64, enable=False)

custom_hooks = [
    dict(type='ClassStatisticsHook'),
    dict(type='FeatureBankHook'),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', interval=30, max_keep_ckpts=1))
randomness = dict(seed=0, deterministic=False)
