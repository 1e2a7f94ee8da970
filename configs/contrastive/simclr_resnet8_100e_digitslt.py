# SimCLR (NT-Xent) on digits-LT (rho = 60): REOTContrastiveLoss with a uniform
# prior and the other view as the only positive, which is exactly SimCLR's
# loss (RE-OT §4.1: uniform Q gives InfoNCE). Two strong views of every image
# through one ResNet-8 pass, a 64-64-32 projection MLP, k-NN monitor on the
# pooled backbone features (bank: the non-augmented training set).
# 300 iterations, about 20 s of CPU time (2 cores). The SupCon and RE-OT configs inherit this one.
_base_ = [
    '../_base_/datasets/digits_lt_multiview.py',
    '../_base_/schedules/digits_100e.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['reot_mm'], allow_failed_imports=False)

# two strong views (the contrastive views of digits_lt_multiview.py)
data_preprocessor = dict(num_views=2)
train_pipeline = [
    dict(type='MultiView', num_views=2, transforms=[{{_base_.strong_view}}]),
    dict(type='PackInputs'),
]
# 267 = 2 x 128 + 11: the last batch is large enough for BatchNorm, so every
# image is used in every epoch (the base's drop_last would skip 11)
train_dataloader = dict(batch_size=128, drop_last=False,
                        dataset=dict(pipeline=train_pipeline))

model = dict(
    type='ContrastiveClassifier',
    backbone=dict(type='CifarResNet', depth=8, in_channels=1),
    neck=dict(type='GlobalAveragePooling'),
    projector=dict(type='ProjectionMLP', in_channels=64, hidden_channels=64,
                   out_channels=32),
    loss=dict(type='REOTContrastiveLoss', temperature=0.2,
              supervision='self', prior='uniform'),
)

# k-NN on the pooled backbone features, many > 40 / few < 10 training images
# (the digits split of configs/_base_/datasets/digits_lt.py)
val_evaluator = [
    dict(type='KNNAccuracy', k=10, temperature=0.07, many_threshold=40,
         few_threshold=10),
]
test_evaluator = val_evaluator

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.2, momentum=0.9, weight_decay=5e-4,
                   nesterov=True))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=5,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=95, by_epoch=True, begin=5,
         end=100),
]
train_cfg = dict(by_epoch=True, max_epochs=100, val_interval=25)
auto_scale_lr = dict(base_batch_size=128, enable=False)

# SyncBuffersHook (mmengine) averages the BN statistics over ranks after each
# epoch and before evaluation, so every rank extracts bank and test features
# with the statistics that the checkpoint holds (before FeatureBankHook).
custom_hooks = [
    dict(type='ClassStatisticsHook'),
    dict(type='SyncBuffersHook'),
    dict(type='FeatureBankHook'),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', interval=25, max_keep_ckpts=1))
randomness = dict(seed=0, deterministic=False)
