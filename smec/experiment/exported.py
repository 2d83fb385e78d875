"""The comparison's "exported" step: each budget's best trained model leaves the framework and mteb scores it.

For every budget (bits per vector) of the report's table at or above ``min_cf`` compression, the trained method
whose configuration (dim, precision) has the best mean test nDCG@10 over seeds is exported with `smec export`
(:func:`smec.export.writer.export_model`, the checkpoint its fit selected on dev, the experiment's calibration
sample) and evaluated with `smec mteb` (:func:`smec.export.mteb_run.run_mteb`) on the experiment's dataset and
split. Which seed's checkpoint: ``seed`` (default: the method's first seed), so the step is deterministic.

The record of each budget (``<out>/exported/<method>-<precision>-d<dim>-s<seed>/exported.json``) holds mteb's
nDCG@10, smec's re-scoring of mteb's run and the test grid's nDCG@10 of the same checkpoint; the report prints
them side by side, so a difference between what the framework measured and what leaves it is visible. A record
whose checkpoint, size and precision match is reused: the step resumes like the rest of `smec compare`.

Only the precisions `smec export` writes (float32, int8, int4, binary) are exported; rows of other codes are not.
The base encoders re-embed the whole corpus and the split's queries: minutes for the demo's three models on two
cores, which is why the step is off unless the experiment sets ``export: {enabled: true}``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXPORTABLE = ("float32", "int8", "int4", "binary")
RECORD = "exported.json"

__all__ = ["EXPORTABLE", "ExportSpec", "best_per_budget", "export_best", "exported_lines"]


@dataclass(frozen=True)
class ExportSpec:
    """The experiment's ``export:`` section.

    Args:
        enabled: run the step (default false: it re-embeds the corpus with the base models).
        min_cf: the smallest compression factor exported (default 24, the budgets the report answers at).
        seed: whose checkpoint is exported (default: each method's first seed).
        batch_size: the encoders' batch size (default 64, as `smec embed`).
    """

    enabled: bool = False
    min_cf: float = 24.0
    seed: int | None = None
    batch_size: int = 64


def best_per_budget(
    agg: Sequence[Mapping[str, Any]], trained: Sequence[str], min_cf: float
) -> list[Mapping[str, Any]]:
    """The best trained configuration per budget (aggregated rows, :func:`smec.experiment.report.aggregate`),
    cheapest budget last; only exportable precisions at ``min_cf`` compression or more."""
    best: dict[int, Mapping[str, Any]] = {}
    for r in agg:
        if r["method"] not in trained or r["precision"] not in EXPORTABLE or r["compression"] < min_cf:
            continue
        if r["bits"] not in best or r["ndcg@10"] > best[r["bits"]]["ndcg@10"]:
            best[r["bits"]] = r
    return [best[bits] for bits in sorted(best, reverse=True)]


def export_best(
    config: Any,
    runs: Sequence[Any],
    rows: Sequence[Mapping[str, Any]],
    out: Path,
    say: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Export and mteb-score each budget's best trained model (module docstring); returns the records."""
    from smec.experiment.report import aggregate

    spec: ExportSpec = config.export
    records = []
    for best in best_per_budget(aggregate(rows), config.method_names, spec.min_cf):
        run = _run_of(runs, best["method"], spec.seed)
        if run is None:
            continue
        records.append(_export_one(config, run, best, rows, out / "exported", say))
    return records


def _run_of(runs: Sequence[Any], method: str, seed: int | None) -> Any:
    mine = [r for r in runs if r.method.name == method and (seed is None or r.seed == seed)]
    return min(mine, key=lambda r: r.seed) if mine else None


def _export_one(
    config: Any,
    run: Any,
    best: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    root: Path,
    say: Callable[[str], None],
) -> dict[str, Any]:
    from datamodules.files import atomic_write_json
    from smec.export.mteb_run import run_mteb
    from smec.export.writer import export_model
    from smec.fit_result import read_fit_result

    dim, precision = int(best["dim"]), best["precision"]
    folder = root / f"{run.method.name}-{precision}-d{dim}-s{run.seed}"
    checkpoint = read_fit_result(run.root).checkpoint_path(run.root)
    key = {"checkpoint": str(checkpoint), "dim": dim, "precision": precision, "split": config.split}
    done = _read_record(folder / RECORD)
    if done is not None and all(done.get(k) == v for k, v in key.items()):
        say(f"exported: reusing {folder.name}")
        return done
    say(f"exported: {run.label} {precision}@{dim} -> {folder / 'model'} (re-embeds the corpus)")
    spec = config.evaluation
    export_model(
        checkpoint,
        folder / "model",
        dim=dim,
        precision=precision,
        fit_sample=spec.calibration_size,
        seed=spec.seed,
        binary_threshold=spec.binary_threshold,
        dataset=config.dataset,
        overwrite=True,
    )
    [mteb_row] = run_mteb(
        folder / "model",
        [config.dataset],
        folder / "mteb",
        split=config.split,
        batch_size=config.export.batch_size,
    )
    test = next(
        r
        for r in rows
        if r["method"] == run.method.name
        and r.get("seed") == run.seed
        and r["dim"] == dim
        and r["precision"] == precision
    )
    record = {
        **key,
        "method": run.method.name,
        "seed": run.seed,
        "bits": int(best["bits"]),
        "compression": float(best["compression"]),
        "mteb_ndcg@10": mteb_row["mteb_ndcg@10"],
        "rescored_ndcg@10": mteb_row["ndcg@10"],
        "test_grid_ndcg@10": float(test["ndcg@10"]),
    }
    atomic_write_json(folder / RECORD, record)
    return record


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def exported_lines(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The report's "Exported" section: one line per budget, mteb's score beside the test grid's."""
    if not records:
        return []
    lines = [
        "## Exported (sentence-transformers folder, scored by mteb)",
        "",
        "Each budget's best trained model, exported with `smec export` from the checkpoint its fit selected and "
        "evaluated with `smec mteb` on the same split: mteb's nDCG@10 (5 decimals), smec's evaluator on mteb's "
        "run, and the test grid's value for that checkpoint.",
        "",
    ]
    for r in records:
        lines.append(
            f"- {r['bits']} bits ({r['compression']:.0f}×): {r['method']} seed {r['seed']} {r['precision']}@"
            f"{r['dim']}: mteb {r['mteb_ndcg@10']:.4f}, rescored {r['rescored_ndcg@10']:.4f}, test grid "
            f"{r['test_grid_ndcg@10']:.4f}"
        )
    return [*lines, ""]
