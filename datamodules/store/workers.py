"""One store embedded by several workers at once (processes, GPUs, SLURM array tasks, nodes), then merged.

Worker ``i`` of ``N`` (:class:`WorkerShare`) embeds only the shards ``s`` with ``s % N == i`` of every
(model, text set), into the very files one process would write (``<model key>/<text set>/shard-<s>.npy``: shard
boundaries are fixed by ``shard_rows`` and encoders are deterministic per shard, so a shard's bytes do not depend
on who wrote it), and records what it wrote (each shard's file, rows and sha256; the model's dim and info) in its
own partial manifest ``<store>/.workers/worker-<i>-of-<N>.json``. No two workers ever write the same file, so
they need no locking and can share any file system. Workers write no ``store.json``, ids, qrels or manifests.

The merge (``smec embed --merge``, :func:`merge_workers`) finishes the job: every shard of every unfinished
(model, text set) must exist with the sha256 its owner recorded (one that does not names itself and the worker
that owns it), all checked before anything is written. It then writes what one process would have written
(ids, qrels, each ``manifest.json``, ``store.json``) and removes ``.workers``: the merged store is byte-identical
to a single-process ``smec embed`` of the same data. A later plain ``smec embed`` (no worker options) finishes a
sharded job too: it keeps every shard already written and encodes the missing ones.

A killed worker resumes like a single process: rerun it with the same options and it keeps its complete shards.
Workers of one job must agree on the dataset, models, text sets, dtype, shard rows and ``N``: a worker or a merge
whose options differ from a partial manifest already in the store is refused, naming the file.

Shard 0 of every text set belongs to worker 0, so a text set smaller than one shard (a query split, often) is
embedded by worker 0 alone; the corpus, with many shards, is what gets split.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datamodules.errors import InputError, StoreError
from datamodules.files import atomic_write_json
from datamodules.store.layout import WORKERS_DIR, data_folder, is_count, read_json
from datamodules.store.writer import StoreWriter, hash_shards, n_shards, shard_name, shard_ok

WORKER_FORMAT = 1

INDEX_OPTION, TOTAL_OPTION = "--worker-index", "--num-workers-total"

# Where a worker finds its index and the number of workers when not told: a SLURM array task, then torchrun.
ENV_SOURCES = (("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT"), ("RANK", "WORLD_SIZE"))


@dataclass(frozen=True)
class WorkerShare:
    """Worker ``index`` of ``total``: it owns shard ``s`` of every (model, text set) when ``s % total == index``."""

    index: int
    total: int

    def __post_init__(self) -> None:
        check_share(self.index, self.total)

    def owns(self, shard: int) -> bool:
        return shard % self.total == self.index

    def rows(self, rows: int, shard_rows: int) -> int:
        """How many of a text set's ``rows`` this worker embeds."""
        owned = range(self.index, n_shards(rows, shard_rows), self.total)
        return sum(min(shard_rows, rows - s * shard_rows) for s in owned if s * shard_rows < rows)

    def file(self, root: Path) -> Path:
        return Path(root) / WORKERS_DIR / f"worker-{self.index}-of-{self.total}.json"

    def __str__(self) -> str:
        return f"worker {self.index} of {self.total}"


def check_share(
    index: Any, total: Any, index_option: str = INDEX_OPTION, total_option: str = TOTAL_OPTION
) -> None:
    """A worker index and count, checked before anything is read or written (InputError naming the option)."""
    if not is_count(total, 1):
        raise InputError(f"{total_option}: expected a positive integer, got {total!r}")
    if not is_count(index) or index >= total:
        raise InputError(
            f"{index_option}: expected an integer from 0 to {total - 1} ({total_option} is {total}), got {index!r}"
        )


