"""The SMEC paper's diagnostic: the gradient variance of the shared (first) layer, logged every optimizer step.

SMEC (arXiv 2510.12474) argues that training every size at once (MRL, or SMEC's ``no-smrl`` ablation) makes
the gradients of the shared first layer noisier than SMRL's one stage at a time. :class:`GradVariance` measures
it: at each optimizer step it takes the gradient g of the named submodule's parameters (``compressor.blocks.0``,
SMEC's first block, by default) and keeps an exponentially weighted mean m and variance v per element
(Welford's update with weight 1 − β: d = g − m, m ← m + (1 − β)·d, v ← β·(v + (1 − β)·d²)), and logs the mean of
v over the elements as ``train/grad_var/<module>`` (and the gradient's squared norm as
``train/grad_var/<module>/sq_norm``, the scale to read it against). Steps where the module gets no gradient
(SMRL after stage 0) log nothing. Off by default: ``fit_callbacks.grad_variance: compressor.blocks.0`` turns it
on (:mod:`smec.fit_callbacks`); the state is not checkpointed (a resumed fit restarts the average).
:func:`smec.experiment.plots.plot_grad_variance` plots it from runs' CSV metrics.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch

from smec.errors import ConfigError

__all__ = ["GradVariance"]


class GradVariance(pl.Callback):
    """Log the exponentially weighted per-element gradient variance of one submodule (module docstring).

    Args:
        module: the submodule's dotted name in the system (``compressor.blocks.0``; MRL: ``decoder.net``).
        beta: the average's decay β in [0, 1) (default 0.9: about the last ten steps).
    """

    def __init__(self, module: str = "compressor.blocks.0", beta: float = 0.9) -> None:
        super().__init__()
        if not 0.0 <= beta < 1.0:
            raise ConfigError(f"fit_callbacks.grad_variance: beta must be in [0, 1), got {beta!r}")
        self.module, self.beta = module, float(beta)
        self._mean: torch.Tensor | None = None
        self._var: torch.Tensor | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        try:
            pl_module.get_submodule(self.module)
        except AttributeError:
            names = [n for n, m in pl_module.named_modules() if n and any(True for _ in m.parameters(False))]
            raise ConfigError(
                f"fit_callbacks.grad_variance: {type(pl_module).__name__} has no submodule {self.module!r} "
                f"(with parameters: {', '.join(names[:8])})"
            ) from None

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any
    ) -> None:
        grads = [
            p.grad.detach().flatten()
            for p in pl_module.get_submodule(self.module).parameters()
            if p.grad is not None
        ]
        if not grads:
            return
        g = torch.cat(grads).to(torch.float64)
        if self._mean is None or self._var is None or self._mean.shape != g.shape:
            self._mean, self._var = g.clone(), torch.zeros_like(g)
        else:
            d = g - self._mean
            self._mean += (1 - self.beta) * d
            self._var = self.beta * (self._var + (1 - self.beta) * d * d)
        name = f"train/grad_var/{self.module}"
        pl_module.log(name, float(self._var.mean()), on_step=True, on_epoch=False, batch_size=1)
        pl_module.log(f"{name}/sq_norm", float(g.square().sum()), on_step=True, on_epoch=False, batch_size=1)
