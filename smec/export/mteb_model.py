"""An exported folder as an MTEB 2.x model, scored the way `smec eval` scores it.

mteb needs no base class: ``encode(inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kw)``
(``inputs`` a DataLoader of dict batches, text under ``"text"``), ``similarity`` / ``similarity_pairwise`` and
``mteb_model_meta``. Queries go through ``encode_query``, documents through ``encode_document`` (their own
prompts per base model); other task types (no ``prompt_type``) use the query side.

``encode`` returns the vectors `smec eval` compares: the normalised float32 output, the decoded and renormalised
int8 / int4 codes (the evaluator's symmetric "deq" cosine), or the ±1 signs of binary codes, whose inner product
divided by ``dim`` is ``1 - 2 * hamming / dim`` exactly (integer sums in float32), so equal Hamming distances tie
exactly as they do in the evaluator's search.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

DEFAULT_BATCH_SIZE = 64  # `smec embed`'s: the same batches give the same transformer outputs


class ExportedEncoder:
    """An exported smec model (``smec export``) as an mteb encoder.

    Args:
        path: the exported folder.
        device: torch device for the base transformers and the compressor.
        batch_size: texts per ``encode_query`` / ``encode_document`` batch.
    """

    def __init__(self, path: str | Path, device: str = "cpu", batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        from smec.export import load
        from smec.export.quantizer import Quantizer
        from smec.export.writer import EXPORT_FILE

        self.path = Path(path)
        record_text = (self.path / EXPORT_FILE).read_text(encoding="utf-8")
        self.record = json.loads(record_text)
        self.model = load(self.path, device=device)
        last = self.model[-1]
        self.quantizer = last if isinstance(last, Quantizer) else None
        self.batch_size = int(batch_size)
        self.dim = int(self.record["dim"])
        self.mteb_model_meta = self._meta(hashlib.sha256(record_text.encode()).hexdigest()[:12])

    def _meta(self, revision: str) -> Any:
        from mteb.models.model_meta import ModelMeta, ScoringFunction

        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.path.resolve().name)
        return ModelMeta.create_empty(
            overwrites={
                "name": f"smec/{name}",
                "revision": revision,
                "embed_dim": self.dim,
                "similarity_fn_name": ScoringFunction.COSINE,
                "framework": ["Sentence Transformers", "PyTorch"],
                "modalities": ["text"],
                "n_parameters": sum(p.numel() for p in self.model.parameters()),
                "use_instructions": False,
                "open_weights": True,
                "adapted_from": " + ".join(self.record["base_models"]),
            }
        )

    def encode(
        self,
        inputs: Any,
        *,
        task_metadata: Any = None,
        hf_split: str | None = None,
        hf_subset: str | None = None,
        prompt_type: Any = None,
        **kwargs: Any,
    ) -> np.ndarray:
        texts = [t for batch in inputs for t in batch["text"]]
        return self.encode_texts(texts, "document" if str(prompt_type) == "document" else "query")

    def encode_texts(self, texts: list[str], side: str) -> np.ndarray:
        """The scored representation (see the module docstring) of ``texts`` on one side."""
        fn = self.model.encode_document if side == "document" else self.model.encode_query
        out = fn(texts, batch_size=self.batch_size, show_progress_bar=False, convert_to_numpy=True)
        if self.quantizer is None:
            return np.asarray(out, dtype=np.float32)
        return self.quantizer.decode(out)

    def similarity(self, a: Any, b: Any) -> torch.Tensor:
        scores = (
            torch.as_tensor(np.asarray(a, dtype=np.float32))
            @ torch.as_tensor(np.asarray(b, dtype=np.float32)).T
        )
        return scores / self.dim if self._binary else scores

    def similarity_pairwise(self, a: Any, b: Any) -> torch.Tensor:
        scores = (
            torch.as_tensor(np.asarray(a, dtype=np.float32))
            * torch.as_tensor(np.asarray(b, dtype=np.float32))
        ).sum(-1)
        return scores / self.dim if self._binary else scores

    @property
    def _binary(self) -> bool:
        return self.quantizer is not None and self.quantizer.precision == "binary"
