# GML (Suh and Seo, Long-Tailed Recognition by Mutual Information Maximization
# between Latent Features and Ground-Truth Labels, ICML 2023, arXiv:2305.01160)
# on the RoIs of Mask R-CNN R-50-FPN, LVIS v1, repeat-factor sampling
# (t = 1e-3), multi-scale 1x schedule. The paper has no detection recipe; its
# classification recipe (Sec. 3.3) moved to the box head (GMLShared2FCBBoxHead,
# docs/methods/gml.md "GML on LVIS"):
#
# * cosine classifier (mmdet's NormedLinear, no bias) scaled by 1/τ_s,
#   τ_s = 1/30 (every GML experiment); L_cls = CE(cos/τ_s + log p(c), y)
#   (GML Eq. 7) is REOTRoILoss(prior='class_ratio') at λ = 1, no
#   REOTPriorHook: the C foreground logits are shifted by log(C·p(c)) and the
#   background logit is left as plain CE trains it (background='foreground_only');
# * L_GML (Eq. 11, α = 1: Eq. 5) on the 1024-d shared embedding of the
#   foreground RoIs, g_q = g_k = Linear(1024, 1024)-BN-ReLU-Linear(1024, 128);
#   class-wise queues (Eq. 6) of K = 16384 RoI embeddings, k_m = 4 slots at
#   least per class (C·k_m = 4812 <= K), sized by the LVIS training instance
#   counts; τ_g = 0.07 fixed; γ = β = 1 as in every GML recipe. K, k_m and β
#   are this project's choices, not validated on LVIS (no GPU run here).
# * Without a teacher the queue holds the head's own detached RoI embeddings
#   (prefill='none': initial random unit vectors until replaced); the
#   teacher-student variant is gml-teacher-student_mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1.py.
# The CE baseline for step-overhead comparisons is upstream's
# mmdet::lvis/mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1.py.
_base_ = ['mmdet::lvis/mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1.py']
custom_imports = dict(imports=['reot_mm'], allow_failed_imports=False)

model = dict(
    type='GMLMaskRCNN',
    roi_head=dict(
        bbox_head=dict(
            type='GMLShared2FCBBoxHead',
            tau_s=1.0 / 30,
            queue=dict(size=16384, min_per_class=4),
            query_mlp=dict(hidden_channels=1024, out_channels=128),
            key_mlp=dict(hidden_channels=1024, out_channels=128),
            gml_loss=dict(tau_g=0.07, trainable_tau=False, alpha=1.0,
                          gml_weight=1.0),
            loss_cls=dict(
                _delete_=True,
                type='REOTRoILoss',
                background='foreground_only',
                prior='class_ratio',
                loss_weight=1.0))))

custom_hooks = [
    dict(type='LVISAnnotationCheckHook'),
    dict(type='ClassStatisticsHook'),
    dict(type='GMLQueueHook', prefill='none', many_threshold=100,
         few_threshold=10),
]

# upstream's global batch (8 GPUs x 2 images)
auto_scale_lr = dict(base_batch_size=16, enable=False)
