# BCL (Zhu et al., CVPR 2022) on CIFAR-100-LT, imbalance factor 100, ResNet-32: the paper's
# CIFAR recipe (BCL Sec. 4.2): λ 2.0, μ 0.6, τ 0.1, projection MLP 64 -> 512 ->
# 128, batch 256, SGD momentum 0.9, weight decay 5e-4, 200 epochs, learning
# rate warmed up to 0.15 over 5 epochs and divided by 10 at epochs 160 and 180.
# Views (BCL Sec. 4.2): v1 = AutoAugment + Cutout for the classifier, v2 / v3 =
# SimAugment (SimCLR-style crop, flip, colour jitter, grayscale). mmpretrain
# ships only the ImageNet AutoAugment policy set (the paper used the CIFAR-10
# policies of [8]); swap in your own list of policies for an exact match.
# Cosine classifier (scale 30), as in the authors' code.
_base_ = [
    '../_base_/models/resnet32_cifar.py',
    '../_base_/datasets/cifar100_lt.py',
    '../_base_/pipelines/simaugment.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['reot_mm'], allow_failed_imports=False)

model = dict(
    type='BCLClassifier',
    num_views=3,
    head=dict(_delete_=True, type='CosineClsHead', num_classes=100,
              in_channels=64, scale=30.0, topk=(1, )),
    projector=dict(type='ProjectionMLP', in_channels=64, hidden_channels=512,
                   out_channels=128),
    loss=dict(type='BCLLoss', temperature=0.1, lc_weight=2.0, bcl_weight=0.6),
)
data_preprocessor = dict(type='MultiViewClsDataPreprocessor', num_views=3)

classifier_view = [
    dict(type='RandomCrop', crop_size=32, padding=4),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='AutoAugment', policies='imagenet'),
    dict(type='Cutout', shape=16, pad_val=0, prob=1.0),
]
train_pipeline = [
    dict(type='MultiView', num_views=[1, 2],
         transforms=[classifier_view, {{_base_.simaugment_cifar}}]),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=64,  # 4 GPUs x 64 = 256; BCLLoss all-gathers the global batch
    dataset=dict(imbalance_factor=100, pipeline=train_pipeline))

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.15, momentum=0.9, weight_decay=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=5,
         convert_to_iter_based=True),
    dict(type='MultiStepLR', by_epoch=True, milestones=[160, 180], gamma=0.1),
]
train_cfg = dict(by_epoch=True, max_epochs=200, val_interval=10)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=256, enable=False)

custom_hooks = [dict(type='ClassStatisticsHook')]
