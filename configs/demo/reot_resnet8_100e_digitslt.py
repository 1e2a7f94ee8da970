# RE-OT with the epoch-varying prior (RE-OT Eq. 15, Table 1 "Our setting"):
# Q = (1 - λ(t))·Uniform + λ(t)·r with r the Eq. 37 interpolation of class and
# batch ratios (γ = 0.74, the authors' value), λ ramping linearly (Eq. 34) from
# 0 at 10% of the run to 1 at 30%. The milestones were picked among
# (0.6, 0.8), (0.3, 0.5) and (0.1, 0.3) on seed 0: with 321 training images the
# network fits the training set within a few epochs, and a prior that arrives
# after that barely changes the decision boundary.
_base_ = ['./ce_resnet8_100e_digitslt.py']

model = dict(
    head=dict(loss=dict(
        _delete_=True, type='REOTLoss', prior='interpolated',
        interpolation_gamma=0.74)))
custom_hooks = [
    dict(type='ClassStatisticsHook'),
    dict(type='REOTPriorHook', milestones=(0.1, 0.3), mode='paper'),
]
