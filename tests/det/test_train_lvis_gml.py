"""GML on LVIS RoIs through the real tools: tools/train.py (one process) with
the GML Mask R-CNN config, tools/dist_train.sh (two gloo processes) with the
teacher-student config and a teacher checkpoint written here, and tools/test.py
on the student's checkpoint after the teacher file is gone. All on the tiny
LVIS fixture, through configs inheriting the shipped ones."""
import json
import os
import os.path as osp
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import ROOT, tiny_config_text
from lvis_fixture import train_instance_counts
from mmengine.config import Config
from mmengine.registry import init_default_scope
from test_train_lvis import check_losses_and_metrics, free_port, scalars

import reot_mm
from reot_mm.models.class_queue import segment_bounds

GML = 'configs/lvis/gml_mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1.py'
TEACHER_STUDENT = ('configs/lvis/gml-teacher-student_mask-rcnn_r50_fpn_'
                   'sample1e-3_ms-1x_lvis-v1.py')
QUEUE_SIZE, MIN_PER_CLASS = 48, 4
HEAD = (f'queue=dict(size={QUEUE_SIZE}, min_per_class={MIN_PER_CLASS}), '
        'query_mlp=dict(hidden_channels=32, out_channels=16), '
        'key_mlp=dict(hidden_channels=32, out_channels=16), ')
QUEUE = 'roi_head.bbox_head.queue.'
# After four iterations the cosine classifier may give every foreground class
# a score below upstream's 1e-4 threshold (scores are softmax(cos/τ_s) over
# C + 1 classes, |logit| <= 30), and LVISMetric then reports nothing for an
# empty result set: keep every box so the metric is always computed.
KEEP_ALL_BOXES = "model['test_cfg']['rcnn']['score_thr'] = 0.0"

PROBE = textwrap.dedent('''
    """Test instrumentation: each rank writes its queue and parameters."""
    import json
    import os.path as osp

    import torch
    from mmengine.dist import get_rank
    from mmengine.hooks import Hook
    from mmengine.model import is_model_wrapper
    from mmengine.registry import HOOKS

    from reot_mm.models.class_queue import ClassQueue


    @HOOKS.register_module()
    class GMLRankProbe(Hook):
        priority = 'LOWEST'

        def after_train_epoch(self, runner):
            model = runner.model
            module = model.module if is_model_wrapper(model) else model
            queue, = [m for m in module.modules() if isinstance(m, ClassQueue)]
            params = torch.cat([p.detach().flatten()
                                for p in module.parameters()]).double()
            record = dict(
                wrapper=type(model).__name__, world_size=runner.world_size,
                queue=queue.fingerprint(),
                num_enqueued=queue.num_enqueued.tolist(),
                indices=queue.indices.tolist(),
                param_sum=float(params.sum()), param_abs=float(params.abs().sum()))
            path = osp.join(runner.work_dir, f'rank{get_rank()}.json')
            with open(path, 'w') as handle:
                json.dump(record, handle)
''')


def run(args, env_extra=None, timeout=600):
    env = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='',
               **(env_extra or {}))
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=timeout)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]
    return log


def load_state(work_dir):
    path = (work_dir / 'last_checkpoint').read_text().strip()
    return torch.load(path, map_location='cpu', weights_only=False)


@pytest.mark.slow
def test_train_py_gml_config_one_epoch_with_lvis_metric(tmp_path, lvis_data):
    """L_cls + L_GML train on the RoIs; the queue's segments follow the LVIS
    training instance counts (Eq. 6) and hold foreground RoIs of each class."""
    config = tmp_path / 'tiny_gml.py'
    config.write_text(tiny_config_text(lvis_data['data_root'], base=GML,
                                       bbox_head=HEAD, extra=KEEP_ALL_BOXES))
    work_dir = tmp_path / 'work'
    log = run([sys.executable, osp.join(ROOT, 'tools', 'train.py'),
               str(config), '--work-dir', str(work_dir)])
    train, _ = check_losses_and_metrics(scalars(str(work_dir)))
    assert {'loss_cls', 'loss_bbox', 'loss_mask', 'loss_gml', 'tau_g'} <= \
        set(train[0])
    assert all(r['loss_gml'] > 0 for r in train)
    assert 'ClassStatisticsHook: 6 classes, 26 samples' in log
    state = load_state(work_dir)['state_dict']
    counts = train_instance_counts()
    _, sizes = segment_bounds(counts, QUEUE_SIZE, MIN_PER_CLASS)
    assert torch.equal(state[QUEUE + 'segment_sizes'], sizes)
    assert state['roi_head.bbox_head.gml.class_counts'].tolist() == counts
    # only foreground RoIs were enqueued, into every class's segment
    assert (state[QUEUE + 'num_enqueued'] > 0).all()
    assert state[QUEUE + 'labels'].max() < 6


