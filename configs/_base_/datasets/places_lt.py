# Places-LT (Liu et al. 2019; reot_mm PlacesLT): 365 classes, 62.5k training
# images (4980 -> 5 per class), balanced val (7.3k) and test (36.5k) lists.
# Put the Places-365 images and the lists under data/places365:
#   data/places365/Places_LT_{train,val,test}.txt
# (lists and layout: docs/data_preparation.md, section "Places-LT").
# Same pipelines, batch and evaluators as ImageNet-LT (ImageNet statistics, as
# OLTR); only the data changes.
_base_ = ['./imagenet_lt.py']

dataset_type = 'PlacesLT'
data_preprocessor = dict(num_classes=365)
train_dataloader = dict(dataset=dict(
    type=dataset_type, data_root='data/places365',
    ann_file='Places_LT_train.txt'))
val_dataloader = dict(dataset=dict(
    type=dataset_type, data_root='data/places365', ann_file='Places_LT_val.txt'))
test_dataloader = dict(dataset=dict(
    type=dataset_type, data_root='data/places365', ann_file='Places_LT_test.txt'))
