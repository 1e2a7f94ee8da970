# SimCLR on CIFAR-10-LT (imbalance factor 100, 12406 images), the contrastive
# setting of RE-OT Table 3 (SimCLR 56.70 linear / 46.99 k-NN there).
# The loss is REOTContrastiveLoss with a uniform prior and the other view as
# positive, i.e. exactly NT-Xent (RE-OT §4.1). The SupCon and RE-OT configs
# inherit this recipe and change only the loss.
#
# Recipe (RE-OT's Appendix H.5 is not in the paper's main text, so the backbone
# and schedule are this project's choice): CIFAR ResNet-18 (mmpretrain
# ResNet_CIFAR, 512-d), projection MLP 512-512-128, τ = 0.1 for every method,
# two SimCLR views (crop 0.2-1, flip, colour jitter 0.4/0.4/0.4/0.1 p=0.8,
# grayscale p=0.2), batch 512 (4 GPUs x 128), upstream SimCLR schedule (LARS,
# cosine, 10 warm-up epochs) with lr 0.3 x 512/256 = 0.6, 500 epochs.
# k-NN monitor (k = 200, T = 0.07) on the non-augmented training set every
# 50 epochs; linear probe: linear-probe_resnet18_100e_cifar10lt-r100.py.
_base_ = [
    '../_base_/datasets/cifar10_lt.py',
    '../_base_/pipelines/simaugment.py',
    'mmpretrain::_base_/schedules/imagenet_lars_coslr_200e.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['reot_mm'], allow_failed_imports=False)

data_preprocessor = dict(type='MultiViewClsDataPreprocessor', num_views=2)
train_pipeline = [
    dict(type='MultiView', num_views=2,
         transforms=[{{_base_.simaugment_cifar}}]),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=128,
    collate_fn=dict(type='default_collate'),
    dataset=dict(imbalance_factor=100, pipeline=train_pipeline))

model = dict(
    type='ContrastiveClassifier',
    backbone=dict(type='ResNet_CIFAR', depth=18),
    neck=dict(type='GlobalAveragePooling'),
    projector=dict(type='ProjectionMLP', in_channels=512, hidden_channels=512,
                   out_channels=128),
    loss=dict(type='REOTContrastiveLoss', temperature=0.1,
              supervision='self', prior='uniform'),
)

val_evaluator = [
    dict(type='KNNAccuracy', k=200, temperature=0.07, many_threshold=100,
         few_threshold=20),
]
test_evaluator = val_evaluator

optim_wrapper = dict(
    optimizer=dict(type='LARS', lr=0.6, momentum=0.9, weight_decay=1e-6),
    paramwise_cfg=dict(custom_keys={
        'bn': dict(decay_mult=0, lars_exclude=True),
        'bias': dict(decay_mult=0, lars_exclude=True),
        'downsample.1': dict(decay_mult=0, lars_exclude=True),
    }))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=True, begin=0, end=10,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=490, by_epoch=True, begin=10,
         end=500),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=500, val_interval=50)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=512, enable=False)

# SyncBuffersHook (mmengine) averages the BN statistics over ranks after each
# epoch and before evaluation, so every rank extracts bank and test features
# with the statistics that the checkpoint holds (before FeatureBankHook).
custom_hooks = [
    dict(type='ClassStatisticsHook'),
    dict(type='SyncBuffersHook'),
    dict(type='FeatureBankHook'),
]
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=50, max_keep_ckpts=3))