def teacher_files(tmp_path, data_root):
    """A tiny RE-OT Mask R-CNN config (the teacher) and a checkpoint of it."""
    teacher_config = tmp_path / 'tiny_teacher.py'
    teacher_config.write_text(tiny_config_text(data_root))
    from mmdet.registry import MODELS
    reot_mm.register_all_modules()
    init_default_scope('mmdet')
    torch.manual_seed(0)
    teacher = MODELS.build(Config.fromfile(str(teacher_config)).model)
    checkpoint = tmp_path / 'teacher.pth'
    torch.save({'state_dict': teacher.state_dict(), 'meta': {}}, checkpoint)
    return str(teacher_config), str(checkpoint)


def teacher_student_text(data_root, teacher_config, checkpoint, extra=''):
    """The shipped teacher-student config with the tiny student (the tiny
    overrides go under model.student) and the tiny teacher."""
    text = tiny_config_text(data_root, base=TEACHER_STUDENT, bbox_head=HEAD,
                            extra_imports=('gml_rank_probe', ), extra=extra)
    head = 'model = dict(\n'
    tail = 'rcnn=dict(max_per_img=50)))'
    assert text.count(head) == 1 and text.count(tail) == 1
    return text.replace(head, head + f'    teacher={teacher_config!r},\n'
                        f'    teacher_checkpoint={checkpoint!r},\n'
                        '    student=dict(\n').replace(tail, tail + ')')


def test_teacher_checkpoint_of_another_config_is_refused(tmp_path, lvis_data):
    """Strict loading names the setting: a teacher checkpoint written for
    another model than model.teacher builds."""
    from mmdet.registry import MODELS
    teacher_config, _ = teacher_files(tmp_path, lvis_data['data_root'])
    other = tmp_path / 'other_teacher.py'
    other.write_text(tiny_config_text(lvis_data['data_root'], num_classes=7))
    torch.manual_seed(0)
    wrong = MODELS.build(Config.fromfile(str(other)).model)
    checkpoint = tmp_path / 'seven_class_teacher.pth'
    torch.save({'state_dict': wrong.state_dict()}, checkpoint)
    (tmp_path / 'gml_rank_probe.py').write_text(PROBE)
    config = tmp_path / 'tiny_ts.py'
    config.write_text(teacher_student_text(
        lvis_data['data_root'], teacher_config, str(checkpoint)))
    sys.path.insert(0, str(tmp_path))
    try:
        cfg = Config.fromfile(str(config))
    finally:
        sys.path.remove(str(tmp_path))
    init_default_scope('mmdet')
    with pytest.raises(RuntimeError, match='(?s)does not match the model built '
                       'from model.teacher.*size mismatch'):
        MODELS.build(cfg.model)


