# iNaturalist 2018 (reot_mm INat2018): 8142 classes, 437.5k training images
# (1000 -> 2 per class), balanced val (24.4k, 3 per class) used as test set.
# Put the images and the lists (as shipped with the decoupling / BCL code)
# under data/inat2018:
#   data/inat2018/iNaturalist18_{train,val}.txt, data/inat2018/train_val2018/
# Written in full, with the 224 pipelines of mmpretrain's imagenet_bs32.py.

dataset_type = 'INat2018'
data_preprocessor = dict(
    num_classes=8142,
    # iNat 2018 RGB statistics used by the BCL / PaCo code
    # ((0.466, 0.471, 0.380), (0.195, 0.194, 0.192)) scaled to 0..255
    mean=[118.83, 120.105, 96.9],
    std=[49.725, 49.47, 48.96],
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
        data_root='data/inat2018',
        ann_file='iNaturalist18_train.txt',
        data_prefix='',
        pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)

val_dataloader = dict(
    batch_size=64,
    num_workers=5,
    dataset=dict(
        type=dataset_type,
        data_root='data/inat2018',
        ann_file='iNaturalist18_val.txt',
        data_prefix='',
        pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
# Many > 100 / few < 20 training images (the split iNat papers report).
# Training counts come from ClassStatisticsHook via the MessageHub.
val_evaluator = [
    dict(type='Accuracy', topk=(1, 5)),
    dict(type='ShotAccuracy', many_threshold=100, few_threshold=20),
]

test_dataloader = val_dataloader
test_evaluator = val_evaluator
