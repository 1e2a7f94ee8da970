# RE-OT on ImageNet-LT with ResNet-10 (as in the authors' code):
# batch 512 (8 GPUs x 64), SGD momentum 0.9, weight decay 5e-4, 110 epochs,
# λ 'official' with t1/t2/t3 = 75/78/90, r from Eq. 37 with γ = 0.74.
# Learning rate 0.2 with cosine decay is this project's choice (not released).
_base_ = [
    '../_base_/models/resnet10_imagenet.py',
    '../_base_/datasets/imagenet_lt.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['reot_mm'], allow_failed_imports=False)

model = dict(
    head=dict(loss=dict(_delete_=True, type='REOTLoss', prior='interpolated',
                        interpolation_gamma=0.74)))
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.2, momentum=0.9, weight_decay=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=5,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=105, by_epoch=True, begin=5, end=110),
]
train_cfg = dict(by_epoch=True, max_epochs=110, val_interval=5)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=512, enable=False)
custom_hooks = [
    dict(type='ClassStatisticsHook'),
    dict(type='REOTPriorHook', milestones=(75, 78, 90), mode='official'),
]
