"""`smec export`: a trained checkpoint -> a sentence-transformers folder that encodes text as `smec eval` scores it.

The folder's pipeline (``modules.json``):

0. :class:`~smec.export.encoders.BaseEncoders` — the base models with their query / document prompts, the
   store's rounding, per-model L2 + weights + concatenation + renormalisation;
1. :class:`~smec.export.compressor.Compressor` — the trained system's ``embed(x, dim)``;
2. float32: sentence-transformers' standard ``Normalize``; int8 / int4 / binary:
   :class:`~smec.export.quantizer.Quantizer`, fitted here on the corpus rows `smec eval` calibrates on.

``smec_export.json`` records where it came from (checkpoint, store, models, size, precision, calibration). The
folder is written under a temporary name and renamed into place, so a failed export leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smec.errors import ConfigError
from smec.evaluation.spec import EvaluationSpec

EXPORT_FILE = "smec_export.json"
EXPORT_FORMAT = 1
CHECK_ROWS = 64
# One float16 step of the store's rounding moves a coordinate by ~1e-3; another model moves it by ~1e-1.
CHECK_TOLERANCE = 1e-2


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def _output_width(system: Any) -> int:
    import torch

    with torch.no_grad():
        return int(system.compress(torch.zeros(1, int(system.input_dim))).shape[1])


def compress_corpus(
    system: Any,
    store: Any,
    keys: Sequence[str],
    dim: int,
    normalization: str,
    weights: Sequence[float] | None,
    batch_rows: int,
) -> np.ndarray:
    """``system.embed(x, dim)`` of every corpus row, computed as `smec predict` computes it.

    Same rows (the store's), same combination (the data module's ``combine_torch``), same batches (consecutive
    ``batch_rows`` rows in store order), so the result equals the predicted store that `smec eval` would read.
    """
    import torch

    from datamodules.store.combine import combine_torch

    arrays = [store.array(k, "corpus") for k in keys]
    n = len(arrays[0])
    out = np.empty((n, dim), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, n, batch_rows):
            stop = min(n, start + batch_rows)
            x = combine_torch([torch.from_numpy(a.read(start, stop)) for a in arrays], normalization, weights)
            out[start:stop] = system.embed(x, dim).float().numpy()
    return out


def fit_quantizer(
    corpus: np.ndarray,
    corpus_ids: Sequence[str],
    precision: str,
    fit_sample: int | None,
    seed: int,
    threshold: str,
) -> Any:
    """The quantiser `smec eval` fits for ``precision`` on these compressed corpus rows."""
    from smec.evaluation.calibration import calibration_rows
    from smec.evaluation.quantize import BinaryQuantizer, ScalarQuantizer, l2_normalize

    sample = l2_normalize(corpus[calibration_rows(corpus_ids, fit_sample, seed)])
    if precision == "binary":
        return BinaryQuantizer(threshold).fit(sample)
    return ScalarQuantizer(8 if precision == "int8" else 4).fit(sample)


def check_encoders(
    encoders: Any,
    store: Any,
    keys: Sequence[str],
    normalization: str,
    weights: Sequence[float] | None,
    dataset: str,
    rows: int = CHECK_ROWS,
) -> dict[str, Any]:
    """Re-embed the first ``rows`` corpus texts and queries of ``dataset``; they must give the store's rows.

    Catches a base model that changed since `smec embed` (an upgraded package, another model at the same path)
    before it is exported under the trained compressor. ``dataset`` must be the data the store was embedded from.
    """
    import torch

    from datamodules.datasets import load_dataset
    from datamodules.errors import EncoderError
    from datamodules.store.combine import combine_torch

    data = load_dataset(dataset)
    if data.fingerprint != store.meta["dataset"].get("fingerprint"):
        raise ConfigError(
            f"--dataset {dataset}: not the data the store {store.path} was embedded from (fingerprints differ)"
        )
    splits = [s for s in store.splits if s in data.queries]
    split = "test" if "test" in splits else splits[0]
    worst, checked = 0.0, 0
    for text_set, texts, side in (
        ("corpus", data.corpus.texts, "document"),
        (f"queries/{split}", data.queries[split].texts, "query"),
    ):
        n = min(rows, len(texts))
        stored = [torch.from_numpy(store.array(k, text_set).read(0, n)) for k in keys]
        expected = combine_torch(stored, normalization, weights)
        worst = max(worst, float((encoders.embed(texts[:n], side) - expected).abs().max()))
        checked += n
    if worst > CHECK_TOLERANCE:
        raise EncoderError(
            f"the base models {list(keys)} no longer reproduce the store {store.path}: max abs difference "
            f"{worst:.3g} on {checked} texts of {data.name} (tolerance {CHECK_TOLERANCE}); did a model change "
            "since `smec embed`?"
        )
    return {"dataset": data.name, "texts": checked, "max_abs_diff": worst}


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise ConfigError(f"--out {out}: already exists; choose a new folder or pass --overwrite")
    if out.exists() and not (out / EXPORT_FILE).is_file():
        raise ConfigError(f"--out {out}: exists and is not an exported model; refusing to replace it")


@dataclass(frozen=True)
class _Input:
    """The input the system was trained on, and the batches `smec predict` cut it into."""

    store: Any
    keys: list[str]
    normalization: str
    weights: Any
    batch_rows: int


def _training_data(
    ckpt_path: Path,
    ckpt: dict[str, Any],
    store: str | Path | None,
    models: Sequence[str] | None,
    chunk_rows: int | None,
) -> _Input:
    """The store, model keys, normalisation, weights and batch rows of the system's training data."""
    from datamodules.store.reader import EmbeddingStore

    data = dict(ckpt.get("datamodule_hyper_parameters") or {})
    store_path = store if store is not None else data.get("store")
    if store_path is None:
        raise ConfigError(f"{ckpt_path}: the checkpoint names no embedding store; pass --store")
    if not Path(store_path).is_dir():
        raise ConfigError(
            f"--store {store_path}: no such store folder (the store the system was trained on; pass --store "
            "if it moved)"
        )
    emb_store = EmbeddingStore(store_path)
    keys = list(models or data.get("models") or emb_store.models)
    for k in keys:
        emb_store.model_dim(k)  # one clear error for a model the store does not hold
    batch_rows = int(chunk_rows or data.get("batch_size") or 256)
    if batch_rows < 1:
        raise ConfigError(f"--chunk-rows must be a positive integer, got {batch_rows}")
    normalization = data.get("normalization") or "l2-concat-l2"
    return _Input(emb_store, keys, normalization, data.get("model_weights"), batch_rows)


