"""datamodules.distributed: the single-process fallbacks (the 2-process gather is tested with its user, the S-XBM
memory, in tests/smec/nn/test_memory_ddp.py)."""

import torch

from datamodules import distributed


def test_single_process_fallbacks():
    assert not distributed.is_distributed()
    assert distributed.world_size() == 1 and distributed.rank() == 0
    t = torch.randn(3, 2, requires_grad=True)
    gathered = distributed.all_gather_tensor(t, uneven=True)
    assert torch.equal(gathered, t) and not gathered.requires_grad
