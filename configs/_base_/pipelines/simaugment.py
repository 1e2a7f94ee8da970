# SimAugment (SimCLR's augmentation: random resized crop of 20-100 % of the
# area, flip, colour jitter 0.4/0.4/0.4/0.1 with probability 0.8, grayscale
# with probability 0.2), the contrastive views of BCL (Zhu et al., Balanced
# Contrastive Learning for Long-Tailed Visual Recognition, CVPR 2022, Sec. 4.2)
# and GML (Suh and Seo, ICML 2023, Table A.1), and the views of the
# contrastive representation configs. Variables only: a config lists this
# file among its bases and uses {{_base_.simaugment_cifar}} or
# {{_base_.simaugment_imagenet}} as a MultiView branch. Negative hue shifts
# work through reot_mm's compat fix of mmcv.adjust_hue under numpy 2.

# 32x32 CIFAR images
simaugment_cifar = [
    dict(type='RandomResizedCrop', scale=32, crop_ratio_range=(0.2, 1.0),
         backend='pillow'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandomApply', prob=0.8, transforms=[
        dict(type='ColorJitter', brightness=0.4, contrast=0.4, saturation=0.4,
             hue=0.1)]),
    dict(type='RandomGrayscale', prob=0.2, keep_channels=True,
         channel_weights=(0.114, 0.587, 0.2989)),
]

# 224x224 crops of ImageNet-LT / iNaturalist images (mmpretrain's default
# crop_ratio_range (0.08, 1.0), as SimCLR on ImageNet)
simaugment_imagenet = [
    dict(type='RandomResizedCrop', scale=224, backend='pillow'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandomApply', prob=0.8, transforms=[
        dict(type='ColorJitter', brightness=0.4, contrast=0.4, saturation=0.4,
             hue=0.1)]),
    dict(type='RandomGrayscale', prob=0.2, keep_channels=True,
         channel_weights=(0.114, 0.587, 0.2989)),
]
