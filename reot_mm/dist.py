"""Cross-rank helpers in plain ``torch.distributed`` (bottom layer, no OpenMMLab).

Every statistic that must agree across ranks (class counts, batch label counts,
prior weights) goes through these functions, so there is one place that knows
how a process group is used. All functions are no-ops in a single process.
Collectives here carry no gradient, except ``gather_rows(..., with_grad=True)``
(and ``gather_rows_of``, its form for several tensors with the same rows).
"""
from typing import Any, List, Sequence, Tuple

import torch
import torch.distributed as torch_dist


def is_distributed() -> bool:
    """Whether a default process group is initialised with more than one rank."""
    return (torch_dist.is_available() and torch_dist.is_initialized()
            and torch_dist.get_world_size() > 1)


def get_rank() -> int:
    return torch_dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return torch_dist.get_world_size() if is_distributed() else 1


def _collective_device(tensor: torch.Tensor) -> torch.device:
    # NCCL needs CUDA tensors; gloo takes CPU tensors.
    if torch_dist.get_backend() == 'nccl':
        return torch.device('cuda', torch.cuda.current_device())
    return torch.device('cpu')


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks (returns a new tensor on the input's device)."""
    if not is_distributed():
        return tensor
    buffer = tensor.detach().to(_collective_device(tensor)).clone()
    torch_dist.all_reduce(buffer, op=torch_dist.ReduceOp.SUM)
    return buffer.to(tensor.device)


def broadcast_tensor(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Return rank ``src``'s value of ``tensor`` on every rank."""
    if not is_distributed():
        return tensor
    buffer = tensor.detach().to(_collective_device(tensor)).clone()
    torch_dist.broadcast(buffer, src=src)
    return buffer.to(tensor.device)


def all_gather_objects(obj: Any) -> list:
    """Gather a picklable object from every rank (list indexed by rank)."""
    if not is_distributed():
        return [obj]
    gathered = [None] * get_world_size()
    torch_dist.all_gather_object(gathered, obj)
    return gathered


def assert_same_across_ranks(values: Sequence[float], name: str,
                             atol: float = 0.0) -> None:
    """Raise if ``values`` differ between ranks (diagnostic for rank-synced state).

    Args:
        values: a flat sequence of numbers held by this rank.
        name: what the values are, for the error message.
        atol: absolute tolerance for the comparison.
    """
    gathered = all_gather_objects([float(v) for v in values])
    reference = gathered[0]
    for rank, other in enumerate(gathered[1:], start=1):
        if len(other) != len(reference) or any(
                abs(a - b) > atol for a, b in zip(reference, other)):
            raise RuntimeError(
                f'{name} differs between ranks: rank 0 has {reference}, '
                f'rank {rank} has {other}')


def gather_rows(tensor: torch.Tensor, with_grad: bool = False
                ) -> Tuple[torch.Tensor, int]:
    """Concatenate ``tensor`` (n_r, ...) of every rank along dim 0, in rank order.

    Ranks may hold different n_r, including 0 (e.g. a smaller last batch):
    rows are padded to the largest n_r for the collective and trimmed
    afterwards. The trailing shape (and dtype) must be the same on every rank.

    Args:
        tensor: this rank's rows, (n_r, ...).
        with_grad: keep the autograd graph. The gathered tensor then holds this
            rank's input itself in its slot, and the other ranks' parts come
            from ``torch.distributed.nn.functional.all_gather``, whose backward
            sums every rank's gradient into the owner's rows (contrastive losses
            whose negatives are the global batch). Without it the result is
            detached (queues, statistics).

    Returns:
        ``(gathered (Σ n_r, ...), offset)`` with ``offset`` the index of this
        rank's first row. In a single process: ``(tensor, 0)``.

    Raises:
        ValueError: ``tensor`` is not at least 1-D, or its trailing shape
            differs between ranks.
    """
    gathered, offset = gather_rows_of((tensor, ), with_grad=with_grad)
    return gathered[0], offset


def gather_rows_of(tensors: Sequence[torch.Tensor], with_grad: bool = False
                   ) -> Tuple[List[torch.Tensor], int]:
    """:func:`gather_rows` for several tensors with the same rows, at once.

    For e.g. features, labels and sample indices of one batch: the row counts
    are exchanged once for all of them. ``with_grad`` applies to the floating
    tensors; integer tensors carry no gradient anyway.

    Returns:
        ``([gathered tensors], offset)``; in a single process
        ``(list(tensors), 0)``.
    """
    tensors = list(tensors)
    rows = {t.shape[0] if t.ndim else None for t in tensors}
    if None in rows or len(rows) != 1:
        raise ValueError(f'gather_rows needs tensors of shape (n, ...) with '
                         f'the same n, got shapes '
                         f'{[tuple(t.shape) for t in tensors]}')
    if not is_distributed():
        return tensors, 0
    n_local = rows.pop()
    collective = _collective_device(tensors[0])
    # row count and the per-row size of each tensor, checked on every rank
    info = torch.tensor([n_local] + [_row_numel(t) for t in tensors],
                        device=collective)
    infos = [torch.zeros_like(info) for _ in range(get_world_size())]
    torch_dist.all_gather(infos, info)
    sizes = [int(i[0]) for i in infos]
    for r, other in enumerate(infos):
        if not torch.equal(other[1:], info[1:]):
            raise ValueError(
                f'gather_rows: rank {get_rank()} holds rows of sizes '
                f'{info[1:].tolist()} but rank {r} holds {other[1:].tolist()}; '
                'the trailing shapes must match on every rank')
    rank = get_rank()
    offset = sum(sizes[:rank])
    return [_gather_padded(t, sizes, rank, with_grad) for t in tensors], offset


def _row_numel(tensor: torch.Tensor) -> int:
    numel = 1
    for size in tensor.shape[1:]:
        numel *= int(size)
    return numel


def _gather_padded(tensor, sizes, rank, with_grad):
    device = tensor.device
    with_grad = with_grad and tensor.is_floating_point()
    local = tensor if with_grad else tensor.detach()
    if with_grad and torch.is_grad_enabled() and not local.requires_grad:
        # The backward of the gather is itself a collective: a rank whose rows
        # carry no graph (e.g. zero rows of a rank without samples) must still
        # run it, or the ranks that do wait for it forever.
        local = local.detach().requires_grad_(True)
    work = local.to(_collective_device(local)).contiguous()
    longest = max(sizes)
    if work.shape[0] < longest:
        work = torch.cat([work, work.new_zeros(
            (longest - work.shape[0], ) + tuple(work.shape[1:]))])
    if with_grad:
        from torch.distributed.nn.functional import all_gather
        parts = list(all_gather(work))
    else:
        parts = [torch.empty_like(work) for _ in range(len(sizes))]
        torch_dist.all_gather(parts, work)
    pieces = [local if r == rank and with_grad else part[:n].to(device)
              for r, (part, n) in enumerate(zip(parts, sizes))]
    return torch.cat(pieces)
