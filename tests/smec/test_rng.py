import io
import random
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from smec import rng


def draws() -> tuple:
    return (
        torch.rand(3).tolist(),
        np.random.rand(3).tolist(),
        [random.random() for _ in range(3)],
        np.random.randn(),
    )


def test_restore_continues_every_generator_where_capture_was():
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.randn()  # numpy's cached second gaussian is part of the state
    state = rng.capture()
    expected = draws()
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    rng.restore(state)
    assert draws() == expected


def test_states_survive_a_weights_only_load():
    state = rng.capture()
    expected = draws()
    buffer = io.BytesIO()
    torch.save({"states": [state]}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)["states"][0]
    rng.restore(loaded)
    assert draws() == expected


def test_select_picks_this_rank_or_rank_zero():
    assert rng.select([{"a": 0}]) == {"a": 0}
    assert rng.select([{"a": 0}, {"a": 1}]) == {"a": 0}  # one process is rank 0


def test_loading_weights_outside_a_fit_leaves_the_callers_generators_alone(tmp_path):
    # Imported here: the spawned ranks below import this module, and Lightning would cost each of them seconds.
    from smec.systems.base import RNG_KEY
    from smec.systems.mrl import MRLDecoderModule

    model = MRLDecoderModule(input_dim=10, output_dim=8, dims=[2, 4, 8])
    torch.manual_seed(5)
    checkpoint = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(checkpoint)
    assert len(checkpoint[RNG_KEY]) == 1
    torch.manual_seed(6)
    before = torch.get_rng_state()
    model.on_load_checkpoint(checkpoint)  # no trainer: load_from_checkpoint, predict, a notebook
    assert torch.equal(torch.get_rng_state(), before)


def _gather_worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=2, timeout=timedelta(seconds=60)
    )
    try:
        torch.manual_seed(100 + rank)  # ranks that draw differently
        states = rng.gather()
        mine = rng.select(states)
        torch.save({"states": states, "mine": mine, "next": torch.rand(2)}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_gather_keeps_every_ranks_own_state(tmp_path):
    mp.spawn(_gather_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    out = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    for rank in (0, 1):
        states = out[rank]["states"]
        assert len(states) == 2
        assert torch.equal(states[rank]["torch"], out[rank]["mine"]["torch"])
        assert torch.equal(states[0]["torch"], out[0]["states"][0]["torch"])  # same list on every rank
        torch.set_rng_state(out[rank]["mine"]["torch"])
        assert torch.equal(torch.rand(2), out[rank]["next"])
    assert not torch.equal(out[0]["mine"]["torch"], out[1]["mine"]["torch"])
