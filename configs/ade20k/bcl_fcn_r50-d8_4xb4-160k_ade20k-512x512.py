# BCL (Zhu et al., Balanced Contrastive Learning for Long-Tailed Visual
# Recognition, CVPR 2022) on ADE20K with FCN-R50-D8, mmseg 1.2.2's 160k recipe
# (4 GPUs x 4 images, 512x512 crops, SGD lr 0.01, poly decay). Not trained
# here (no dataset, CPU only): the config is built and run on a tiny generated
# ADE20K in tests/seg/test_ade20k_bcl_train.py.
# Replaces upstream:
#   decode head: FCNHead -> BCLFCNHead: L = λ·L_LC + μ·L_BCL (BCL Eq. 11) with
#     L_LC (Eq. 10) = CE(φ + log π, y) on every labelled pixel (REOTPixelLoss,
#     prior='class_ratio': π from training PIXEL counts), and L_BCL (Eq. 9:
#     class-averaging + class-complement prototypes g_c(w_j) from the 1×1
#     classifier rows) on up to 8 sampled pixels per class per image;
#   auxiliary head: CE -> the same logit-compensated CE (weight 0.4 as upstream);
# adds ClassStatisticsHook (pixel counts; see reot_fcn_*.py for computing the
# record once) and the frequency-binned metric.
# Hyper-parameters: λ = 1, μ = 0.35, τ = 0.07 are BCL's large-scale recipe
# (ImageNet-LT / iNat2018, the authors' code), taken unchanged (ADE20K is
# large-scale too); α_y = 1 and log π unscaled as in the paper. Our choices
# (BCL has no segmentation recipe, none tuned): 8 pixels per class per image
# (as the GML ADE20K config), g and g_c = Linear(512, 512)-BN-ReLU-Linear(512,
# 128), i.e. D = 128 (BCL uses 1024 on 2048-d ResNeXt features; the FCN head
# has 512 channels), and the logit-compensated auxiliary head. The
# cross-entropy baseline is upstream's mmseg::fcn/fcn_r50-d8_4xb4-160k_ade20k-512x512.py.
_base_ = ['mmseg::fcn/fcn_r50-d8_4xb4-160k_ade20k-512x512.py']
custom_imports = dict(imports=['reot_mm'], allow_failed_imports=False)

num_classes = 150
# data and this record: docs/data_preparation.md, sections "ADE20K" and
# "ADE20K pixel counts"
pixel_counts_file = 'data/ade/ADEChallengeData2016/reot_mm_pixel_counts.json'

model = dict(
    decode_head=dict(
        type='BCLFCNHead',
        pixels_per_class=8,
        contrast_channels=128,
        contrast_hidden_channels=512,
        loss_contrast=dict(type='BCLLoss', lc_weight=0.0, bcl_weight=0.35,
                           temperature=0.07, num_classes=num_classes),
        # L_LC of Eq. 10 (λ = 1): the prior-shifted CE with Q = π, no schedule
        loss_decode=dict(
            _delete_=True, type='REOTPixelLoss', prior='class_ratio',
            num_classes=num_classes, loss_weight=1.0, loss_name='loss_lc')),
    auxiliary_head=dict(loss_decode=dict(
        _delete_=True, type='REOTPixelLoss', prior='class_ratio',
        num_classes=num_classes, loss_weight=0.4, loss_name='loss_lc')))

custom_hooks = [
    dict(type='ClassStatisticsHook', class_counts_file=pixel_counts_file,
         count_type='pixel'),
]

val_evaluator = dict(type='FrequencyBinnedIoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# the 160k recipe's global batch (4 GPUs x 4 crops)
auto_scale_lr = dict(base_batch_size=16, enable=False)
