"""Long-tailed datasets from `path label` lists (ImageNet-LT, iNat 2018, Places-LT)."""
from typing import List, Optional, Sequence

from mmengine.fileio import get_file_backend, list_from_file
from mmpretrain.datasets import CustomDataset
from mmpretrain.datasets.categories import IMAGENET_CATEGORIES
from mmpretrain.registry import DATASETS

# How many missing paths the error message lists.
_MISSING_SHOWN = 5


@DATASETS.register_module()
class LongTailedListDataset(CustomDataset):
    """A dataset read from a ``path label`` list, as the LT benchmarks ship.

    Each non-empty line of ``ann_file`` is ``<relative image path> <label>``
    (split at the last space, so paths may contain spaces); paths are joined
    to ``data_prefix`` (itself joined to ``data_root``). Example (ImageNet-LT)::

        train/n01440764/n01440764_190.JPEG 0

    Shifted test sets (the test-agnostic protocol of SADE, "Self-Supervised
    Aggregation of Diverse Experts for Test-Agnostic Long-Tailed
    Recognition", NeurIPS 2022, arXiv 2107.09249) are list files too: write
    the Forward-R / Backward-R lists from the balanced test list and the
    training list with ``tools/dataset_converters/make_shifted_test_lists.py``
    (the counts of :func:`~reot_mm.cls.datasets.shifted_test_counts`, the
    rule ``DigitsLT`` and the CIFAR-LT datasets apply in code; seeded) or
    bring your own, and give one as the test dataloader's ``ann_file``
    (``--cfg-options test_dataloader.dataset.ann_file=...``). The class
    names and ``num_classes`` stay those of the benchmark, so a shifted list
    with few images of a class is still evaluated over all classes.

    Args:
        ann_file (str): The list file.
        data_root (str): Root of ``ann_file`` and ``data_prefix``.
            Defaults to ''.
        data_prefix (str | dict): Image folder. Defaults to ''.
        num_classes (int, optional): Expected number of classes; every label
            must lie in ``[0, num_classes)``. None takes ``len(classes)`` when
            class names are given, else ``max label + 1``.
        check_files (bool): Check at load time that every listed image exists
            and raise one error counting the missing ones. Costs one ``stat``
            per image (seconds for iNat's 438k images on a local disk); turn it
            off for remote storage. Defaults to True.
        metainfo (dict, optional): Meta information, e.g. ``classes``. Without
            class names, ``classes`` becomes ``('0', '1', ...)`` so metrics
            that need ``dataset_meta['classes']`` work.
        **kwargs: Other arguments of :class:`mmpretrain.datasets.CustomDataset`.

    Raises:
        ValueError: On a malformed line, a label outside ``[0, num_classes)``,
            or class names whose number differs from ``num_classes``.
        FileNotFoundError: With ``check_files=True``, if images are missing.
    """

    #: Expected class count of the benchmark; None for the generic dataset.
    NUM_CLASSES: Optional[int] = None

    def __init__(self,
                 ann_file: str = '',
                 data_root: str = '',
                 data_prefix: str = '',
                 num_classes: Optional[int] = None,
                 check_files: bool = True,
                 metainfo: Optional[dict] = None,
                 lazy_init: bool = False,
                 **kwargs):
        if not ann_file:
            raise ValueError(
                f'{type(self).__name__} needs ann_file (a "path label" list)')
        if num_classes is None:
            num_classes = self.NUM_CLASSES
        if num_classes is not None and (int(num_classes) != num_classes
                                        or num_classes < 1):
            raise ValueError(
                f'num_classes must be None or an integer >= 1, '
                f'got {num_classes!r}')
        self.num_classes = num_classes
        self.check_files = check_files
        # CustomDataset always builds lazily and calls full_init itself.
        super().__init__(
            ann_file=ann_file,
            data_root=data_root,
            data_prefix=data_prefix,
            with_label=True,
            metainfo=metainfo,
            lazy_init=lazy_init,
            **kwargs)
        self._check_class_names()

    def _check_class_names(self) -> None:
        """Validate or create ``classes`` (works with lazy_init: no data)."""
        if self.CLASSES is not None:
            if (self.num_classes is not None
                    and len(self.CLASSES) != self.num_classes):
                raise ValueError(
                    f'{type(self).__name__}: {len(self.CLASSES)} class names '
                    f'given but num_classes is {self.num_classes}')
        elif self.num_classes is not None:
            self._metainfo['classes'] = tuple(
                str(i) for i in range(self.num_classes))

    def load_data_list(self) -> List[dict]:
        """Parse the list, validate labels and (optionally) the files.

        Returns:
            list[dict]: ``{'img_path': str, 'gt_label': int}`` per line.
        """
        self._check_class_names()
        backend = get_file_backend(self.img_prefix, enable_singleton=True)
        data_list = []
        max_label, min_label = -1, None
        for line_no, line in enumerate(list_from_file(self.ann_file), 1):
            line = line.strip()
            if not line:
                continue
            parts = line.rsplit(' ', 1)
            if len(parts) != 2 or not parts[1].lstrip('-').isdigit():
                raise ValueError(
                    f'{self.ann_file}:{line_no}: expected "<path> <label>", '
                    f'got {line!r}')
            label = int(parts[1])
            max_label = max(max_label, label)
            min_label = label if min_label is None else min(min_label, label)
            data_list.append({
                'img_path': backend.join_path(self.img_prefix, parts[0]),
                'gt_label': label
            })
        if not data_list:
            raise ValueError(f'ann_file {self.ann_file} lists no image')

        num_classes = (len(self.CLASSES)
                       if self.CLASSES is not None else self.num_classes)
        if min_label < 0 or (num_classes is not None
                             and max_label >= num_classes):
            bound = '?' if num_classes is None else num_classes
            raise ValueError(
                f'{type(self).__name__}: labels in {self.ann_file} must lie in '
                f'[0, {bound}) (num_classes), got range '
                f'[{min_label}, {max_label}]')
        if self.CLASSES is None:
            self._metainfo['classes'] = tuple(
                str(i) for i in range(max_label + 1))

        if self.check_files:
            self._check_files_exist(backend, data_list)
        return data_list

    def _check_files_exist(self, backend, data_list: Sequence[dict]) -> None:
        """Raise one error listing how many images are missing."""
        missing = [
            info['img_path'] for info in data_list
            if not backend.exists(info['img_path'])
        ]
        if missing:
            shown = ', '.join(missing[:_MISSING_SHOWN])
            more = (f' and {len(missing) - _MISSING_SHOWN} more'
                    if len(missing) > _MISSING_SHOWN else '')
            raise FileNotFoundError(
                f'{type(self).__name__}: {len(missing)} of {len(data_list)} '
                f'images listed in {self.ann_file} are missing under '
                f'{self.img_prefix!r}: {shown}{more}. Fix data_root/'
                f'data_prefix, or pass check_files=False to skip the check.')

    def extra_repr(self) -> List[str]:
        """Extra lines for ``repr``."""
        body = super().extra_repr()
        body.append(f'Number of classes: \t{self.num_classes}')
        return body


