"""TeacherStudent: strict teacher loading, frozen teacher kept out of
parameters / DDP / optimizer / checkpoints, teacher outputs and the RE-OT
teacher-prior seam."""

import pytest
import torch
import torch.distributed as torch_dist
from mmengine.optim import build_optim_wrapper
from mmengine.registry import MODELS, init_default_scope
from mmpretrain.structures import DataSample

from launch import free_port

import reot_mm  # noqa: F401
from reot_mm.engine import TeacherStudent
from reot_mm.engine.distributed import CPUDistributedDataParallel


def classifier(num_classes=4, depth=8, loss=None, head='CosineClsHead'):
    head_cfg = dict(type=head, num_classes=num_classes, in_channels=64,
                    topk=(1, ))
    if head == 'CosineClsHead':
        head_cfg['scale'] = 30.0
    if loss is not None:
        head_cfg['loss'] = loss
    return dict(type='ImageClassifier',
                backbone=dict(type='CifarResNet', depth=depth, in_channels=1),
                neck=dict(type='GlobalAveragePooling'), head=head_cfg)


@pytest.fixture(autouse=True)
def scope():
    init_default_scope('mmpretrain')


@pytest.fixture
def teacher_file(tmp_path):
    torch.manual_seed(0)
    teacher = MODELS.build(classifier())
    path = tmp_path / 'teacher.pth'
    torch.save({'state_dict': teacher.state_dict(), 'meta': {}}, path)
    return str(path), teacher.state_dict()


def build(teacher_file, **kwargs):
    cfg = dict(type='TeacherStudent', student=classifier(), teacher=classifier(),
               teacher_checkpoint=teacher_file,
               data_preprocessor=dict(type='ClsDataPreprocessor'))
    cfg.update(kwargs)
    return MODELS.build(cfg)


def test_builds_from_the_mmpretrain_scope_and_loads_the_teacher(teacher_file):
    path, state = teacher_file
    model = build(path)
    assert isinstance(model, TeacherStudent)
    for key, value in model.teacher.state_dict().items():
        assert torch.equal(value, state[key]), key
    # the Runner's init_weights must not re-initialise the loaded teacher
    model.init_weights()
    for key, value in model.teacher.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_strict_loading_errors(teacher_file, tmp_path):
    path, state = teacher_file
    with pytest.raises(FileNotFoundError, match='teacher_checkpoint'):
        build(str(tmp_path / 'missing.pth'))
    with pytest.raises(RuntimeError, match='size mismatch'):
        build(path, teacher=classifier(num_classes=7))
    with pytest.raises(RuntimeError, match='Missing key'):
        build(path, teacher=classifier(depth=14))
    extra = dict(state, **{'head.extra': torch.zeros(1)})
    torch.save({'state_dict': extra}, tmp_path / 'extra.pth')
    with pytest.raises(RuntimeError, match='Unexpected key'):
        build(str(tmp_path / 'extra.pth'))
    # a TeacherStudent checkpoint's student can be the teacher with a prefix
    prefixed = {'student.' + k: v for k, v in state.items()}
    torch.save({'state_dict': prefixed}, tmp_path / 'prefixed.pth')
    model = build(str(tmp_path / 'prefixed.pth'),
                  teacher_checkpoint_prefix='student.')
    assert torch.equal(model.teacher.head.fc.weight, state['head.fc.weight'])


def test_teacher_is_frozen_and_outside_parameters_and_state(teacher_file):
    path, state = teacher_file
    model = build(path)
    model.train()
    assert model.student.training and not model.teacher.training
    assert all(not p.requires_grad for p in model.teacher.parameters())
    names = [n for n, _ in model.named_parameters()]
    assert names and all(n.startswith('student.') for n in names)
    teacher_ids = {id(p) for p in model.teacher.parameters()}
    assert not teacher_ids & {id(p) for p in model.parameters()}
    assert not any(k.startswith('teacher.') for k in model.state_dict())
    # optimizer built as the Runner does
    optim = build_optim_wrapper(model, dict(
        optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4)))
    in_optimizer = {id(p) for group in optim.optimizer.param_groups
                    for p in group['params']}
    assert in_optimizer == {id(p) for p in model.parameters()}
    assert not in_optimizer & teacher_ids
    # .to() moves / casts the teacher too
    model.to(torch.float64)
    assert model.teacher.head.fc.weight.dtype == torch.float64


