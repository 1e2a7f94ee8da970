# Places-LT (Liu et al. 2019; reot_mm PlacesLT): 365 classes, 62.5k training
# images (4980 -> 5 per class), balanced val (7.3k) and test (36.5k) lists.
# Put the Places-365 images and the lists under data/places365:
#   data/places365/Places_LT_{train,val,test}.txt
# Written in full, with the 224 pipelines of mmpretrain's imagenet_bs32.py.

dataset_type = 'PlacesLT'
data_preprocessor = dict(
    num_classes=365,
    # RGB format normalization parameters (ImageNet statistics, as OLTR)
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

train_dataloader = dict(
    batch_size=64,
    num_workers=5,
    dataset=dict(
        type=dataset_type,
        data_root='data/places365',
        ann_file='Places_LT_train.txt',
        data_prefix='',
        pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)

val_dataloader = dict(
    batch_size=64,
    num_workers=5,
    dataset=dict(
        type=dataset_type,
        data_root='data/places365',
        ann_file='Places_LT_val.txt',
        data_prefix='',
        pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
# Many > 100 / few < 20 training images (the OLTR split). Training counts come
# from ClassStatisticsHook via the MessageHub.
val_evaluator = [
    dict(type='Accuracy', topk=(1, 5)),
    dict(type='ShotAccuracy', many_threshold=100, few_threshold=20),
]

test_dataloader = dict(
    batch_size=64,
    num_workers=5,
    dataset=dict(
        type=dataset_type,
        data_root='data/places365',
        ann_file='Places_LT_test.txt',
        data_prefix='',
        pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
test_evaluator = val_evaluator
