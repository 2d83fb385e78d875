"""`smec predict` output: compressed embeddings written back as a store that `smec eval` reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from datamodules.paths import check_output_dir, child_path
from smec.errors import ConfigError


class StorePredictionWriter(BasePredictionWriter):
    """Collects the system's compressed outputs for every text set and writes them as a store.

    A system whose sizes are prefixes of one vector (``prefix_nested``: MRL, the adaptors) becomes one "model",
    keyed by ``name`` (default: the system's ``method_name``), of width d_max, float32; its nested sizes are its
    prefixes. A system whose sizes are separate vectors (SMEC: ``prefix_nested = False``) becomes one model per
    size, each recorded with ``prefix_nested: false`` so that ``smec eval`` scores it at its width only (its
    prefixes are not the system's sizes): ``<name>-d<dim>`` for each of its ``eval_dims``, or ``<name>`` alone
    when the system writes one size (SMEC's ``predict_dim``). Ids and qrels are copied from the source store, so
    ``smec eval --store <output_dir>`` evaluates it like any other.

    Args:
        output_dir: the store folder to write.
        name: model key in the new store (default: the system's method name); one plain folder name.
        overwrite: replace existing models of those names in ``output_dir`` (only their folders are deleted).

    Everything that can be checked is checked before predicting: one device, ``output_dir`` writable, the
    model folder free (or ``overwrite``).
    """

    def __init__(self, output_dir: str, name: str | None = None, overwrite: bool = False) -> None:
        super().__init__(write_interval="epoch")
        self.output_dir = Path(output_dir)
        if name is not None:
            child_path(self.output_dir, name, "StorePredictionWriter.name", ConfigError)
        self.name = name
        self.overwrite = overwrite
        self._sized: dict[int, dict[int, list[torch.Tensor]]] = {}  # dataloader -> size -> batches

    @staticmethod
    def _sizes(pl_module: Any) -> list[int] | None:
        """The sizes written as separate models, or None for a prefix-nested system (one model)."""
        if getattr(pl_module, "prefix_nested", True):
            return None
        predict_dim = getattr(pl_module, "predict_dim", None)
        return [int(predict_dim)] if predict_dim else sorted(int(d) for d in pl_module.eval_dims)

    def _targets(self, pl_module: Any) -> dict[int | None, Path]:
        """Model folder per written size (None: the one model of a prefix-nested system)."""
        base = self.name or getattr(pl_module, "method_name", "compressed")
        sizes = self._sizes(pl_module)
        keys: dict[int | None, str] = (
            {None: base} if sizes is None else {d: base if len(sizes) == 1 else f"{base}-d{d}" for d in sizes}
        )
        return {
            d: child_path(self.output_dir, key, "StorePredictionWriter.name", ConfigError)
            for d, key in keys.items()
        }

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage != "predict":
            return
        if trainer.world_size > 1:
            raise ConfigError("StorePredictionWriter: run `smec predict` on one device (trainer.devices=1)")
        check_output_dir(self.output_dir, "StorePredictionWriter.output_dir", ConfigError)
        self._sized = {}
        for target in self._targets(pl_module).values():
            if target.exists() and not self.overwrite:
                raise ConfigError(
                    f"{target} exists; set overwrite: true on StorePredictionWriter or pick another output_dir"
                )

    def on_predict_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        super().on_predict_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
        sizes = self._sizes(pl_module)
        if sizes is None:
            return
        with (
            torch.no_grad()
        ):  # each size is its own vector: embed(x, d), not a prefix of predict_step's output
            for d in sizes:
                rows = pl_module.embed(batch["x"], d).detach().float().cpu()
                self._sized.setdefault(dataloader_idx, {}).setdefault(d, []).append(rows)

    def write_on_epoch_end(self, trainer: Any, pl_module: Any, predictions: Any, batch_indices: Any) -> None:
        import shutil

        dm = trainer.datamodule
        names = dm.predict_text_sets
        if len(names) == 1:
            predictions = [predictions]
        targets = self._targets(pl_module)
        for target in targets.values():
            if target.exists():
                if not self.overwrite:
                    raise ConfigError(
                        f"{target} exists; set overwrite: true on StorePredictionWriter or pick another output_dir"
                    )
                shutil.rmtree(target)  # child_path: a folder directly inside output_dir, not a link
        writer = self._writer(dm.store)
        for dim, target in targets.items():
            info = {
                "spec": target.name,
                "kind": "compressed",
                "source_store": str(dm.store.path),
                "input_dim": dm.input_dim,  # the float32 input width: compression factors are relative to it
                "source_models": dm.model_keys,
            }
            if dim is not None:
                info["prefix_nested"] = False  # one size of the system: its prefixes are not its sizes
            for i, (name, outputs) in enumerate(zip(names, predictions)):
                parts = outputs if dim is None else self._sized[i][dim]
                rows = torch.cat([o.detach().float().cpu() for o in parts]).numpy()
                writer.write(
                    target.name,
                    name,
                    dim=rows.shape[1],
                    encode=lambda a, b, r=rows: np.ascontiguousarray(r[a:b]),
                    model_info=info,
                    dtype="float32",
                )
        self._sized = {}

    def _writer(self, source: Any) -> Any:
        from datamodules.store.writer import StoreWriter, TextSetSpec

        return StoreWriter(
            self.output_dir,
            dataset=source.dataset,
            fingerprint=source.meta["dataset"]["fingerprint"],
            text_sets=[TextSetSpec(ts, source.ids(ts)) for ts in source.text_sets],
            qrels={split: source.qrels(split) for split in source.splits},
        )
