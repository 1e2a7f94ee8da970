# Cascade Mask R-CNN R-50-FPN on LVIS v1 (RFS 1e-3, multi-scale, 1x) with the
# inverse RE-OT loss (RE-OT Eq. 15/16) in each of the three box-head stages:
# one REOTRoILoss per stage, each with its own buffers; ClassStatisticsHook and
# REOTPriorHook set counts and λ(t) on all three. Built like upstream's
# mmdet::seesaw_loss/cascade-mask-rcnn_*_lvis-v1.py configs (same bases; the
# box-head list is spelled out because config lists do not merge per item),
# with upstream's plain Shared2FCBBoxHead settings of the cascade model.
# Data: LVIS v1 annotations + COCO 2017 images under data/lvis_v1/
# (docs/data_preparation.md, section "LVIS v1").
_base_ = [
    'mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/lvis_v1_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['reot_mm'], allow_failed_imports=False)

num_classes = 1203
reot_loss = dict(type='REOTRoILoss', background='foreground_only',
                 prior='class_ratio', loss_weight=1.0)


def stage_head(stds):
    return dict(
        type='Shared2FCBBoxHead',
        in_channels=256,
        fc_out_channels=1024,
        roi_feat_size=7,
        num_classes=num_classes,
        bbox_coder=dict(type='DeltaXYWHBBoxCoder',
                        target_means=[0., 0., 0., 0.], target_stds=stds),
        reg_class_agnostic=True,
        loss_cls=reot_loss,
        loss_bbox=dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0))


model = dict(
    roi_head=dict(
        bbox_head=[
            stage_head([0.1, 0.1, 0.2, 0.2]),
            stage_head([0.05, 0.05, 0.1, 0.1]),
            stage_head([0.033, 0.033, 0.067, 0.067]),
        ],
        mask_head=dict(num_classes=num_classes)),
    test_cfg=dict(rcnn=dict(score_thr=0.0001, max_per_img=300)))

custom_hooks = [
    dict(type='LVISAnnotationCheckHook'),
    dict(type='ClassStatisticsHook'),
    dict(type='REOTPriorHook', milestones=(0.5, 0.75), mode='paper'),
]

# upstream's global batch (8 GPUs x 2 images); the paper states none
auto_scale_lr = dict(base_batch_size=16, enable=False)
