"""Long-tailed classification datasets registered in mmpretrain's DATASETS."""
from .cifar_lt import CIFAR10LT, CIFAR100LT
from .digits_lt import DigitsLT
from .list_lt import INat2018, ImageNetLT, LongTailedListDataset, PlacesLT
from .long_tail import (TEST_DISTRIBUTIONS, exponential_profile,
                        shifted_test_counts, subsample_long_tailed)
from .transforms import (RandomContrast, RandomGaussianNoise,  # noqa: F401
                         RandomSmallAffine)

__all__ = [
    'CIFAR10LT', 'CIFAR100LT', 'DigitsLT', 'INat2018', 'ImageNetLT',
    'LongTailedListDataset', 'PlacesLT', 'TEST_DISTRIBUTIONS',
    'exponential_profile', 'shifted_test_counts', 'subsample_long_tailed'
]
