"""GML on ADE20K with a frozen teacher (Suh and Seo, ICML 2023, Sec. 3.3, A.2):
``TeacherStudent`` around a ``GMLEncoderDecoder`` whose pixel queues store the
teacher's decode-head features at the student's sampled pixels.

Unit tests build tiny models in-process; the end-to-end tests train the
teacher config and then the teacher-student config with tools/train.py on the
tiny ADE20K fixture, test the student checkpoint with tools/test.py without
the teacher file, and run the student under 2 gloo ranks.
"""
import math
import os
import os.path as osp
import re
import subprocess
import sys
import textwrap
import types

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from mmengine.structures import PixelData

import reot_mm  # noqa: F401
from reot_mm.engine import ClassStatisticsHook

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from ade_fixture import (load_tool, make_ade_fixture, reduced_counts,  # noqa: E402
                         tiny_config_text)
from dense_rank_probe import EVALUATOR, PROBE, ROOT, rank_records  # noqa: E402
from launch import run_train, subprocess_env  # noqa: E402

CONFIGS = osp.join(ROOT, 'configs', 'ade20k')
TEACHER = osp.join(CONFIGS, 'gml-teacher_fcn_r50-d8_4xb4-160k_ade20k-512x512.py')
STUDENT = osp.join(CONFIGS,
                   'gml-teacher-student_fcn_r50-d8_4xb4-160k_ade20k-512x512.py')
C = 4
COUNTS = [600., 250., 100., 50.]
QUEUE_HEAD = ('queue=dict(size=300, min_per_class=1), '
              'query_mlp=dict(hidden_channels=16, out_channels=8), '
              'key_mlp=dict(hidden_channels=16, out_channels=8), '
              'pixels_per_class=4')


# ------------------------------------------------------------ in-process
def segmentor(head_type, channels=6, **head):
    backbone = dict(type='ResNetV1c', depth=18, stem_channels=8,
                    base_channels=4, num_stages=2, out_indices=(0, 1),
                    strides=(1, 2), dilations=(1, 1),
                    norm_cfg=dict(type='BN', requires_grad=True))
    decode_head = dict(type=head_type, in_channels=8, in_index=1,
                       channels=channels, num_convs=1, concat_input=False,
                       dropout_ratio=0.0, num_classes=C, align_corners=False,
                       norm_cfg=dict(type='BN', requires_grad=True),
                       loss_decode=dict(type='REOTPixelLoss', cost='cosine',
                                        scale=20.0, loss_name='loss_cls'),
                       **head)
    return dict(type='EncoderDecoder',
                data_preprocessor=dict(type='SegDataPreProcessor',
                                       size=(32, 32)),
                backbone=backbone, decode_head=decode_head)


def student_cfg(key_in_channels=None, **queue):
    cfg = segmentor('GMLFCNHead', key_in_channels=key_in_channels,
                    queue=dict(dict(size=64, min_per_class=2), **queue),
                    query_mlp=dict(hidden_channels=8, out_channels=5),
                    gml_loss=dict(tau_g=0.1, alpha=0.5),
                    pixels_per_class=1000)  # every labelled pixel
    cfg['type'] = 'GMLEncoderDecoder'
    return cfg


def samples(labels):
    from mmseg.structures import SegDataSample
    out = []
    for number, label in enumerate(labels):
        sample = SegDataSample(metainfo=dict(img_path=f'img{number}.jpg'))
        sample.gt_sem_seg = PixelData(data=label[None])
        out.append(sample)
    return out


def build_teacher_student(tmp_path, key_in_channels=None, teacher_channels=6):
    init_default_scope('mmseg')
    teacher = MODELS.build(segmentor('CosineFCNHead', channels=teacher_channels))
    checkpoint = str(tmp_path / 'teacher.pth')
    torch.save(dict(state_dict=teacher.state_dict()), checkpoint)
    model = MODELS.build(dict(
        type='TeacherStudent', student=student_cfg(key_in_channels),
        teacher=segmentor('CosineFCNHead', channels=teacher_channels),
        teacher_checkpoint=checkpoint))
    for module in model.modules():
        if hasattr(module, 'set_class_counts'):
            module.set_class_counts(COUNTS)
    model.student.decode_head.queue.build_segments(COUNTS)
    return model


