"""`EmbeddingStore`: a finished (or partly finished) store opened read-only, with every name and manifest checked.

It yields one model's rows of a text set (:class:`~datamodules.store.shards.ShardedArray`) or the concatenation
of several models (:class:`~datamodules.store.combine.ConcatView`), plus the ids and qrels stored beside them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from datamodules.errors import StoreError
from datamodules.paths import safe_child
from datamodules.store.combine import ConcatView
from datamodules.store.layout import (
    MANIFEST_FILE,
    STORE_FILE,
    check_manifest,
    check_meta,
    data_folder,
    ids_path,
    qrels_path,
    read_json,
)
from datamodules.store.shards import ShardedArray
from datamodules.store.verify import resolve_verify


class EmbeddingStore:
    """A finished (or partly finished) store, opened read-only.

    Args:
        path: the store folder (``smec embed --out``).
        verify: check each shard's sha256 against its manifest, and scan it for NaN/Inf, when it is first opened
            in this process (see :class:`ShardedArray`); ``False`` skips the hash (for very large stores) and
            scans every read instead. ``None`` (default): on, unless the environment variable
            ``SMEC_VERIFY_STORE`` is ``0`` / ``false`` / ``no`` / ``off``.
    """

    def __init__(self, path: str | Path, verify: bool | None = None) -> None:
        self.path = Path(path)
        self.verify_shards = resolve_verify(verify)
        meta_path = self.path / STORE_FILE
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(
                f"{self.path}: is a file, not a store folder; give the folder `smec embed` wrote"
            )
        if not self.path.is_dir():
            raise StoreError(f"{self.path}: no such store folder; create one with `smec embed`")
        if not meta_path.exists():
            raise StoreError(
                f"{meta_path}: missing, so {self.path} is not a store; give the folder `smec embed` wrote"
            )
        self.meta = read_json(meta_path, "store manifest")
        check_meta(self.meta, meta_path)
        self._ids: dict[str, list[str]] = {}

    @property
    def dataset(self) -> str:
        return str(self.meta["dataset"]["name"])

    @property
    def text_sets(self) -> list[str]:
        return list(self.meta["text_sets"])

    @property
    def splits(self) -> list[str]:
        return list(self.meta["splits"])

    @property
    def models(self) -> list[str]:
        """Model keys with at least one finished text set, in the order they were embedded (``--models``)."""
        known = self.meta["models"]
        order = [k for k in self.meta.get("model_order", []) if k in known]
        return order + sorted(k for k in known if k not in order)

    def model_dim(self, key: str) -> int:
        self._check_model(key)
        return int(self.meta["models"][key]["dim"])

    def _check_model(self, key: str) -> None:
        if key not in self.meta["models"]:
            raise StoreError(
                f"{self.path}: model {key!r} is not in this store; it has {self.models or 'no models yet'}"
            )

    def _check_text_set(self, text_set: str) -> None:
        if text_set not in self.meta["text_sets"]:
            raise StoreError(
                f"{self.path}: text set {text_set!r} is not in this store; it has {self.text_sets}"
            )

    def ids(self, text_set: str) -> list[str]:
        self._check_text_set(text_set)
        if text_set not in self._ids:
            path = ids_path(self.path, text_set)
            ids = read_json(path, f"ids of {text_set}")
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise StoreError(f"{path}: expected a JSON list of id strings")
            self._ids[text_set] = ids
        return self._ids[text_set]

    def qrels(self, split: str) -> dict[str, dict[str, int]]:
        if split not in self.splits:
            raise StoreError(f"{self.path}: split {split!r} is not in this store; it has {self.splits}")
        path = qrels_path(self.path, split)
        qrels = read_json(path, f"qrels of {split}")
        if not isinstance(qrels, dict) or not all(isinstance(d, dict) for d in qrels.values()):
            raise StoreError(f"{path}: expected a JSON object: query id -> document id -> relevance")
        return qrels

    def is_complete(self, key: str, text_set: str) -> bool:
        return (data_folder(self.path, key, text_set) / MANIFEST_FILE).exists()

    def array(self, key: str, text_set: str) -> ShardedArray:
        self._check_model(key)
        self._check_text_set(text_set)
        folder = data_folder(self.path, key, text_set)
        manifest_path = folder / MANIFEST_FILE
        if not manifest_path.exists():
            raise StoreError(
                f"{folder}: embedding of {text_set} by {key!r} is incomplete (no manifest); "
                "rerun `smec embed` to finish it"
            )
        manifest = read_json(manifest_path, "manifest")
        check_manifest(manifest, manifest_path, key, text_set)
        arr = ShardedArray(folder, manifest, verify=self.verify_shards)
        if len(arr) != len(self.ids(text_set)):
            raise StoreError(
                f"{manifest_path}: {len(arr)} rows but {len(self.ids(text_set))} ids for {text_set}"
            )
        return arr

    def concat(
        self,
        models: Sequence[str] | None,
        text_set: str,
        normalization: str = "l2-concat-l2",
        weights: Sequence[float] | None = None,
    ) -> ConcatView:
        """The concatenation of ``models`` (default: all, in store order) for one text set."""
        keys = list(models) if models else self.models
        if not keys:
            raise StoreError(f"{self.path}: the store holds no finished models")
        return ConcatView([self.array(k, text_set) for k in keys], normalization, weights)

    def verify(self) -> None:
        """Recompute every finished shard's sha256 and scan it for NaN/Inf (``smec embed --verify``)."""
        for key in self.models:
            for ts in self.text_sets:
                if self.is_complete(key, ts):
                    folder = data_folder(self.path, key, ts)
                    manifest = read_json(folder / MANIFEST_FILE, "manifest")
                    check_manifest(manifest, folder / MANIFEST_FILE, key, ts)
                    ShardedArray(folder, manifest, verify=False).verify()

    def content_digest(self, keys: Sequence[str]) -> str:
        """A digest of the vectors of models ``keys``: each finished text set's shard files and sha256s, read
        from the manifests (the shards themselves are checked against those when a process opens them), so a
        store embedded again with other vectors under the same path gets another digest."""
        h = hashlib.sha256()
        for key in sorted(keys):
            folders = [data_folder(self.path, key, ts) for ts in self.text_sets]
            for path in sorted(f / MANIFEST_FILE for f in folders if (f / MANIFEST_FILE).exists()):
                h.update(f"{path.relative_to(self.path).as_posix()}\n".encode())
                for shard in read_json(path, "manifest")["shards"]:
                    h.update(f"{shard['file']} {shard['sha256']}\n".encode())
        return h.hexdigest()[:16]

    def summary(self) -> str:
        lines = [f"store {self.path}  (dataset {self.dataset}, format {self.meta['format_version']})"]
        sizes = {ts: len(self.ids(ts)) for ts in self.text_sets}
        lines.append("  text sets: " + ", ".join(f"{ts} {n:,}" for ts, n in sizes.items()))
        for key in self.models:
            done = [ts for ts in self.text_sets if self.is_complete(key, ts)]
            nbytes = 0
            for ts in done:
                folder = data_folder(self.path, key, ts)
                manifest = read_json(folder / MANIFEST_FILE, "manifest")
                check_manifest(manifest, folder / MANIFEST_FILE, key, ts)
                nbytes += sum(
                    safe_child(folder, s["file"], what="shard file", error=StoreError).stat().st_size
                    for s in manifest["shards"]
                )
            status = (
                "complete"
                if len(done) == len(self.text_sets)
                else f"{len(done)}/{len(self.text_sets)} text sets"
            )
            lines.append(f"  {key:<24} dim {self.model_dim(key):>5}  {status:<12} {nbytes / 2**20:8.1f} MiB")
        return "\n".join(lines)
