"""Sentence-transformers models (offline package folders, local folders, hub names), frozen in eval mode."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.encoders.base import PROBE, as_embeddings, check_texts, package_versions
from datamodules.encoders.prompts import resolve_prompts
from datamodules.errors import EncoderError
from datamodules.offline_models import OFFLINE_MODELS, source_packages


class SentenceTransformerEncoder:
    """A sentence-transformers model (offline package folder, local folder or hub name), frozen in eval mode.

    Pooling and any saved Normalize module are kept as the model was saved. Prompts are resolved once at load
    time (explicit argument > prompts saved with the model > known family default > none) and always passed
    explicitly, so the model's ``default_prompt_name`` cannot silently add another.
    """

    def __init__(
        self,
        spec: str,
        name_or_path: str,
        *,
        offline_name: str | None = None,
        device: str = "cpu",
        max_length: int | None = None,
        query_prompt: str | None = None,
        document_prompt: str | None = None,
    ) -> None:
        from sentence_transformers import SentenceTransformer

        self.spec = spec
        self.offline_name = offline_name
        self.name_or_path = name_or_path
        self.is_local = Path(name_or_path).is_dir()
        self.device = device
        try:
            model = SentenceTransformer(name_or_path, device=device, local_files_only=self.is_local)
        except Exception as e:
            if self.is_local:
                raise EncoderError(f"cannot load sentence-transformers folder '{name_or_path}': {e}") from e
            raise EncoderError(
                f"cannot load sentence-transformers model '{spec}': {e}. Without the Hugging Face hub only models "
                f"already in its cache, local folders and the offline short names "
                f"({', '.join(OFFLINE_MODELS)}) can be loaded"
            ) from e
        model.eval()
        model.requires_grad_(False)
        if max_length is not None:
            model.max_seq_length = max_length
        self.model = model
        family_name = Path(name_or_path).name if self.is_local else spec
        self.query_prompt, self.document_prompt = resolve_prompts(
            family_name, getattr(model, "prompts", None), query_prompt, document_prompt
        )
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = get_dim()
        if dim is None:
            dim = int(self._encode([PROBE], "", 1).shape[1])
        self.dim = int(dim)

    def encode_queries(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed queries with the query prompt."""
        return self._encode(texts, self.query_prompt, batch_size)

    def encode_documents(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed documents with the document prompt."""
        return self._encode(texts, self.document_prompt, batch_size)

    def _encode(self, texts: Sequence[str], prompt: str, batch_size: int) -> np.ndarray:
        items = check_texts(texts, batch_size)
        if not items:
            return np.zeros((0, getattr(self, "dim", 0)), dtype=np.float32)
        out = self.model.encode(
            items,
            prompt=prompt,
            batch_size=batch_size,
            show_progress_bar=False,
            convert_to_numpy=True,
            normalize_embeddings=False,
        )
        return as_embeddings(out, len(items), getattr(self, "dim", None), self.spec)

    def describe(self) -> dict[str, Any]:
        """Manifest entry (see :func:`encoder_info`)."""
        info: dict[str, Any] = {
            "spec": self.spec,
            "kind": "sentence-transformers",
            "name": self.offline_name
            or (Path(self.name_or_path).name if self.is_local else self.name_or_path),
            "path": str(Path(self.name_or_path).resolve()) if self.is_local else None,
            "dim": self.dim,
            "query_prompt": self.query_prompt,
            "document_prompt": self.document_prompt,
            "max_length": int(self.model.max_seq_length) if self.model.max_seq_length else None,
            "modules": [type(m).__name__ for m in self.model],
            "device": self.device,
            "versions": package_versions(["numpy", "torch", "transformers", "sentence-transformers"]),
        }
        if self.offline_name:
            info["source_packages"] = source_packages(self.offline_name)
        return info
