# GML (Suh & Seo, ICML 2023) on ImageNet-LT, GML Table A.1 row "Table 1 (a)"
# and the authors' code: ResNeXt-50 32x4d student, ResNeXt-101 32x4d
# teacher (gml-teacher_resnext101_32x4d_90e_imagenetlt.py), 90 epochs,
# MLP (2048, 2048, 1024), k = 16384, τ_g = 0.07 (trainable), τ_s = 1/30,
# γ = β = 1, α_kd = 0; batch 128, SGD 0.05 momentum 0.9, weight decay 5e-4
# (none on τ_g's θ), cosine decay (Sec. 4.2).
# k_m = 3 as in the authors' code (the paper's text and Table A.1 say 2).
# Views: x_cls RandAugment (Table A.1 "Randaug"), x_q / x_k SimAugment
# (SimCLR crop, flip, colour jitter 0.4/0.4/0.4/0.1 w.p. 0.8, grayscale w.p. 0.2;
# negative hue shifts work through reot_mm's compat fix of mmcv.adjust_hue).
# The student's backbone is mmpretrain::_base_/models/resnext50_32x4d.py's.
# Inherits the teacher config: the same data, optimisation and runtime, and
# its model as the frozen teacher, so the teacher checkpoint loads strictly.
_base_ = ['./gml-teacher_resnext101_32x4d_90e_imagenetlt.py',
          '../_base_/pipelines/simaugment.py']

num_classes = 1000
model = dict(
    _delete_=True,
    type='TeacherStudent',
    student=dict(
        type='GMLClassifier',
        backbone=dict(type='ResNeXt', depth=50, num_stages=4,
                      out_indices=(3, ), groups=32, width_per_group=4,
                      style='pytorch'),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='CosineClsHead', num_classes=num_classes,
                  in_channels=2048, scale=30.0, topk=(1, 5),
                  init_cfg=dict(type='Normal', layer='Linear', std=0.02)),
        query_mlp=dict(type='ProjectionMLP', in_channels=2048,
                       hidden_channels=2048, out_channels=1024),
        key_mlp=dict(type='ProjectionMLP', in_channels=2048,
                     hidden_channels=2048, out_channels=1024),
        queue=dict(type='ClassQueue', size=16384, min_per_class=3),
        loss=dict(type='GMLLoss', tau_s=1.0 / 30, tau_g=0.07,
                  trainable_tau=True, alpha=1.0, cls_weight=1.0,
                  gml_weight=1.0, kd_weight=0.0)),
    teacher={{_base_.model}},
    teacher_checkpoint=('work_dirs/gml-teacher_resnext101_32x4d_90e_imagenetlt/'
                        'epoch_90.pth'))

data_preprocessor = dict(type='MultiViewClsDataPreprocessor', num_views=3)
bgr_mean = [103.53, 116.28, 123.675]
classifier_view = [
    dict(type='RandomResizedCrop', scale=224, backend='pillow',
         interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandAugment', policies='timm_increasing', num_policies=2,
         total_level=10, magnitude_level=9, magnitude_std=0.5,
         hparams=dict(pad_val=[round(x) for x in bgr_mean],
                      interpolation='bicubic')),
]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='MultiView', num_views=[1, 2],
         transforms=[classifier_view, {{_base_.simaugment_imagenet}}]),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    drop_last=True,  # BN of g_q needs > 1 query
    dataset=dict(pipeline=train_pipeline))

# θ of τ_g = exp(θ) without weight decay (GML Sec. 3.3), added to the
# teacher's cosine weights without decay
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'log_tau_g': dict(decay_mult=0.0)}))
custom_hooks = [
    dict(type='ClassStatisticsHook'),
    dict(type='GMLQueueHook', prefill='teacher', many_threshold=100,
         few_threshold=20),
]
