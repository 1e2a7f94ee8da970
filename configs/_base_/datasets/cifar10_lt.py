# CIFAR-10-LT (reot_mm CIFAR10LT): the long-tailed train split of CIFAR-10 with
# imbalance factor 200 (5000 -> 25 images, 11203 in total, as RE-OT); the test
# split is the balanced original. Set imbalance_factor=100 for the other
# common setting (12406 images).
# Inherits the CIFAR-100-LT settings (pipelines, batch, evaluators); the
# CIFAR-10 fields are those of ./cifar10_lt_fields.py. At rho = 200 every
# CIFAR-10 class has >= 25 images, so there is no few-shot group and
# ShotAccuracy reports no 'shot/few' key.
_base_ = ['./cifar100_lt.py', './cifar10_lt_fields.py']

dataset_type = 'CIFAR10LT'
data_preprocessor = {{_base_.cifar10_preprocessor}}
train_dataloader = dict(dataset={{_base_.cifar10_dataset}})
val_dataloader = dict(dataset={{_base_.cifar10_dataset}})
test_dataloader = val_dataloader
