# GML on LVIS with GML's frozen teacher (Suh and Seo, ICML 2023, Sec. 3.3):
# the student is gml_mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1.py's
# GMLMaskRCNN; the teacher is a trained Mask R-CNN whose shared RoI embedding
# of the *student's sampled RoIs* is what the class-wise queues store (GML's
# remedy for outdated keys of rare classes), and GMLQueueHook pre-fills the
# queues with the teacher's embeddings of the ground-truth boxes (one pass of
# teacher inference over the training set at most, before training).
#
# The user supplies the teacher checkpoint. Default: the RE-OT Mask R-CNN of
# this folder (train it first: tools/train.py
# configs/lvis/reot_mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1.py); paths are
# relative to the directory tools/train.py runs in. For mmdet's released LVIS
# Mask R-CNN use the matching upstream config:
#   --cfg-options model.teacher=mmdet::lvis/mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1.py
#                 model.teacher_checkpoint=PATH_OR_URL
# The teacher is loaded strictly and kept out of the student's checkpoint;
# tools/test.py on the student's checkpoint needs no teacher file.
_base_ = ['./gml_mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1.py']

model = dict(
    _delete_=True,
    type='TeacherStudent',
    student={{_base_.model}},
    # a config file whose `model` is the teacher (see TeacherStudent)
    teacher='{{ fileDirname }}/reot_mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1.py',
    teacher_checkpoint=('work_dirs/reot_mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1/'
                        'epoch_12.pth'))

custom_hooks = [
    dict(type='LVISAnnotationCheckHook'),
    dict(type='ClassStatisticsHook'),
    dict(type='GMLQueueHook', prefill='teacher', many_threshold=100,
         few_threshold=10),
]