@pytest.mark.slow
def test_teacher_student_two_gloo_processes_then_test_without_teacher(
        tmp_path, lvis_data):
    """tools/dist_train.sh, 2 gloo ranks, teacher-student config: the teacher
    pre-fills the queues, its RoI embeddings are the keys, both ranks hold
    identical queues (also checked every iteration by GMLQueueHook) and
    parameters; the checkpoint holds the student only, and tools/test.py on
    it runs with the teacher file deleted."""
    teacher_config, checkpoint = teacher_files(tmp_path,
                                               lvis_data['data_root'])
    (tmp_path / 'gml_rank_probe.py').write_text(PROBE)
    config = tmp_path / 'tiny_ts.py'
    config.write_text(teacher_student_text(
        lvis_data['data_root'], teacher_config, checkpoint,
        extra=textwrap.dedent('''
            custom_hooks = [
                dict(type='LVISAnnotationCheckHook'),
                dict(type='ClassStatisticsHook'),
                dict(type='GMLQueueHook', prefill='teacher', check_ranks=True,
                     check_interval=1),
                dict(type='GMLRankProbe'),
            ]
            model['student']['test_cfg']['rcnn']['score_thr'] = 0.0''')))
    work_dir = tmp_path / 'work'
    env = dict(PYTHON=sys.executable, PORT=str(free_port()),
               PYTHONPATH=f'{tmp_path}{os.pathsep}{ROOT}')
    log = run(['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), str(config),
               '2', '--work-dir', str(work_dir)], env)
    assert 'pre-filled the queues from the teacher' in log
    records = [json.loads((work_dir / f'rank{r}.json').read_text())
               for r in (0, 1)]
    for record in records:
        assert record['world_size'] == 2
        assert record['wrapper'] == 'CPUDistributedDataParallel'
        # the pre-fill enqueued every ground-truth box of the epoch once,
        # training its foreground RoIs on top
        assert all(n >= c for n, c in zip(record['num_enqueued'],
                                          train_instance_counts()))
    assert records[0]['queue'] == records[1]['queue']
    assert records[0]['indices'] == records[1]['indices']
    assert records[0]['param_sum'] == records[1]['param_sum']
    assert records[0]['param_abs'] == records[1]['param_abs']
    train, _ = check_losses_and_metrics(scalars(str(work_dir)))
    assert all('loss_gml' in r for r in train)
    state = load_state(work_dir)['state_dict']
    assert state and all(k.startswith('student.') for k in state)
    # test the student's checkpoint without the teacher file
    os.remove(checkpoint)
    ckpt = (work_dir / 'last_checkpoint').read_text().strip()
    log = run([sys.executable, osp.join(ROOT, 'tools', 'test.py'),
               str(config), ckpt, '--work-dir', str(tmp_path / 'test')],
              dict(PYTHONPATH=f'{tmp_path}{os.pathsep}{ROOT}'))
    assert 'the teacher checkpoint is not loaded' in log
    assert 'lvis/bbox_AP' in log


def test_gml_configs_change_only_the_model_and_hooks_of_upstream(tmp_path):
    """The GML config is upstream's LVIS Mask R-CNN with the detector type,
    the box head and the hooks changed; the teacher-student config wraps that
    student and takes the RE-OT Mask R-CNN config's model as the teacher."""
    from reot_mm.engine.teacher_student import teacher_model_config
    upstream = tmp_path / 'upstream.py'
    upstream.write_text("_base_ = ['mmdet::lvis/mask-rcnn_r50_fpn_sample1e-3_"
                        "ms-1x_lvis-v1.py']\n")
    ours = Config.fromfile(osp.join(ROOT, GML)).to_dict()
    theirs = Config.fromfile(str(upstream)).to_dict()
    changed = {'model', 'custom_hooks', 'custom_imports', 'auto_scale_lr'}
    assert {k: v for k, v in ours.items() if k not in changed} == \
        {k: v for k, v in theirs.items() if k not in changed}
    model, base = ours['model'], theirs['model']
    assert model['type'] == 'GMLMaskRCNN'
    head, base_head = model['roi_head']['bbox_head'], base['roi_head']['bbox_head']
    assert head['type'] == 'GMLShared2FCBBoxHead'
    assert head['loss_cls']['type'] == 'REOTRoILoss'
    assert head['loss_cls']['background'] == 'foreground_only'
    new_keys = {'type', 'tau_s', 'queue', 'query_mlp', 'key_mlp', 'gml_loss',
                'loss_cls'}
    assert {k: v for k, v in head.items() if k not in new_keys} == \
        {k: v for k, v in base_head.items() if k not in new_keys}
    assert head['queue']['size'] >= 1203 * head['queue']['min_per_class']
    for name in ('backbone', 'neck', 'rpn_head', 'train_cfg', 'test_cfg',
                 'data_preprocessor'):
        assert model[name] == base[name], name
    pair = Config.fromfile(osp.join(ROOT, TEACHER_STUDENT)).to_dict()['model']
    assert pair['type'] == 'TeacherStudent' and pair['student'] == model
    reot = osp.join(ROOT, 'configs', 'lvis',
                    'reot_mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1.py')
    assert osp.samefile(pair['teacher'], reot)
    assert teacher_model_config(pair['teacher']).to_dict() == \
        Config.fromfile(reot).to_dict()['model']


