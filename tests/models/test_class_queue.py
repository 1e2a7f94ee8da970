"""Class-wise queues (GML Eq. 6): segment layout, FIFO rings, DDP, checkpoints."""
import collections
import math
import textwrap

import pytest
import torch
from launch import run_torchrun

from reot_mm.models import ClassQueue
from reot_mm.models.class_queue import segment_bounds


def eq6_by_hand(counts, size, k_m):
    """Segment sizes transcribed from GML Eq. 6 as the authors' code rounds it (1-based c)."""
    total = sum(counts)
    ends, cumulative = [], 0.0
    for c, n in enumerate(counts, start=1):
        cumulative += n / total
        ends.append(min(size, math.ceil(c * k_m + (size - len(counts) * k_m)
                                        * cumulative - 1e-9)))
    ends[-1] = size
    return [e - s for s, e in zip([0] + ends[:-1], ends)]


@pytest.mark.parametrize('counts, size, k_m', [
    ([120, 76, 48, 30, 19, 12, 7, 4, 3, 2], 256, 4),
    ([500, 5, 5, 490], 64, 2),
    ([1, 1, 1], 9, 3),            # K = k_m·C: all segments have k_m slots
    ([1000] + [1] * 99, 4096, 2),  # CIFAR-100-LT-like: one huge head
])
def test_segments_follow_eq6_sum_to_k_and_respect_k_m(counts, size, k_m):
    starts, sizes = segment_bounds(counts, size, k_m)
    assert sizes.tolist() == eq6_by_hand(counts, size, k_m)
    assert int(sizes.sum()) == size
    assert int(sizes.min()) >= k_m
    assert starts.tolist() == [0] + sizes.cumsum(0)[:-1].tolist()
    # proportional part: |Z_c| - k_m is within 1 of (K - C·k_m)·p(c)
    share = (size - len(counts) * k_m) * torch.tensor(counts, dtype=torch.float64) \
        / sum(counts)
    assert ((sizes - k_m).double() - share).abs().max() <= 1.0 + 1e-9


def test_bad_layouts_raise_clear_errors():
    with pytest.raises(ValueError, match=r'at least k_m·C = 30'):
        segment_bounds([5] * 10, 29, 3)
    with pytest.raises(ValueError, match='k_m'):
        segment_bounds([5] * 10, 100, 0)
    with pytest.raises(ValueError, match='at least k_m·C = 8142'):
        ClassQueue(num_classes=8142, feat_dim=4, size=4096, min_per_class=1)
    # the message names the two settings to change
    with pytest.raises(ValueError, match=r'ClassQueue size \(K\) = 5 .* '
                       r'min_per_class \(k_m\) = 1'):
        ClassQueue(num_classes=10, feat_dim=4, size=5)
    with pytest.raises(ValueError, match='num_classes'):
        ClassQueue(num_classes=0, feat_dim=4, size=4)


def test_initial_state_and_build():
    queue = ClassQueue(num_classes=3, feat_dim=5, size=12, min_per_class=2,
                       seed=7)
    assert not queue.is_built
    with pytest.raises(RuntimeError, match='GMLQueueHook'):
        queue.enqueue(torch.zeros(1, 5), torch.zeros(1, dtype=torch.long),
                      torch.zeros(1, dtype=torch.long))
    queue.build_segments([6, 3, 1])
    assert queue.is_built
    assert queue.labels.tolist() == sum(
        ([c] * int(n) for c, n in enumerate(queue.segment_sizes)), [])
    assert queue.indices.tolist() == list(range(-12, 0))
    torch.testing.assert_close(queue.features.norm(dim=1), torch.ones(12))
    again = ClassQueue(num_classes=3, feat_dim=5, size=12, min_per_class=2,
                       seed=7, class_counts=[6, 3, 1])
    assert torch.equal(again.features, queue.features)  # same on every rank
    assert queue.class_fill().tolist() == [0.0, 0.0, 0.0]


class ReferenceQueue:
    """One collections.deque(maxlen=size_c) per class (sequential writes)."""

    def __init__(self, sizes):
        self.rings = [collections.deque(maxlen=int(n)) for n in sizes]

    def enqueue(self, features, labels, indices):
        for f, y, i in zip(features, labels.tolist(), indices.tolist()):
            self.rings[y].append((f.clone(), i))