def _export_dim(
    system: Any, dim: int | None, precision: str, keys: list[str], input_dim: int, ckpt_path: Path
) -> tuple[int, list[int]]:
    """(the size to export, the system's evaluated sizes); errors for a size the system cannot give."""
    import torch

    from smec.evaluation.quantize import check_binary_dim

    if int(system.input_dim) != input_dim:
        raise ConfigError(
            f"{ckpt_path}: the system compresses {system.input_dim}-d inputs, but the store's models {keys} "
            f"concatenate to {input_dim} dims (--store / --models)"
        )
    eval_dims = sorted(int(d) for d in getattr(system, "eval_dims", ()) or ())
    width = _output_width(system)
    dim = int(dim if dim is not None else (eval_dims[-1] if eval_dims else width))
    if not 1 <= dim <= width:
        raise ConfigError(f"--dim {dim}: the system's output has {width} dims (trained sizes: {eval_dims})")
    try:  # a size the system does not produce (SMEC: one outside its chain) is refused by embed itself
        with torch.no_grad():
            system.embed(torch.zeros(1, input_dim), dim)
    except ValueError as exc:
        raise ConfigError(f"--dim {dim}: {exc}") from None
    if precision == "binary":
        check_binary_dim(dim)
    return dim, eval_dims


def _base_encoders(emb_store: Any, keys: list[str], normalization: str, weights: Any) -> Any:
    from smec.export.encoders import BaseEncoders, encoder_entry, load_base_encoder

    infos = {k: emb_store.meta["models"][k]["model"] for k in keys}
    entries = [
        encoder_entry(k, infos[k], emb_store.array(k, "corpus").dtype, where=str(emb_store.path))
        for k in keys
    ]
    return BaseEncoders(
        entries, normalization, weights, loaded=[load_base_encoder(e["spec"], e["load"]) for e in entries]
    )


