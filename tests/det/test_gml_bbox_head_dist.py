"""GMLShared2FCBBoxHead under two forked gloo ranks when a rank has no
foreground RoI: the rank joins the queue's all-gather with zero rows (or the
other waits until the group timeout fails the test), returns a zero
``loss_gml`` whose graph reaches every GML parameter, and both ranks end with
the same queue (GML Eq. 6 rings written with the gathered rows)."""
import torch
import torch.distributed as torch_dist
from launch import run_forked_gloo
from test_gml_bbox_head import C, build, roi_batch

from reot_mm import dist

FOREGROUND = (True, False)  # rank 1 samples background RoIs only


def _rank_losses(rank, all_background=False):
    torch.manual_seed(0)  # the same head on every rank
    head = build()
    feats, labels, rois, targets = roi_batch(
        seed=10 + rank,
        background=True if all_background or not FOREGROUND[rank] else None)
    head.train()
    cls_score, bbox_pred = head(feats)
    with head.batch_context([2 * rank + 1, 2 * rank + 2]):
        losses = head.loss(cls_score, bbox_pred, rois, labels,
                           torch.ones(labels.shape[0]), targets,
                           torch.ones_like(targets))
    return head, labels, losses


def _worker(rank):
    head, labels, losses = _rank_losses(rank)
    gml = losses['loss_gml']
    assert gml.requires_grad, rank
    if FOREGROUND[rank]:
        assert gml.item() > 0, (rank, gml)
    else:
        assert gml.item() == 0.0 and losses['loss_tau'].item() == 0.0
    sum(v for k, v in losses.items() if k.startswith('loss')).backward()
    for name, param in head.named_parameters():
        assert param.grad is not None, (rank, name)
    # identical queues: rank 0's foreground rows, written on both ranks
    dist.assert_same_across_ranks(head.queue.fingerprint(), 'GML RoI queue')
    enqueued = dist.all_reduce_sum(
        torch.bincount(labels[labels < C], minlength=C))
    assert torch.equal(head.queue.num_enqueued, enqueued), rank


def _worker_all_background(rank):
    head, _, losses = _rank_losses(rank, all_background=True)
    assert losses['loss_gml'].item() == 0.0
    losses['loss_gml'].backward()
    assert int(head.queue.num_enqueued.sum()) == 0
    torch_dist.barrier()


def test_rank_without_foreground_joins_the_queue_gather():
    run_forked_gloo(_worker, timeout=30)


def test_no_foreground_on_any_rank_gives_zero_without_waiting():
    run_forked_gloo(_worker_all_background, timeout=30)
