# RE-OT Table 1 "A-softmax" row on digits-LT: cosine cost with SphereFace's
# multiplicative angular margin ψ(θ) (m = 2 here; the paper's face models use
# m = 4) and scale 1/ε·s = 16, uniform prior.
_base_ = ['./ce_resnet8_100e_digitslt.py']

model = dict(
    head=dict(
        _delete_=True,
        type='CosineClsHead',
        num_classes=10,
        in_channels=64,
        scale=16.0,
        topk=(1, ),
        loss=dict(type='REOTLoss', prior='uniform', cost='cosine', scale=16.0,
                  margin_type='multiplicative', margin=2)))
