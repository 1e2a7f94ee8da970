"""Every shipped config parses, builds its model and hooks, and takes a train step."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import HOOKS, init_default_scope

import reot_mm  # noqa: F401

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# The classification configs of the RE-OT loss; the contrastive, detection and
# segmentation configs have their own build-and-step tests next to their code's tests.
CLS_CONFIG_DIRS = ('demo', 'cifar_lt', 'imagenet_lt', 'inat2018')
CONFIGS = sorted(p for d in CLS_CONFIG_DIRS
                 for p in glob.glob(osp.join(ROOT, 'configs', d, '*.py')))


def test_configs_found():
    names = {osp.basename(p) for p in CONFIGS}
    assert {'reot_resnet8_100e_digitslt.py', 'ce_resnet8_100e_digitslt.py',
            'bsoftmax_resnet8_100e_digitslt.py',
            'reot_resnet32_790e_cifar100lt-r200.py',
            'reot_resnet32_682e_cifar10lt-r200.py',
            'reot_resnet10_110e_imagenetlt.py',
            'reot_resnext50_32x4d_90e_imagenetlt.py',
            'reot_resnet50_90e_inat2018.py'} <= names


@pytest.mark.parametrize('path', CONFIGS, ids=[osp.basename(p) for p in CONFIGS])
def test_config_builds_and_steps(path):
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample
    cfg = Config.fromfile(path)
    assert cfg.custom_imports == dict(imports=['reot_mm'],
                                      allow_failed_imports=False)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    for hook in cfg.get('custom_hooks', []):
        HOOKS.build(dict(hook))
    evaluators = cfg.val_evaluator if isinstance(cfg.val_evaluator, list) \
        else [cfg.val_evaluator]
    # a wrapper metric (SinkhornInferenceMetric) counts by its inner metrics
    types = [e['type'] for e in evaluators] + [
        m['type'] for e in evaluators for m in e.get('metrics', [])]
    assert 'ShotAccuracy' in types

    model = MODELS.build(cfg.model)
    num_classes = model.head.num_classes
    counts = torch.linspace(500, 5, num_classes).round()
    for module in model.modules():
        if hasattr(module, 'set_class_counts'):
            module.set_class_counts(counts)
    channels = cfg.model.backbone.get('in_channels', 3)
    size = 8 if 'digits' in path else 32 if 'cifar' in path else 64
    inputs = torch.randn(2, channels, size, size)
    samples = [DataSample().set_gt_label(i % num_classes) for i in range(2)]
    losses = model(inputs, samples, mode='loss')
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    predictions = model(inputs, samples, mode='predict')
    assert predictions[0].pred_score.shape == (num_classes, )


@pytest.mark.parametrize('config, ann_keys', [
    ('imagenet_lt/reot_resnet10_110e_imagenetlt.py',
     ('ImageNet_LT_train.txt', 'ImageNet_LT_val.txt', 'ImageNet_LT_test.txt')),
    ('inat2018/reot_resnet50_90e_inat2018.py',
     ('iNaturalist18_train.txt', 'iNaturalist18_val.txt')),
])
def test_list_dataset_configs_load_real_lists(tmp_path, config, ann_keys):
    """The full-size list configs build their datasets and pipelines on a
    generated miniature of the benchmark layout (`path label` lists)."""
    import numpy as np
    from mmengine.dataset import Compose
    from mmpretrain.registry import DATASETS
    from PIL import Image
    cfg = Config.fromfile(osp.join(ROOT, 'configs', config))
    init_default_scope('mmpretrain')
    (tmp_path / 'train').mkdir()
    for i in range(3):
        Image.fromarray(np.full((40, 50, 3), 60 * i, np.uint8)).save(
            tmp_path / 'train' / f'{i}.jpg')
    for name in ann_keys:
        (tmp_path / name).write_text(''.join(f'train/{i}.jpg {i}\n' for i in range(3)))
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        dataset_cfg = dict(loader.dataset, data_root=str(tmp_path))
        dataset = DATASETS.build(dataset_cfg)
        assert len(dataset) == 3
        assert dataset.get_gt_labels().tolist() == [0, 1, 2]
        packed = dataset[1]
        assert tuple(packed['inputs'].shape) == (3, 224, 224)
        assert isinstance(dataset.pipeline, Compose)


ALL_CONFIGS = sorted(p for p in glob.glob(osp.join(ROOT, 'configs', '*', '*.py'))
                     if osp.basename(osp.dirname(p)) != '_base_')


@pytest.mark.parametrize('path', ALL_CONFIGS, ids=[osp.relpath(p, ROOT) for p in ALL_CONFIGS])
def test_config_declares_auto_scale_lr(path):
    """mmengine's --auto-scale-lr needs the global batch the learning rate
    was set for; off unless asked for."""
    scale = Config.fromfile(path).auto_scale_lr
    assert scale.enable is False, path
    assert isinstance(scale.base_batch_size, int) and scale.base_batch_size > 0


def test_digits_loader_gives_batchnorm_no_batch_of_one(tmp_path):
    """267 digits-LT training images = 2 x 133 + 1 (the base's batch of 64
    leaves 11; 133 makes the last batch one image). An mmpretrain ResNet-18
    on 8x8 inputs reaches 1x1 maps, where BatchNorm refuses a batch of one: a
    whole epoch of train steps works with the shared digits base (drop_last)
    and fails without it."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.runner import Runner
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'demo', 'ce_resnet8_100e_digitslt.py'))
    init_default_scope('mmpretrain')
    assert cfg.train_dataloader.drop_last is True
    cfg.train_dataloader.batch_size = 133
    model_cfg = cfg.model
    model_cfg.backbone = dict(type='ResNet', depth=18, in_channels=1,
                              out_indices=(3, ))
    model_cfg.head.in_channels = 512
    model_cfg.data_preprocessor = cfg.data_preprocessor

    def one_epoch(drop_last):
        torch.manual_seed(0)
        model = MODELS.build(model_cfg)
        optim = build_optim_wrapper(model, cfg.optim_wrapper)
        loader = Runner.build_dataloader(dict(cfg.train_dataloader, drop_last=drop_last),
                                         seed=0)
        sizes = []
        for data in loader:
            sizes.append(len(data['data_samples']))
            model.train_step(data, optim)
        return sizes

    assert one_epoch(True) == [133] * 2
    with pytest.raises(ValueError, match='Expected more than 1 value per channel'):
        one_epoch(False)
