# ResNet-32 of He et al. 2016 (CIFAR variant, 16/32/64 channels, option-A
# shortcuts, 0.46M parameters): the CIFAR-LT backbone of LDAM, BCL, GML and
# RE-OT. Set head.num_classes=10 for CIFAR-10-LT.

model = dict(
    type='ImageClassifier',
    backbone=dict(type='CifarResNet', depth=32, in_channels=3),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=100,
        in_channels=64,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, ),
    ))
