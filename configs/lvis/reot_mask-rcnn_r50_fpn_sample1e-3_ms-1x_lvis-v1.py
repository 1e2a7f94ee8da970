# Mask R-CNN R-50-FPN on LVIS v1 with repeat-factor sampling (RFS, t = 1e-3),
# multi-scale 1x schedule: the upstream config with the box head's
# classification loss replaced by the inverse RE-OT loss (RE-OT Eq. 16) and
# its epoch-varying prior Q = (1 - λ(t))·Uniform + λ(t)·r (Eq. 15), r the
# per-class instance ratio of the training annotations (Eq. 35).
#
# * Background: the prior re-balances the 1203 foreground classes among
#   themselves and leaves the background logit as plain CE trains it
#   (background='foreground_only'; see docs/methods/lvis.md).
# * λ(t): 0 for epochs 1-6, ramp over epochs 7-8, 1 from epoch 9 on (the
#   low-learning-rate part of the 1x schedule; milestones are fractions of
#   max_epochs, so they follow a longer schedule). This project's choice: the
#   paper's LVIS schedule (its Appendix H) is not in its main text.
# * Instance counts: ClassStatisticsHook counts the LVIS training annotations
#   once (below the RFS wrapper: the annotated, not the re-sampled,
#   distribution) and gives them to the loss on every rank.
# Everything else — model, RFS, data pipeline, schedule, LVISMetric — is
# upstream's. Data: LVIS v1 annotations + COCO 2017 images under data/lvis_v1/
# (docs/data_preparation.md, section "LVIS v1").
_base_ = ['mmdet::lvis/mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1.py']
custom_imports = dict(imports=['reot_mm'], allow_failed_imports=False)

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True,
                type='REOTRoILoss',
                background='foreground_only',
                prior='class_ratio',
                loss_weight=1.0))))

custom_hooks = [
    dict(type='LVISAnnotationCheckHook'),
    dict(type='ClassStatisticsHook'),
    dict(type='REOTPriorHook', milestones=(0.5, 0.75), mode='paper'),
]

# upstream's global batch (8 GPUs x 2 images); the paper states none
auto_scale_lr = dict(base_batch_size=16, enable=False)
