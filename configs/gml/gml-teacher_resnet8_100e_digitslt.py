# GML teacher on digits-LT (GML Sec. 3.3 "Training Procedure"): ResNet-8 with
# a cosine classifier trained by the logit-adjusted cosine cross-entropy only,
# L_cls = CE(cos/τ_s + log p(c), y) of GML Eq. 7 with τ_s = 1/30. That is
# REOTLoss with the cosine cost, scale 1/τ_s = 30 and the fixed class-ratio
# prior (Balanced Softmax on cosines, GML Eq. 9). The student config
# gml_resnet8_100e_digitslt.py loads this run's last checkpoint:
#   python tools/train.py configs/gml/gml-teacher_resnet8_100e_digitslt.py
# writes work_dirs/gml-teacher_resnet8_100e_digitslt/epoch_100.pth.
# The teacher sees the weak view of the multi-view pipeline (small affine
# jitter), the classifier view of the student.
# Cosine-classifier weights start at norm ~0.8 (std 0.1; CosineClsHead's
# default std 0.01 gives ~0.08) and get no weight decay: the gradient on a
# normalised weight scales with 1/|w|, and a shrinking |w| made the head
# unstable (seed 0 of the previous 321-image split: balanced accuracy rose
# with this change).
_base_ = ['../demo/ce_resnet8_100e_digitslt.py']

model = dict(
    head=dict(
        _delete_=True,
        type='CosineClsHead',
        num_classes=10,
        in_channels=64,
        scale=30.0,
        topk=(1, ),
        init_cfg=dict(type='Normal', layer='Linear', std=0.1),
        loss=dict(type='REOTLoss', cost='cosine', scale=30.0,
                  prior='class_ratio', prior_weight=1.0)))
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'head.fc': dict(decay_mult=0.0)}))

train_dataloader = dict(dataset=dict(pipeline=[
    dict(type='RandomSmallAffine', max_rotate=5, max_translate=0.5,
         scale_range=(0.95, 1.05)),
    dict(type='PackInputs'),
]))
