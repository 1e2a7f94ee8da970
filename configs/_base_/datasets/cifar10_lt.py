# CIFAR-10-LT (reot_mm CIFAR10LT): the long-tailed train split of CIFAR-10 with
# imbalance factor 200 (5000 -> 25 images, 11203 in total, as RE-OT); the test
# split is the balanced original. Set imbalance_factor=100 for the other
# common setting (12406 images).
# Written in full, following mmpretrain's cifar10_bs16.py, so that the dataset
# type and the evaluators need no _delete_ overrides.

dataset_type = 'CIFAR10LT'
data_preprocessor = dict(
    num_classes=10,
    # RGB format normalization parameters (mmpretrain's CIFAR-10 values)
    mean=[125.307, 122.961, 113.8575],
    std=[51.5865, 50.847, 51.255],
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
        data_root='data/cifar10',
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
        data_root='data/cifar10',
        split='test',
        pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
# Many > 100 / few < 20 training images (the RE-OT / OLTR split). At rho = 200
# every CIFAR-10 class has >= 25 images, so there is no few-shot group and
# ShotAccuracy reports no 'shot/few' key. Training counts come from
# ClassStatisticsHook via the MessageHub.
val_evaluator = [
    dict(type='Accuracy', topk=(1, )),
    dict(type='ShotAccuracy', many_threshold=100, few_threshold=20),
]

test_dataloader = val_dataloader
test_evaluator = val_evaluator
