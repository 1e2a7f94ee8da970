# GML (Suh & Seo, ICML 2023) on iNaturalist 2018, GML Table A.1 row
# "Table 2 (a)": ResNet-50 student, ResNet-152 teacher
# (gml-teacher_resnet152_100e_inat2018.py), 100 epochs, MLP (2048, 2048, 1024),
# k = 65536, k_m = 2, τ_g = 0.1 (trainable), τ_s = 1/30, γ = β = 1, α_kd = 0;
# batch 128, SGD 0.02 with cosine decay, weight decay 2e-4 (Sec. 4.2);
# SimAugment for all three views (Table A.1). The ImageNet-LT GML config
# holds the shared pipeline; data, model sizes and optimisation change here.
_base_ = ['./gml_resnext50_32x4d_90e_imagenetlt.py',
          '../_base_/datasets/inat2018_fields.py']

num_classes = 8142
data_preprocessor = {{_base_.inat2018_preprocessor}}


def resnet(depth):
    return dict(type='ResNet', depth=depth, num_stages=4, out_indices=(3, ),
                style='pytorch')


model = dict(
    student=dict(
        backbone=dict(_delete_=True, **resnet(50)),
        head=dict(num_classes=num_classes),
        queue=dict(size=65536, min_per_class=2),
        loss=dict(tau_g=0.1)),
    teacher=dict(
        backbone=dict(_delete_=True, **resnet(152)),
        head=dict(num_classes=num_classes)),
    teacher_checkpoint='work_dirs/gml-teacher_resnet152_100e_inat2018/epoch_100.pth')

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='MultiView', num_views=3,
         transforms=[{{_base_.simaugment_imagenet}}]),
    dict(type='PackInputs'),
]
# the fields of inat2018_train, spelled out because the pipeline changes too
train_dataloader = dict(dataset=dict(
    type='INat2018', data_root='data/inat2018',
    ann_file='iNaturalist18_train.txt', pipeline=train_pipeline))
val_dataloader = dict(dataset={{_base_.inat2018_val}})
test_dataloader = val_dataloader

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=2e-4))
param_scheduler = dict(
    _delete_=True, type='CosineAnnealingLR', T_max=100, by_epoch=True,
    begin=0, end=100)
train_cfg = dict(by_epoch=True, max_epochs=100, val_interval=5)
