from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from smec.sync_batchnorm import CPUSyncBatchNorm, SyncBatchNormPlugin

WORLD = 2
SHAPES = {"1d": (8, 3), "3d": (6, 3, 5)}  # (N, C) and (N, C, L); each rank gets half of N


def _inputs(shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g) * 3 + 1
    upstream = torch.randn(shape, generator=g)  # d loss / d output
    return x, upstream


def _bn(momentum=0.1) -> nn.BatchNorm1d:
    bn = nn.BatchNorm1d(3, momentum=momentum)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.5, -0.5, 2.0]))
        bn.bias.copy_(torch.tensor([0.1, 0.2, -0.3]))
    return bn


def _run(bn: nn.Module, x: torch.Tensor, upstream: torch.Tensor, steps: int = 2) -> dict:
    x = x.clone().requires_grad_(True)
    for _ in range(steps):  # twice: the running statistics move twice
        out = bn(x)
    (out * upstream).sum().backward()
    return {
        "out": out.detach(),
        "x_grad": x.grad,
        "w_grad": bn.weight.grad,
        "b_grad": bn.bias.grad,
        "running_mean": bn.running_mean.clone(),
        "running_var": bn.running_var.clone(),
        "eval": bn.eval()(x).detach(),
    }


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60)
    )
    try:
        results = {}
        for name, shape in SHAPES.items():
            for momentum in (0.1, None):
                x, upstream = _inputs(shape)
                half = slice(rank * shape[0] // 2, (rank + 1) * shape[0] // 2)
                model = SyncBatchNormPlugin().apply(nn.Sequential(_bn(momentum)))
                assert type(model[0]) is CPUSyncBatchNorm
                results[name, momentum] = _run(model[0], x[half], upstream[half])
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_cpu_sync_batchnorm_matches_one_batchnorm_over_every_rank(tmp_path):
    # fork: the workers inherit the imported torch and lightning instead of importing them again (seconds)
    mp.start_processes(
        _worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True, start_method="fork"
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    for (name, momentum), r0 in ranks[0].items():
        r1 = ranks[1][name, momentum]
        x, upstream = _inputs(SHAPES[name])
        reference = _run(_bn(momentum), x, upstream)
        for key in ("out", "x_grad", "eval"):
            torch.testing.assert_close(torch.cat([r0[key], r1[key]]), reference[key], rtol=1e-5, atol=1e-5)
        for key in ("w_grad", "b_grad"):  # each rank's share; DDP's gradient average is their mean
            torch.testing.assert_close(r0[key] + r1[key], reference[key], rtol=1e-5, atol=1e-5)
        for key in ("running_mean", "running_var"):
            torch.testing.assert_close(r0[key], reference[key], rtol=1e-5, atol=1e-6)
            assert torch.equal(r0[key], r1[key])


def test_one_process_and_eval_mode_use_torchs_batchnorm_and_revert_restores_it():
    bn = _bn()
    model = SyncBatchNormPlugin().apply(nn.Sequential(nn.Linear(4, 3), bn))
    assert type(model[1]) is CPUSyncBatchNorm and model[1].weight is bn.weight  # parameters shared
    x, upstream = _inputs((8, 3))
    got, reference = _run(model[1], x, upstream), _run(_bn(), x, upstream)
    for key, value in reference.items():
        torch.testing.assert_close(got[key], value)
    synced = model[1]
    reverted = SyncBatchNormPlugin().revert(model)[1]
    assert type(reverted) is not CPUSyncBatchNorm and isinstance(reverted, nn.modules.batchnorm._BatchNorm)
    assert reverted.weight is synced.weight and reverted.running_var is synced.running_var
