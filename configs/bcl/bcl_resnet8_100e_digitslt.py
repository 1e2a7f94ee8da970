# BCL (Zhu et al., CVPR 2022) on digits-LT (rho = 60), same schedule and protocol as
# configs/demo/reot_resnet8_100e_digitslt.py (100 epochs, batch 64, SGD cosine),
# with the 3-view pipeline of _base_/datasets/digits_lt_multiview.py:
# view 0 -> cosine classifier (scale 10) with logit compensation
# (Eq. 10), views 1-2 (strong aug) -> projection MLP -> balanced contrastive
# loss (Eq. 9) with prototypes g_c(w_j) from the classifier weights.
# L = λ·L_LC + μ·L_BCL (Eq. 11) with λ 1, μ 0.35 and the CIFAR recipe's τ 0.1;
# the MLP is d -> d -> 128 (d = 64 for ResNet-8, as ResNet-32's 64 -> 512 -> 128
# keeps the 128-d output).
# Scale and weights chosen on the val split (benchmarks/digits_select_hparams.py,
# seeds 0-1, balanced val accuracy; docs/results/digits_hparams.md): scale 10,
# λ 1, μ 0.35: 85.5; scale 10, λ 2, μ 0.6 (the CIFAR recipe, shipped before):
# 85.0; the paper's scale 30, λ 2, μ 0.6: 82.0. The first two differ by one val
# image; the rule (highest mean) takes λ 1, μ 0.35.
# The earlier notes below were measured on the test split of the previous
# 321-image split (before the val split existed) and are kept as history, not
# as the basis of the choice.
# Cosine scale 10 instead of the paper's 30: tried on seed 0 (balanced
# accuracy, 100 epochs, before the schedule clipped gradients): scale 30 61.2
# (LC alone 61.4), scale 15 72.0, scale 10 89.2; a linear head gave 80.2
# (λ 2, μ 0.6) and 84.2 (λ 1, μ 0.35). With the clipping, seeds 0-4: scale 30
# 87.08 ± 1.7, scale 10 90.52 ± 1.7. View 0 is left un-augmented here (the
# base file's weak view is a sub-pixel bilinear affine, i.e. a blur of the 8x8
# digits that the test images never have): seeds 0-4 gave 81.4 ± 5.6 with it
# and 82.6 ± 1.1 without (before the clipping).
_base_ = [
    '../_base_/models/resnet8_digits.py',
    '../_base_/datasets/digits_lt_multiview.py',
    '../_base_/schedules/digits_100e.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['reot_mm'], allow_failed_imports=False)

model = dict(
    type='BCLClassifier',
    num_views=3,
    head=dict(_delete_=True, type='CosineClsHead', num_classes=10,
              in_channels=64, scale=10.0, topk=(1, )),
    projector=dict(type='ProjectionMLP', in_channels=64, hidden_channels=64,
                   out_channels=128),
    loss=dict(type='BCLLoss', temperature=0.1, lc_weight=1.0, bcl_weight=0.35,
              num_classes=10),
)
train_dataloader = dict(dataset=dict(pipeline=[
    dict(type='MultiView', num_views=[1, 2],
         transforms=[[], {{_base_.strong_view}}]),
    dict(type='PackInputs'),
]))
# class counts for Eq. 10's log π (and ShotAccuracy), from the training set
custom_hooks = [dict(type='ClassStatisticsHook')]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', interval=25, max_keep_ckpts=1))
randomness = dict(seed=0, deterministic=False)
