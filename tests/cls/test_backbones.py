"""CifarResNet and ResNet10: shapes, parameter counts, validation, training step."""
import pytest
import torch
from mmengine.dataset import default_collate
from mmpretrain.registry import DATASETS, MODELS

import reot_mm  # noqa: F401  (registers the backbones)


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def cifar_resnet_params(depth, in_channels=3, base=16, shortcut='A'):
    """Parameter count of He et al.'s CIFAR ResNet, counted by hand:
    3x3 convs without bias, BN with weight and bias, option A adds nothing,
    option B a 1x1 conv + BN at the two stage transitions."""
    blocks = (depth - 2) // 6
    total = in_channels * base * 9 + 2 * base  # stem conv + BN
    prev = base
    for stage in range(3):
        width = base * 2**stage
        for block in range(blocks):
            c_in = prev if block == 0 else width
            total += c_in * width * 9 + width * width * 9 + 4 * width
        if shortcut == 'B' and stage > 0:
            total += prev * width + 2 * width
        prev = width
    return total


def classifier(depth, num_classes, in_channels=3, **backbone):
    return MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=dict(
                type='CifarResNet',
                depth=depth,
                in_channels=in_channels,
                **backbone),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(
                type='LinearClsHead',
                num_classes=num_classes,
                in_channels=64,
                loss=dict(type='CrossEntropyLoss'))))


@pytest.mark.parametrize('depth, num_classes, published', [
    (32, 10, 0.46e6),  # He et al. 2016, Table 6
    (56, 10, 0.85e6),
    (32, 100, 0.46e6),
])
def test_cifar_resnet_parameter_counts(depth, num_classes, published):
    model = classifier(depth, num_classes)
    head = 64 * num_classes + num_classes
    assert n_params(model.backbone) == cifar_resnet_params(depth)
    assert n_params(model) == cifar_resnet_params(depth) + head
    # The paper rounds to 0.01M; a 100-class head adds ~6k parameters.
    assert n_params(model) == pytest.approx(published, rel=0.025)


def test_cifar_resnet_option_b_and_width():
    backbone = MODELS.build(
        dict(type='CifarResNet', depth=20, shortcut='B', base_channels=8,
             in_channels=1))
    assert n_params(backbone) == cifar_resnet_params(
        20, in_channels=1, base=8, shortcut='B')
    out = backbone(torch.randn(2, 1, 16, 16))
    assert len(out) == 1 and out[0].shape == (2, 32, 4, 4)


@pytest.mark.parametrize('shortcut', ['A', 'B'])
def test_cifar_resnet_output_shapes(shortcut):
    backbone = MODELS.build(
        dict(type='CifarResNet', depth=8, shortcut=shortcut,
             out_indices=(0, 1, 2)))
    outs = backbone(torch.randn(3, 3, 32, 32))
    assert [tuple(o.shape) for o in outs] == [(3, 16, 32, 32),
                                              (3, 32, 16, 16),
                                              (3, 64, 8, 8)]
    assert backbone.out_channels == (16, 32, 64)


def test_cifar_resnet_option_a_shortcut_is_padding():
    # At a stage transition option A passes the subsampled input through
    # unchanged in the middle channels and zeros elsewhere.
    block = MODELS.build(dict(type='CifarResNet', depth=8)).stages[1][0]
    x = torch.randn(2, 16, 8, 8)
    shortcut = block.shortcut(x)
    assert shortcut.shape == (2, 32, 4, 4)
    torch.testing.assert_close(shortcut[:, 8:24], x[:, :, ::2, ::2])
    assert shortcut[:, :8].abs().sum() == 0
    assert shortcut[:, 24:].abs().sum() == 0


@pytest.mark.parametrize('kwargs, match', [
    (dict(depth=33), r'6n \+ 2'),
    (dict(depth=2), r'6n \+ 2'),
    (dict(depth=8, shortcut='C'), 'shortcut'),
    (dict(depth=8, out_indices=(3, )), 'out_indices'),
])
def test_cifar_resnet_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MODELS.build(dict(type='CifarResNet', **kwargs))


def test_cifar_resnet_forward_backward_on_digits():
    dataset = DATASETS.build(
        dict(type='DigitsLT', split='test', test_per_class=2,
             pipeline=[dict(type='PackInputs')]))
    model = MODELS.build(
        dict(
            type='ImageClassifier',
            data_preprocessor=dict(
                type='ClsDataPreprocessor',
                mean=[77.8],
                std=[95.9],
                num_classes=10),
            backbone=dict(type='CifarResNet', depth=8, in_channels=1),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(
                type='LinearClsHead',
                num_classes=10,
                in_channels=64,
                loss=dict(type='CrossEntropyLoss'))))
    model.init_weights()
    batch = default_collate([dataset[i] for i in range(len(dataset))])
    data = model.data_preprocessor(batch, training=True)
    assert data['inputs'].shape == (20, 1, 8, 8)
    losses = model(**data, mode='loss')
    losses['loss'].backward()
    assert torch.isfinite(losses['loss'])
    for name, param in model.named_parameters():
        assert param.grad is not None, name
    assert model.backbone.conv1.weight.grad.abs().sum() > 0

    model.eval()
    with torch.no_grad():
        predictions = model(**model.data_preprocessor(batch), mode='predict')
    assert predictions[0].pred_score.shape == (10, )


def resnet10_params():
    """ImageNet ResNet with one BasicBlock per stage, counted by hand."""
    total = 3 * 64 * 7 * 7 + 2 * 64  # stem
    total += 2 * 64 * 64 * 9 + 2 * 2 * 64  # layer1, no downsample
    for c_in, width in ((64, 128), (128, 256), (256, 512)):
        total += c_in * width * 9 + width * width * 9 + 4 * width
        total += c_in * width + 2 * width  # 1x1 downsample + BN
    return total


def test_resnet10():
    backbone = MODELS.build(dict(type='ResNet10'))
    assert n_params(backbone) == resnet10_params()
    outs = backbone(torch.randn(2, 3, 64, 64))
    assert len(outs) == 1 and outs[0].shape == (2, 512, 2, 2)
    outs[0].mean().backward()
    assert backbone.conv1.weight.grad is not None
    # The parent's depths still work; unknown depths fail clearly.
    assert len(MODELS.build(dict(type='ResNet10', depth=18)).layer1) == 2
    with pytest.raises(ValueError, match='depth'):
        MODELS.build(dict(type='ResNet10', depth=12))
