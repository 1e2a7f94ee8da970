# What an ImageNet-LT config changes to train on iNaturalist 2018: the data
# preprocessor's class count and normalisation and the datasets' type, root
# and lists (pipelines, batch and evaluators stay). Variables only, so an
# iNat config can list this file next to the ImageNet-LT config it inherits:
#   _base_ = ['./bcl_resnext50_32x4d_90e_imagenetlt.py',
#             '../_base_/datasets/inat2018_fields.py']
#   data_preprocessor = {{_base_.inat2018_preprocessor}}
#   train_dataloader = dict(dataset={{_base_.inat2018_train}})
# ../_base_/datasets/inat2018.py is ImageNet-LT's data with these fields.
inat2018_preprocessor = dict(
    num_classes=8142,
    # iNat 2018 RGB statistics used by the BCL / PaCo code
    # ((0.466, 0.471, 0.380), (0.195, 0.194, 0.192)) scaled to 0..255
    mean=[118.83, 120.105, 96.9],
    std=[49.725, 49.47, 48.96],
)
# lists and images: docs/data_preparation.md, section "iNaturalist 2018"
inat2018_train = dict(type='INat2018', data_root='data/inat2018',
                      ann_file='iNaturalist18_train.txt')
# the balanced val list (3 images per class) is the test set, as in the papers
inat2018_val = dict(type='INat2018', data_root='data/inat2018',
                    ann_file='iNaturalist18_val.txt')
