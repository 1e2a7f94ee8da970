"""Repeat-factor sampling (RFS) of the LVIS configs, checked against its definition.

LVIS (Gupta, Dollár, Girshick, LVIS: A Dataset for Large Vocabulary Instance
Segmentation, CVPR 2019, arXiv:1908.03195) defines, for a threshold t:

    f(c) = fraction of the training images that contain category c,
    r(c) = max(1, sqrt(t / f(c))),   r(I) = max over c in I of r(c),

and an image without any category is sampled once (r = 1). The LVIS configs
build ``ClassBalancedDataset(oversample_thr=1e-3)`` around ``LVISV1Dataset``
with ``filter_cfg=dict(filter_empty_gt=True, min_size=32)``. This file builds
the training dataset from the shipped config on a generated annotation file
(no image is read) with every kind of image mmdet treats specially, computes
the factors from the raw JSON by the definition, and compares them with
mmengine 0.10.7's.

What it establishes (docs/methods/lvis.md):

* the "training images" of f(c) are the images left after ``filter_cfg``:
  images without annotations and images under 32 px are not in the
  denominator (they are not trained on at all);
* an image that passes the filter but whose annotations are all dropped when
  parsed (degenerate or outside the image) has an empty category set: it gets
  r = 1, counts in the denominator, and keeps its own index (the
  misalignment behind the LVIS AP drop of early mmdet 3.x is fixed);
* each image is repeated ceil(r(I)) times per epoch (deterministic rounding
  up; LVIS's reference implementation rounds stochastically, so the expected
  count is r(I)): the epoch is longer by Σ (ceil(r) - r).
"""
import collections
import json
import math
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope

import reot_mm  # noqa: F401

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'lvis',
                  'reot_mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1.py')
THR = 1e-3
# category id -> (name, number of valid training images containing it)
CATEGORIES = {1: ('frequent', None), 4: ('rare_once', 1),
              6: ('rare_twice', 2), 9: ('common', 40), 12: ('absent', 0)}
NUM_PLAIN = 2900        # valid images holding only the frequent category
NUM_EMPTY = 60          # images without annotations (dropped by the filter)
NUM_SMALL = 25          # 20 x 20 px images (dropped, min_size = 32)
NUM_DEGENERATE = 3      # annotations all dropped when parsed -> empty set


def _box(x, y, w, h):
    return dict(bbox=[x, y, w, h], area=float(max(w, 0) * max(h, 0)),
                segmentation=[[x, y, x + w, y, x + w, y + h, x, y + h]])


def write_rfs_annotations(path):
    """An LVIS v1 training file; returns the raw dict."""
    images, anns = [], []

    def add_image(cats, size=(96, 80), boxes=None):
        image_id = len(images) + 1
        name = f'{image_id:012d}.jpg'
        images.append(dict(
            id=image_id, width=size[0], height=size[1],
            coco_url=f'http://images.cocodataset.org/train2017/{name}',
            neg_category_ids=[], not_exhaustive_category_ids=[]))
        for k, cat in enumerate(cats):
            box = boxes[k] if boxes else _box(4 + 10 * k, 4, 8, 8)
            anns.append(dict(id=len(anns) + 1, image_id=image_id,
                             category_id=cat, **box))

    for index in range(NUM_PLAIN):
        add_image([1])
    add_image([1, 4])                           # rare_once
    add_image([6]), add_image([1, 6, 9])        # rare_twice
    for index in range(38):
        add_image([9, 1] if index % 2 else [9])  # common (40 with the above)
    for index in range(NUM_EMPTY):
        add_image([])
    for index in range(NUM_SMALL):
        # a small image holding a rare category: not trained on, not counted
        add_image([6] if index == 0 else [1], size=(20, 20))
    add_image([4], boxes=[_box(4, 4, 0.5, 8)])     # degenerate width
    add_image([9], boxes=[_box(200, 200, 8, 8)])   # outside the image
    add_image([1], boxes=[_box(4, 4, 8, 0)])       # zero area
    categories = [dict(id=cid, name=name, synonyms=[name],
                       synset=f'{name}.n.01', def_=name, frequency='r',
                       image_count=0, instance_count=0)
                  for cid, (name, _) in CATEGORIES.items()]
    for cat in categories:
        cat['def'] = cat.pop('def_')
    data = dict(info={}, licenses=[], images=images, annotations=anns,
                categories=categories)
    with open(path, 'w') as handle:
        json.dump(data, handle)
    return data


