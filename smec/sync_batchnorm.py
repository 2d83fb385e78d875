"""BatchNorm over the global batch of a DDP fit, on GPUs (NCCL) and on CPU processes (gloo).

``torch.nn.SyncBatchNorm`` is GPU-only (its forward refuses CPU tensors, and DDP refuses to wrap a CPU module
holding one), so Lightning's ``sync_batchnorm: true`` breaks a CPU DDP fit of any model with a BatchNorm (MRL's
``arch: simple_encoder``). :class:`SyncBatchNormPlugin` converts a model's BatchNorms at fit start to torch's
SyncBatchNorm when the fit runs on an accelerator, and to :class:`CPUSyncBatchNorm` on CPU: each rank's
per-channel sum, sum of squares and row count are summed over the ranks by an all-reduce whose backward
all-reduces the gradients too (every rank's loss depends on the sums), so the output, the gradient and the
running statistics are those of one BatchNorm over every rank's rows. Use the plugin (``trainer.plugins``,
configs/trainer/ddp.yaml) instead of ``sync_batchnorm: true``, not with it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.plugins.layer_sync import TorchSyncBatchNorm, _BatchNormXd
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from datamodules import distributed

__all__ = ["CPUSyncBatchNorm", "SyncBatchNormPlugin"]


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks, differentiable: the gradient of every rank's loss reaches every rank's input."""

    @staticmethod
    def forward(ctx: Any, t: Tensor, group: Any) -> Tensor:
        ctx.group = group
        out = t.clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class CPUSyncBatchNorm(_BatchNorm):
    """BatchNorm (any of 1d/2d/3d) whose training statistics are those of the rows of every rank.

    Without an initialised process group of more than one rank, and in eval mode, it is torch's BatchNorm.
    """

    def __init__(self, *args: Any, process_group: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.process_group = process_group

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: Tensor) -> Tensor:
        group = self.process_group or (dist.group.WORLD if distributed.is_distributed() else None)
        if not self.training or group is None or dist.get_world_size(group) == 1:
            return super().forward(input)
        self._check_input_dim(input)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as torch's BatchNorm
                momentum = 1.0 / float(self.num_batches_tracked)
        channels = input.shape[1]
        rows = input.transpose(0, 1).reshape(channels, -1)
        local = torch.cat([rows.sum(1), (rows * rows).sum(1), rows.new_full((1,), rows.shape[1])])
        total = _AllReduceSum.apply(local, group)
        count = total[-1]
        mean = total[:channels] / count
        var = (total[channels : 2 * channels] / count - mean * mean).clamp_min(0.0)  # biased, as BatchNorm
        if self.track_running_stats:
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), momentum)
                unbiased = var.detach() * (count / (count - 1)) if count > 1 else var.detach()
                self.running_var.lerp_(unbiased, momentum)
        shape = [1, channels] + [1] * (input.dim() - 2)
        out = (input - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def _convert(module: nn.Module, source: type, target: type) -> nn.Module:
    """``module`` with every ``source`` BatchNorm replaced by a ``target`` sharing its parameters and buffers."""
    out = module
    if isinstance(module, source) and not isinstance(module, target):
        out = target(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _convert(child, source, target))
    return out


def _device_type(model: nn.Module) -> str:
    trainer = getattr(model, "_trainer", None)
    if trainer is not None:
        return trainer.strategy.root_device.type
    return "cuda" if distributed.is_distributed() and dist.get_backend() == "nccl" else "cpu"


class SyncBatchNormPlugin(TorchSyncBatchNorm):
    """Lightning's ``sync_batchnorm`` plugin, with :class:`CPUSyncBatchNorm` when the fit runs on CPU."""

    def apply(self, model: nn.Module) -> nn.Module:
        if _device_type(model) != "cpu":
            return super().apply(model)  # torch's SyncBatchNorm and its fused kernels
        return _convert(model, _BatchNorm, CPUSyncBatchNorm)

    def revert(self, model: nn.Module) -> nn.Module:
        return super().revert(_convert(model, CPUSyncBatchNorm, _BatchNormXd))
