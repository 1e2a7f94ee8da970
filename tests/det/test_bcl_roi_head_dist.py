"""BCLShared2FCBBoxHead under DDP when a rank has no foreground RoI.

BCL (Zhu et al., Balanced Contrastive Learning for Long-Tailed Visual
Recognition, CVPR 2022, Eq. 9) all-gathers the foreground RoI embeddings so
n_j counts the global batch: ``BCLLoss.contrastive`` runs two
``gather_rows`` (embeddings with gradient, labels; each exchanges the row
counts first) and one ``all_reduce_sum`` of the valid anchors in the forward
pass, and the gradient all-gather's all-to-all in the backward pass. A rank
whose sampled RoIs are all background must join each of them with zero rows,
or the other ranks wait forever. Two forked gloo ranks; the group timeout
turns a missed collective into a failure instead of a hang.
"""
import copy

import torch
import torch.distributed as torch_dist
from launch import run_forked_gloo
from mmdet.registry import MODELS
from mmengine.registry import init_default_scope

import reot_mm  # noqa: F401
from reot_mm import dist
from reot_mm.losses import BCLLoss

C = 5
COUNTS = [50., 20., 8., 3., 1.]
FOREGROUND = (7, 0)  # rank 1 samples background RoIs only


def _head():
    init_default_scope('mmdet')
    torch.manual_seed(0)
    return MODELS.build(dict(
        type='BCLShared2FCBBoxHead', in_channels=8, fc_out_channels=32,
        roi_feat_size=7, num_classes=C, contrast_channels=16,
        bbox_coder=dict(type='DeltaXYWHBBoxCoder',
                        target_means=[0., 0., 0., 0.],
                        target_stds=[0.1, 0.1, 0.2, 0.2]),
        loss_cls=dict(type='REOTRoILoss', class_counts=COUNTS),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0)))


def _rank_rois(rank, num=12):
    """Rank r's RoIs: FOREGROUND[r] foreground (labels 0..C-1), the rest
    background (label C)."""
    gen = torch.Generator().manual_seed(100 + rank)
    feats = torch.randn(num, 8, 7, 7, generator=gen)
    labels = torch.full((num, ), C, dtype=torch.long)
    labels[:FOREGROUND[rank]] = torch.arange(FOREGROUND[rank]) % C
    rois = torch.cat([torch.zeros(num, 1),
                      torch.tensor([[4., 4., 40., 36.]]).repeat(num, 1)], 1)
    targets = torch.randn(num, 4, generator=gen) * 0.1
    return feats, labels, rois, targets


def _head_losses(head, rank):
    feats, labels, rois, targets = _rank_rois(rank)
    cls_score, bbox_pred = head(feats)
    return head.loss(cls_score, bbox_pred, rois, labels,
                     torch.ones(labels.shape[0]), targets,
                     torch.ones_like(targets))


def _reference(head, world):
    """L_BCL of one process on the foreground rows of every rank (each rank's
    projection batch-norm over its own RoIs, as in the DDP run) and its
    gradient with respect to the projector weights."""
    head = copy.deepcopy(head)
    loss = BCLLoss(lc_weight=0.0, bcl_weight=0.35, temperature=0.07,
                   gather_across_ranks=False)
    rows, labels = [], []
    for rank in range(world):
        feats, rank_labels, _, _ = _rank_rois(rank)
        head(feats)
        projected = head.contrast_projector(head._roi_embedding)
        head._roi_embedding = None
        foreground = rank_labels < C
        rows.append(projected[foreground])
        labels.append(rank_labels[foreground])
    rows, labels = torch.cat(rows), torch.cat(labels)
    prototypes = head.prototype_projector(head.fc_cls.weight[:C])
    value = loss(rows.new_zeros(rows.shape[0], C), labels, rows[:, None],
                 prototypes)['loss_bcl']
    value.backward()
    return value.detach(), head.contrast_projector.mlp[0].weight.grad


def _worker(rank):
    world = dist.get_world_size()
    head = _head()
    head.train()
    losses = _head_losses(head, rank)
    bcl = losses['loss_bcl']
    assert bcl.requires_grad and bcl.grad_fn is not None, rank
    if FOREGROUND[rank] == 0:
        assert bcl.item() == 0.0, bcl
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    # every parameter of the contrastive branch received a gradient (DDP)
    for name, param in head.named_parameters():
        assert param.grad is not None, (rank, name)
    # DDP averages: mean over ranks of loss and projector gradient
    mean_loss = dist.all_reduce_sum(bcl.detach()) / world
    weight = head.contrast_projector.mlp[0].weight
    mean_grad = dist.all_reduce_sum(weight.grad) / world
    head.zero_grad()
    expected_loss, expected_grad = _reference(head, world)
    assert torch.allclose(mean_loss, expected_loss, atol=1e-6), \
        (rank, mean_loss, expected_loss)
    assert torch.allclose(mean_grad, expected_grad, atol=1e-6), rank


def _worker_all_background(rank):
    """No rank has a foreground RoI: zero everywhere, no rank waits."""
    head = _head()
    head.train()
    feats, labels, rois, targets = _rank_rois(rank)
    labels[:] = C
    cls_score, bbox_pred = head(feats)
    losses = head.loss(cls_score, bbox_pred, rois, labels,
                       torch.ones(labels.shape[0]), targets,
                       torch.ones_like(targets))
    assert losses['loss_bcl'].item() == 0.0
    losses['loss_bcl'].backward()
    torch_dist.barrier()


def test_rank_without_foreground_joins_the_gather_and_matches_one_process():
    run_forked_gloo(_worker, timeout=30)


def test_no_foreground_on_any_rank_gives_zero_without_waiting():
    run_forked_gloo(_worker_all_background, timeout=30)

