# RE-OT on ImageNet-LT with ResNeXt-50 32x4d, inheriting the pieces of
# mmpretrain's resnext/resnext50-32x4d_8xb32_in1k.py (model, SGD schedule, runtime) and replacing the data with
# the ImageNet-LT lists and the head loss with REOTLoss. No released config
# exists: the milestones keep the ResNet-10 run's proportions (75/78/90 of 110
# epochs -> 0.68/0.71/0.82 of the run); batch 512 (8 GPUs x 64).
_base_ = [
    'mmpretrain::_base_/models/resnext50_32x4d.py',
    '../_base_/datasets/imagenet_lt.py',
    'mmpretrain::_base_/schedules/imagenet_bs256.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['reot_mm'], allow_failed_imports=False)

model = dict(
    head=dict(loss=dict(_delete_=True, type='REOTLoss', prior='interpolated',
                        interpolation_gamma=0.74)))
# upstream: lr 0.1 for 256 images, steps at 30/60/90 of 100 epochs
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.2, momentum=0.9, weight_decay=5e-4))
param_scheduler = dict(
    _delete_=True, type='CosineAnnealingLR', T_max=90,
                       by_epoch=True, begin=0, end=90)
train_cfg = dict(by_epoch=True, max_epochs=90, val_interval=5)
auto_scale_lr = dict(base_batch_size=512, enable=False)
custom_hooks = [
    dict(type='ClassStatisticsHook'),
    dict(type='REOTPriorHook', milestones=(0.68, 0.71, 0.82), mode='official'),
]
