# BCL on CIFAR-10-LT, imbalance factor 100: the CIFAR-100-LT recipe with the
# CIFAR-10 data (../_base_/datasets/cifar10_lt_fields.py).
_base_ = ['./bcl_resnet32_200e_cifar100lt-r100.py',
          '../_base_/datasets/cifar10_lt_fields.py']

dataset_type = 'CIFAR10LT'
data_preprocessor = {{_base_.cifar10_preprocessor}}
train_dataloader = dict(dataset={{_base_.cifar10_dataset}})
val_dataloader = dict(dataset={{_base_.cifar10_dataset}})
test_dataloader = val_dataloader
model = dict(head=dict(num_classes=10))
