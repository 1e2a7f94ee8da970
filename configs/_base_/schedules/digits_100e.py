# 100 epochs of SGD with a cosine learning rate: about a minute on 2 CPU cores.
# Gradient clipping at norm 5: ResNet-8 on the digits-LT training images had
# one-step gradient spikes through the backbone (measured on the previous
# 321-image split, BCL seed 3: norm 0.6 -> 855 at iteration 204, then a
# collapse of that run); the median step norm is about 1, so the clip only
# touches the spikes. It is in this shared schedule
# so every digits method is compared under the same optimiser
# (docs/methods/bcl.md, "Gradient spikes").
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=5e-4,
                   nesterov=True),
    clip_grad=dict(max_norm=5.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=5,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=95, by_epoch=True, begin=5, end=100),
]
train_cfg = dict(by_epoch=True, max_epochs=100, val_interval=25)
val_cfg = dict()
test_cfg = dict()
# the batch of the digits configs (one process); --auto-scale-lr rescales lr
# for another global batch
auto_scale_lr = dict(base_batch_size=64, enable=False)
