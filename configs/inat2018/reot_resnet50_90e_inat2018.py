# RE-OT on iNaturalist 2018 (8142 classes) with ResNet-50, inheriting the
# pieces of mmpretrain's resnet/resnet50_8xb32_in1k.py (model, schedule, runtime) and replacing data and loss. No
# released config: schedule proportions as for ImageNet-LT (fractions of the
# run), batch 512 (8 GPUs x 64), weight decay 1e-4 as usual for iNat.
_base_ = [
    'mmpretrain::_base_/models/resnet50.py',
    '../_base_/datasets/inat2018.py',
    'mmpretrain::_base_/schedules/imagenet_bs256.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['reot_mm'], allow_failed_imports=False)

model = dict(
    head=dict(num_classes=8142,
              loss=dict(_delete_=True, type='REOTLoss', prior='interpolated',
                        interpolation_gamma=0.74)))
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.2, momentum=0.9, weight_decay=1e-4))
param_scheduler = dict(
    _delete_=True, type='CosineAnnealingLR', T_max=90,
                       by_epoch=True, begin=0, end=90)
train_cfg = dict(by_epoch=True, max_epochs=90, val_interval=5)
auto_scale_lr = dict(base_batch_size=512, enable=False)
custom_hooks = [
    dict(type='ClassStatisticsHook'),
    dict(type='REOTPriorHook', milestones=(0.68, 0.71, 0.82), mode='official'),
]
