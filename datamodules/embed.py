"""The embedding job behind `smec embed`: a dataset × frozen encoders → an on-disk store, resumably; in one
process, or split across workers (processes, GPUs, SLURM tasks) and merged (:mod:`datamodules.store.workers`)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.errors import InputError
from datamodules.paths import check_output_dir
from datamodules.store.layout import DEFAULT_SHARD_ROWS, DTYPES, STORE_FILE, data_folder, model_key
from datamodules.store.workers import (
    WorkerLog,
    WorkerShare,
    check_job,
    job_of,
    merge_workers,
    read_workers,
    remove_finished_workers,
)
from datamodules.store.writer import StoreWriter, TextSetSpec

# The demo's default base models, chosen by measurement on the wordnet-demo dev split
# (experiments/choose_models.py; README "Choosing the base models"): the best concatenation, +0.016 ± 0.008
# nDCG@10 over MiniLM-L6 alone; SRE-MiniLM (out of domain) and static-64 pull every concatenation down.
DEFAULT_MODELS = ("minilm-l6", "paraphrase-l3", "e5-small-q4")


@dataclass
class EmbedReport:
    """Per model: texts encoded in this run and the seconds spent encoding them (skipped work excluded)."""

    encoded: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def throughput(self, key: str) -> float:
        return self.encoded.get(key, 0) / max(self.seconds.get(key, 0.0), 1e-9)


def embed_dataset(
    dataset: str,
    models: Sequence[str],
    out: str | Path,
    *,
    dtype: str = "float16",
    batch_size: int = 64,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    splits: Sequence[str] | None = None,
    device: str = "cpu",
    progress: bool = True,
    encoder_options: dict | None = None,
    share: WorkerShare | None = None,
    merge: bool = False,
) -> EmbedReport:
    """Embed every text set of ``dataset`` with every model into the store at ``out``.

    Finished (model, text set) pairs are skipped without loading the model, and unfinished ones resume after
    their last complete shard, so rerunning after an interruption (even ``kill -9``) finishes the job.

    ``share`` (worker ``i`` of ``N``) embeds only that worker's shards, for a job split across processes, GPUs
    or SLURM tasks, and ``merge`` finishes such a job without loading a model (see
    :mod:`datamodules.store.workers`: the merged store is byte-identical to a single-process run). A plain run
    into a store the workers left unfinished keeps their shards and embeds the rest.

    Every option, the output folder, model spec (resolved without loading weights, see
    :func:`datamodules.encoders.spec.check_spec`), the dataset and an existing store are checked before
    anything is written, and the store is created only once the first model to run has loaded: a bad option or
    spec leaves no skeleton store behind.
    """
    from datamodules.datasets import load_dataset

    keys = _check_job(models, dtype=dtype, batch_size=batch_size, shard_rows=shard_rows)
    if share is not None and merge:
        raise InputError(
            "--merge: finishes the workers' job and embeds nothing itself; give it without a worker"
        )
    check_output_dir(out, "--out")  # before a model loads (minutes), not when its first shard is written
    data = load_dataset(dataset, splits=splits)
    text_sets = data.text_sets()
    writer = StoreWriter(
        out,
        dataset=data.name,
        fingerprint=data.fingerprint,
        text_sets=[TextSetSpec(name, ts.ids) for name, ts in text_sets.items()],
        qrels=data.qrels,
    )
    workers = read_workers(writer.path, data.fingerprint)
    job = job_of(writer, keys, dtype=dtype, shard_rows=shard_rows)
    report = EmbedReport()
    if merge:
        merged = merge_workers(writer, keys, job, workers)
        print(f"merged {merged} text set(s) written by {workers.total or 0} workers", file=sys.stderr)
        return report
    if workers.records:
        check_job(workers, job, str(share) if share else "this run", total=share.total if share else None)
    run = _Run(writer, text_sets, report, batch_size, {"dtype": dtype, "shard_rows": shard_rows}, progress)
    load = {"device": device, "options": encoder_options or {}}
    if share is not None:
        _embed_share(run, WorkerLog(writer.path, share, job, workers), models, keys, load)
        return report
    for spec, key in zip(models, keys):
        pending = [name for name in text_sets if not writer.is_complete(key, name)]
        if not pending:
            print(f"[{key}] already complete, skipped", file=sys.stderr)
            continue
        encoder, info = _load(spec, load)
        writer.record_model_order(keys)  # the first model that loaded creates the store

        def sink(name, encode, on_rows, _key=key, _encoder=encoder, _info=info) -> None:
            writer.write(
                _key, name, dim=_encoder.dim, encode=encode, model_info=_info, on_rows=on_rows, **run.write
            )

        run.embed_model(sink, key, encoder, {name: len(text_sets[name]) for name in pending})
    if (Path(out) / STORE_FILE).exists():
        writer.record_model_order(keys)  # every model was complete: keep the order as before
    remove_finished_workers(writer, workers)
    return report


def _embed_share(run: _Run, log: WorkerLog, models: Sequence[str], keys: Sequence[str], load: dict) -> None:
    """One worker's part of the job: its shards of each (model, text set), recorded in its partial manifest."""
    share, writer = log.share, run.writer
    for spec, key in zip(models, keys):
        rows = {name: share.rows(len(ts), run.write["shard_rows"]) for name, ts in run.text_sets.items()}
        pending = {
            name: n
            for name, n in rows.items()
            if n
            and not writer.is_complete(key, name)
            and not log.is_done(key, name, data_folder(writer.path, key, name))
        }
        if not pending:
            print(f"[{key}] {share}: nothing left to embed, skipped", file=sys.stderr)
            continue
        encoder, info = _load(spec, load)
        log.save()  # before the first shard: it marks the folder as a store that workers are writing

        def sink(name, encode, on_rows, _key=key, _encoder=encoder, _info=info) -> None:
            owns, dim = share.owns, _encoder.dim
            shards = writer.write_share(
                _key, name, owns=owns, dim=dim, encode=encode, on_rows=on_rows, **run.write
            )
            log.add(_key, name, dim=dim, model_info=_info, shards=shards)

        run.embed_model(sink, key, encoder, pending, label=f" {share}")