def definition_factors(data, denominator='trained'):
    """r(I) by the LVIS definition, from the raw JSON, for the images that
    pass ``filter_cfg`` (in file order).

    ``denominator``: ``'trained'`` (images after the filter) or ``'all'``
    (every image of the file) — only the first is mmengine's.
    """
    size = {img['id']: (img['width'], img['height']) for img in data['images']}
    with_ann = {a['image_id'] for a in data['annotations']}
    trained = [img['id'] for img in data['images']
               if img['id'] in with_ann and min(size[img['id']]) >= 32]
    cats = collections.defaultdict(set)
    for ann in data['annotations']:
        x, y, w, h = ann['bbox']
        width, height = size[ann['image_id']]
        inside = (min(x + w, width) - max(x, 0)) > 0 and \
            (min(y + h, height) - max(y, 0)) > 0
        if ann['area'] > 0 and w >= 1 and h >= 1 and inside:
            cats[ann['image_id']].add(ann['category_id'])
    num = len(trained) if denominator == 'trained' else len(data['images'])
    image_freq = collections.Counter(c for i in trained for c in cats[i])
    repeat = {c: max(1.0, math.sqrt(THR / (n / num)))
              for c, n in image_freq.items()}
    return trained, [max((repeat[c] for c in cats[i]), default=1.0)
                     for i in trained]


@pytest.fixture(scope='module')
def rfs_dataset(tmp_path_factory):
    from mmdet.registry import DATASETS
    root = tmp_path_factory.mktemp('lvis_rfs')
    (root / 'annotations').mkdir()
    data = write_rfs_annotations(str(root / 'annotations' /
                                     'lvis_v1_train.json'))
    cfg = Config.fromfile(CONFIG)
    dataset_cfg = cfg.train_dataloader.dataset
    assert dataset_cfg.type == 'ClassBalancedDataset'
    assert dataset_cfg.oversample_thr == THR
    dataset_cfg.dataset.update(
        data_root=f'{root}/', pipeline=[],
        metainfo=dict(classes=tuple(n for n, _ in CATEGORIES.values())))
    init_default_scope('mmdet')
    dataset = DATASETS.build(dataset_cfg)
    dataset.full_init()
    return data, dataset


def test_filter_cfg_of_the_lvis_config_drops_empty_and_small_images(rfs_dataset):
    data, dataset = rfs_dataset
    inner = dataset.dataset
    assert inner.filter_cfg == dict(filter_empty_gt=True, min_size=32)
    trained, _ = definition_factors(data)
    assert len(data['images']) == NUM_PLAIN + 1 + 2 + 38 + NUM_EMPTY + \
        NUM_SMALL + NUM_DEGENERATE
    assert len(trained) == NUM_PLAIN + 1 + 2 + 38 + NUM_DEGENERATE == 2944
    assert [inner.get_data_info(i)['img_id'] for i in range(len(inner))] \
        == trained


def test_mmengine_repeat_factors_equal_the_lvis_definition(rfs_dataset):
    data, dataset = rfs_dataset
    inner = dataset.dataset
    factors = dataset._get_repeat_factors(inner, dataset.oversample_thr)
    _, expected = definition_factors(data)
    # one factor per image (mmdetection PR #10038 / mmengine PR #1048)
    assert len(factors) == len(inner) == len(expected)
    assert factors == pytest.approx(expected, rel=1e-12)
    by_id = dict(zip((inner.get_data_info(i)['img_id']
                      for i in range(len(inner))), factors))
    # rare_once: f = 1/2944 -> r = sqrt(2.944); rare_twice: sqrt(1.472)
    assert by_id[NUM_PLAIN + 1] == pytest.approx(math.sqrt(2.944))
    assert by_id[NUM_PLAIN + 2] == pytest.approx(math.sqrt(1.472))
    assert by_id[NUM_PLAIN + 3] == pytest.approx(math.sqrt(1.472))
    assert by_id[1] == 1.0
    # the denominator is the filtered set, not every image of the file
    _, all_images = definition_factors(data, denominator='all')
    assert factors != pytest.approx(all_images, rel=1e-6)


def test_empty_category_sets_keep_r_1_and_their_own_index(rfs_dataset):
    data, dataset = rfs_dataset
    inner = dataset.dataset
    empty = [i for i in range(len(inner)) if not inner.get_cat_ids(i)]
    assert len(empty) == NUM_DEGENERATE
    copies = collections.Counter(dataset.repeat_indices)
    for index in empty:
        assert copies[index] == 1
        assert inner.get_data_info(index)['img_id'] > NUM_PLAIN + 41


def test_each_image_is_repeated_ceil_r_times(rfs_dataset):
    data, dataset = rfs_dataset
    _, expected = definition_factors(data)
    copies = collections.Counter(dataset.repeat_indices)
    assert [copies[i] for i in range(len(expected))] == \
        [math.ceil(r) for r in expected]
    # rounding up: the epoch is longer than the expected Σ r of stochastic
    # rounding (2944 images: Σ r = 2945.14, Σ ceil(r) = 2947)
    assert len(dataset) == sum(math.ceil(r) for r in expected) == 2947
    assert sum(expected) == pytest.approx(2944 + (math.sqrt(2.944) - 1)
                                          + 2 * (math.sqrt(1.472) - 1))
