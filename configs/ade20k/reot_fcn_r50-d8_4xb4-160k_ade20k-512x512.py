# RE-OT pixel loss on ADE20K with FCN-R50-D8 (mmseg 1.2.2 recipe: 4 GPUs x 4
# images, 512x512 crops, SGD lr 0.01, poly decay, 160k iterations).
# Replaces upstream: the CrossEntropyLoss of the decode head and of the
# auxiliary head by REOTPixelLoss (RE-OT Eq. 16 per pixel, Q of Eq. 15 with r
# from per-class PIXEL frequencies); adds the class-statistics and prior hooks
# and the frequency-binned metric. Everything else is upstream.
#
# Data: ADEChallengeData2016 under data/ade (docs/data_preparation.md, section
# "ADE20K"). Before the first run, count the training pixels once (about a
# minute; section "ADE20K pixel counts" of the same page):
#   python tools/dataset_stats/pixel_class_counts.py \
#       configs/ade20k/reot_fcn_r50-d8_4xb4-160k_ade20k-512x512.py
# which writes the record named by ClassStatisticsHook below; the hook refuses
# it if it was computed for another dataset (length or checksum differ).
#
# Normalisation: upstream SyncBN. On CPU-only machines it becomes BN by itself:
# mmengine's Runner reverts SyncBN when not distributed and reot_mm's
# CPUDistributedDataParallel does so for gloo runs (tools/dist_train.sh).
_base_ = ['mmseg::fcn/fcn_r50-d8_4xb4-160k_ade20k-512x512.py']
custom_imports = dict(imports=['reot_mm'], allow_failed_imports=False)

num_classes = 150
pixel_counts_file = 'data/ade/ADEChallengeData2016/reot_mm_pixel_counts.json'

model = dict(
    decode_head=dict(loss_decode=dict(
        _delete_=True, type='REOTPixelLoss', prior='class_ratio',
        num_classes=num_classes, loss_weight=1.0, loss_name='loss_reot')),
    auxiliary_head=dict(loss_decode=dict(
        _delete_=True, type='REOTPixelLoss', prior='class_ratio',
        num_classes=num_classes, loss_weight=0.4, loss_name='loss_reot')))

custom_hooks = [
    # count_type='image' would take r from image frequencies instead
    dict(type='ClassStatisticsHook', class_counts_file=pixel_counts_file,
         count_type='pixel'),
    # Iteration-based run: milestones are fractions of max_iters, so the
    # schedule survives a change of length. λ = 0 (plain CE) up to 68 % of the
    # run, a linear ramp (Eq. 34) to λ = 1 at 71 %, then Q = r: the fractions
    # of the authors' ImageNet-LT schedule (75/78 of 110 epochs); the paper
    # has no segmentation schedule.
    dict(type='REOTPriorHook', milestones=(0.68, 0.71)),
]

# aAcc / mIoU / mAcc as upstream plus mIoU_{head,common,rare} and
# mAcc_{head,common,rare}: thirds of the classes by training pixel frequency
val_evaluator = dict(type='FrequencyBinnedIoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# the 160k recipe's global batch (4 GPUs x 4 crops)
auto_scale_lr = dict(base_batch_size=16, enable=False)
