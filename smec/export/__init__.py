"""Exporting a trained system as a sentence-transformers model (`smec export`) and evaluating it with MTEB.

``SentenceTransformer(folder, trust_remote_code=True)`` loads an export; :func:`load` does the same offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load(path: str | Path, device: str | None = "cpu") -> Any:
    """The exported model at ``path`` as a ``SentenceTransformer`` (local files only)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device=device, trust_remote_code=True, local_files_only=True)