def test_queue_holds_the_teachers_features_at_the_sampled_pixels(tmp_path):
    torch.manual_seed(0)
    model = build_teacher_student(tmp_path, key_in_channels=7,
                                  teacher_channels=7)
    model.train()
    inputs = torch.randn(2, 3, 32, 32)
    labels = torch.randint(0, C, (2, 32, 32))
    labels[0, :, :8] = 255
    losses = model.loss(inputs, samples(labels))
    assert {'decode.loss_cls', 'decode.loss_gml'} <= set(losses)
    assert all(torch.isfinite(v) for k, v in losses.items() if 'loss' in k)
    head = model.student.decode_head
    teacher = model.teacher
    assert not teacher.training
    with torch.no_grad():
        expected = teacher.decode_head._forward_feature(
            teacher.extract_feat(inputs))           # (2, 7, 4, 4)
    valid = F.interpolate(labels[:, None].float(), size=expected.shape[-2:],
                          mode='nearest')[:, 0] != 255
    teacher_rows = expected.permute(0, 2, 3, 1)[valid]
    queued = head.queue.features[head.queue.indices >= 0]
    # every labelled pixel was enqueued once (small segments keep the newest)
    assert int(head.queue.num_enqueued.sum()) == int(valid.sum())
    assert len(queued) > C
    # each queued entry is the teacher's feature of one labelled pixel
    gap = (queued[:, None] - teacher_rows[None]).abs().amax(-1)
    assert gap.min(1).values.max() < 1e-5
    # gradients reach the student and the key MLP, never the teacher
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    assert head.key_mlp.mlp[0].weight.grad.abs().sum() > 0
    assert head.query_mlp.mlp[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    assert not any(n.startswith('teacher.') for n in model.state_dict())


def test_student_alone_queues_its_own_features_and_prefill_uses_the_teacher(
        tmp_path):
    torch.manual_seed(0)
    model = build_teacher_student(tmp_path)
    head = model.student.decode_head
    labels = torch.randint(0, C, (2, 32, 32))
    labels[0, :16] = 255
    # random crops of different sizes (28 rows: padded with label 255)
    data = dict(inputs=[torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8),
                        torch.randint(0, 255, (3, 28, 32), dtype=torch.uint8)],
                data_samples=samples([labels[0], labels[1, :28]]))
    # the pre-fill step of GMLQueueHook(prefill='teacher'): every labelled
    # pixel of the (4, 4) feature maps (rows 0, 8, 16, 24 of the labels;
    # pixels_per_class=1000): 8 of image 0, 16 of image 1
    assert model.prefill_step(data) == 8 + 16
    assert int(head.queue.num_enqueued.sum()) == 24
    # a key width other than the teacher's is refused when the model is built
    with pytest.raises(ValueError, match='key_in_channels=9'):
        build_teacher_student(tmp_path, key_in_channels=9)
    # ... and without a teacher the head refuses to queue other widths
    init_default_scope('mmseg')
    alone = MODELS.build(student_cfg(key_in_channels=9))
    for module in alone.modules():
        if hasattr(module, 'set_class_counts'):
            module.set_class_counts(COUNTS)
    alone.decode_head.queue.build_segments(COUNTS)
    with pytest.raises(ValueError, match='key_in_channels=9 differs'):
        alone.loss(torch.randn(2, 3, 32, 32), samples(labels))


def test_teacher_features_of_another_stride_are_resized_to_the_heads():
    init_default_scope('mmseg')
    head = MODELS.build(student_cfg()).decode_head
    features = torch.randn(2, 6, 8, 8)
    rows = head.key_rows(features, (4, 4))
    expected = F.interpolate(features, size=(4, 4), mode='bilinear',
                             align_corners=False)
    torch.testing.assert_close(rows, expected.permute(0, 2, 3, 1).reshape(-1, 6))
    with pytest.raises(ValueError, match='key_in_channels=6'):
        head.key_rows(torch.randn(2, 5, 4, 4), (4, 4))