def test_fifo_order_per_class_matches_sequential_rings():
    counts = [40, 10, 4, 2, 1]
    queue = ClassQueue(num_classes=5, feat_dim=3, size=24, min_per_class=2,
                       class_counts=counts)
    reference = ReferenceQueue(queue.segment_sizes)
    generator = torch.Generator().manual_seed(0)
    next_index = 0
    per_class = torch.zeros(5, dtype=torch.long)
    for batch in (1, 7, 16, 40, 3, 0, 25):  # 40 > every segment: wrap-around
        labels = torch.multinomial(torch.tensor(counts, dtype=torch.float),
                                   batch, replacement=True, generator=generator) \
            if batch else torch.zeros(0, dtype=torch.long)
        features = torch.randn(batch, 3, generator=generator)
        indices = torch.arange(next_index, next_index + batch)
        next_index += batch
        per_class += torch.bincount(labels, minlength=5)
        queue.enqueue(features, labels, indices)
        reference.enqueue(features, labels, indices)
        for c, ring in enumerate(reference.rings):
            got_features, got_indices = queue.class_entries(c)
            written = got_indices >= 0
            assert int(written.sum()) == len(ring)
            # oldest first; initial entries (index < 0) are the oldest
            assert got_indices[written].tolist() == [i for _, i in ring]
            if ring:
                torch.testing.assert_close(got_features[written],
                                           torch.stack([f for f, _ in ring]))
    assert queue.num_enqueued.tolist() == per_class.tolist()
    # labels never move: each slot keeps its segment's class
    assert queue.labels.tolist() == sum(
        ([c] * int(n) for c, n in enumerate(queue.segment_sizes)), [])


def test_enqueue_checks_inputs():
    queue = ClassQueue(num_classes=2, feat_dim=4, size=4, class_counts=[1, 1])
    with pytest.raises(ValueError, match="feature dimension"):
        queue.enqueue(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long),
                      torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r'labels must be in \[0, 2\)'):
        queue.enqueue(torch.zeros(1, 4), torch.tensor([2]), torch.tensor([0]))
    with pytest.raises(ValueError, match='shape'):
        queue.enqueue(torch.zeros(2, 4), torch.tensor([0]), torch.tensor([0]))


def test_state_survives_a_checkpoint_round_trip(tmp_path):
    queue = ClassQueue(num_classes=3, feat_dim=4, size=10, min_per_class=2,
                       class_counts=[5, 3, 2])
    queue.enqueue(torch.randn(7, 4), torch.tensor([0, 0, 1, 2, 0, 1, 0]),
                  torch.arange(7))
    torch.save(queue.state_dict(), tmp_path / 'queue.pth')
    restored = ClassQueue(num_classes=3, feat_dim=4, size=10, min_per_class=2)
    assert not restored.is_built
    restored.load_state_dict(torch.load(tmp_path / 'queue.pth'))
    assert restored.is_built
    for name, buffer in queue.named_buffers():
        assert torch.equal(buffer, getattr(restored, name)), name
    # both continue identically (pointers were restored)
    new = (torch.randn(5, 4), torch.tensor([2, 0, 1, 1, 0]), torch.arange(7, 12))
    queue.enqueue(*new)
    restored.enqueue(*new)
    assert torch.equal(queue.features, restored.features)
    assert torch.equal(queue.indices, restored.indices)


RANK_SCRIPT = textwrap.dedent('''
    import sys
    import torch
    import torch.distributed as dist
    from reot_mm.models import ClassQueue

    dist.init_process_group('gloo')
    rank = dist.get_rank()
    queue = ClassQueue(num_classes=4, feat_dim=3, size=16, min_per_class=2,
                       class_counts=[8, 4, 2, 1])
    for step in range(6):
        # ranks hold different items and different batch sizes
        generator = torch.Generator().manual_seed(100 * step + rank)
        batch = 3 + rank + step % 2
        labels = torch.randint(0, 4, (batch, ), generator=generator)
        features = torch.randn(batch, 3, generator=generator)
        indices = 1000 * rank + 10 * step + torch.arange(batch)
        queue.enqueue(features, labels, indices)
    torch.save(queue.state_dict(), sys.argv[1] + f'/rank{rank}.pth')
    dist.barrier()  # every rank done before teardown
    dist.destroy_process_group()
''')


def test_two_gloo_ranks_end_with_identical_queues(tmp_path):
    script = tmp_path / 'enqueue_ranks.py'
    script.write_text(RANK_SCRIPT)
    run_torchrun(script, tmp_path)
    states = [torch.load(tmp_path / f'rank{r}.pth') for r in (0, 1)]
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
    # and equal to one process enqueueing rank 0's items, then rank 1's
    reference = ClassQueue(num_classes=4, feat_dim=3, size=16, min_per_class=2,
                           class_counts=[8, 4, 2, 1])
    for step in range(6):
        parts = []
        for rank in (0, 1):
            generator = torch.Generator().manual_seed(100 * step + rank)
            batch = 3 + rank + step % 2
            labels = torch.randint(0, 4, (batch, ), generator=generator)
            features = torch.randn(batch, 3, generator=generator)
            parts.append((features, labels,
                          1000 * rank + 10 * step + torch.arange(batch)))
        reference.enqueue(*(torch.cat(p) for p in zip(*parts)))
    for key, value in reference.state_dict().items():
        assert torch.equal(states[0][key], value), key
    assert (states[0]['indices'] >= 1000).any()  # rank 1's items are in
