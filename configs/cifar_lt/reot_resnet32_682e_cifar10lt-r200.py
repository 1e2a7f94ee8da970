# RE-OT on CIFAR-10-LT (imbalance factor 200), ResNet-32, as in the authors'
# code: γ = 0.7593, 682 epochs, batch 512, milestones t1/t2/t3 = 500/462/650.
# Their t2 is smaller than t1, which the schedule rejects unless told
# otherwise: on_unordered='warn' reproduces their behaviour (a warning, then a
# hard switch from the uniform prior to r after epoch 500). Learning rate as in
# the CIFAR-100-LT config (this project's choice).
_base_ = [
    '../_base_/models/resnet32_cifar.py',
    '../_base_/datasets/cifar10_lt.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['reot_mm'], allow_failed_imports=False)

train_dataloader = dict(batch_size=128)  # 4 GPUs x 128 = 512
model = dict(
    head=dict(
        num_classes=10,
        loss=dict(_delete_=True, type='REOTLoss', prior='interpolated',
                  interpolation_gamma=0.7593, epsilon=1.0)))

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.2, momentum=0.9, weight_decay=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=5,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=677, by_epoch=True, begin=5, end=682),
]
train_cfg = dict(by_epoch=True, max_epochs=682, val_interval=10)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=512)

custom_hooks = [
    dict(type='ClassStatisticsHook'),
    dict(type='REOTPriorHook', milestones=(500, 462, 650), mode='official',
         on_unordered='warn'),
]