def test_save_teacher_puts_it_into_the_state_dict_and_back(teacher_file):
    path, state = teacher_file
    model = build(path, save_teacher=True)
    saved = model.state_dict()
    assert torch.equal(saved['teacher.head.fc.weight'], state['head.fc.weight'])
    other = build(path)
    with torch.no_grad():
        other.teacher.head.fc.weight.zero_()
    other.load_state_dict(saved)  # strict: teacher keys are consumed
    assert torch.equal(other.teacher.head.fc.weight, state['head.fc.weight'])
    # without save_teacher a student-only state dict loads strictly as well
    other.load_state_dict(build(path).state_dict())


def test_ddp_sees_only_the_student(teacher_file, monkeypatch):
    path, _ = teacher_file
    model = build(path)
    monkeypatch.setenv('MASTER_ADDR', '127.0.0.1')
    monkeypatch.setenv('MASTER_PORT', str(free_port()))
    torch_dist.init_process_group('gloo', rank=0, world_size=1)
    try:
        wrapped = CPUDistributedDataParallel(module=model)
        ddp_params = {id(p) for p in wrapped.parameters()}
        assert ddp_params == {id(p) for p in model.student.parameters()}
        assert not ddp_params & {id(p) for p in model.teacher.parameters()}
        assert all(not n.startswith('module.teacher') for n, _ in
                   wrapped.named_buffers())
    finally:
        torch_dist.destroy_process_group()


def test_teacher_outputs_and_the_reot_teacher_prior(teacher_file):
    path, _ = teacher_file
    loss = dict(type='REOTLoss', prior='teacher', cost='cosine', scale=30.0)
    model = build(path, student=classifier(loss=loss))
    model.train()
    inputs = torch.randn(6, 1, 8, 8)
    samples = [DataSample().set_gt_label(i % 4) for i in range(6)]
    outputs = model.teacher_outputs(inputs)
    assert outputs['features'].shape == (6, 64)
    torch.testing.assert_close(outputs['probs'],
                               torch.softmax(30 * outputs['scores'], 1))
    assert not outputs['features'].requires_grad
    losses = model(inputs, samples, mode='loss')
    # the same number by hand: REOTLoss with r = teacher predictions
    cosines = model.student.head(model.student.extract_feat(inputs))
    target = torch.tensor([i % 4 for i in range(6)])
    expected = torch.nn.functional.cross_entropy(
        30 * cosines + outputs['probs'].log(), target)
    torch.testing.assert_close(losses['loss'], expected)
    losses['loss'].backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    predictions = model(inputs, samples, mode='predict')
    assert predictions[0].pred_score.shape == (4, )


def test_feature_mismatch_and_untrained_teacher(teacher_file):
    path, _ = teacher_file
    student = dict(
        type='GMLClassifier',
        backbone=dict(type='CifarResNet', depth=8, in_channels=1),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='CosineClsHead', num_classes=4, in_channels=64),
        query_mlp=dict(in_channels=64, out_channels=8),
        key_mlp=dict(in_channels=32, out_channels=8),  # teacher gives 64-d
        queue=dict(size=16, min_per_class=2))
    with pytest.raises(ValueError, match='feature dimension mismatch'):
        build(path, student=student)
    model = build(None)
    with pytest.raises(RuntimeError, match='teacher_checkpoint'):
        model(torch.randn(2, 1, 8, 8), [DataSample().set_gt_label(0)] * 2,
              mode='loss')
    # inference needs no teacher
    assert len(model(torch.randn(2, 1, 8, 8), None, mode='predict')) == 2


