# What a CIFAR-100-LT config changes to train on CIFAR-10-LT: the data
# preprocessor's class count and normalisation (mmpretrain's CIFAR-10 values)
# and the dataset type and root. Variables only, so a CIFAR-10 config can list
# this file next to the CIFAR-100 config it inherits:
#   _base_ = ['./bcl_resnet32_200e_cifar100lt-r100.py',
#             '../_base_/datasets/cifar10_lt_fields.py']
#   data_preprocessor = {{_base_.cifar10_preprocessor}}
#   train_dataloader = dict(dataset={{_base_.cifar10_dataset}})
# (values merge into the inherited dicts; the head's num_classes stays the
# config's business).
cifar10_preprocessor = dict(
    num_classes=10,
    # RGB format normalization parameters (mmpretrain's CIFAR-10 values)
    mean=[125.307, 122.961, 113.8575],
    std=[51.5865, 50.847, 51.255],
)
# data_root holds cifar-10-batches-py/ (docs/data_preparation.md, section
# "CIFAR-10-LT and CIFAR-100-LT")
cifar10_dataset = dict(type='CIFAR10LT', data_root='data/cifar10')
