# Long-tailed 8x8 digits (reot_mm DigitsLT): built in memory from scikit-learn's
# load_digits(), so it needs no download. Train: rho = 60 from 120 images
# (120, 76, 48, 30, 19, 12, 7, 4, 3, 2 per class); test: 50 per class.
# Written in full (no upstream base config holds a grayscale in-memory set).

dataset_type = 'DigitsLT'
data_preprocessor = dict(
    num_classes=10,
    # mean / std of the 0..255-scaled digits pixels (0..16 * 255 / 16)
    mean=[77.84],
    std=[95.89],
    # one channel: nothing to swap
    to_rgb=False,
)

train_pipeline = [dict(type='PackInputs')]
test_pipeline = [dict(type='PackInputs')]

train_dataloader = dict(
    batch_size=64,
    # 321 training images = 5 x 64 + 1: without drop_last every epoch ends
    # with a batch of one image, which breaks any BatchNorm that sees a 1x1
    # map (mmpretrain's ResNet on 8x8 inputs) or a flat feature (projection
    # MLPs). Dropping it leaves out one random image per epoch.
    drop_last=True,
    # in-memory data: worker processes would only add start-up time
    num_workers=0,
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type=dataset_type,
        split='train',
        imbalance_factor=60,
        max_per_class=120,
        pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)

val_dataloader = dict(
    batch_size=64,
    num_workers=0,
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type=dataset_type,
        split='test',
        test_per_class=50,
        pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
# The paper's many > 100 / few < 20 would put 9 of 10 classes in medium/few
# with at most 120 training images; scaled down: many > 40 (3 classes),
# medium 10..40 (3 classes), few < 10 (4 classes). Training counts come from
# ClassStatisticsHook via the MessageHub (or set class_counts=[...] here).
val_evaluator = [
    dict(type='Accuracy', topk=(1, )),
    dict(type='ShotAccuracy', many_threshold=40, few_threshold=10),
]

test_dataloader = val_dataloader
test_evaluator = val_evaluator
