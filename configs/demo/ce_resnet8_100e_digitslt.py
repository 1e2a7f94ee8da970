# Baseline: plain cross-entropy on digits-LT (rho = 60), the embedded demo data.
_base_ = [
    '../_base_/models/resnet8_digits.py',
    '../_base_/datasets/digits_lt.py',
    '../_base_/schedules/digits_100e.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['reot_mm'], allow_failed_imports=False)

# counts are needed by ShotAccuracy (many/medium/few) even without a prior
custom_hooks = [dict(type='ClassStatisticsHook')]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', interval=25, max_keep_ckpts=1))
randomness = dict(seed=0, deterministic=False)