def resolve_share(
    index: int | None, total: int | None, env: Mapping[str, str], merge: bool = False
) -> tuple[WorkerShare | None, str]:
    """This process's share of the job and where it came from (options, else SLURM or torchrun's variables).

    None when the job is not split: no worker options nor variables, one worker in all, or a merge.
    """
    if merge:
        if index is not None or total is not None:
            raise InputError(
                f"--merge: finishes the workers' job and embeds nothing itself; give it without {INDEX_OPTION} "
                f"and {TOTAL_OPTION}"
            )
        return None, ""
    names = (INDEX_OPTION, TOTAL_OPTION)
    if index is None and total is None:
        index, total, names = _share_from_env(env)
        if total is None:
            return None, ""
    elif index is None or total is None:
        raise InputError(f"{INDEX_OPTION} and {TOTAL_OPTION} go together: give both, or neither")
    check_share(index, total, *names)
    return (WorkerShare(index, total) if total > 1 else None), " / ".join(names)


def _share_from_env(env: Mapping[str, str]) -> tuple[int | None, int | None, tuple[str, str]]:
    for index_var, total_var in ENV_SOURCES:
        if index_var in env or total_var in env:
            index, total = _env_int(env, index_var), _env_int(env, total_var)
            if index_var == "SLURM_ARRAY_TASK_ID":  # an array --array=1-8 numbers its tasks from 1
                index -= _env_int(env, "SLURM_ARRAY_TASK_MIN", 0)
            return index, total, (index_var, total_var)
    return None, None, ("", "")


