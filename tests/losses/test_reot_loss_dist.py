"""Eq. 36 under DDP: the batch ratio is taken over the global batch (gloo, 2 ranks)."""
import os
import socket

import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from reot_mm.losses import REOTLoss

C = 6


def _free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _worker(rank, port, logits_all, labels_all, out):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch_dist.init_process_group('gloo', rank=rank, world_size=2)
    try:
        half = labels_all.shape[0] // 2
        logits = logits_all[rank * half:(rank + 1) * half]
        labels = labels_all[rank * half:(rank + 1) * half]
        loss = REOTLoss(prior='batch_ratio')
        out[rank] = loss(logits, labels)
    finally:
        torch_dist.destroy_process_group()


def test_batch_ratio_uses_global_batch():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(16, C, generator=generator)
    # rank 0 sees only classes 0-2, rank 1 only classes 3-5
    labels = torch.cat([torch.randint(0, 3, (8, ), generator=generator),
                        torch.randint(3, 6, (8, ), generator=generator)])
    out = mp.Manager().dict()
    # fork: the worker is defined in this test module, which pytest imports
    # in a way a spawned interpreter could not repeat
    mp.start_processes(_worker, args=(_free_port(), logits, labels, out),
                       nprocs=2, start_method='fork')
    global_ratio = torch.bincount(labels, minlength=C).float() / 16
    for rank in (0, 1):
        part = slice(rank * 8, (rank + 1) * 8)
        expected = F.cross_entropy(logits[part] + global_ratio.log(), labels[part])
        torch.testing.assert_close(out[rank], expected)
    # with a local ratio the two ranks would see disjoint supports instead
    local = torch.bincount(labels[:8], minlength=C).float() / 8
    assert not torch.allclose(
        out[0], F.cross_entropy(logits[:8] + local.log(), labels[:8]))