@DATASETS.register_module()
class ImageNetLT(LongTailedListDataset):
    """ImageNet-LT (Liu et al. 2019): 1000 classes, 115.8k train images.

    Lists: ``ImageNet_LT_train.txt`` / ``_val.txt`` / ``_test.txt`` with paths
    relative to the ImageNet root (e.g. ``train/n01440764/...JPEG``). Class
    names are mmpretrain's ImageNet categories. Arguments as
    :class:`LongTailedListDataset`, with ``num_classes=1000``.
    """

    NUM_CLASSES = 1000
    METAINFO = {'classes': IMAGENET_CATEGORIES}


@DATASETS.register_module()
class INat2018(LongTailedListDataset):
    """iNaturalist 2018: 8142 classes, 437.5k train / 24.4k val images.

    Lists: ``iNaturalist18_train.txt`` / ``iNaturalist18_val.txt`` (as shipped
    with the decoupling / BCL code) with paths relative to the iNat root.
    Class names are ``'0'..'8141'``. Arguments as
    :class:`LongTailedListDataset`, with ``num_classes=8142``.
    """

    NUM_CLASSES = 8142


@DATASETS.register_module()
class PlacesLT(LongTailedListDataset):
    """Places-LT (Liu et al. 2019): 365 classes, 62.5k train images.

    Lists: ``Places_LT_train.txt`` / ``_val.txt`` / ``_test.txt`` with paths
    relative to the Places-365 root. Class names are ``'0'..'364'``.
    Arguments as :class:`LongTailedListDataset`, with ``num_classes=365``.
    """

    NUM_CLASSES = 365
