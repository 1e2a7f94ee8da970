# The frozen teacher for GML on ADE20K (Suh and Seo, ICML 2023, Sec. 3.3:
# "we train a teacher network with a cosine similarity classifier with L_cls
# without contrastive loss"). FCN-R50-D8, mmseg's 160k recipe; decode and
# auxiliary heads are cosine 1×1 classifiers (CosineFCNHead) trained with
# L_cls = CE(cos/τ_s + log p, y) per pixel (GML Eq. 7, τ_s = 0.05 as the
# student; REOTPixelLoss, cost='cosine'), log p from training PIXEL counts.
# The paper's segmentation recipe (A.2) names no teacher: this one is our
# choice, the classification recipe's teacher carried to pixels (same
# architecture as the student, as GML Sec. 4.5 finds sufficient). Its
# checkpoint is model.teacher_checkpoint of
# gml-teacher-student_fcn_r50-d8_4xb4-160k_ade20k-512x512.py.
_base_ = ['mmseg::fcn/fcn_r50-d8_4xb4-160k_ade20k-512x512.py']
custom_imports = dict(imports=['reot_mm'], allow_failed_imports=False)

num_classes = 150
tau_s = 0.05
pixel_counts_file = 'data/ade/ADEChallengeData2016/reot_mm_pixel_counts.json'

model = dict(
    decode_head=dict(
        type='CosineFCNHead',
        loss_decode=dict(
            _delete_=True, type='REOTPixelLoss', cost='cosine',
            scale=1 / tau_s, prior='class_ratio', prior_scale=1.0,
            num_classes=num_classes, loss_weight=1.0, loss_name='loss_cls')),
    auxiliary_head=dict(
        type='CosineFCNHead',
        loss_decode=dict(
            _delete_=True, type='REOTPixelLoss', cost='cosine',
            scale=1 / tau_s, prior='class_ratio', prior_scale=1.0,
            num_classes=num_classes, loss_weight=0.4, loss_name='loss_cls')))

custom_hooks = [
    dict(type='ClassStatisticsHook', class_counts_file=pixel_counts_file,
         count_type='pixel'),
]

val_evaluator = dict(type='FrequencyBinnedIoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# the 160k recipe's global batch (4 GPUs x 4 crops)
auto_scale_lr = dict(base_batch_size=16, enable=False)
