# BCL on iNaturalist 2018 (8142 classes) with ResNet-50 (BCL Sec. 4.2,
# Table 5): the ImageNet-LT recipe (λ 1.0, μ 0.35, τ 0.07, cosine classifier,
# MLP output 1024, RandAug / SimAug views, batch 256, cosine schedule) with
# lr 0.2, weight decay 1e-4 and 100 epochs. The data fields are those of
# ../_base_/datasets/inat2018.py (../_base_/datasets/inat2018_fields.py); the
# backbone is mmpretrain's ResNet-50 (_base_/models/resnet50.py).
_base_ = ['./bcl_resnext50_32x4d_90e_imagenetlt.py',
          '../_base_/datasets/inat2018_fields.py']

dataset_type = 'INat2018'
data_preprocessor = {{_base_.inat2018_preprocessor}}
train_dataloader = dict(dataset={{_base_.inat2018_train}})
val_dataloader = dict(dataset={{_base_.inat2018_val}})
test_dataloader = val_dataloader

model = dict(
    backbone=dict(_delete_=True, type='ResNet', depth=50, num_stages=4,
                  out_indices=(3, ), style='pytorch'),
    head=dict(num_classes=8142))
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.2, momentum=0.9, weight_decay=1e-4))
param_scheduler = dict(T_max=100, end=100)
train_cfg = dict(max_epochs=100)
