"""RE-OT Eq. 36 under DDP: the batch ratio is taken over the global batch
(gloo, 2 ranks), for rows (REOTLoss), RoIs (REOTRoILoss) and pixels
(REOTPixelLoss)."""
import textwrap

import torch
import torch.nn.functional as F
from launch import run_torchrun

C = 6
WORKER = textwrap.dedent('''
    import sys
    import torch
    import torch.distributed as torch_dist
    from reot_mm.losses import REOTLoss, REOTPixelLoss, REOTRoILoss

    torch_dist.init_process_group('gloo')
    rank = torch_dist.get_rank()
    logits, labels = torch.load(sys.argv[1])
    half = labels.shape[0] // 2
    part = slice(rank * half, (rank + 1) * half)
    loss = REOTLoss(prior='batch_ratio')(logits[part], labels[part])
    torch.save(loss, f'{sys.argv[2]}/loss_rank{rank}.pt')
    # RoIs: the last column is background (label C - 1); pixels: 2x2 maps
    roi = REOTRoILoss(prior='batch_ratio')(logits[part], labels[part])
    torch.save(roi, f'{sys.argv[2]}/roi_rank{rank}.pt')
    maps = logits[part].reshape(2, 2, 2, -1).permute(0, 3, 1, 2)
    pixel = REOTPixelLoss(prior='batch_ratio')(
        maps, labels[part].reshape(2, 2, 2), ignore_index=None)
    torch.save(pixel, f'{sys.argv[2]}/pixel_rank{rank}.pt')
    torch_dist.barrier()  # every rank done before teardown
    torch_dist.destroy_process_group()
''')


def test_batch_ratio_uses_global_batch(tmp_path):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(16, C, generator=generator)
    # rank 0 sees only classes 0-2, rank 1 only classes 3-5
    labels = torch.cat([torch.randint(0, 3, (8, ), generator=generator),
                        torch.randint(3, 6, (8, ), generator=generator)])
    torch.save((logits, labels), tmp_path / 'batch.pt')
    (tmp_path / 'worker.py').write_text(WORKER)
    run_torchrun(tmp_path / 'worker.py', tmp_path / 'batch.pt', tmp_path)
    global_ratio = torch.bincount(labels, minlength=C).float() / 16
    for rank in (0, 1):
        part = slice(rank * 8, (rank + 1) * 8)
        expected = F.cross_entropy(logits[part] + global_ratio.log(), labels[part])
        torch.testing.assert_close(torch.load(tmp_path / f'loss_rank{rank}.pt'),
                                   expected)
        # RoIs: Eq. 36 over the foreground RoIs of both ranks, background
        # column untouched (foreground_only: log Q = [log(C_fg·r), 0])
        fg = labels[labels < C - 1]
        fg_ratio = torch.bincount(fg, minlength=C - 1).float() / fg.numel()
        log_q = torch.cat([((C - 1) * fg_ratio).log(), torch.zeros(1)])
        torch.testing.assert_close(
            torch.load(tmp_path / f'roi_rank{rank}.pt'),
            F.cross_entropy(logits[part] + log_q, labels[part]))
        # pixels: the same global ratio per pixel
        torch.testing.assert_close(
            torch.load(tmp_path / f'pixel_rank{rank}.pt'), expected)
    # with a local ratio the two ranks would see disjoint supports instead
    local = torch.bincount(labels[:8], minlength=C).float() / 8
    assert not torch.allclose(
        torch.load(tmp_path / 'loss_rank0.pt'),
        F.cross_entropy(logits[:8] + local.log(), labels[:8]))