class _StudentDefinedOutputs:
    """Mixin of the dense-model contract (module docstring of
    ``reot_mm.engine.teacher_student``): the student computes its own teacher
    outputs; the wrapper supplies the frozen teacher and ``no_grad``."""

    def teacher_outputs_for(self, teacher, inputs, data_samples):
        self.calls.append(dict(grad=torch.is_grad_enabled(),
                               teacher_training=teacher.training,
                               samples=len(data_samples)))
        features = teacher.extract_feat(inputs)[-1]

        def later(rows):  # evaluated inside the student's forward
            with torch.no_grad():
                return teacher.head.fc(features[rows])
        return dict(features=features, later=later)

    def loss_with_teacher(self, inputs, data_samples, teacher_outputs):
        scores = self.head(self.extract_feat(inputs))
        target = torch.cat([s.gt_label for s in data_samples])
        teacher_scores = teacher_outputs['later'](torch.arange(len(target)))
        return dict(loss=torch.nn.functional.cross_entropy(scores, target),
                    teacher_scores=teacher_scores)

    def enqueue_teacher_features(self, teacher_outputs, data_samples):
        self.enqueued.append(teacher_outputs['features'])
        return len(data_samples)


def test_student_defined_teacher_outputs_contract(teacher_file):
    """A student with teacher_outputs_for gets its own outputs, computed
    under no_grad with the eval-mode teacher, in loss_with_teacher and in the
    queue pre-fill; check_teacher runs at build; prediction needs no teacher."""
    from mmpretrain.models import ImageClassifier
    path, _ = teacher_file

    class Student(_StudentDefinedOutputs, ImageClassifier):
        pass

    def student():
        torch.manual_seed(1)
        model = Student(**{k: v for k, v in classifier().items()
                           if k != 'type'})
        model.calls, model.enqueued = [], []
        return model

    model = build(path, student=student())
    model.train()
    inputs = torch.randn(4, 1, 8, 8)
    samples = [DataSample().set_gt_label(i % 4) for i in range(4)]
    losses = model(inputs, samples, mode='loss')
    assert model.student.calls == [dict(grad=False, teacher_training=False,
                                        samples=4)]
    assert not losses['teacher_scores'].requires_grad
    expected = model.teacher.head.fc(model.teacher.extract_feat(inputs)[-1])
    torch.testing.assert_close(losses['teacher_scores'], expected)
    losses['loss'].backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    # GMLQueueHook's pre-fill hands the same outputs to the queue
    batch = dict(inputs=[torch.randn(1, 8, 8) for _ in range(4)],
                 data_samples=samples)
    assert model.prefill_step(batch) == 4
    assert model.student.enqueued[0].shape == (4, 64)
    # untrained teacher: training refuses, prediction runs
    untrained = build(None, student=student())
    with pytest.raises(RuntimeError, match='teacher_checkpoint'):
        untrained(inputs, samples, mode='loss')
    assert len(untrained(inputs, None, mode='predict')) == 4
    # check_teacher runs when the model is built and its error propagates
    bad = student()

    def check_teacher(teacher):
        raise ValueError('teacher RoI features are 64-d, key MLP takes 32')
    bad.check_teacher = check_teacher
    with pytest.raises(ValueError, match='key MLP takes 32'):
        build(path, student=bad)
    # teacher_outputs_for without loss_with_teacher: a clear error
    no_loss = student()
    no_loss.loss_with_teacher = None
    with pytest.raises(TypeError, match='loss_with_teacher'):
        build(path, student=no_loss)(inputs, samples, mode='loss')


def test_teacher_given_as_the_file_name_of_its_config(teacher_file, tmp_path):
    """model.teacher may name the teacher's training config; its model is
    built (and loaded strictly); a missing file or one without a model is an
    error naming model.teacher."""
    path, state = teacher_file
    config = tmp_path / 'teacher_config.py'
    config.write_text(f'model = {classifier()!r}\n')
    model = build(path, teacher=str(config))
    for key, value in model.teacher.state_dict().items():
        assert torch.equal(value, state[key]), key
    with pytest.raises(FileNotFoundError, match=r'model\.teacher'):
        build(path, teacher=str(tmp_path / 'missing.py'))
    empty = tmp_path / 'no_model.py'
    empty.write_text('train_cfg = dict()\n')
    with pytest.raises(ValueError, match=r'model\.teacher\) has no model'):
        build(path, teacher=str(empty))
