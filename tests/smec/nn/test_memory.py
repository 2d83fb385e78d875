import io
from collections import deque

import pytest
import torch

from smec.errors import ConfigError
from smec.nn.memory import CrossBatchMemory


def _rows(start: int, n: int, dim: int) -> torch.Tensor:
    """Rows whose first coordinate is their global sequence number, so FIFO order is readable."""
    seq = torch.arange(start, start + n, dtype=torch.float32)
    return torch.stack([seq, -seq, *([seq * 0.5] * (dim - 2))], dim=1)


def test_fifo_order_matches_deque_across_wraparound():
    size, dim = 7, 4
    memory = CrossBatchMemory(size, dim)
    ref_x: deque[torch.Tensor] = deque(maxlen=size)
    seq = 0
    # batch sizes: partial fill, exact wrap, wrap past the end, one bigger than the memory, empty
    for b in [3, 4, 5, 2, 11, 0, 6, 1]:
        x = _rows(seq, b, dim)
        memory.enqueue(x)
        ref_x.extend(x)
        seq += b
        got_x = memory.ordered()
        assert torch.equal(got_x, torch.stack(list(ref_x)) if ref_x else torch.zeros(0, dim))
        assert len(memory) == len(ref_x)
        assert int(memory.ptr) == seq % size


def test_enqueue_casts_to_storage_dtype_and_detaches():
    memory = CrossBatchMemory(4, 3, dtype=torch.float16)
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    memory.enqueue(x)
    assert memory.queue.dtype == torch.float16
    assert not memory.queue.requires_grad
    assert torch.equal(memory.queue[:2], x.detach().half())


def test_state_dict_round_trip_is_bit_for_bit():
    torch.manual_seed(0)
    memory = CrossBatchMemory(5, 3)
    memory.enqueue(torch.randn(4, 3))
    memory.enqueue(torch.randn(3, 3))  # wraps: ptr = 2
    buffer = io.BytesIO()
    torch.save(memory.state_dict(), buffer)
    buffer.seek(0)
    restored = CrossBatchMemory(5, 3)
    restored.load_state_dict(torch.load(buffer))
    assert set(memory.state_dict()) == {"queue", "ptr", "filled"}
    for key, value in memory.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value), key
    assert int(restored.ptr) == 2 and len(restored) == 5
    # and it keeps going identically
    nxt = torch.randn(2, 3)
    memory.enqueue(nxt)
    restored.enqueue(nxt)
    assert torch.equal(memory.ordered(), restored.ordered())


def test_topk_equals_brute_force_over_filled_entries_only():
    torch.manual_seed(1)
    memory = CrossBatchMemory(16, 6)
    stored = torch.randn(10, 6) * torch.rand(10, 1) * 5  # varied norms: cosine must normalise
    memory.enqueue(stored)
    queries = torch.randn(3, 6)
    sims, idx = memory.topk(queries, k=4)
    brute = torch.tensor(
        [[torch.nn.functional.cosine_similarity(q, m, dim=0).item() for m in stored] for q in queries]
    )
    order = brute.argsort(dim=1, descending=True)[:, :4]
    assert torch.equal(idx, order)
    assert torch.allclose(sims, brute.gather(1, order), atol=1e-6)
    assert int(idx.max()) < 10  # the 6 empty slots are never returned
    # deterministic
    sims2, idx2 = memory.topk(queries, k=4)
    assert torch.equal(sims, sims2) and torch.equal(idx, idx2)


def test_topk_finds_the_row_itself_first():
    # No exclusion here: S-XBM masks a row's own entry by its cosine (tests/smec/losses/test_sxbm.py).
    memory = CrossBatchMemory(8, 2)
    memory.enqueue(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.1, 1.0], [-1.0, -0.5]]))
    sims, idx = memory.topk(torch.tensor([[0.0, 1.0]]), k=2)
    assert idx.tolist() == [[1, 2]] and sims[0, 0].item() == pytest.approx(1.0)


def test_topk_k_larger_than_filled_raises():
    memory = CrossBatchMemory(8, 2)
    memory.enqueue(torch.ones(3, 2))
    with pytest.raises(
        ValueError, match=r"^topk needs 1 <= k <= filled entries, got k=4 with 3 entries stored$"
    ):
        memory.topk(torch.ones(1, 2), k=4)


def test_is_ready_and_reset():
    memory = CrossBatchMemory(4, 2)
    assert not memory.is_ready(1)
    memory.enqueue(torch.ones(3, 2))
    assert memory.is_ready(3) and not memory.is_ready()
    memory.enqueue(torch.ones(1, 2))
    assert memory.is_ready()
    memory.reset()
    assert len(memory) == 0 and int(memory.ptr) == 0 and memory.queue.eq(0).all()


def test_bad_arguments():
    with pytest.raises(ConfigError, match=r"^memory_size must be a positive integer, got 0$"):
        CrossBatchMemory(0, 4)
    with pytest.raises(ConfigError, match=r"^dtype must be a floating-point dtype, got torch.int64$"):
        CrossBatchMemory(4, 4, dtype=torch.int64)
    memory = CrossBatchMemory(4, 3)
    with pytest.raises(ValueError, match=r"^enqueue expects x of shape \(B, 3\), got \(2, 4\)$"):
        memory.enqueue(torch.ones(2, 4))
