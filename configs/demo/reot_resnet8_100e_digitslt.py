# RE-OT with the epoch-varying prior (RE-OT Eq. 15, Table 1 "Our setting"):
# Q = (1 - λ(t))·Uniform + λ(t)·r with r the Eq. 37 interpolation of class and
# batch ratios (γ = 0.74, the authors' value), λ ramping linearly (Eq. 34) from
# 0 at 60% of the run to 1 at 80%.
_base_ = ['./ce_resnet8_100e_digitslt.py']

model = dict(
    head=dict(loss=dict(
        _delete_=True, type='REOTLoss', prior='interpolated',
        interpolation_gamma=0.74)))
custom_hooks = [
    dict(type='ClassStatisticsHook'),
    dict(type='REOTPriorHook', milestones=(0.6, 0.8), mode='paper'),
]
