# Post-hoc logit adjustment (Menon et al., Long-Tail Learning via Logit
# Adjustment, ICLR 2021, Eq. 3) in the Mask R-CNN box head: trained with plain
# cross-entropy (REOTRoILoss prior='uniform' is exactly CE), tested with every
# foreground logit shifted by -tau * log(C * pi_j), pi the training foreground
# instance ratio (RE-OT Eq. 35) and the background logit untouched — the
# test-time counterpart of training with RE-OT's ratio prior at lambda = 1
# (REOTRoILoss background='foreground_only'). Applied to a head trained with
# the RE-OT prior it would remove the prior twice; use mode='none' there.
_base_ = ['./reot_mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1.py']

model = dict(
    roi_head=dict(
        bbox_head=dict(
            type='REOTShared2FCBBoxHead',
            loss_cls=dict(prior='uniform'),
            test_time_cfg=dict(mode='logit_adjust', tau=1.0))))
