# CIFAR-10-LT (reot_mm CIFAR10LT): the long-tailed train split of CIFAR-10 with
# imbalance factor 200 (5000 -> 25 images, 11203 in total, as RE-OT); the test
# split is the balanced original. Set imbalance_factor=100 for the other
# common setting (12406 images).
# Inherits the CIFAR-100-LT settings (pipelines, batch, evaluators). At
# rho = 200 every CIFAR-10 class has >= 25 images, so there is no few-shot
# group and ShotAccuracy reports no 'shot/few' key.
_base_ = ['./cifar100_lt.py']

dataset_type = 'CIFAR10LT'
data_preprocessor = dict(
    num_classes=10,
    # RGB format normalization parameters (mmpretrain's CIFAR-10 values)
    mean=[125.307, 122.961, 113.8575],
    std=[51.5865, 50.847, 51.255],
)
train_dataloader = dict(dataset=dict(type=dataset_type, data_root='data/cifar10'))
val_dataloader = dict(dataset=dict(type=dataset_type, data_root='data/cifar10'))
test_dataloader = val_dataloader
