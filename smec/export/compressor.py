"""The trained compressor as a sentence-transformers module: the concatenation (B, D) -> the size-``dim`` vector.

Saved as a slim Lightning checkpoint (``compressor.ckpt``: state_dict + hyper-parameters, no optimizer state)
and restored by the system class's own ``load_from_checkpoint(..., weights_only=True)``, so the exported model
runs exactly the code `smec predict` runs: ``system.embed(x, dim)`` in eval mode (a prefix of ``compress`` for
MRL and the adaptors, SMEC's separate size-``dim`` vector).

Rows are compressed in fixed chunks of ``chunk_rows`` (zero-padded; a zero row changes no other row in eval
mode). Matrix products on a CPU can round a row differently depending on how many rows share the call, so a
fixed chunk makes the output independent of the caller's batch size; with ``chunk_rows`` = the batch size
`smec predict` used (the export default), the rows equal predict's.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import torch
from sentence_transformers.base.modules import Module

from smec.checkpoint import load_checkpoint, load_system, slim_checkpoint

CHECKPOINT_FILE = "compressor.ckpt"


class Compressor(Module):
    """``features["sentence_embedding"]`` (B, D) float32 -> ``system.embed(x, dim)`` (B, dim), not normalised.

    Args:
        system: a trained compression system (in eval mode).
        dim: the size exported.
        chunk_rows: rows per call of the system (see the module docstring).
        class_path / method / input_dim: recorded for readers of the config (the checkpoint decides the class).
        checkpoint: the checkpoint the system was restored from (its slim form is what ``save`` writes).
    """

    config_file_name = "smec_compressor.json"
    config_keys: ClassVar[list[str]] = ["class_path", "method", "input_dim", "dim", "chunk_rows"]

    def __init__(
        self,
        system: Any,
        dim: int,
        chunk_rows: int = 256,
        class_path: str | None = None,
        method: str | None = None,
        input_dim: int | None = None,
        *,
        checkpoint: dict[str, Any],
    ) -> None:
        super().__init__()
        self.system = system
        self.dim = int(dim)
        self.chunk_rows = int(chunk_rows)
        self.class_path = class_path or f"{type(system).__module__}.{type(system).__qualname__}"
        self.method = method or str(getattr(system, "method_name", type(system).__name__))
        self.input_dim = int(input_dim if input_dim is not None else system.input_dim)
        self._checkpoint = slim_checkpoint(checkpoint)  # what save() writes

    def get_embedding_dimension(self) -> int:
        return self.dim

    @torch.no_grad()
    def compress(self, x: torch.Tensor) -> torch.Tensor:
        """(n, D) -> (n, dim) float32, ``chunk_rows`` rows per call of the system."""
        param = next(self.system.parameters(), None)
        device = param.device if param is not None else x.device
        x = x.to(device=device, dtype=torch.float32)
        n, c = x.shape[0], self.chunk_rows
        out = []
        for start in range(0, n, c):
            chunk = x[start : start + c]
            rows = chunk.shape[0]
            if rows < c:
                chunk = torch.cat([chunk, chunk.new_zeros(c - rows, chunk.shape[1])])
            out.append(self.system.embed(chunk, self.dim)[:rows].float())
        return torch.cat(out) if out else x.new_zeros(0, self.dim)

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        features["sentence_embedding"] = self.compress(features["sentence_embedding"])
        return features

    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
        self.save_config(output_path)
        torch.save(self._checkpoint, os.path.join(output_path, CHECKPOINT_FILE))

    @classmethod
    def load(
        cls,
        model_name_or_path: str,
        subfolder: str = "",
        token: bool | str | None = None,
        cache_folder: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        **kwargs: Any,
    ) -> Compressor:
        hub = dict(
            token=token, cache_folder=cache_folder, revision=revision, local_files_only=local_files_only
        )
        config = cls.load_config(model_name_or_path, subfolder=subfolder, **hub)
        path = cls.load_file_path(model_name_or_path, CHECKPOINT_FILE, subfolder=subfolder, **hub)
        if path is None:
            raise FileNotFoundError(
                f"{os.path.join(model_name_or_path, subfolder, CHECKPOINT_FILE)}: missing"
            )
        ckpt = load_checkpoint(path, CHECKPOINT_FILE)
        return cls(load_system(path, CHECKPOINT_FILE, checkpoint=ckpt), checkpoint=ckpt, **config)
