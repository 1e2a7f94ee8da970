# GML on CIFAR-10-LT (imbalance factor 100): the CIFAR-100-LT recipe
# (ResNet-32 student, ResNet-56 teacher, k = 4096, k_m = 2, D = 32, τ_g = 0.1,
# α_kd = 1) with CIFAR-10-LT data (../_base_/datasets/cifar10_lt_fields.py);
# the teacher comes from gml-teacher_resnet56_200e_cifar10lt-r100.py. At
# ρ = 100 every class has >= 50 images, so ShotAccuracy has no few-shot group.
_base_ = ['./gml_resnet32_200e_cifar100lt-r100.py',
          '../_base_/datasets/cifar10_lt_fields.py']

data_preprocessor = {{_base_.cifar10_preprocessor}}
model = dict(
    student=dict(head=dict(num_classes=10)),
    teacher=dict(head=dict(num_classes=10)),
    teacher_checkpoint=('work_dirs/gml-teacher_resnet56_200e_cifar10lt-r100/'
                        'epoch_200.pth'))
train_dataloader = dict(dataset={{_base_.cifar10_dataset}})
val_dataloader = dict(dataset={{_base_.cifar10_dataset}})
test_dataloader = val_dataloader
