"""GML configs: paper values, teacher/student compatibility, one training step
per student config, and a real tools/train.py teacher -> student run."""
import glob
import json
import math
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import HOOKS, MODELS, init_default_scope
from mmpretrain.structures import DataSample

import reot_mm  # noqa: F401

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
GML = osp.join(ROOT, 'configs', 'gml')
STUDENTS = {
    'gml_resnet8_100e_digitslt.py': 'gml-teacher_resnet8_100e_digitslt.py',
    'gml_resnet32_200e_cifar100lt-r100.py':
        'gml-teacher_resnet56_200e_cifar100lt-r100.py',
    'gml_resnet32_200e_cifar10lt-r100.py':
        'gml-teacher_resnet56_200e_cifar10lt-r100.py',
    'gml_resnext50_32x4d_90e_imagenetlt.py':
        'gml-teacher_resnext101_32x4d_90e_imagenetlt.py',
    'gml_resnet50_100e_inat2018.py': 'gml-teacher_resnet152_100e_inat2018.py',
}


def load(name):
    return Config.fromfile(osp.join(GML, name))


def test_every_config_is_listed_and_parses():
    names = {osp.basename(p) for p in glob.glob(osp.join(GML, '*.py'))}
    assert names == set(STUDENTS) | set(STUDENTS.values())
    init_default_scope('mmpretrain')
    for name in sorted(names):
        cfg = load(name)
        assert cfg.custom_imports == dict(imports=['reot_mm'],
                                          allow_failed_imports=False), name
        assert 'ShotAccuracy' in [e['type'] for e in cfg.val_evaluator], name
        hooks = [h['type'] for h in cfg.custom_hooks]
        assert hooks[0] == 'ClassStatisticsHook', name
        for hook in cfg.custom_hooks:
            HOOKS.build(dict(hook))
        if name in STUDENTS:
            assert hooks == ['ClassStatisticsHook', 'GMLQueueHook'], name
            # θ of τ_g has no weight decay (nor have the cosine weights)
            assert cfg.optim_wrapper.paramwise_cfg.custom_keys == \
                {'log_tau_g': dict(decay_mult=0.0),
                 'head.fc': dict(decay_mult=0.0)}, name
            assert cfg.data_preprocessor.type == 'MultiViewClsDataPreprocessor'
            assert cfg.model.teacher_checkpoint.startswith(
                'work_dirs/' + osp.splitext(STUDENTS[name])[0] + '/'), name


@pytest.mark.parametrize('name, K, k_m, D, tau_g, kd, lr, batch, epochs', [
    # GML Table A.1, Sec. 4.2 and the authors' code (k_m 3 on ImageNet-LT)
    ('gml_resnet32_200e_cifar100lt-r100.py', 4096, 2, 32, 0.1, 1.0, 0.05, 64, 200),
    ('gml_resnet32_200e_cifar10lt-r100.py', 4096, 2, 32, 0.1, 1.0, 0.05, 64, 200),
    ('gml_resnext50_32x4d_90e_imagenetlt.py', 16384, 3, 1024, 0.07, 0.0, 0.05,
     128, 90),
    ('gml_resnet50_100e_inat2018.py', 65536, 2, 1024, 0.1, 0.0, 0.02, 128, 100),
])
def test_full_size_recipes(name, K, k_m, D, tau_g, kd, lr, batch, epochs):
    cfg = load(name)
    student = cfg.model.student
    assert (student.queue.size, student.queue.min_per_class) == (K, k_m)
    assert student.query_mlp.out_channels == student.key_mlp.out_channels == D
    assert student.loss.tau_g == tau_g and student.loss.kd_weight == kd
    assert student.loss.tau_s == pytest.approx(1 / 30)
    assert student.loss.cls_weight == student.loss.gml_weight == 1.0
    assert cfg.optim_wrapper.optimizer.lr == lr
    scale = batch // cfg.train_dataloader.batch_size
    assert cfg.auto_scale_lr.base_batch_size == batch and scale in (1, 4)
    assert cfg.train_cfg.max_epochs == epochs
    assert student.head.type == 'CosineClsHead' and student.head.scale == 30.0


def comparable(model_cfg):
    """What a strict state-dict load depends on."""
    head = model_cfg['head']
    return (model_cfg['backbone'], model_cfg['neck'], head['type'],
            head['num_classes'], head['in_channels'], head['loss']['type'])


@pytest.mark.parametrize('student', sorted(STUDENTS))
def test_student_teacher_matches_the_teacher_config(student):
    teacher_cfg = load(STUDENTS[student]).model.to_dict()
    in_student = load(student).model.teacher.to_dict()
    assert comparable(in_student) == comparable(teacher_cfg)


# The 1000- and 8142-class configs step with 10 classes and a small queue so
# that one CPU step takes seconds; their unmodified values are checked above.
SHRINK = {'gml_resnext50_32x4d_90e_imagenetlt.py': 10,
          'gml_resnet50_100e_inat2018.py': 10}


