"""Cross-rank helpers in plain ``torch.distributed`` (bottom layer, no OpenMMLab).

Every statistic that must agree across ranks (class counts, batch label counts,
prior weights) goes through these functions, so there is one place that knows
how a process group is used. All functions are no-ops in a single process.
Collectives here carry no gradient.
"""
from typing import Any, Sequence

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
