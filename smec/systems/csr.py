"""`CSRModule`: Contrastive Sparse Representation (Wen et al., ICML 2025, arXiv 2503.01776; docs/methods.md#csr).

Thin wiring only: a :class:`~smec.nn.sparse_autoencoder.SparseAutoEncoder` maps the frozen concatenation x
(B, D) to k-sparse codes of a width-``hidden_dim`` dictionary, trained by :class:`~smec.losses.csr.CSRLoss`
(reconstruction at k and 4k, dead-latent auxiliary term; with ``data.mode: both`` the contrastive term on the
(query, document) pairs' codes). Its sizes are the sparsity levels k: ``embed(x, k)`` is the code as a dense
(B, hidden_dim) vector with at most k non-zeros, and :meth:`CSRModule.storage_bits` its true size, which the
evaluator's grid uses (:func:`smec.evaluation.grid.evaluate_system`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from smec.errors import ConfigError
from smec.evaluation.sparse import sparse_bits
from smec.losses.csr import CSRLoss
from smec.nn.sparse_autoencoder import SparseAutoEncoder
from smec.systems.base import CompressionSystem, resolve_eval_dims, trained_sizes
from smec.validation import check_dims, named_config_errors

DEFAULT_KS = (8, 16, 32, 64)


class CSRModule(CompressionSystem):
    """Frozen concatenation → k-sparse codes of a wider dictionary, at every trained k.

    Args:
        input_dim: width D of the frozen concatenation (linked from ``data.input_dim`` by the CLI).
        hidden_dim: the dictionary width H (default 4 D).
        dims: the sparsity levels k trained, ascending, each <= hidden_dim (default: ``eval_dims`` if given,
            else 8, 16, 32, 64).
        weights: per-k loss weights (default: equal).
        k_aux / dead_steps / tied: see :class:`~smec.nn.sparse_autoencoder.SparseAutoEncoder`.
        aux_weight / contrastive_weight / four_k_weight / scale: see :class:`~smec.losses.csr.CSRLoss`;
            ``contrastive_weight`` > 0 needs (query, document) pairs (``data.mode: both``).
        lr / weight_decay: AdamW (default 1e-3, 0; the paper's values are not ours: docs/methods.md#csr).
        eval_dims: the k the evaluator reports, each a trained k (default: ``dims``).
        predict_dim: the k ``smec predict`` writes (default: the largest trained k).
    """

    method_name = "csr"
    prefix_nested = False

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int | None = None,
        dims: list[int] | None = None,
        weights: list[float] | None = None,
        k_aux: int = 512,
        dead_steps: int = 30,
        tied: bool = True,
        aux_weight: float = 1 / 32,
        contrastive_weight: float = 1.0,
        four_k_weight: float = 1 / 8,
        scale: float = 1.0,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        eval_dims: list[int] | None = None,
        predict_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.input_dim = int(input_dim)
        width = 4 * self.input_dim if hidden_dim is None else hidden_dim
        self.sae = named_config_errors(
            "model", SparseAutoEncoder, self.input_dim, width, k_aux=k_aux, dead_steps=dead_steps, tied=tied
        )
        sizes, source = trained_sizes(dims, eval_dims, DEFAULT_KS)
        self.ks = check_dims(sizes, self.sae.hidden_dim, name=f"model.{source}")
        self.output_dim = self.sae.hidden_dim
        self.loss_fn = named_config_errors(
            "model",
            CSRLoss,
            self.ks,
            weights=weights,
            aux_weight=aux_weight,
            contrastive_weight=contrastive_weight,
            four_k_weight=four_k_weight,
            scale=scale,
        )
        # Validation rows carry no pairs: the reconstruction terms only, comparable across epochs.
        self.val_loss_fn = CSRLoss(self.ks, weights=weights, aux_weight=0.0, contrastive_weight=0.0)
        what = f"its trained sparsity levels model.dims {list(self.ks)}"
        self.eval_dims = resolve_eval_dims(eval_dims, self.ks, self.method_name, self.ks.__contains__, what)
        if predict_dim is not None and predict_dim not in self.ks:
            raise ConfigError(
                f"model.predict_dim={predict_dim} is not a trained k (model.dims {list(self.ks)})"
            )
        self.predict_dim = predict_dim
        self._init_val_metrics(self.ks)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        mode = getattr(datamodule, "mode", None)
        if stage == "fit" and self.loss_fn.contrastive_weight > 0 and mode not in (None, "both"):
            raise ConfigError(
                f"model.contrastive_weight={self.loss_fn.contrastive_weight} needs (query, document) pairs and "
                f"rows: data.mode both, got {mode} (or set model.contrastive_weight: 0)"
            )

    def storage_bits(self, k: int, precision: str) -> int:
        """Bits of one stored row at sparsity k: k · ⌈log2 hidden_dim⌉ + k · bits of a value at ``precision``."""
        return sparse_bits(k, self.sae.hidden_dim, precision)

    def embed(self, x: Tensor, dim: int) -> Tensor:
        """The k-sparse code (B, hidden_dim) at k = ``dim``, a trained k; not normalised (the evaluator does)."""
        if dim not in self.ks:
            raise ConfigError(f"csr: k={dim} is not a trained sparsity level (model.dims {list(self.ks)})")
        return self.sae.encode(x, dim)

    def compress(self, x: Tensor) -> Tensor:
        return self.embed(x, self.ks[-1])

    def forward(self, x: Tensor) -> Tensor:
        return self.compress(x)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        x = batch["x"]
        pairs = None
        if self.loss_fn.contrastive_weight > 0:
            q, d = batch["q"], batch["d"]
            # One forward for rows, queries and documents: the pairs' codes come from the same pass.
            out = self.sae(torch.cat([x, q, d]), self.ks)
            sizes = [len(x), len(q), len(d)]
            pairs = {k: tuple(out.codes[k].split(sizes)[1:]) for k in self.ks}
            x = torch.cat([x, q, d])
        else:
            out = self.sae(x, self.ks)
        result = self.loss_fn(x, out, pairs)
        self._log_train_loss(result, len(x))
        for name, value in result.terms.items():
            self.log(f"train/{name}", value, on_step=False, on_epoch=True, batch_size=len(x))
        return result.loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        x = batch["x"]
        out = self.val_loss_fn(x, self.sae(x, self.ks))
        self._log_val_losses(out.loss, out.per_dim, len(x))

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self.embed(batch["x"], self.predict_dim or self.ks[-1])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        return torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
