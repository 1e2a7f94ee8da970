# RE-OT on CIFAR-10-LT (imbalance factor 200), ResNet-32, as in the authors'
# code: the CIFAR-100-LT recipe (batch 512, SGD, warm-up and cosine decay,
# ./reot_resnet32_790e_cifar100lt-r200.py) with CIFAR-10 data
# (../_base_/datasets/cifar10_lt_fields.py), γ = 0.7593, 682 epochs and
# milestones t1/t2/t3 = 500/462/650. Their t2 is smaller than t1, which the
# schedule rejects unless told otherwise: on_unordered='warn' reproduces their
# behaviour (a warning, then a hard switch from the uniform prior to r after
# epoch 500).
_base_ = ['./reot_resnet32_790e_cifar100lt-r200.py',
          '../_base_/datasets/cifar10_lt_fields.py']

dataset_type = 'CIFAR10LT'
data_preprocessor = {{_base_.cifar10_preprocessor}}
train_dataloader = dict(dataset={{_base_.cifar10_dataset}})
val_dataloader = dict(dataset={{_base_.cifar10_dataset}})
test_dataloader = val_dataloader

model = dict(head=dict(num_classes=10,
                       loss=dict(interpolation_gamma=0.7593)))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=5,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=677, by_epoch=True, begin=5, end=682),
]
train_cfg = dict(max_epochs=682)
custom_hooks = [
    dict(type='ClassStatisticsHook'),
    dict(type='REOTPriorHook', milestones=(500, 462, 650), mode='official',
         on_unordered='warn'),
]
