"""The S-XBM memory under 2-process gloo DDP: every rank holds the same memory, through
datamodules.distributed's all-gather (equal and uneven batches)."""

from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from datamodules import distributed
from smec.nn.memory import CrossBatchMemory

WORLD = 2
MEMORY_SIZE, DIM = 10, 3
# Different, uneven batch sizes per rank and step; 18 rows in total, so the 10-slot memory wraps around.
BATCHES = {0: [2, 4, 3], 1: [3, 1, 5]}


def _batch(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = BATCHES[rank][step]
    ids = torch.arange(n) + 1000 * rank + 100 * step
    return torch.stack([ids.float(), ids.float() * 0.5 + rank, -ids.float()], dim=1), ids


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    # A short timeout turns a collective mismatch (deadlock) into a failure instead of a hung test.
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60)
    )
    try:
        memory = CrossBatchMemory(MEMORY_SIZE, DIM)
        for step in range(len(BATCHES[rank])):
            x, _ = _batch(rank, step)
            memory.enqueue(x)  # all-gathers first
        equal = distributed.all_gather_tensor(torch.full((2, 1), float(rank)))
        torch.save(
            {
                "memory": memory.state_dict(),
                "equal_gather": equal,
                "rank": distributed.rank(),
                "world": distributed.world_size(),
            },
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_ddp_memories_identical_across_ranks(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    assert [r["rank"] for r in results] == [0, 1] and all(r["world"] == WORLD for r in results)
    for r in results:
        assert r["equal_gather"].flatten().tolist() == [0.0, 0.0, 1.0, 1.0]

    mem0, mem1 = (r["memory"] for r in results)
    for key in mem0:
        assert torch.equal(mem0[key], mem1[key]), key

    # and equal to one process enqueuing each step's batches in rank order
    reference = CrossBatchMemory(MEMORY_SIZE, DIM)
    for step in range(3):
        xs, _ = zip(*(_batch(r, step) for r in range(WORLD)))
        reference.enqueue(torch.cat(xs))
    for key, value in reference.state_dict().items():
        assert torch.equal(mem0[key], value), key
    assert int(mem0["filled"]) == MEMORY_SIZE and int(mem0["ptr"]) == 18 % MEMORY_SIZE
