# ImageNet-LT (Liu et al. 2019; reot_mm ImageNetLT): 1000 classes, 115.8k
# training images (1280 -> 5 per class), balanced val (20k) and test (50k)
# lists. Put the ImageNet images and the lists under data/imagenet:
#   data/imagenet/ImageNet_LT_{train,val,test}.txt, data/imagenet/{train,val}/
# (where the lists come from and the folder layout: docs/data_preparation.md,
# section "ImageNet-LT").
# Written in full: the pipelines are those of mmpretrain's imagenet_bs32.py,
# but its dataset dicts carry ImageNet's `split` argument.

dataset_type = 'ImageNetLT'
data_preprocessor = dict(
    num_classes=1000,
    # RGB format normalization parameters
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    # convert image from BGR to RGB
    to_rgb=True,
)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=256, edge='short'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]

# 64 per GPU: 8 GPUs give RE-OT's batch of 512.
train_dataloader = dict(
    batch_size=64,
    num_workers=5,
    dataset=dict(
        type=dataset_type,
        data_root='data/imagenet',
        ann_file='ImageNet_LT_train.txt',
        data_prefix='',
        pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)

val_dataloader = dict(
    batch_size=64,
    num_workers=5,
    dataset=dict(
        type=dataset_type,
        data_root='data/imagenet',
        ann_file='ImageNet_LT_val.txt',
        data_prefix='',
        pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
# Many > 100 / few < 20 training images (OLTR split: 385 / 479 / 136 classes).
# Training counts come from ClassStatisticsHook via the MessageHub.
val_evaluator = [
    dict(type='Accuracy', topk=(1, 5)),
    dict(type='ShotAccuracy', many_threshold=100, few_threshold=20),
]

# Papers report the 50k test list.
test_dataloader = dict(
    batch_size=64,
    num_workers=5,
    dataset=dict(
        type=dataset_type,
        data_root='data/imagenet',
        ann_file='ImageNet_LT_test.txt',
        data_prefix='',
        pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
test_evaluator = val_evaluator