def test_bad_input_names_the_setting(tmp_path):
    init_default_scope('mmseg')
    # a queue smaller than C·k_m
    with pytest.raises(ValueError, match=r'size \(K\) = 6 is too small.*k_m·C = 8'):
        MODELS.build(student_cfg(size=6, min_per_class=2))
    # pixel labels outside the classes that are not the ignore index
    model = build_teacher_student(tmp_path)
    labels = torch.randint(0, C, (2, 16, 16))
    labels[1, 3:5, 3:5] = C
    head = model.student.decode_head
    with pytest.raises(ValueError, match=r'num_classes=4\).*ignore_index=255'):
        head.gml_loss_by_feat(torch.randn(2, 6, 16, 16), samples(labels))
    # a class-count file computed for another dataset
    fixture, other = str(tmp_path / 'ade'), str(tmp_path / 'other')
    make_ade_fixture(fixture)
    make_ade_fixture(other, num_train=8, seed=1)
    counts_file = str(tmp_path / 'counts.json')
    other_config = tmp_path / 'other.py'
    other_config.write_text(tiny_config_text(other, TEACHER, counts_file,
                                             hooks=''))
    load_tool().main([str(other_config)])
    config = tmp_path / 'teacher.py'
    config.write_text(tiny_config_text(fixture, TEACHER, counts_file, hooks=''))
    hook = ClassStatisticsHook(class_counts_file=counts_file, count_type='pixel')
    runner = types.SimpleNamespace(_train_loop=None, cfg=Config.fromfile(config))
    with pytest.raises(ValueError, match='class_counts_file .*computed from 8 '
                       'label maps but the dataset has 6'):
        hook.resolve_counts(runner)


def test_configs_hold_the_gml_ade20k_recipe():
    cfg = Config.fromfile(STUDENT)
    assert cfg.model.type == 'TeacherStudent'
    student = cfg.model.student
    assert student.type == 'GMLEncoderDecoder'
    head = student.decode_head
    assert (head.queue.size, head.queue.min_per_class) == (8192, 27)
    assert head.loss_decode.scale == pytest.approx(1 / 0.05)
    assert head.gml_loss.tau_g == 0.07 and head.gml_loss.alpha == 0.2
    assert osp.samefile(cfg.model.teacher, TEACHER)
    assert cfg.model.teacher_checkpoint.endswith('iter_160000.pth')
    assert [h['type'] for h in cfg.custom_hooks] == ['ClassStatisticsHook',
                                                    'GMLQueueHook']
    assert cfg.auto_scale_lr == dict(base_batch_size=16, enable=False)
    # the Runner then leaves the wrapper the student's data preprocessor
    assert cfg.data_preprocessor is None
    teacher = Config.fromfile(TEACHER)
    for name in ('decode_head', 'auxiliary_head'):
        part = teacher.model[name]
        assert part.type == 'CosineFCNHead'
        assert part.loss_decode.scale == pytest.approx(1 / 0.05)
        assert part.loss_decode.prior_scale == 1.0  # GML Eq. 7: CE(cos/τ_s + log p)
    # the teacher's decode head is as wide as the student's queue expects
    assert teacher.model.decode_head.channels == head.channels


# ------------------------------------------------------------ end to end
def student_config_text(fixture, teacher_config, teacher_checkpoint,
                        extra=''):
    """tiny_config_text's model block becomes the student of the
    teacher-student config; the tiny teacher is another config file."""
    text = tiny_config_text(
        fixture, STUDENT, None, decode_head=QUEUE_HEAD,
        hooks="dict(type='GMLQueueHook', prefill='none'),",
        extra=EVALUATOR + textwrap.dedent(f'''
            model = dict(student=model, teacher={str(teacher_config)!r},
                         teacher_checkpoint={str(teacher_checkpoint)!r})
        ''') + extra)
    return text.replace("model = dict(\n    pretrained=None,",
                        "model = dict(\n    type='GMLEncoderDecoder', pretrained=None,")