def _one_image_batch():
    import numpy as np
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    height, width = 80, 96
    boxes = torch.tensor([[5., 5., 40., 40.], [45., 10., 90., 50.],
                          [20., 45., 60., 78.]])
    masks = np.zeros((3, height, width), np.uint8)
    for mask, (x1, y1, x2, y2) in zip(masks, boxes.int().tolist()):
        mask[y1:y2, x1:x2] = 1
    sample = DetDataSample(metainfo=dict(
        img_shape=(height, width), ori_shape=(height, width),
        scale_factor=(1.0, 1.0), pad_shape=(height, width), img_id=7))
    sample.gt_instances = InstanceData(bboxes=boxes, labels=torch.tensor([0, 2, 5]),
                                       masks=BitmapMasks(masks, height, width))
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8)
    return dict(inputs=[image], data_samples=[sample])


def test_gml_mask_rcnn_takes_its_keys_from_the_teacher(tmp_path, lvis_data):
    """Inside TeacherStudent the queue receives the teacher's shared box-head
    embedding (its RoI extractor and two FCs) of the ground-truth boxes in the
    pre-fill and of the student's foreground RoIs in training."""
    from mmdet.registry import MODELS
    teacher_config, checkpoint = teacher_files(tmp_path, lvis_data['data_root'])
    student = tmp_path / 'tiny_gml.py'
    student.write_text(tiny_config_text(lvis_data['data_root'], base=GML,
                                        bbox_head=HEAD))
    init_default_scope('mmdet')
    model = MODELS.build(dict(
        type='TeacherStudent', student=Config.fromfile(str(student)).model,
        teacher=teacher_config, teacher_checkpoint=checkpoint))
    counts = train_instance_counts()
    for module in model.modules():
        if hasattr(module, 'set_class_counts'):
            module.set_class_counts(counts)
    queue = model.student.roi_head.bbox_head.queue
    queue.build_segments(counts)
    teacher = model.teacher

    def teacher_embedding(inputs, rois):
        with torch.no_grad():
            feats = teacher.extract_feat(inputs)
            extractor = teacher.roi_head.bbox_roi_extractor
            x = extractor(feats[:extractor.num_inputs], rois).flatten(1)
            fc1, fc2 = teacher.roi_head.bbox_head.shared_fcs
            return torch.relu(fc2(torch.relu(fc1(x))))

    batch = _one_image_batch()
    assert model.prefill_step(batch) == 3
    data = model.data_preprocessor(batch, True)
    boxes = data['data_samples'][0].gt_instances.bboxes
    rois = torch.cat([torch.zeros(3, 1), boxes], 1)
    expected = teacher_embedding(data['inputs'], rois)
    for row, label in enumerate((0, 2, 5)):
        stored, ids = queue.class_entries(label)
        torch.testing.assert_close(stored[ids >= 0], expected[row:row + 1])
        assert ids[ids >= 0].tolist() == [7]
    # training: wrap the teacher function to see which RoIs it encodes
    seen = []
    outputs_for = model.student.teacher_outputs_for

    def recording(teacher_model, inputs, samples):
        outputs = outputs_for(teacher_model, inputs, samples)
        function = outputs['roi_embedding']

        def roi_embedding(rois_in):
            result = function(rois_in)
            seen.append((rois_in, result))
            return result
        return dict(outputs, roi_embedding=roi_embedding)
    model.student.teacher_outputs_for = recording
    before = queue.num_enqueued.clone()
    model.train()
    losses = model(data['inputs'], data['data_samples'], mode='loss')
    assert {'loss_cls', 'loss_gml', 'loss_mask'} <= set(losses)
    (rois_seen, embedded), = seen
    assert rois_seen.shape[0] == int((queue.num_enqueued - before).sum()) > 0
    torch.testing.assert_close(embedded,
                               teacher_embedding(data['inputs'], rois_seen))
    total, _ = model.parse_losses(losses)
    total.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in
               model.student.roi_head.bbox_head.key_mlp.parameters())
