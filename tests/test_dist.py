"""reot_mm.dist: the one all-gather helper (gather_rows / gather_rows_of).

Single-process behaviour is checked directly; the cross-rank behaviour (rank
order, uneven and empty row counts, gradients summed into the owner's rows,
a clear error for mismatched trailing shapes) in two gloo processes started
forked (tests/launch.py run_forked_gloo: no re-import of torch, a few
seconds).
"""
import pytest
import torch
from launch import run_forked_gloo

from reot_mm import dist

WORLD = 2
ROWS = (3, 0)  # uneven, and one rank without rows


def test_single_process_is_identity_with_offset_zero():
    x = torch.randn(4, 3, requires_grad=True)
    out, offset = dist.gather_rows(x, with_grad=True)
    assert out is x and offset == 0
    labels = torch.arange(4)
    outs, offset = dist.gather_rows_of((x, labels))
    assert outs[0] is x and outs[1] is labels and offset == 0
    assert not dist.is_distributed() and dist.get_world_size() == 1


def test_gather_rows_of_rejects_mismatched_rows():
    with pytest.raises(ValueError, match='same n'):
        dist.gather_rows_of((torch.zeros(3, 2), torch.zeros(4)))
    with pytest.raises(ValueError, match=r'shape \(n, \.\.\.\)'):
        dist.gather_rows(torch.tensor(1.0))


def _rank_rows(rank):
    """Rank r's features (ROWS[r], 2): value 10 r + row index."""
    n = ROWS[rank]
    base = 10.0 * rank + torch.arange(n, dtype=torch.float64)
    return torch.stack([base, -base], dim=1)


def _worker(rank):
    expected = torch.cat([_rank_rows(r) for r in range(WORLD)])
    # without gradient: detached, rank order, uneven and empty parts
    local = _rank_rows(rank).requires_grad_(True)
    out, offset = dist.gather_rows(local)
    assert not out.requires_grad
    assert torch.equal(out, expected), (rank, out)
    assert offset == sum(ROWS[:rank])
    # several tensors at once, integer labels included
    labels = torch.full((ROWS[rank], ), rank, dtype=torch.long)
    (feats, labs), offset2 = dist.gather_rows_of((local, labels))
    assert offset2 == offset and torch.equal(feats, expected)
    assert labs.tolist() == [r for r in range(WORLD)
                             for _ in range(ROWS[r])]
    # with gradient: rank r's loss weighs the gathered rows by (r + 1);
    # the owner's rows receive the sum over ranks, Σ_r (r + 1) = 3
    out, offset = dist.gather_rows(local, with_grad=True)
    assert out.requires_grad and torch.equal(out.detach(), expected)
    ((rank + 1) * out).sum().backward()
    total = sum(r + 1 for r in range(WORLD))
    assert torch.equal(local.grad, torch.full_like(local, total)), \
        (rank, local.grad)
    # mismatched trailing shapes: a clear error on every rank
    bad = torch.zeros(2, 2 + rank)
    try:
        dist.gather_rows(bad)
    except ValueError as error:
        assert 'trailing shapes must match' in str(error)
    else:
        raise AssertionError('no error for mismatched trailing shapes')


def test_two_gloo_ranks_uneven_rows_and_gradient():
    run_forked_gloo(_worker, world=WORLD)


def _worker_rows_without_graph(rank):
    # rank 1 holds zero rows that carry no graph (a rank without samples);
    # rank 0's rows require a gradient. Both losses depend on the gathered
    # rows, so both ranks run the gather's backward collective.
    local = _rank_rows(rank)
    if rank == 0:
        local.requires_grad_(True)
    out, _ = dist.gather_rows(local, with_grad=True)
    assert out.requires_grad, 'the gathered rows carry a graph on every rank'
    ((rank + 1) * out).sum().backward()
    if rank == 0:
        assert torch.equal(local.grad, torch.full_like(local, 3.0)), local.grad


def test_a_rank_whose_rows_carry_no_graph_joins_the_backward():
    """Without the backward all-to-all on the rank without a graph, rank 0
    waits for it until the group's timeout."""
    run_forked_gloo(_worker_rows_without_graph, world=WORLD, timeout=20)
