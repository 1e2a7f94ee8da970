# GML on ADE20K with a frozen teacher (Suh and Seo, ICML 2023, Sec. 3.3 and
# appendix A.2): the student is gml-a0.2_fcn_r50-d8_4xb4-160k_ade20k-512x512.py
# ((k, k_m, τ_s, τ_g) = (8192, 27, 0.05, 0.07): a queue of k = 8192 slots in
# all, at least k_m = 27 per class; α = 0.2, the paper's best mIoU) in a
# GMLEncoderDecoder, and the teacher is the cosine FCN of
# gml-teacher_fcn_r50-d8_4xb4-160k_ade20k-512x512.py (train it first). The
# class-wise pixel queues store the TEACHER's decode-head features at the
# pixels the student samples (8 per class per image), so rare classes' keys do
# not come from an outdated student (GML Sec. 3.3); the key MLP g_k embeds
# them (key_in_channels = the teacher's 512 channels).
# The queue starts from random unit vectors (prefill='none', as the authors'
# classification code). GMLQueueHook(prefill='teacher') fills it from one
# pass of the teacher over the training set first (--cfg-options
# custom_hooks.1.prefill=teacher).
#
# The user supplies the teacher checkpoint (paths relative to where
# tools/train.py runs):
#   --cfg-options model.teacher_checkpoint=PATH
# It is loaded strictly and kept out of the student's checkpoint;
# tools/test.py on the student's checkpoint needs no teacher file.
# α = 1.0 (best mAcc): --cfg-options model.student.decode_head.gml_loss.alpha=1.0
#   model.student.decode_head.loss_decode.prior_scale=1.0
#   model.student.auxiliary_head.loss_decode.prior_scale=1.0
_base_ = ['./gml-a0.2_fcn_r50-d8_4xb4-160k_ade20k-512x512.py']
custom_imports = dict(imports=['reot_mm'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='TeacherStudent',
    # the α = 0.2 GML model, every part of it, as a GMLEncoderDecoder (a
    # config cannot change one key of a {{_base_.x}} reference)
    student=dict(
        type='GMLEncoderDecoder',
        data_preprocessor={{_base_.model.data_preprocessor}},
        pretrained={{_base_.model.pretrained}},
        backbone={{_base_.model.backbone}},
        decode_head={{_base_.model.decode_head}},
        auxiliary_head={{_base_.model.auxiliary_head}},
        train_cfg={{_base_.model.train_cfg}},
        test_cfg={{_base_.model.test_cfg}}),
    # a config file whose `model` is the teacher (see TeacherStudent)
    teacher='{{ fileDirname }}/gml-teacher_fcn_r50-d8_4xb4-160k_ade20k-512x512.py',
    teacher_checkpoint=('work_dirs/gml-teacher_fcn_r50-d8_4xb4-160k_ade20k-512x512/'
                        'iter_160000.pth'))

# The wrapper preprocesses with the student's data_preprocessor. mmengine's
# Runner hands a model config without one the top-level `data_preprocessor`
# of upstream's config (512x512 padding), which would shadow the student's
# (e.g. a --cfg-options change of model.student.data_preprocessor.size).
data_preprocessor = None