def _env_int(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    value = env.get(name)
    if value is None and default is not None:
        return default
    try:
        return int(str(value).strip())
    except ValueError:
        raise InputError(f"environment variable {name}={value!r}: expected an integer") from None


def job_of(writer: StoreWriter, keys: list[str], *, dtype: str, shard_rows: int) -> dict[str, Any]:
    """What every worker of one job, and its merge, must agree on."""
    return {
        "dataset": {
            "name": writer.meta["dataset"]["name"],
            "fingerprint": writer.meta["dataset"]["fingerprint"],
        },
        "models": list(keys),
        "text_sets": sorted(writer.text_sets),
        "dtype": dtype,
        "shard_rows": shard_rows,
    }


@dataclass
class Workers:
    """The partial manifests found in a store: worker index -> (file, record), all of one job of ``total``."""

    folder: Path
    total: int | None
    records: dict[int, tuple[Path, dict[str, Any]]]

    def entry(self, index: int, key: str, text_set: str) -> Mapping[str, Any] | None:
        found = self.records.get(index)
        return found[1]["done"].get(key, {}).get(text_set) if found else None


def read_workers(root: Path, fingerprint: str) -> Workers:
    """Every partial manifest under ``<store>/.workers``, checked: well-formed, this dataset, one job."""
    folder = Path(root) / WORKERS_DIR
    records: dict[int, tuple[Path, dict[str, Any]]] = {}
    for path in sorted(folder.glob("worker-*-of-*.json")) if folder.is_dir() else []:
        record = read_json(path, "worker's partial manifest")
        _check_record(record, path)
        if record["job"]["dataset"].get("fingerprint") != fingerprint:
            raise StoreError(
                f"{path}: written by a worker embedding other data (dataset fingerprint mismatch); "
                "use another --out"
            )
        records[record["worker"]["index"]] = (path, record)
    totals = sorted({r["worker"]["total"] for _, r in records.values()})
    if len(totals) > 1:
        raise StoreError(
            f"{folder}: partial manifests of jobs of {' and '.join(map(str, totals))} workers; finish one "
            f"job, or delete {folder} to start over (the shards already written are kept)"
        )
    return Workers(folder, totals[0] if totals else None, records)


def _check_record(record: Any, path: Path) -> None:
    worker = record.get("worker") if isinstance(record, Mapping) else None
    ok = (
        isinstance(worker, Mapping)
        and record.get("format_version") == WORKER_FORMAT
        and is_count(worker.get("total"), 1)
        and is_count(worker.get("index"))
        and worker["index"] < worker["total"]
        and path.name == f"worker-{worker['index']}-of-{worker['total']}.json"
        and isinstance(record.get("job"), Mapping)
        and isinstance(record["job"].get("dataset"), Mapping)
        and isinstance(record.get("done"), Mapping)
        and all(isinstance(v, Mapping) and all(map(_entry_ok, v.values())) for v in record["done"].values())
    )
    if not ok:
        raise StoreError(
            f"{path}: not a partial manifest written by `smec embed {INDEX_OPTION}`; delete it and rerun "
            "that worker"
        )


def _entry_ok(entry: Any) -> bool:
    """One finished (model, text set) of a worker: dim, model info and its shards' file, rows and sha256."""
    return (
        isinstance(entry, Mapping)
        and is_count(entry.get("dim"), 1)
        and isinstance(entry.get("model"), Mapping)
        and isinstance(entry.get("shards"), list)
        and all(
            isinstance(s, Mapping) and isinstance(s.get("file"), str) and isinstance(s.get("sha256"), str)
            for s in entry["shards"]
        )
    )


def check_job(workers: Workers, job: Mapping[str, Any], who: str, total: int | None = None) -> None:
    """Refuse a worker or merge (``who``) whose job differs from a partial manifest already in the store."""
    for index, (path, record) in sorted(workers.records.items()):
        theirs = record["job"]
        if total is not None and workers.total != total:
            raise StoreError(
                f"{path}: a worker of a job of {workers.total} workers, and this is {who}; give every worker the "
                f"same {TOTAL_OPTION}, or delete {workers.folder} to start over (shards written are kept)"
            )
        for field, ours in job.items():
            if theirs.get(field) != ours:
                option = {"text_sets": "--splits", "models": "--models"}.get(
                    field, f"--{field.replace('_', '-')}"
                )
                raise StoreError(
                    f"{path}: worker {index} of {workers.total} embedded with {field} {theirs.get(field)!r}, "
                    f"{who} with {ours!r}; give every worker and the merge the same {option}"
                )


class WorkerLog:
    """The running worker's own partial manifest: what it has finished, rewritten (atomically) after each text set."""

    def __init__(self, root: Path, share: WorkerShare, job: Mapping[str, Any], workers: Workers) -> None:
        self.share = share
        self.path = share.file(root)
        previous = workers.records.get(share.index)
        self.record = (
            previous[1]
            if previous
            else {
                "format_version": WORKER_FORMAT,
                "worker": {"index": share.index, "total": share.total},
                "job": dict(job),
                "done": {},
            }
        )

    def is_done(self, key: str, text_set: str, folder: Path) -> bool:
        """Recorded as finished, and every shard it recorded still in ``folder`` (one deleted is written again)."""
        entry = self.record["done"].get(key, {}).get(text_set)
        return entry is not None and all((folder / s["file"]).is_file() for s in entry["shards"])

    def save(self) -> None:
        atomic_write_json(self.path, self.record)

    def add(self, key: str, text_set: str, *, dim: int, model_info: Mapping[str, Any], shards: list) -> None:
        entry = {"dim": int(dim), "model": dict(model_info), "shards": shards}
        self.record["done"].setdefault(key, {})[text_set] = entry
        self.save()


def merge_workers(writer: StoreWriter, keys: list[str], job: Mapping[str, Any], workers: Workers) -> int:
    """Finish a sharded job: check every unfinished (model, text set)'s shards against their owners' records,
    then write the manifests and ``store.json``; returns how many text sets were merged."""
    todo = [(k, ts) for k in keys for ts in writer.text_sets if not writer.is_complete(k, ts)]
    if todo and workers.total is None:
        raise StoreError(
            f"{writer.path}: --merge found no worker's partial manifest in {workers.folder}; run the workers "
            f"first (`smec embed` with {INDEX_OPTION} I {TOTAL_OPTION} N)"
        )
    if todo:
        check_job(workers, job, "this merge")
    plans = [_merge_plan(writer, workers, key, ts, job["dtype"], job["shard_rows"]) for key, ts in todo]
    writer.record_model_order(keys)
    for (key, ts), (dim, info, shards) in zip(todo, plans):
        writer.finish(
            key, ts, dim=dim, model_info=info, dtype=job["dtype"], shard_rows=job["shard_rows"], shards=shards
        )
    remove_finished_workers(writer, workers)
    return len(todo)


def _merge_plan(
    writer: StoreWriter, workers: Workers, key: str, text_set: str, dtype: str, shard_rows: int
) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
    """(dim, model info, hashed shard entries) of one (model, text set), or StoreError naming a shard and its owner."""
    total = int(workers.total or 1)
    folder = data_folder(writer.path, key, text_set)
    rows = len(writer.text_sets[text_set])
    missing = []
    for s in range(n_shards(rows, shard_rows)):
        entry = workers.entry(s % total, key, text_set)
        if entry is None or not (folder / shard_name(s)).exists():
            missing.append(s)
    if missing:
        raise _missing_error(workers, folder, missing, key, text_set)
    owners = sorted({s % total for s in range(n_shards(rows, shard_rows))})
    entries = {o: workers.entry(o, key, text_set) for o in owners}
    dim, info = entries[0]["dim"], entries[0]["model"]
    for o in owners:
        if (entries[o]["dim"], entries[o]["model"]) != (dim, info):
            raise StoreError(
                f"{workers.records[o][0]}: worker {o} embedded {text_set} with model {entries[o]['model']!r} "
                f"(dim {entries[o]['dim']}), worker 0 with {info!r} (dim {dim}); rerun worker {o} with the same "
                "--models"
            )
    recorded = {e["file"]: e.get("sha256") for o in owners for e in entries[o]["shards"]}
    shards = []
    for s in range(n_shards(rows, shard_rows)):
        path, owner = folder / shard_name(s), f"worker {s % total} of {total}"
        shard = {"file": path.name, "rows": min(shard_rows, rows - s * shard_rows) if rows else 0}
        if not shard_ok(path, shard["rows"], dim, dtype):
            raise StoreError(
                f"{path}: not a ({shard['rows']}, {dim}) {dtype} shard; delete it and rerun {owner}"
            )
        hash_shards(folder, [shard], dim, dtype)
        if shard["sha256"] != recorded.get(path.name):
            raise StoreError(
                f"{path}: sha256 differs from what {owner} recorded ({workers.records[s % total][0]}): the shard "
                f"changed after it was written; delete it and rerun {owner}"
            )
        shards.append(shard)
    return dim, dict(info), shards


def _missing_error(workers: Workers, folder: Path, missing: list[int], key: str, text_set: str) -> StoreError:
    total = int(workers.total or 1)
    first, owner = missing[0], missing[0] % total
    if owner not in workers.records:
        why = "it has not started, or was killed before its first shard"
    elif workers.entry(owner, key, text_set) is None:
        why = f"it has not finished {key} {text_set}"
    else:
        why = "deleted after the worker wrote it"
    more = ""
    if len(missing) > 1:
        others = sorted({s % total for s in missing[1:]})
        more = f"; {len(missing) - 1} more missing there, of worker(s) {', '.join(map(str, others))}"
    return StoreError(
        f"{folder / shard_name(first)}: missing; worker {owner} of {total} owns it ({why}): rerun it "
        f"(`smec embed` with the same options and {INDEX_OPTION} {owner} {TOTAL_OPTION} {total}), then merge "
        f"again{more}"
    )


def remove_finished_workers(writer: StoreWriter, workers: Workers) -> None:
    """Delete ``.workers`` once every (model, text set) of its job has a manifest: nothing in it is needed."""
    if not workers.folder.is_dir():
        return
    for _, record in workers.records.values():
        job = record["job"]
        models, text_sets = job.get("models", []), job.get("text_sets", [])
        if not all(writer.is_complete(k, ts) for k in models for ts in text_sets if ts in writer.text_sets):
            return
    shutil.rmtree(workers.folder)
