# The RE-OT LVIS config plus a RoI-feature contrastive term: balanced
# contrastive learning (BCL, Zhu et al., CVPR 2022, Eq. 9) on the 1024-d shared RoI embedding
# of the foreground RoIs, through BCLShared2FCBBoxHead (a Shared2FCBBoxHead
# that keeps the embedding for its loss). The classification loss stays the
# inverse RE-OT loss with the class-ratio prior — at λ = 1 this is BCL's
# logit-compensated CE (Eq. 10), so the pair is BCL's Eq. 11 with the RE-OT
# schedule on the CE part. Projection g and prototype head g_c:
# Linear(1024, 1024)-BN-ReLU-Linear(1024, 128); μ = 0.35 and τ = 0.07 as in
# BCL's ImageNet-LT/iNat recipe (the paper has no detection recipe).
_base_ = ['./reot_mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1.py']

model = dict(
    roi_head=dict(
        bbox_head=dict(
            type='BCLShared2FCBBoxHead',
            contrast_channels=128,
            loss_contrast=dict(type='BCLLoss', lc_weight=0.0, bcl_weight=0.35,
                               temperature=0.07))))