@pytest.mark.parametrize('name', sorted(STUDENTS))
def test_student_config_takes_a_step_with_a_random_teacher(name, tmp_path):
    init_default_scope('mmpretrain')
    cfg = load(name)
    model_cfg = cfg.model
    if name in SHRINK:
        classes = SHRINK[name]
        model_cfg.student.head.num_classes = classes
        model_cfg.teacher.head.num_classes = classes
        model_cfg.student.queue.size = 4 * classes * model_cfg.student.queue.min_per_class
    torch.manual_seed(0)
    teacher = MODELS.build(model_cfg.teacher)
    torch.save({'state_dict': teacher.state_dict()}, tmp_path / 'teacher.pth')
    del teacher
    model_cfg.teacher_checkpoint = str(tmp_path / 'teacher.pth')
    model_cfg.data_preprocessor = cfg.data_preprocessor
    model = MODELS.build(model_cfg)
    num_classes = model.student.head.num_classes
    counts = torch.linspace(500, 5, num_classes).round()
    for module in model.modules():
        if hasattr(module, 'set_class_counts'):
            module.set_class_counts(counts)
    model.student.queue.build_segments(counts)
    channels = model_cfg.student.backbone.get('in_channels', 3)
    size = 8 if 'digits' in name else 32 if 'cifar' in name else 64
    batch = 4
    raw = [torch.randint(0, 256, (batch, channels, size, size), dtype=torch.uint8)
           for _ in range(3)]
    samples = [DataSample(metainfo=dict(sample_idx=i)).set_gt_label(i % num_classes)
               for i in range(batch)]
    model.train()
    data = model.data_preprocessor(dict(inputs=raw, data_samples=samples), True)
    losses = model(**data, mode='loss')
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    assert model.student.gml_loss.log_tau_g.grad is not None
    assert ('loss_kd' in losses) == (model_cfg.student.loss.kd_weight > 0)
    model.eval()
    data = model.data_preprocessor(dict(inputs=raw[0], data_samples=samples), False)
    predictions = model(**data, mode='predict')
    assert predictions[0].pred_score.shape == (num_classes, )


def run_train(*args):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    result = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'train.py'),
                             *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def scalars(work_dir):
    run, = [d for d in os.listdir(work_dir)
            if osp.isdir(osp.join(work_dir, d, 'vis_data'))]
    with open(osp.join(work_dir, run, 'vis_data', 'scalars.json')) as handle:
        return [json.loads(line) for line in handle]


def test_tools_train_teacher_then_student(tmp_path):
    teacher_dir = tmp_path / 'teacher'
    run_train(osp.join(GML, 'gml-teacher_resnet8_100e_digitslt.py'),
              '--work-dir', str(teacher_dir), '--cfg-options',
              'train_cfg.max_epochs=2', 'train_cfg.val_interval=2',
              'default_hooks.checkpoint.interval=2')
    checkpoint = teacher_dir / 'epoch_2.pth'
    assert checkpoint.is_file()
    student_dir = tmp_path / 'student'
    log = run_train(osp.join(GML, 'gml_resnet8_100e_digitslt.py'),
                    '--work-dir', str(student_dir), '--cfg-options',
                    f'model.teacher_checkpoint={checkpoint}',
                    'train_cfg.max_epochs=2', 'train_cfg.val_interval=2',
                    'default_hooks.checkpoint.interval=2',
                    'default_hooks.logger.interval=1',
                    # the CIFAR recipe's KD term, off in the digits config
                    'model.student.loss.kd_weight=1.0')
    assert 'GMLQueueHook: pre-filled the queues from the teacher' in log
    records = scalars(student_dir)
    train = [r for r in records if 'loss_gml' in r]
    assert len(train) == 2 * (267 // 64)  # drop_last: 4 iterations per epoch
    for record in train:
        for key in ('loss', 'loss_cls', 'loss_gml', 'loss_tau', 'loss_kd'):
            assert math.isfinite(record[key]), (key, record)
        assert record['gml_queue_fill_few'] > 0
    metrics = [r for r in records if 'shot/balanced' in r][-1]
    for key in ('shot/many', 'shot/medium', 'shot/few', 'accuracy/top1'):
        assert 0.0 <= metrics[key] <= 100.0
    state = torch.load(student_dir / 'epoch_2.pth', map_location='cpu',
                       weights_only=False)['state_dict']
    assert not any(k.startswith('teacher.') for k in state)
    assert any(k.endswith('queue.features') for k in state)

    # tools/test.py on the student: the config's teacher_checkpoint (the
    # default work_dirs path, absent here) is not needed to predict, and the
    # test metrics equal the last validation of training (same weights, the
    # val split the training validated on, the student's single view)
    config = osp.join(GML, 'gml_resnet8_100e_digitslt.py')
    assert not osp.exists(osp.join(ROOT, Config.fromfile(
        config).model.teacher_checkpoint))
    env = dict(os.environ, OMP_NUM_THREADS='1')
    result = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'test.py'), config,
         str(student_dir / 'epoch_2.pth'), '--work-dir',
         str(tmp_path / 'test'), '--out', str(tmp_path / 'metrics.json'),
         '--out-item', 'metrics', '--cfg-options',
         'test_dataloader.dataset.split=val'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert 'the teacher checkpoint is not loaded' in result.stdout
    with open(tmp_path / 'metrics.json') as handle:
        tested = json.load(handle)
    for key in ('shot/balanced', 'accuracy/top1'):
        assert tested[key] == pytest.approx(metrics[key], abs=1e-6), key
