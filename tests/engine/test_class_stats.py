"""Counting classes from datasets, through mmengine's dataset wrappers."""
import json

import numpy as np
import pytest
from mmengine.dataset import (BaseDataset, ClassBalancedDataset, ConcatDataset,
                              RepeatDataset)

import reot_mm  # noqa: F401
from reot_mm.cls.datasets import DigitsLT
from reot_mm.cls.datasets.long_tail import exponential_profile
from reot_mm import counts_file
from reot_mm.engine import class_stats

DIGITS = exponential_profile(100, 10, 60)


class InstanceDataset(BaseDataset):
    """mmdet-like: several instance labels per image, exposed by get_cat_ids."""
    METAINFO = dict(classes=('a', 'b', 'c'))

    def load_data_list(self):
        return [dict(labels=[0, 0, 2]), dict(labels=[1]), dict(labels=[])]

    def get_cat_ids(self, idx):
        return self.get_data_info(idx)['labels']


def test_counts_from_mmpretrain_dataset():
    counts = class_stats.count_dataset_classes(DigitsLT(split='train'), 10)
    assert counts.tolist() == list(DIGITS)


def test_wrappers_are_unwrapped():
    digits = DigitsLT(split='train')
    repeated = RepeatDataset(digits, times=3)
    balanced = ClassBalancedDataset(DigitsLT(split='train'), oversample_thr=0.5)
    # re-sampling wrappers count the annotated distribution once
    assert class_stats.count_dataset_classes(repeated, 10).tolist() == list(DIGITS)
    assert class_stats.count_dataset_classes(balanced, 10).tolist() == list(DIGITS)
    concat = ConcatDataset([DigitsLT(split='train'), DigitsLT(split='test')])
    expected = np.asarray(DIGITS) + 50
    assert class_stats.count_dataset_classes(concat, 10).tolist() == expected.tolist()
    assert class_stats.dataset_num_classes(concat) == 10


def test_instance_counts_from_get_cat_ids():
    counts = class_stats.count_dataset_classes(InstanceDataset(), 3)
    assert counts.tolist() == [2, 1, 1]


def test_label_outside_num_classes():
    with pytest.raises(ValueError, match='num_classes is 2'):
        class_stats.count_dataset_classes(InstanceDataset(), 2)


def test_dataset_without_labels_api():
    class Opaque(BaseDataset):
        def load_data_list(self):
            return [dict(x=1)]

    with pytest.raises(TypeError, match='class_counts_file'):
        class_stats.count_dataset_classes(Opaque(), 3)


def test_counts_files(tmp_path):
    (tmp_path / 'a.json').write_text(json.dumps([3, 4]))
    (tmp_path / 'b.json').write_text(json.dumps({'class_counts': [5, 6]}))
    (tmp_path / 'c.txt').write_text('7 8\n9\n')
    (tmp_path / 'd.json').write_text(json.dumps({'counts': [1]}))
    (tmp_path / 'e.txt').write_text('7 x')
    (tmp_path / 'f.txt').write_text('1, 2,3')
    assert counts_file.load_counts_file(str(tmp_path / 'a.json')) == [3, 4]
    assert counts_file.load_counts_file(str(tmp_path / 'b.json')) == [5, 6]
    assert counts_file.load_counts_file(str(tmp_path / 'c.txt')) == [7, 8, 9]
    assert counts_file.load_counts_file(str(tmp_path / 'f.txt')) == [1, 2, 3]
    with pytest.raises(ValueError, match='"class_counts" key'):
        counts_file.load_counts_file(str(tmp_path / 'd.json'))
    with pytest.raises(ValueError, match='must hold numbers'):
        counts_file.load_counts_file(str(tmp_path / 'e.txt'))
    with pytest.raises(FileNotFoundError, match='does not exist'):
        counts_file.load_counts_file(str(tmp_path / 'missing.json'))
    counts_file.save_counts_file(str(tmp_path / 'out.json'), [1, 2])
    assert counts_file.load_counts_file(str(tmp_path / 'out.json')) == [1, 2]