@pytest.mark.slow
def test_teacher_then_student_with_tools_train_and_test(tmp_path):
    fixture = str(tmp_path / 'ade')
    make_ade_fixture(fixture)
    teacher_config = tmp_path / 'teacher_tiny.py'
    teacher_config.write_text(tiny_config_text(
        fixture, TEACHER, None, hooks='', extra=EVALUATOR + textwrap.dedent('''
            train_cfg = dict(max_iters=2, val_interval=2)
            default_hooks = dict(logger=dict(interval=1),
                                 checkpoint=dict(interval=2))
        ''')))
    teacher_dir = tmp_path / 'teacher'
    log = run_train(teacher_config, teacher_dir)
    assert 'decode.loss_cls' in log
    checkpoint = teacher_dir / 'iter_2.pth'
    config = tmp_path / 'student_tiny.py'
    config.write_text(student_config_text(fixture, teacher_config, checkpoint))
    work_dir = tmp_path / 'student'
    log = run_train(config, work_dir)
    gml = [float(v) for v in re.findall(r'decode\.loss_gml: ([-\d.e+naif]+)', log)]
    assert len(gml) == 4 and all(math.isfinite(v) and v > 0 for v in gml)
    metrics = re.findall(r'Iter\(val\) \[3/3\]\s+(.*)', log)[-1]
    for key in ('mIoU', 'mAcc', 'mIoU_head', 'mIoU_rare'):
        assert re.search(rf'\b{key}: ', metrics), (key, metrics)
    saved = torch.load(work_dir / 'iter_4.pth', map_location='cpu',
                       weights_only=False)['state_dict']
    assert not any(k.startswith('teacher.') for k in saved)
    assert any(k.startswith('student.decode_head.queue.') for k in saved)
    # the student's checkpoint alone: no teacher file needed to test it
    os.remove(checkpoint)
    result = subprocess.run(
        [sys.executable, 'tools/test.py', str(config), str(work_dir / 'iter_4.pth'),
         '--work-dir', str(tmp_path / 'test')], cwd=ROOT, env=subprocess_env(),
        capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert 'the teacher checkpoint is not loaded' in log
    assert re.search(r'Iter\(test\) \[3/3\].*\bmIoU: [\d.]+', log)


@pytest.mark.slow
def test_two_process_teacher_student_run_keeps_queues_identical(tmp_path):
    """2 gloo ranks: the teacher-filled queues (gathered before every enqueue),
    the class statistics and the parameters agree after every step."""
    fixture = str(tmp_path / 'ade')
    maps = make_ade_fixture(fixture)
    teacher_config = tmp_path / 'teacher_tiny.py'
    teacher_config.write_text(tiny_config_text(fixture, TEACHER, None, hooks=''))
    init_default_scope('mmseg')
    teacher = MODELS.build(Config.fromfile(teacher_config).model)
    checkpoint = tmp_path / 'teacher.pth'
    torch.save(dict(state_dict=teacher.state_dict()), checkpoint)
    (tmp_path / 'dense_probe_hook.py').write_text(PROBE)
    config = tmp_path / 'student_tiny_dist.py'
    config.write_text(student_config_text(
        fixture, teacher_config, checkpoint, extra=textwrap.dedent('''
            custom_imports = dict(imports=['reot_mm', 'dense_probe_hook'],
                                  allow_failed_imports=False)
            train_cfg = dict(max_iters=2, val_interval=2)
            default_hooks = dict(logger=dict(interval=1),
                                 checkpoint=dict(interval=2))
            custom_hooks = [
                dict(type='ClassStatisticsHook', count_type='pixel'),
                # raises if the ranks' queues ever differ
                dict(type='GMLQueueHook', prefill='none', check_ranks=True,
                     check_interval=1),
                dict(type='DenseRankProbe'),
            ]
        ''')))
    work_dir = tmp_path / 'work'
    log = run_train(config, work_dir, procs=2,
                    env=subprocess_env(pythonpath=[tmp_path]))
    expected = [float(c) for c in reduced_counts(maps['training'])[0]]
    previous = None
    for iteration in (1, 2):
        records = rank_records(work_dir, iteration)
        for record in records:
            assert record['world_size'] == 2
            assert record['wrapper'] == 'CPUDistributedDataParallel'
            # student: decode L_cls, GMLLoss, auxiliary L_cls (the teacher's
            # losses are outside the wrapper's modules)
            assert record['counts'] == [expected] * 3
            assert all(math.isfinite(v) for v in record['losses'].values())
        assert len(records[0]['queues']) == 1
        assert records[0]['queues'] == records[1]['queues']
        assert records[0]['queues'] != previous  # the queue did change
        previous = records[0]['queues']
        assert records[0]['param_sum'] == records[1]['param_sum']
        assert records[0]['param_abs'] == records[1]['param_abs']
    assert 'decode.loss_gml' in log and 'mIoU_head' in log
