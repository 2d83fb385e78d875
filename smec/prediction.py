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

    The new store has one "model", keyed by ``name`` (default: the system's ``method_name``), of width
    d_max, float32; nested sizes are its prefixes. Ids and qrels are copied from the source store, so
    ``smec eval --store <output_dir>`` evaluates it like any other.

    Args:
        output_dir: the store folder to write.
        name: model key in the new store (default: the system's method name); one plain folder name.
        overwrite: replace an existing model of that name in ``output_dir`` (only that folder is deleted).

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

    def _target(self, pl_module: Any) -> Path:
        key = self.name or getattr(pl_module, "method_name", "compressed")
        return child_path(self.output_dir, key, "StorePredictionWriter.name", ConfigError)

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage != "predict":
            return
        if trainer.world_size > 1:
            raise ConfigError("StorePredictionWriter: run `smec predict` on one device (trainer.devices=1)")
        check_output_dir(self.output_dir, "StorePredictionWriter.output_dir", ConfigError)
        target = self._target(pl_module)
        if target.exists() and not self.overwrite:
            raise ConfigError(
                f"{target} exists; set overwrite: true on StorePredictionWriter or pick another output_dir"
            )

    def write_on_epoch_end(self, trainer: Any, pl_module: Any, predictions: Any, batch_indices: Any) -> None:
        import shutil

        from datamodules.store.writer import StoreWriter, TextSetSpec

        dm = trainer.datamodule
        source = dm.store
        names = dm.predict_text_sets
        if len(names) == 1:
            predictions = [predictions]
        target = self._target(pl_module)
        key = target.name
        if target.exists():
            if not self.overwrite:
                raise ConfigError(
                    f"{target} exists; set overwrite: true on StorePredictionWriter or pick another output_dir"
                )
            shutil.rmtree(target)  # child_path: a folder directly inside output_dir, not a link
        writer = StoreWriter(
            self.output_dir,
            dataset=source.dataset,
            fingerprint=source.meta["dataset"]["fingerprint"],
            text_sets=[TextSetSpec(ts, source.ids(ts)) for ts in source.text_sets],
            qrels={split: source.qrels(split) for split in source.splits},
        )
        info = {
            "spec": key,
            "kind": "compressed",
            "source_store": str(source.path),
            "input_dim": dm.input_dim,  # the float32 input width: compression factors are relative to it
            "source_models": dm.model_keys,
        }
        for name, outputs in zip(names, predictions):
            rows = torch.cat([o.detach().float().cpu() for o in outputs]).numpy()
            writer.write(
                key,
                name,
                dim=rows.shape[1],
                encode=lambda a, b, r=rows: np.ascontiguousarray(r[a:b]),
                model_info=info,
                dtype="float32",
            )
