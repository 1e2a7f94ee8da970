# GML (Suh & Seo, ICML 2023) on CIFAR-100-LT (imbalance factor 100), GML
# Table A.1 row "Table 3 (a)": ResNet-32 student, ResNet-56 teacher (train
# gml-teacher_resnet56_200e_cifar100lt-r100.py first), 200 epochs, MLP
# (64, 64, 32), k = 4096, k_m = 2, τ_g = 0.1 (trainable), τ_s = 1/30,
# γ = β = α_kd = 1 (KD with T = 4). Batch 64, SGD 0.05 momentum 0.9, weight
# decay 5e-4 (none on τ_g's θ), lr / 10 at epochs 160 and 180 (Sec. 4.2).
# Views: x_cls, x_q, x_k all AutoAugment (Table A.1 "Autoaug"); mmpretrain
# ships only the ImageNet AutoAugment policies (the paper used the CIFAR
# ones), so these are used after the usual crop and flip.
# Inherits the teacher config: the same data, optimisation and runtime, and
# its model as the frozen teacher, so the teacher checkpoint loads strictly.
_base_ = ['./gml-teacher_resnet56_200e_cifar100lt-r100.py']

num_classes = 100
model = dict(
    _delete_=True,
    type='TeacherStudent',
    student=dict(
        type='GMLClassifier',
        backbone=dict(type='CifarResNet', depth=32, in_channels=3),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='CosineClsHead', num_classes=num_classes,
                  in_channels=64, scale=30.0, topk=(1, ),
                  init_cfg=dict(type='Normal', layer='Linear', std=0.1)),
        query_mlp=dict(type='ProjectionMLP', in_channels=64,
                       hidden_channels=64, out_channels=32),
        key_mlp=dict(type='ProjectionMLP', in_channels=64,
                     hidden_channels=64, out_channels=32),
        queue=dict(type='ClassQueue', size=4096, min_per_class=2),
        loss=dict(type='GMLLoss', tau_s=1.0 / 30, tau_g=0.1,
                  trainable_tau=True, alpha=1.0, cls_weight=1.0,
                  gml_weight=1.0, kd_weight=1.0, kd_temperature=4.0)),
    teacher={{_base_.model}},
    teacher_checkpoint=('work_dirs/gml-teacher_resnet56_200e_cifar100lt-r100/'
                        'epoch_200.pth'))

data_preprocessor = dict(type='MultiViewClsDataPreprocessor', num_views=3)
view = [
    dict(type='RandomCrop', crop_size=32, padding=4),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='AutoAugment', policies='imagenet'),
]
train_pipeline = [
    dict(type='MultiView', num_views=3, transforms=[view]),
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
