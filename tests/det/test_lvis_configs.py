"""The LVIS configs inherit upstream mmdet and override only what RE-OT changes."""
import glob
import os.path as osp

from mmengine.config import Config
from mmengine.registry import HOOKS, init_default_scope

import reot_mm  # noqa: F401

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
LVIS = osp.join(ROOT, 'configs', 'lvis')
MAIN = osp.join(LVIS, 'reot_mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1.py')
UPSTREAM = 'mmdet::lvis/mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1.py'
EXPECTED_HOOKS = ['LVISAnnotationCheckHook', 'ClassStatisticsHook',
                  'REOTPriorHook']


def load(path):
    return Config.fromfile(path).to_dict()


def load_upstream(tmp_path, base):
    path = tmp_path / 'upstream.py'
    path.write_text(f"_base_ = ['{base}']\n")
    return load(str(path))


def strip_scope(value):
    if isinstance(value, dict):
        return {k: strip_scope(v) for k, v in value.items() if k != '_scope_'}
    if isinstance(value, (list, tuple)):
        return type(value)(strip_scope(v) for v in value)
    return value


def without(cfg, *keys):
    return {k: v for k, v in cfg.items() if k not in keys}


def test_all_lvis_configs_parse_and_activate_the_plugin():
    paths = sorted(glob.glob(osp.join(LVIS, '*.py')))
    assert {osp.basename(p) for p in paths} >= {
        'reot_mask_rcnn.py', osp.basename(MAIN),
        'reot_mask-rcnn_r50_fpn_random_ms-1x_lvis-v1.py',
        'reot-bcl_mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1.py',
        'reot_cascade-mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1.py'}
    init_default_scope('mmdet')
    for path in paths:
        cfg = Config.fromfile(path)
        assert cfg.custom_imports == dict(imports=['reot_mm'],
                                          allow_failed_imports=False), path
        # GML's configs size their class-wise queues instead of scheduling λ
        expected = EXPECTED_HOOKS[:2] + ['GMLQueueHook'] \
            if osp.basename(path).startswith('gml') else EXPECTED_HOOKS
        assert [h['type'] for h in cfg.custom_hooks] == expected, path
        for hook in cfg.custom_hooks:
            HOOKS.build(dict(hook))
        assert cfg.val_evaluator.type == 'LVISMetric'
        assert cfg.val_evaluator.metric == ['bbox', 'segm']


def test_short_name_is_the_upstream_named_config():
    assert load(osp.join(LVIS, 'reot_mask_rcnn.py')) == load(MAIN)


def test_main_config_replaces_only_the_box_classification_loss(tmp_path):
    ours, upstream = load(MAIN), load_upstream(tmp_path, UPSTREAM)
    loss = ours['model']['roi_head']['bbox_head'].pop('loss_cls')
    assert loss == dict(type='REOTRoILoss', background='foreground_only',
                        prior='class_ratio', loss_weight=1.0)
    assert upstream['model']['roi_head']['bbox_head'].pop('loss_cls')['type'] \
        == 'CrossEntropyLoss'
    assert strip_scope(without(ours, 'custom_imports', 'custom_hooks')) == \
        strip_scope(upstream)
    # RFS stays: ClassBalancedDataset with upstream's 1e-3 threshold
    assert ours['train_dataloader']['dataset']['type'] == 'ClassBalancedDataset'
    assert ours['train_dataloader']['dataset']['oversample_thr'] == 1e-3


def test_random_variant_drops_only_the_rfs_wrapper():
    ours, rfs = load(osp.join(
        LVIS, 'reot_mask-rcnn_r50_fpn_random_ms-1x_lvis-v1.py')), load(MAIN)
    dataset = ours['train_dataloader'].pop('dataset')
    inner = rfs['train_dataloader'].pop('dataset')['dataset']
    assert dataset['type'] == 'LVISV1Dataset'
    assert strip_scope(dataset) == strip_scope(inner)
    assert strip_scope(ours) == strip_scope(rfs)


def test_bcl_variant_changes_only_the_box_head_type_and_contrast():
    ours, base = load(osp.join(
        LVIS, 'reot-bcl_mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1.py')), load(MAIN)
    head, base_head = (c['model']['roi_head']['bbox_head'] for c in (ours, base))
    assert head.pop('type') == 'BCLShared2FCBBoxHead'
    assert base_head.pop('type') == 'Shared2FCBBoxHead'
    assert head.pop('loss_contrast') == dict(type='BCLLoss', lc_weight=0.0,
                                             bcl_weight=0.35, temperature=0.07)
    assert head.pop('contrast_channels') == 128
    assert head == base_head and head['fc_out_channels'] == 1024
    assert strip_scope(without(ours, 'model')) == strip_scope(without(base, 'model'))


def test_cascade_variant_matches_upstream_cascade_heads(tmp_path):
    ours = load(osp.join(
        LVIS, 'reot_cascade-mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1.py'))
    cascade = load_upstream(
        tmp_path, 'mmdet::cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py')
    heads, upstream_heads = (c['model']['roi_head']['bbox_head']
                             for c in (ours, cascade))
    assert len(heads) == len(upstream_heads) == 3
    for head, upstream_head in zip(heads, upstream_heads):
        assert head.pop('loss_cls')['type'] == 'REOTRoILoss'
        upstream_head.pop('loss_cls')
        assert head.pop('num_classes') == 1203
        upstream_head.pop('num_classes')
        assert strip_scope(head) == strip_scope(upstream_head)
    # the LVIS data, schedule and evaluation of the Mask R-CNN config
    main = load(MAIN)
    for key in ('train_dataloader', 'val_dataloader', 'val_evaluator',
                'train_cfg', 'param_scheduler', 'optim_wrapper'):
        assert strip_scope(ours[key]) == strip_scope(main[key]), key
