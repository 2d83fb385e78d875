"""`smec mteb`: run MTEB on an exported model; write mteb's results and smec result rows side by side.

``<out>/mteb/<task>.json`` is mteb's own ``TaskResult`` file (and ``<out>/mteb/model_meta.json`` the model's
``ModelMeta``); ``<out>/<task>/results.json`` (+ ``results.md``) holds smec rows. For a smec dataset (built-in
or BEIR folder) the row is mteb's run scored by smec's evaluator (nDCG@10 ± SE, Recall@100, MRR@10 and the
per-query values, so it pairs with `smec eval` rows on the same queries), with mteb's own nDCG@10 beside it as
``mteb_ndcg@10``; for a named MTEB task it carries mteb's scores only.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.errors import InputError

SCORING = {"float32": "ip", "int8": "deq-sym", "int4": "deq-sym", "binary": "hamming"}


def _atomic_text(path: Path, text: str) -> None:
    from datamodules.files import atomic_write_bytes

    atomic_write_bytes(path, text.encode("utf-8"))


def _load_model(path: str | Path, device: str, batch_size: int) -> Any:
    from smec.export.mteb_model import ExportedEncoder
    from smec.export.writer import EXPORT_FILE

    path = Path(path)
    if not (path / EXPORT_FILE).is_file():
        raise InputError(
            f"--model {path}: not an exported smec model (no {EXPORT_FILE}); write one with `smec export`"
        )
    return ExportedEncoder(path, device=device, batch_size=batch_size)


def run_mteb(
    model_dir: str | Path,
    tasks: Sequence[str],
    out: str | Path,
    *,
    split: str = "test",
    batch_size: int = 64,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """Evaluate the exported model on every task; returns the smec rows (one per task)."""
    import datasets
    import mteb
    import transformers

    from smec.export.mteb_tasks import resolve_task

    # Per-call progress bars (dataset maps, weight loading) would drown the one line per task.
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()

    if batch_size < 1:
        raise InputError(f"--batch-size must be a positive integer, got {batch_size}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    # Everything that can fail on bad input fails here, before any result is written.
    resolved = [resolve_task(name, split) for name in dict.fromkeys(tasks)]
    model = _load_model(model_dir, device, batch_size)

    rows = []
    for rt in resolved:
        with tempfile.TemporaryDirectory(prefix="smec-mteb-") as tmp:
            result = mteb.evaluate(
                model,
                rt.task,
                cache=None,
                show_progress_bar=False,
                encode_kwargs={"batch_size": batch_size, "show_progress_bar": False},
                prediction_folder=tmp if rt.custom else None,
            )
            task_result = result.task_results[0]
            row = (
                _custom_row(model, rt, task_result, Path(tmp))
                if rt.custom
                else _named_row(model, rt, task_result)
            )
        tmp_json = out / "mteb" / f".{rt.name}.json.tmp"
        tmp_json.parent.mkdir(parents=True, exist_ok=True)
        task_result.to_disk(tmp_json)
        os.replace(tmp_json, out / "mteb" / f"{rt.name}.json")
        _write_rows(model, rt, [row], out / rt.name)
        rows.append(row)
    _atomic_text(
        out / "mteb" / "model_meta.json",
        json.dumps(model.mteb_model_meta.to_dict(), indent=1, default=str) + "\n",
    )
    return rows


def _base_row(model: Any, rt: Any) -> dict[str, Any]:
    rec = model.record
    precision = rec["precision"]
    scoring = SCORING[precision]
    if precision == "binary":
        scoring += f"-{(rec.get('calibration') or {}).get('threshold') or 'median'}"
    return {
        "method": f"exported:{rec['method']}",
        "task": rt.name,
        "dim": int(rec["dim"]),
        "precision": precision,
        "bits": int(rec["bits"]),
        "compression": float(rec["compression"]),
        "scoring": f"mteb-{scoring}",
    }


def _custom_row(model: Any, rt: Any, task_result: Any, prediction_folder: Path) -> dict[str, Any]:
    """mteb's run of a smec dataset, scored by smec's evaluator (so it pairs with `smec eval` rows)."""
    from smec.evaluation.evaluator import RetrievalEvaluator

    data, split = rt.dataset, rt.split
    [pred_file] = list(prediction_folder.glob("*_predictions.json"))
    run = json.loads(pred_file.read_text(encoding="utf-8"))["default"][split]
    query_ids, corpus_ids = data.queries[split].ids, data.corpus.ids
    position = {d: j for j, d in enumerate(corpus_ids)}
    k = max((len(v) for v in run.values()), default=1)
    scores = np.full((len(query_ids), k), -np.inf, dtype=np.float64)
    indices = np.full((len(query_ids), k), -1, dtype=np.int64)
    for i, qid in enumerate(query_ids):
        docs = run.get(qid, {})
        scores[i, : len(docs)] = list(docs.values())
        indices[i, : len(docs)] = [position[d] for d in docs]
    evaluator = RetrievalEvaluator(
        data.qrels[split], query_ids, corpus_ids, input_dim=int(model.record["input_dim"])
    )
    base = _base_row(model, rt)
    row = evaluator.score_ranking(
        base["method"], base["dim"], base["precision"], base["bits"], scores, indices, scoring=base["scoring"]
    )
    row.update(task=rt.name, **{"mteb_ndcg@10": float(task_result.scores[split][0]["ndcg_at_10"])})
    return row


def _named_row(model: Any, rt: Any, task_result: Any) -> dict[str, Any]:
    row = _base_row(model, rt)
    split = next(iter(task_result.scores))
    first = task_result.scores[split][0]
    row.update(
        split=split, main_score=float(task_result.get_score()), main_score_name=rt.task.metadata.main_score
    )
    for smec_name, mteb_name in (
        ("ndcg@10", "ndcg_at_10"),
        ("recall@100", "recall_at_100"),
        ("mrr@10", "mrr_at_10"),
    ):
        if mteb_name in first:
            row[smec_name] = float(first[mteb_name])
    return row


def _write_rows(model: Any, rt: Any, rows: list[dict[str, Any]], folder: Path) -> None:
    from smec.evaluation.results import markdown_table, write_results

    rec = model.record
    split = rt.split or rows[0].get("split", "")
    tmp = folder / ".results.tmp.json"
    write_results(
        tmp,
        rows,
        dataset=rt.dataset.name if rt.custom else rt.name,
        split=split,
        base_models=rec["base_models"],
        input_dim=int(rec["input_dim"]),
        metadata={"model": str(model.path.resolve()), "source": "mteb", "mteb_task": rt.name},
        include_per_query=rt.custom,
    )
    os.replace(tmp, folder / "results.json")
    if all("ndcg@10" in r for r in rows):
        _atomic_text(
            folder / "results.md",
            f"# {rt.name} / {split}: {model.path.name} (via mteb)\n\n{markdown_table(rows)}\n",
        )
