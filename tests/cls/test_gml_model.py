"""GMLClassifier inside TeacherStudent: views, enqueue-then-embed, gradients."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import MODELS, init_default_scope
from mmpretrain.structures import DataSample

import reot_mm  # noqa: F401
from reot_mm.losses.gml_loss import distillation_loss, gml_loss

COUNTS = [20, 10, 5, 2]


def teacher_cfg():
    return dict(type='ImageClassifier',
                backbone=dict(type='CifarResNet', depth=8, in_channels=1),
                neck=dict(type='GlobalAveragePooling'),
                head=dict(type='CosineClsHead', num_classes=4, in_channels=64,
                          scale=30.0))


def student_cfg(**loss):
    return dict(
        type='GMLClassifier',
        backbone=dict(type='CifarResNet', depth=8, in_channels=1),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='CosineClsHead', num_classes=4, in_channels=64, scale=30.0),
        query_mlp=dict(type='ProjectionMLP', in_channels=64, out_channels=16),
        key_mlp=dict(type='ProjectionMLP', in_channels=64, out_channels=16),
        queue=dict(type='ClassQueue', size=24, min_per_class=2),
        loss=dict(type='GMLLoss', **loss))


@pytest.fixture
def model(tmp_path):
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    teacher = MODELS.build(teacher_cfg())
    torch.save({'state_dict': teacher.state_dict()}, tmp_path / 'teacher.pth')
    model = MODELS.build(dict(
        type='TeacherStudent', student=student_cfg(kd_weight=1.0),
        teacher=teacher_cfg(), teacher_checkpoint=str(tmp_path / 'teacher.pth'),
        data_preprocessor=dict(type='MultiViewClsDataPreprocessor', num_views=3)))
    for module in model.modules():
        if hasattr(module, 'set_class_counts'):
            module.set_class_counts(COUNTS)
    model.student.queue.build_segments(COUNTS)
    model.train()
    return model


def batch(size=6, offset=100):
    views = [torch.randn(size, 1, 8, 8) for _ in range(3)]
    samples = [DataSample(metainfo=dict(sample_idx=offset + i)).set_gt_label(i % 4)
               for i in range(size)]
    return views, samples


def test_loss_enqueues_first_then_embeds_and_trains_every_part(model):
    views, samples = batch()
    teacher_features = model.teacher_outputs(views[2])['features']
    losses = model(views, samples, mode='loss')
    assert set(losses) == {'loss_cls', 'loss_gml', 'loss_tau', 'loss_kd', 'tau_g'}
    queue = model.student.queue
    # every sample's teacher feature of x_k is in its class's ring
    for i, sample in enumerate(samples):
        slot = (queue.indices == 100 + i).nonzero().flatten()
        assert len(slot) == 1
        assert int(queue.labels[slot]) == i % 4
        torch.testing.assert_close(queue.features[slot[0]], teacher_features[i])
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    student = model.student
    for part in (student.backbone, student.head, student.query_mlp, student.key_mlp):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0
    assert student.gml_loss.log_tau_g.grad is not None
    assert all(p.grad is None for p in model.teacher.parameters())


def test_loss_value_is_the_gml_loss_of_the_embedded_queue(model):
    views, samples = batch()
    model.eval()  # deterministic BN to recompute the same numbers
    losses = model(views, samples, mode='loss')
    student = model.student
    feats = student.extract_feat(torch.cat(views[:2]))[-1]
    query = F.normalize(student.query_mlp(feats[6:]), dim=1)
    keys = F.normalize(student.key_mlp(student.queue.features), dim=1)
    target = torch.tensor([i % 4 for i in range(6)])
    log_prior = student.gml_loss.log_prior(4, 'cpu')
    expected = gml_loss(query, keys, student.queue.labels, target, 0.1, log_prior)
    torch.testing.assert_close(losses['loss_gml'], expected.mean())


@pytest.mark.parametrize('kd_view, teacher_view', [('cls', 0), ('key', 2)])
def test_kd_uses_the_teacher_scores_of_the_chosen_view(model, kd_view,
                                                       teacher_view):
    model.student.kd_view = kd_view
    views, samples = batch()
    assert model.student.teacher_inputs(views).shape[0] == \
        (12 if kd_view == 'cls' else 6)
    model.eval()
    losses = model(views, samples, mode='loss')
    cosines = model.student.head(model.student.extract_feat(views[0]))
    teacher = model.teacher_outputs(views[teacher_view])['scores']
    torch.testing.assert_close(losses['loss_kd'],
                               distillation_loss(cosines, teacher, 1 / 30, 4.0))
    # the queue still received x_k's teacher features
    keys = model.teacher_outputs(views[2])['features']
    slot = (model.student.queue.indices == 100).nonzero().flatten()
    torch.testing.assert_close(model.student.queue.features[slot[0]], keys[0])


def test_views_and_samples_are_checked(model):
    views, samples = batch()
    with pytest.raises(ValueError, match='three views'):
        model(views[0], samples, mode='loss')
    with pytest.raises(ValueError, match='three views'):
        model(views[:2], samples, mode='loss')
    bare = [DataSample().set_gt_label(0) for _ in range(6)]
    with pytest.raises(ValueError, match='sample_idx'):
        model(views, bare, mode='loss')
    with pytest.raises(RuntimeError, match='TeacherStudent'):
        model.student.loss(views, samples)


def test_prediction_uses_one_view(model):
    views, samples = batch()
    model.eval()
    single = model(views[0], samples, mode='predict')
    listed = model(views, samples, mode='predict')
    assert single[0].pred_score.shape == (4, )
    torch.testing.assert_close(single[0].pred_score, listed[0].pred_score)
    # mode='tensor' (feature export, model analysis) takes view 0 of a list
    single = model(views[0], samples, mode='tensor')
    listed = model(views, samples, mode='tensor')
    torch.testing.assert_close(listed, single)
    assert listed.shape == (6, 4)


def test_prefill_step_goes_through_the_data_preprocessor(model):
    views, samples = batch(offset=500)
    raw = [(v * 40 + 80).clamp(0, 255).to(torch.uint8) for v in views]
    model.prefill_step(dict(inputs=raw, data_samples=samples))
    assert set(model.student.queue.indices[model.student.queue.indices >= 0]
               .tolist()) == set(range(500, 506))
