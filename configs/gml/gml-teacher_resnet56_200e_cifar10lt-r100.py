# GML teacher for CIFAR-10-LT (imbalance factor 100): the CIFAR-100-LT teacher
# recipe with CIFAR-10-LT data (../_base_/datasets/cifar10_lt_fields.py).
# gml_resnet32_200e_cifar10lt-r100.py loads this run's epoch_200.pth.
_base_ = ['./gml-teacher_resnet56_200e_cifar100lt-r100.py',
          '../_base_/datasets/cifar10_lt_fields.py']

data_preprocessor = {{_base_.cifar10_preprocessor}}
model = dict(head=dict(num_classes=10))
train_dataloader = dict(dataset={{_base_.cifar10_dataset}})
val_dataloader = dict(dataset={{_base_.cifar10_dataset}})
test_dataloader = val_dataloader
