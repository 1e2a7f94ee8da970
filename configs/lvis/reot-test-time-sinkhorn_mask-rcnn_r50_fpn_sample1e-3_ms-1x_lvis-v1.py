# The RE-OT Mask R-CNN config (training unchanged) with Sinkhorn inference in
# the box head: RE-OT §5 "new inference" (= OTLM Algorithm 1, Peng et al.,
# ICLR 2022) over the RoIs of each test batch, before mmdet's score threshold
# and NMS. Each RoI keeps its background probability; only its foreground part
# is transported (rows weighted by the RoI's foreground probability, columns
# b) and renormalised to the remaining mass — the background handled as the
# training loss handles it (REOTRoILoss background='foreground_only').
# b='train': the training foreground prior (instance ratio, RE-OT Eq. 35, from
# ClassStatisticsHook or the checkpoint's meta); b='uniform' with
#   --cfg-options model.roi_head.bbox_head.test_time_cfg.b=uniform
# Any checkpoint of the RE-OT (or upstream) Mask R-CNN can be tested with it:
# the head's parameters are upstream Shared2FCBBoxHead's.
_base_ = ['./reot_mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1.py']

model = dict(
    roi_head=dict(
        bbox_head=dict(
            type='REOTShared2FCBBoxHead',
            test_time_cfg=dict(mode='sinkhorn', b='train', epsilon=1.0,
                               rows='foreground'))))
