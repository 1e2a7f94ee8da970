"""Every BCL config parses, builds model / hooks / training pipeline, and takes
one real optimizer step (train_step) on tiny random 3-view inputs."""
import glob
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import HOOKS, init_default_scope

import reot_mm  # noqa: F401

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'bcl', '*.py')))


def test_bcl_configs_found():
    names = {osp.basename(p) for p in CONFIGS}
    assert {'bcl_resnet8_100e_digitslt.py',
            'bcl_resnet32_200e_cifar100lt-r100.py',
            'bcl_resnet32_200e_cifar10lt-r100.py',
            'bcl_resnext50_32x4d_90e_imagenetlt.py',
            'bcl_resnet50_100e_inat2018.py'} <= names


RECIPES = {  # (τ, λ, μ, projector out) from BCL Sec. 4.2 and the authors' code
    # digits: the CIFAR τ and projector with λ 1, μ 0.35, chosen on the val
    # split (benchmarks/digits_select_hparams.py) over λ 2, μ 0.6
    'digitslt': (0.1, 1.0, 0.35, 128),
    'cifar': (0.1, 2.0, 0.6, 128),
    'imagenetlt': (0.07, 1.0, 0.35, 1024),
    'inat2018': (0.07, 1.0, 0.35, 1024),
}


@pytest.mark.parametrize('path', CONFIGS, ids=[osp.basename(p) for p in CONFIGS])
def test_bcl_config_builds_and_steps(path):
    from mmcv.transforms import Compose
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample
    cfg = Config.fromfile(path)
    name = osp.basename(path)
    assert cfg.custom_imports == dict(imports=['reot_mm'],
                                      allow_failed_imports=False)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    assert [h['type'] for h in cfg.custom_hooks] == ['ClassStatisticsHook']
    for hook in cfg.custom_hooks:
        HOOKS.build(dict(hook))
    assert 'ShotAccuracy' in [e['type'] for e in cfg.val_evaluator]
    recipe = next(v for k, v in RECIPES.items() if k in name)
    loss = cfg.model.loss
    assert (loss.temperature, loss.lc_weight, loss.bcl_weight,
            cfg.model.projector.out_channels) == recipe

    # the training pipeline yields the 3 views of one image (file loading
    # replaced by an in-memory image)
    steps = [t for t in cfg.train_dataloader.dataset.pipeline
             if t['type'] != 'LoadImageFromFile']
    size = 8 if 'digits' in name else 32 if 'cifar' in name else 96
    channels = cfg.model.backbone.get('in_channels', 3)
    image = np.random.RandomState(0).randint(
        0, 255, (size, size, channels), dtype=np.uint8)
    packed = Compose(steps)(dict(img=image, gt_label=1))
    assert len(packed['inputs']) == 3

    model = MODELS.build(cfg.model)
    assert type(model).__name__ == 'BCLClassifier'
    assert type(model.data_preprocessor).__name__ == \
        'MultiViewClsDataPreprocessor'
    num_classes = model.head.num_classes
    counts = torch.linspace(500, 5, num_classes).round()
    for module in model.modules():
        if hasattr(module, 'set_class_counts'):
            module.set_class_counts(counts)
    tiny = 8 if 'digits' in name else 32
    generator = torch.Generator().manual_seed(0)
    views = [torch.randint(0, 255, (2, channels, tiny, tiny), generator=generator,
                           dtype=torch.uint8) for _ in range(3)]
    samples = [DataSample().set_gt_label(i % num_classes) for i in range(2)]
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    before = model.head.fc.weight.detach().clone()
    model.train()
    log_vars = model.train_step(dict(inputs=views, data_samples=samples),
                                optim_wrapper)
    assert {'loss', 'loss_lc', 'loss_bcl'} <= set(log_vars)
    assert all(np.isfinite(float(v)) for v in log_vars.values())
    assert not torch.equal(before, model.head.fc.weight.detach())
    model.eval()
    with torch.no_grad():
        predictions = model.val_step(dict(inputs=views[0], data_samples=samples))
    assert predictions[0].pred_score.shape == (num_classes, )
