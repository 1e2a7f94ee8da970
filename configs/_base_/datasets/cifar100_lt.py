# CIFAR-100-LT (reot_mm CIFAR100LT): the long-tailed train split of CIFAR-100
# with imbalance factor 200 (500 -> 2 images, 9502 in total, as RE-OT); the test
# split is the balanced original. Set imbalance_factor=100 for the other
# common setting (10847 images).
# data_root holds cifar-100-python/ (mmpretrain downloads it on the first run;
# offline: docs/data_preparation.md, section "CIFAR-10-LT and CIFAR-100-LT").
# Written in full, following mmpretrain's cifar100_bs16.py, so that the dataset
# type and the evaluators need no _delete_ overrides.

dataset_type = 'CIFAR100LT'
data_preprocessor = dict(
    num_classes=100,
    # RGB format normalization parameters (mmpretrain's CIFAR-100 values)
    mean=[129.304, 124.070, 112.434],
    std=[68.170, 65.392, 70.418],
    # loaded images are already RGB format
    to_rgb=False)

train_pipeline = [
    dict(type='RandomCrop', crop_size=32, padding=4),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]

test_pipeline = [
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=128,
    num_workers=2,
    dataset=dict(
        type=dataset_type,
        data_root='data/cifar100',
        split='train',
        imbalance_factor=200,
        seed=0,
        pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)

val_dataloader = dict(
    batch_size=128,
    num_workers=2,
    dataset=dict(
        type=dataset_type,
        data_root='data/cifar100',
        split='test',
        pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
# Many > 100 / few < 20 training images (the RE-OT / OLTR split): 30 / 31 / 39
# classes at rho = 200, 35 / 35 / 30 at rho = 100. Training counts come from
# ClassStatisticsHook via the MessageHub.
val_evaluator = [
    dict(type='Accuracy', topk=(1, )),
    dict(type='ShotAccuracy', many_threshold=100, few_threshold=20),
]

test_dataloader = val_dataloader
test_evaluator = val_evaluator
