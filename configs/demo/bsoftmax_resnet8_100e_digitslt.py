# Balanced Softmax = inverse RE-OT with a fixed prior Q = class ratio (RE-OT
# Table 1, "Balanced-Softmax" row): REOTLoss with prior_weight 1 from the start.
_base_ = ['./ce_resnet8_100e_digitslt.py']

model = dict(
    head=dict(loss=dict(
        _delete_=True, type='REOTLoss', prior='class_ratio', prior_weight=1.0)))
