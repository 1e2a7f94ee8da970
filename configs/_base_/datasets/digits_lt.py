# Long-tailed 8x8 digits (reot_mm DigitsLT): built in memory from scikit-learn's
# load_digits(), so it needs no download. Train: rho = 60 from 100 images
# (100, 63, 40, 25, 16, 10, 6, 4, 2, 1 per class, 267 images); val: 20 per
# class (balanced, disjoint from train and test; the runs' periodic validation
# and every hyper-parameter choice use it); test: 50 per class, evaluated by
# tools/test.py (the numbers the benchmarks report).
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
    # Without drop_last an epoch can end with a tiny batch (with the 321
    # training images of the earlier 120-image head it was a batch of one),
    # which breaks any BatchNorm that sees a 1x1 map (mmpretrain's ResNet on
    # 8x8 inputs) or a flat feature (projection MLPs), and gives noisy
    # BatchNorm statistics otherwise. 267 = 4 x 64 + 11: dropping the last
    # batch leaves out 11 random images per epoch.
    drop_last=True,
    # in-memory data: worker processes would only add start-up time
    num_workers=0,
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type=dataset_type,
        split='train',
        imbalance_factor=60,
        max_per_class=100,
        pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)

val_dataloader = dict(
    batch_size=64,
    num_workers=0,
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type=dataset_type,
        split='val',
        val_per_class=20,
        pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
# The paper's many > 100 / few < 20 would put 9 of 10 classes in medium/few
# with at most 100 training images; scaled down: many > 40 (2 classes),
# medium 10..40 (4 classes), few < 10 (4 classes). Training counts come from
# ClassStatisticsHook via the MessageHub (or set class_counts=[...] here).
val_evaluator = [
    dict(type='Accuracy', topk=(1, )),
    dict(type='ShotAccuracy', many_threshold=40, few_threshold=10),
]

# test_distribution='forward-R' / 'backward-R' gives SADE's shifted test sets
test_dataloader = dict(
    val_dataloader,
    dataset=dict(
        type=dataset_type,
        split='test',
        test_per_class=50,
        test_distribution='uniform',
        pipeline=test_pipeline))
test_evaluator = val_evaluator
