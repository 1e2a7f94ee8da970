# iNaturalist 2018 (reot_mm INat2018): 8142 classes, 437.5k training images
# (1000 -> 2 per class), balanced val (24.4k, 3 per class) used as test set.
# Put the images and the lists (as shipped with the decoupling / BCL code)
# under data/inat2018:
#   data/inat2018/iNaturalist18_{train,val}.txt, data/inat2018/train_val2018/
# Same pipelines, batch and evaluators as ImageNet-LT; data and statistics change.
_base_ = ['./imagenet_lt.py']

dataset_type = 'INat2018'
data_preprocessor = dict(
    num_classes=8142,
    # iNat 2018 RGB statistics used by the BCL / PaCo code
    # ((0.466, 0.471, 0.380), (0.195, 0.194, 0.192)) scaled to 0..255
    mean=[118.83, 120.105, 96.9],
    std=[49.725, 49.47, 48.96],
)
train_dataloader = dict(dataset=dict(
    type=dataset_type, data_root='data/inat2018',
    ann_file='iNaturalist18_train.txt'))
val_dataloader = dict(dataset=dict(
    type=dataset_type, data_root='data/inat2018',
    ann_file='iNaturalist18_val.txt'))
test_dataloader = val_dataloader
