"""What a store folder holds and where: format constants, model keys, the paths of ids / qrels / shard folders,
and the checks that ``store.json`` and each ``manifest.json`` are well-formed.

Every path built from a name that comes from data (model key, text set, split, shard file) goes through
:func:`datamodules.paths.safe_child`, so no name can lead outside the store folder.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from datamodules.errors import StoreError
from datamodules.paths import check_name, name_problem, safe_child

FORMAT_VERSION = 1


STORE_FILE = "store.json"


MANIFEST_FILE = "manifest.json"


# Where the workers of a sharded `smec embed` keep their partial manifests until the merge
# (datamodules.store.workers); hidden, so a folder holding only it is still an empty folder.
WORKERS_DIR = ".workers"


DTYPES = ("float16", "float32")


DEFAULT_SHARD_ROWS = 8192


def model_key(spec: str) -> str:
    """A folder-safe key for a model spec (``sentence-transformers/all-MiniLM-L6-v2`` -> ``sentence-transformers__all-MiniLM-L6-v2``).

    An absolute path gives its last component. A spec whose key would not be a plain folder name (``..``,
    ``/models/x/..``, ``.``, empty) is refused: its shards would land outside the store.
    """
    if not isinstance(spec, str):
        raise StoreError(f"model spec must be a string, got {spec!r}")
    key = spec.strip().rstrip("/").replace("\\", "/")
    if os.path.isabs(key):
        key = Path(key).name
    key = key.replace("/", "__").replace(":", "--")
    problem = name_problem(key)
    if problem is not None:
        raise StoreError(
            f"model spec {spec!r}: its store folder name would be {key!r} ({problem}); "
            "name the model by a spec that ends in the model's own name"
        )
    return key


def _text_set_parts(text_set: str) -> list[str]:
    """The folder names of a text set (``queries/test`` -> ``queries``, ``test``), each a plain name."""
    if not isinstance(text_set, str):
        raise StoreError(f"text set must be a string, got {text_set!r}")
    parts = text_set.split("/")
    for part in parts:
        check_name(part, f"text set {text_set!r}: part", StoreError)
    return parts


def data_folder(root: Path, key: str, text_set: str) -> Path:
    """``<store>/<model key>/<text set>``, inside the store."""
    check_name(key, "model key", StoreError)
    return safe_child(root, key, *_text_set_parts(text_set), what="name", error=StoreError)


def ids_path(root: Path, text_set: str) -> Path:
    """``<store>/ids/<text set>.json``, inside the store."""
    *folders, last = _text_set_parts(text_set)
    return safe_child(root, "ids", *folders, f"{last}.json", what="name", error=StoreError)


def qrels_path(root: Path, split: str) -> Path:
    """``<store>/qrels/<split>.json``, inside the store."""
    check_name(split, "split name", StoreError)
    return safe_child(root, "qrels", f"{split}.json", what="name", error=StoreError)


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise StoreError(f"{path}: missing {what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StoreError(f"{path}: {what} is not valid JSON ({e})") from None


def _check_format_version(obj: Any, path: Path) -> None:
    if not isinstance(obj, Mapping):
        raise StoreError(
            f"{path}: a JSON {type(obj).__name__}, not an object; expected a file written by smec"
        )
    version = obj.get("format_version")
    if not isinstance(version, int):
        raise StoreError(f"{path}: no integer 'format_version'; expected a store written by smec")
    if version > FORMAT_VERSION:
        raise StoreError(
            f"{path}: written by a newer smec (store format {version}); this version reads format "
            f"<= {FORMAT_VERSION}. Upgrade smec or re-embed."
        )


def is_count(value: Any, least: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def check_meta(meta: Any, path: Path) -> None:
    """store.json: the fields readers rely on, with their types; names that become paths are plain names."""
    _check_format_version(meta, path)
    dataset = meta.get("dataset")
    if not isinstance(dataset, Mapping) or not isinstance(dataset.get("name"), str):
        raise StoreError(f"{path}: no 'dataset' with a 'name'; expected a store written by `smec embed`")
    for field in ("text_sets", "splits"):
        value = meta.get(field)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise StoreError(f"{path}: '{field}' must be a list of names")
    for text_set in meta["text_sets"]:
        _text_set_parts(text_set)
    for split in meta["splits"]:
        check_name(split, f"{path}: split name", StoreError)
    models = meta.get("models")
    if not isinstance(models, Mapping):
        raise StoreError(f"{path}: 'models' must be an object (model key -> dim, model)")
    for key, entry in models.items():
        check_name(key, f"{path}: model key", StoreError)
        if not isinstance(entry, Mapping) or not is_count(entry.get("dim"), 1):
            raise StoreError(f"{path}: model {key!r} has no positive integer 'dim'")
    order = meta.get("model_order", [])
    if not isinstance(order, list) or not all(isinstance(k, str) for k in order):
        raise StoreError(f"{path}: 'model_order' must be a list of model keys")


def check_manifest(manifest: Any, path: Path, key: str, text_set: str) -> None:
    """manifest.json: dim, dtype, rows and shards well-formed, and written for this (model, text set)."""
    _check_format_version(manifest, path)
    if not is_count(manifest.get("dim"), 1):
        raise StoreError(f"{path}: 'dim' must be a positive integer, got {manifest.get('dim')!r}")
    if manifest.get("dtype") not in DTYPES:
        raise StoreError(f"{path}: 'dtype' {manifest.get('dtype')!r} is not one of {', '.join(DTYPES)}")
    if not is_count(manifest.get("rows")):
        raise StoreError(f"{path}: 'rows' must be a non-negative integer, got {manifest.get('rows')!r}")
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not shards:
        raise StoreError(f"{path}: 'shards' must be a non-empty list")
    for i, shard in enumerate(shards):
        if not isinstance(shard, Mapping) or not is_count(shard.get("rows")):
            raise StoreError(f"{path}: shard {i} needs a 'file' and a non-negative integer 'rows'")
        check_name(shard.get("file"), f"{path}: shard file", StoreError)
        digest = shard.get("sha256")
        if digest is not None and not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
            raise StoreError(f"{path}: shard {i} has a malformed 'sha256' {digest!r}")
    # A manifest copied from another folder would pass every size check; the writer records where it belongs.
    for field, expected in (("model_key", key), ("text_set", text_set)):
        if field in manifest and manifest[field] != expected:
            raise StoreError(
                f"{path}: written for {field.replace('_', ' ')} {manifest[field]!r}, but it is in the folder of "
                f"{expected!r}; the store was edited by hand: re-make it with `smec embed`"
            )
