# iNaturalist 2018 (reot_mm INat2018): 8142 classes, 437.5k training images
# (1000 -> 2 per class), balanced val (24.4k, 3 per class) used as test set.
# Put the images and the lists (as shipped with the decoupling / BCL code)
# under data/inat2018:
#   data/inat2018/iNaturalist18_{train,val}.txt, data/inat2018/train_val2018/
# (where the lists come from, or how to make them from the official json:
# docs/data_preparation.md, section "iNaturalist 2018").
# Same pipelines, batch and evaluators as ImageNet-LT; data and statistics
# change (./inat2018_fields.py).
_base_ = ['./imagenet_lt.py', './inat2018_fields.py']

dataset_type = 'INat2018'
data_preprocessor = {{_base_.inat2018_preprocessor}}
train_dataloader = dict(dataset={{_base_.inat2018_train}})
val_dataloader = dict(dataset={{_base_.inat2018_val}})
test_dataloader = val_dataloader
