"""BatchNorm over the global batch of a DDP fit, on GPUs (NCCL) and on CPU processes (gloo).

``torch.nn.SyncBatchNorm`` refuses CPU tensors ("SyncBatchNorm expected input tensor to be on GPU"), so
Lightning's ``sync_batchnorm: true`` breaks a CPU DDP fit of any model with a BatchNorm (MRL's
``arch: simple_encoder``). :class:`SyncBatchNorm` is torch's module with a CPU path: each rank's per-channel
sum, sum of squares and row count are summed over the ranks by an all-reduce whose backward all-reduces the
gradients too (every rank's loss depends on the sums), so the output, the gradient and the running statistics
are those of one BatchNorm over every rank's rows. Accelerator
tensors, eval mode and one-process runs go through torch's own code unchanged.

:class:`SyncBatchNormPlugin` is the Lightning plugin that converts a model's BatchNorms to it at fit start
(``trainer.plugins``, configs/trainer/ddp.yaml); use it instead of ``sync_batchnorm: true``, not with it.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from lightning.pytorch.plugins.layer_sync import TorchSyncBatchNorm
from torch import Tensor, nn

__all__ = ["SyncBatchNorm", "SyncBatchNormPlugin"]


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks, differentiable: the gradient of every rank's loss reaches every rank's input."""

    @staticmethod
    def forward(ctx, t: Tensor, group) -> Tensor:  # type: ignore[override]
        ctx.group = group
        out = t.clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class SyncBatchNorm(nn.SyncBatchNorm):
    """``torch.nn.SyncBatchNorm`` that also synchronises CPU tensors over a gloo process group."""

    def forward(self, input: Tensor) -> Tensor:
        if (
            input.device.type != "cpu"
            or not self.training
            or not (dist.is_available() and dist.is_initialized())
        ):
            return super().forward(input)
        group = self.process_group or dist.group.WORLD
        if dist.get_world_size(group) == 1:
            return super().forward(input)
        self._check_input_dim(input)
        self._check_non_zero_input_channels(input)
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


class SyncBatchNormPlugin(TorchSyncBatchNorm):
    """Lightning's ``sync_batchnorm`` plugin, converting to :class:`SyncBatchNorm` (CPU processes included)."""

    def apply(self, model: nn.Module) -> nn.Module:
        model = super().apply(model)  # torch's conversion: BatchNorm*d -> nn.SyncBatchNorm, state shared
        for module in model.modules():
            if type(module) is nn.SyncBatchNorm:
                module.__class__ = SyncBatchNorm  # same state, one more code path
        return model
