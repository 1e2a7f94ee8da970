# RE-OT on CIFAR-100-LT (imbalance factor 200), ResNet-32, as in the authors'
# code: batch 512, SGD momentum 0.9, weight decay 5e-4,
# 790 epochs; prior r = 0.74·class ratio + 0.26·global batch ratio (Eq. 37);
# λ schedule 'official' with t1/t2/t3 = 620/650/755 and Q^1.03 after t3.
# The learning rate is not given by the paper: 0.2 (= 0.1 per 256 images)
# with a 5-epoch warm-up and cosine decay is this project's choice.
_base_ = [
    '../_base_/models/resnet32_cifar.py',
    '../_base_/datasets/cifar100_lt.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['reot_mm'], allow_failed_imports=False)

train_dataloader = dict(batch_size=128)  # 4 GPUs x 128 = 512
model = dict(
    head=dict(
        num_classes=100,
        loss=dict(_delete_=True, type='REOTLoss', prior='interpolated',
                  interpolation_gamma=0.74, epsilon=1.0)))

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.2, momentum=0.9, weight_decay=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=5,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=785, by_epoch=True, begin=5, end=790),
]
train_cfg = dict(by_epoch=True, max_epochs=790, val_interval=10)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=512, enable=False)

custom_hooks = [
    dict(type='ClassStatisticsHook'),
    dict(type='REOTPriorHook', milestones=(620, 650, 755), mode='official'),
]