def _check_job(models: Sequence[str], *, dtype: str, batch_size: int, shard_rows: int) -> list[str]:
    """Options and model specs (resolved, not loaded), before anything is read or written; the model keys."""
    from datamodules.encoders.spec import check_spec

    check_options(models, dtype=dtype, batch_size=batch_size, shard_rows=shard_rows)
    keys = [model_key(spec) for spec in models]
    if len(set(keys)) != len(keys):
        raise InputError(f"--models lists the same model twice: {list(models)}")
    for spec in models:
        check_spec(spec)
    return keys


@dataclass
class _Run:
    """What every (model, text set) of one job shares: the writer, the texts, the report, the options."""

    writer: StoreWriter
    text_sets: Mapping[str, Any]
    report: EmbedReport
    batch_size: int
    write: dict[str, Any]  # the writer's dtype and shard_rows
    progress: bool

    def embed_model(
        self, sink: Callable[..., None], key: str, encoder: Any, rows: Mapping[str, int], label: str = ""
    ) -> None:
        """Encode the text sets in ``rows`` (name -> rows this process writes) through ``sink(name, encode,
        on_rows)`` (the corpus as documents, the rest as queries), timing the encoder into the report."""
        report = self.report
        report.encoded.setdefault(key, 0)
        report.seconds.setdefault(key, 0.0)
        for name, total in rows.items():
            ts = self.text_sets[name]
            encode_fn = encoder.encode_documents if name == "corpus" else encoder.encode_queries
            bar = _bar(total, f"{key} {name}", self.progress)
            shown = [0]  # rows the bar already moved for the shard being written

            def encode(
                start: int, stop: int, _texts=ts.texts, _fn=encode_fn, _bar=bar, _shown=shown
            ) -> np.ndarray:
                t0 = time.perf_counter()
                rows = _encode_by_batch(_texts[start:stop], _fn, self.batch_size, _bar.update)
                _shown[0] = stop - start
                report.seconds[key] += time.perf_counter() - t0
                report.encoded[key] += stop - start
                return rows

            def on_rows(n: int, _bar=bar, _shown=shown) -> None:  # a shard written (batches shown) or kept
                _bar.update(n - _shown[0])
                _shown[0] = 0

            try:
                sink(name, encode, on_rows)
            finally:
                bar.close()
        if report.encoded[key]:
            print(
                f"[{key}]{label} encoded {report.encoded[key]:,} texts in {report.seconds[key]:.1f} s "
                f"({report.throughput(key):,.0f} texts/s)",
                file=sys.stderr,
            )


def check_options(models: Sequence[str], *, dtype: str, batch_size: int, shard_rows: int) -> None:
    """The job's options, checked before anything loads or is written (InputError naming the option)."""
    if isinstance(models, str) or not models:
        raise InputError(f"--models: expected one or more model specs, got {models!r}")
    if dtype not in DTYPES:
        raise InputError(f"--dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    for option, value in (("--batch-size", batch_size), ("--shard-rows", shard_rows)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{option}: expected a positive integer, got {value!r}")


def _load(spec: str, load: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The encoder of ``spec`` (``load``: its device and options) and its info for the manifest."""
    from datamodules.encoders.base import encoder_info
    from datamodules.encoders.spec import load_encoder

    encoder = load_encoder(spec, device=load["device"], **load["options"])
    return encoder, encoder_info(encoder)


def _encode_by_batch(
    texts: Sequence[str], encode_fn: Callable[..., Any], batch_size: int, on_batch: Callable[[int], Any]
) -> np.ndarray:
    """``encode_fn`` one batch at a time, so progress moves per batch and not per shard.

    Texts go longest first, as sentence-transformers orders one call itself (batches of similar lengths pad
    less), and the rows come back in the texts' order.
    """
    order = np.argsort([-len(t) for t in texts], kind="stable")
    parts = []
    for start in range(0, len(texts), batch_size):
        rows = order[start : start + batch_size]
        parts.append(np.asarray(encode_fn([texts[i] for i in rows], batch_size=batch_size)))
        on_batch(len(rows))
    if not parts:
        return np.asarray(encode_fn(list(texts), batch_size=batch_size))
    if any(p.ndim != 2 or p.shape[1:] != parts[0].shape[1:] for p in parts):
        return parts[0]  # malformed output: the writer's row check names it
    out = np.concatenate(parts)
    if len(out) != len(texts):
        return out
    unsorted = np.empty_like(out)
    unsorted[order] = out
    return unsorted


def _bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="texts", disable=not enabled, dynamic_ncols=True, smoothing=0.1)