def export_model(
    ckpt_path: str | Path,
    out: str | Path,
    *,
    dim: int | None = None,
    precision: str = "float32",
    store: str | Path | None = None,
    models: Sequence[str] | None = None,
    fit_sample: int | None = EvaluationSpec.calibration_size,
    seed: int = EvaluationSpec.seed,
    binary_threshold: str = EvaluationSpec.binary_threshold,
    chunk_rows: int | None = None,
    dataset: str | None = None,
    check: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the exported model of checkpoint ``ckpt_path`` to ``out``; returns its ``smec_export.json`` record.

    Args:
        dim: the size to export (default: the system's largest evaluated size).
        precision: ``float32`` (L2-normalised vectors), ``int8`` / ``int4`` / ``binary`` (uint8 codes).
        store / models: the embedding store and model keys the system was trained on (default: the
            checkpoint's data module settings).
        fit_sample / seed: the calibration sample (the evaluation spec's ``calibration_size`` / ``seed``,
            ``smec eval --fit-sample``; None = the whole corpus).
        binary_threshold: ``median`` (default, as ``smec eval``) or ``sign``.
        chunk_rows: rows per compressor call (default: the data module's batch size, which `smec predict` used).
        dataset / check: the data the store was embedded from (default: the store's dataset when it is a
            built-in one); with ``check``, :func:`check_encoders` runs on it before anything is written.
        overwrite: replace an existing ``out``.
    """
    from datamodules.datasets import BUILTIN_DATASETS
    from smec.checkpoint import load_checkpoint, load_system
    from smec.evaluation.quantize import check_precision

    check_precision(precision)
    ckpt_path, out = Path(ckpt_path), Path(out)
    _check_out(out, overwrite)
    if fit_sample is not None and fit_sample < 1:
        raise ConfigError(f"--fit-sample must be a positive integer, got {fit_sample}")
    ckpt = load_checkpoint(ckpt_path, "--ckpt")
    src = _training_data(ckpt_path, ckpt, store, models, chunk_rows)
    system = load_system(ckpt_path, "--ckpt", checkpoint=ckpt)
    input_dim = sum(src.store.model_dim(k) for k in src.keys)
    dim, eval_dims = _export_dim(system, dim, precision, src.keys, input_dim, ckpt_path)
    encoders = _base_encoders(src.store, src.keys, src.normalization, src.weights)
    if dataset is None and src.store.dataset in BUILTIN_DATASETS:
        dataset = src.store.dataset
    checked = None
    if check and dataset is not None:
        checked = check_encoders(encoders, src.store, src.keys, src.normalization, src.weights, dataset)
    quantizer, calibration = _calibrated_quantizer(
        system, src, dim, precision, fit_sample, seed, binary_threshold
    )
    record = _record(ckpt_path, system, src, dim, eval_dims, precision, input_dim, calibration, checked)
    model = build_model(encoders, system, ckpt, dim, src.batch_rows, precision, quantizer, record)
    _save_atomically(model, out, record, overwrite)
    return record


def _calibrated_quantizer(
    system: Any,
    src: _Input,
    dim: int,
    precision: str,
    fit_sample: int | None,
    seed: int,
    binary_threshold: str,
) -> tuple[Any, dict[str, Any] | None]:
    """(the quantiser `smec eval` fits on the compressed corpus, its calibration record); (None, None) for float32."""
    if precision == "float32":
        return None, None
    corpus = compress_corpus(system, src.store, src.keys, dim, src.normalization, src.weights, src.batch_rows)
    quantizer = fit_quantizer(corpus, src.store.ids("corpus"), precision, fit_sample, seed, binary_threshold)
    threshold = binary_threshold if precision == "binary" else None
    return quantizer, {"fit_sample": fit_sample, "seed": seed, "threshold": threshold}


def _record(
    ckpt_path: Path,
    system: Any,
    src: _Input,
    dim: int,
    eval_dims: list[int],
    precision: str,
    input_dim: int,
    calibration: dict[str, Any] | None,
    checked: dict[str, Any] | None,
) -> dict[str, Any]:
    """The ``smec_export.json`` record: where the exported model came from and what it encodes."""
    from smec.evaluation.quantize import BITS_PER_DIM, compression_factor

    bits = BITS_PER_DIM[precision] * dim
    return {
        "format": EXPORT_FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "checkpoint": str(ckpt_path.resolve()),
        "checkpoint_sha256": _sha256(ckpt_path),
        "method": str(getattr(system, "method_name", type(system).__name__)),
        "class_path": f"{type(system).__module__}.{type(system).__qualname__}",
        "dim": dim,
        "trained_dims": eval_dims,
        "precision": precision,
        "bits": bits,
        "input_dim": input_dim,
        "compression": compression_factor(input_dim, bits),
        "store": str(src.store.path.resolve()),
        "dataset": src.store.dataset,
        "dataset_fingerprint": src.store.meta["dataset"].get("fingerprint"),
        "base_models": src.keys,
        "normalization": src.normalization,
        "model_weights": src.weights,
        "calibration": calibration,
        "chunk_rows": src.batch_rows,
        "check": checked,
        "load": "SentenceTransformer(path, trust_remote_code=True)",
    }


def build_model(
    encoders: Any,
    system: Any,
    ckpt: dict[str, Any],
    dim: int,
    chunk_rows: int,
    precision: str,
    quantizer: Any,
    record: dict[str, Any],
) -> Any:
    """The in-memory sentence-transformers model (see the module docstring for its modules)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize

    from smec.export.compressor import Compressor
    from smec.export.quantizer import Quantizer

    last: Any
    if precision == "float32":
        last = Normalize()
    else:
        calibration = record["calibration"]
        last = Quantizer(
            precision,
            dim,
            quantizer,
            calibration["threshold"],
            calibration["fit_sample"],
            calibration["seed"],
        )
    modules = [
        encoders,
        Compressor(system, dim, chunk_rows, method=record["method"], checkpoint=ckpt),
        last,
    ]
    return SentenceTransformer(modules=modules, device="cpu")


def _save_atomically(model: Any, out: Path, record: dict[str, Any], overwrite: bool) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        model.save(str(tmp), create_model_card=False)
        (tmp / "README.md").write_text(model_card(record), encoding="utf-8")
        (tmp / EXPORT_FILE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        if out.exists() and overwrite:
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def model_card(record: dict[str, Any]) -> str:
    """The folder's README.md."""
    models = ", ".join(record["base_models"])
    codes = {
        "float32": f"L2-normalised float32 vectors ({record['dim']}-d); cosine / inner product",
        "int8": f"uint8 codes, one per dimension ({record['dim']} bytes)",
        "int4": f"uint8, two 4-bit codes per byte ({-(-record['dim'] // 2)} bytes)",
        "binary": f"packed sign bits ({record['dim'] // 8} bytes)",
    }[record["precision"]]
    lines = [
        f"# smec export: {record['method']} at {record['dim']} dims, {record['precision']}",
        "",
        f"Base models (concatenated in this order): {models} -> {record['input_dim']}-d; compressed by "
        f"`{record['class_path']}` to {record['dim']} dims; output: {codes}. Compression "
        f"{record['compression']:.3g}x of the float32 concatenation.",
        "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "",
        "model = SentenceTransformer(path, trust_remote_code=True)  # imports smec.export from the installed smec",
        "q = model.encode_query(queries, batch_size=64)",
        "d = model.encode_document(documents, batch_size=64)",
        "```",
        "",
        "`trust_remote_code=True` is needed because the modules are smec classes (sentence-transformers >= 6 asks "
        "for it for any class outside its own package); the folder itself contains no code. `encode` equals what "
        "`smec predict` wrote for the same texts, normalised / quantised as `smec eval` scores it.",
    ]
    if record["precision"] != "float32":
        lines += [
            "",
            "Score codes with the quantizer module, as `smec eval` does: "
            "`model[-1].similarity(q, d)` (int: decoded, renormalised inner product; binary: 1 - 2 * hamming / dim). "
            "`model.similarity` would compare the raw codes.",
        ]
    cal = record.get("calibration")
    if cal:
        lines += [
            "",
            f"Quantizer fitted on {cal['fit_sample']} corpus rows of `{record['store']}` (seed {cal['seed']}).",
        ]
    return "\n".join(lines) + "\n"
