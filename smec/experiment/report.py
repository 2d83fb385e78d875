"""The comparison report: rows over seeds → tables, the papers' questions answered with SEs, plots.

Conventions:

* **Seeds.** Rows of one (method, dim, precision) from several seeds are averaged; ``±`` is the standard
  error over queries for a single seed and the standard deviation over seeds otherwise. Paired differences use
  the seed-averaged per-query values (the mean system), with their paired SE over queries.
* **Budget.** Bits per vector (``dim × bits per coordinate``, PQ: its code size); the compression factor is
  ``32 × input_dim / bits``. A code's row (:mod:`smec.evaluation.codes`: ITQ, RaBitQ, learned-range SQ, RQ /
  LSQ, on top of a method's output) has its true stored bits (RaBitQ's per-vector factors counted) and sits in
  the grid budget it was made for (``budget_bytes``: its bytes are at most that), with its bytes named when
  fewer; rescoring's float32 vectors (``extra_bytes``) are not in the budget and are named in the cell. A row at
  bits of its own (CSR's k-sparse codes) sits in the next budget up that a training-free row holds
  (:func:`budget_slots`), so every per-budget comparison sets it against the rows it could replace. The best
  method per budget is in bold.
* **Reference.** "% kept" divides by the float32 concatenation at full width unless the experiment names
  another reference row.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from smec.evaluation.errors import EvaluationError
from smec.evaluation.stats import paired_difference, seed_bootstrap_interval

METRIC = "ndcg@10"
TRAINING_FREE = ("concat", "pca", "rotation", "opq-pq")
PREC_ORDER = {"float32": 0, "int8": 1, "int4": 2, "binary": 3, "pq": 4}
CODE_FIELDS = ("family", "code", "bytes", "extra_bytes", "budget_bytes")
"""The fields a code row carries (smec/evaluation/codes/grid.py) that the aggregate keeps."""
SEED_DRAWS = 10_000
"""Bootstrap draws of the seed-level interval (seeded: the same rows give the same interval)."""
ANSWER_MIN_COMPRESSION = 24.0
"""The trained-vs-training-free question is answered at every budget compressing at least this much."""


def budget_bits(row: Mapping[str, Any]) -> int:
    """The budget a row counts at: a code row's ``budget_bytes`` x 8, any other row its own bits."""
    budget = row.get("budget_bytes")
    return int(row["bits"]) if budget is None else 8 * int(budget)


def budget_compression(row: Mapping[str, Any], bits: int | None = None) -> float:
    """The compression factor of a budget (default: the row's own, :func:`budget_bits`)."""
    return float(row["compression"]) * int(row["bits"]) / (budget_bits(row) if bits is None else bits)


def budget_slots(
    agg: Sequence[Mapping[str, Any]], trained: Sequence[str] = ()
) -> dict[tuple[str, int, str], int]:
    """The budget each row counts at in the per-budget comparisons: the smallest budget of the axis that holds it.

    The axis is the budgets the training-free rows sit at (the grid's precisions and the codes' budgets), or
    every row's budget when there are none. A row of a method with sizes of its own (CSR's k-sparse codes at
    k x (index + value) bits) lands in the next axis budget up instead of a column of its own, so it is compared
    with the rows it could replace; rows above the axis are left out. Keyed by (method, dim, precision)."""
    free = [r for r in agg if r["method"] not in trained and not r["method"].startswith("model:")]
    axis = sorted({budget_bits(r) for r in (free or agg)})
    slots = {}
    for r in agg:
        bits = budget_bits(r)
        slot = next((b for b in axis if b >= bits), None)
        if slot is not None:
            slots[(r["method"], int(r["dim"]), r["precision"])] = slot
    return slots


def aggregate(rows: Sequence[Mapping[str, Any]], metric: str = METRIC) -> list[dict[str, Any]]:
    """One row per (method, dim, precision): mean over seeds, ``spread`` (see module doc), ``n_seeds``.

    Per-query values are averaged over seeds, so :func:`paired_difference` works on the result.
    """
    groups: dict[tuple[str, int, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["method"], int(row["dim"]), row["precision"]), []).append(row)
    out = []
    for (method, dim, precision), members in groups.items():
        values = np.array([float(r[metric]) for r in members])
        first = members[0]
        row: dict[str, Any] = {
            "method": method,
            "dim": dim,
            "precision": precision,
            "bits": int(first["bits"]),
            "compression": float(first["compression"]),
            metric: float(values.mean()),
            "n_seeds": len(members),
            "seeds": [r.get("seed") for r in members],
            "per_seed": values.tolist(),
        }
        row.update({key: first[key] for key in CODE_FIELDS if first.get(key) is not None})
        if len(members) > 1:
            row["spread"] = float(values.std(ddof=1))
        else:
            se = first.get(f"{metric}_se")
            row["spread"] = float("nan") if se is None else float(se)
        if all("per_query" in r and metric in r["per_query"] for r in members):
            row["per_query"] = {
                metric: np.mean(
                    [np.asarray(r["per_query"][metric], dtype=np.float64) for r in members], axis=0
                )
            }
            row["query_ids"] = first["query_ids"]
        out.append(row)
    return out


def _fmt(value: float, spread: float, digits: int = 3) -> str:
    if math.isnan(spread):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} ± {spread:.{digits}f}"


def _diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    try:
        mean, se = paired_difference(a, b, METRIC)
    except EvaluationError:  # rows without per-query values: the plain difference
        return f"{float(a[METRIC]) - float(b[METRIC]):+.3f}"
    return f"{mean:+.3f} ± {se:.3f}"


def seed_interval(a: Mapping[str, Any], b: Mapping[str, Any], metric: str = METRIC) -> str:
    """The 95% seed-bootstrap interval of ``a - b`` (aggregated rows): seed pairs are resampled when both rows
    ran the same seeds, each side's seeds on their own otherwise (docs/methods.md#seed-intervals)."""
    if min(a["n_seeds"], b["n_seeds"]) < 2:
        return "1 seed: no seed interval"
    seeds_a, seeds_b = a.get("seeds") or [], b.get("seeds") or []
    paired = None not in seeds_a and sorted(seeds_a) == sorted(seeds_b) and len(set(seeds_a)) == len(seeds_a)
    values_a, values_b = list(a["per_seed"]), list(b["per_seed"])
    if paired:  # line the seeds up: a[i] and b[i] are the same seed
        values_a = [v for _, v in sorted(zip(seeds_a, values_a))]
        values_b = [v for _, v in sorted(zip(seeds_b, values_b))]
    interval = seed_bootstrap_interval(values_a, values_b, paired=paired, draws=SEED_DRAWS)
    assert interval is not None
    return f"seeds 95% [{interval[0]:+.3f}, {interval[1]:+.3f}]"


def _seeds(row: Mapping[str, Any]) -> str:
    return f"{row['n_seeds']} seed{'s' if row['n_seeds'] != 1 else ''}"


def _config(row: Mapping[str, Any], budget: int | None = None) -> str:
    """``precision@dim``, with the row's bytes when it sits in a larger budget (``budget`` bits, default
    :func:`budget_bits`) and the float32 bytes a rescoring keeps."""
    if row["precision"] == "pq":
        return f"PQ {row['bits']} bits"
    text = f"{row['precision']}@{row['dim']}"
    notes = []
    if (budget_bits(row) if budget is None else budget) != row["bits"]:
        notes.append(f"{row['bits'] // 8} B")
    if row.get("extra_bytes"):
        notes.append(f"+{row['extra_bytes']} B float32 to rescore")
    return text + (f" ({', '.join(notes)})" if notes else "")


def _method_order(rows: Sequence[Mapping[str, Any]], trained: Sequence[str]) -> list[str]:
    present = list(dict.fromkeys(r["method"] for r in rows))
    free = [m for m in TRAINING_FREE if m in present]
    models = [m for m in present if m.startswith("model:")]
    rest = [m for m in present if m not in free and m not in models and m not in trained]
    return models + free + [m for m in trained if m in present] + rest


def reference_row(
    agg: Sequence[Mapping[str, Any]], reference: tuple[str, int, str] | None
) -> Mapping[str, Any] | None:
    if reference is not None:
        return next((r for r in agg if (r["method"], r["dim"], r["precision"]) == reference), None)
    concat = [r for r in agg if r["method"] == "concat" and r["precision"] == "float32"]
    return max(concat, key=lambda r: r["dim"]) if concat else None


def _by_slot(
    agg: Sequence[Mapping[str, Any]], trained: Sequence[str], min_cf: float
) -> dict[int, list[Mapping[str, Any]]]:
    """Rows (single models left out) grouped by :func:`budget_slots`, budgets compressing at least ``min_cf``."""
    slots = budget_slots(agg, trained)
    by_bits: dict[int, list[Mapping[str, Any]]] = {}
    for r in agg:
        bits = slots.get((r["method"], int(r["dim"]), r["precision"]))
        if bits is None or r["method"].startswith("model:") or budget_compression(r, bits) < min_cf:
            continue
        by_bits.setdefault(bits, []).append(r)
    return by_bits


def budget_table(
    agg: Sequence[Mapping[str, Any]],
    methods: Sequence[str],
    ref: Mapping[str, Any] | None,
    min_cf: float = 8.0,
    trained: Sequence[str] = (),
) -> str:
    """Budgets (bits per vector) × methods: each method's best configuration in that budget
    (:func:`budget_slots`: a row with fewer bits than the budget names its bytes); the best cell of a budget in
    bold. Budgets below ``min_cf`` compression are left out (they all keep ~100%)."""
    by_bits: dict[int, dict[str, Mapping[str, Any]]] = {}
    for bits, rows in _by_slot(agg, trained, min_cf).items():
        cell = by_bits.setdefault(bits, {})
        for r in rows:
            if r["method"] not in cell or r[METRIC] > cell[r["method"]][METRIC]:
                cell[r["method"]] = r
    cols = [m for m in methods if not m.startswith("model:")]
    head = ["CF", "bits", *cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for bits in sorted(by_bits):
        cell = by_bits[bits]
        best = max(cell.values(), key=lambda r: r[METRIC])
        cf = budget_compression(next(iter(cell.values())), bits)
        cells = [f"{cf:.0f}×", str(bits)]
        for m in cols:
            if m not in cell:
                cells.append("–")
                continue
            r = cell[m]
            text = f"{r[METRIC]:.3f}"
            if ref is not None:
                text += f" ({100 * r[METRIC] / ref[METRIC]:.0f}%)"
            text = f"**{text}**" if r is best else text
            cells.append(f"{text} {_config(r, bits)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def grid_table(
    agg: Sequence[Mapping[str, Any]], methods: Sequence[str], ref: Mapping[str, Any] | None
) -> str:
    head = ["method", "dim", "precision", "bits", "CF", "nDCG@10", "seeds"]
    if ref is not None:
        head.append("% of ref")
    order = {m: i for i, m in enumerate(methods)}
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(
        agg, key=lambda r: (order.get(r["method"], 99), r["dim"], PREC_ORDER.get(r["precision"], 9))
    ):
        cells = [
            r["method"],
            str(r["dim"]),
            r["precision"],
            str(r["bits"]),
            f"{r['compression']:.3g}×",
            _fmt(r[METRIC], r["spread"]),
            str(r["n_seeds"]),
        ]
        if ref is not None:
            cells.append(f"{100 * r[METRIC] / ref[METRIC]:.1f}%")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def prefix_caveat(row: Mapping[str, Any], base_dims: Sequence[tuple[str, int]]) -> str | None:
    """A caveat line when a training-free row is the concatenation truncated within its first model's width:
    those dims are that model alone, so the row says nothing about the concatenation. ``base_dims``: the
    concatenated models' (store key, width) in order; one model is its own concatenation (no caveat)."""
    if row["method"] != "concat" or len(base_dims) < 2 or row["dim"] > base_dims[0][1]:
        return None
    name, width = base_dims[0]
    total = sum(d for _, d in base_dims)
    return (
        f"  - caveat: concat {_config(row)} is a prefix of the first model: truncating the concatenation to "
        f"{row['dim']} of its {total} dims keeps only {name} ({width}-d), so this is one base model, not the "
        "concatenation"
    )


def _best(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    return max(rows, key=lambda r: r[METRIC]) if rows else None


def answers(
    agg: Sequence[Mapping[str, Any]],
    trained: Sequence[str],
    ref: Mapping[str, Any] | None,
    input_dim: int,
    base_dims: Sequence[tuple[str, int]] = (),
    references: Sequence[str] = (),
) -> list[str]:
    """The papers' questions on this data, each answered from the rows with paired SEs (markdown lines).

    ``base_dims``: the concatenated models' (store key, width) in order; a training-free best that is a prefix
    of the first model gets a caveat line (:func:`prefix_caveat`). ``references``: store keys of the larger
    single models evaluated beside the concatenation (the experiment's ``reference_models``)."""
    out: list[str] = []
    find = {(r["method"], r["dim"], r["precision"]): r for r in agg}
    concat = (
        ref if ref is not None and ref["method"] == "concat" else find.get(("concat", input_dim, "float32"))
    )
    singles = [r for r in agg if r["method"].startswith("model:") and r["precision"] == "float32"]
    singles = [r for r in singles if r["dim"] == max(s["dim"] for s in singles if s["method"] == r["method"])]
    small = [r for r in singles if r["method"][6:] not in references]
    if concat is not None and small:
        out.append(
            "**Does the concatenation beat each small model?** (float32, full width; paired difference ± SE)"
        )
        for s in small:
            out.append(
                f"- concat {concat[METRIC]:.3f} vs {s['method'][6:]} {s[METRIC]:.3f}: {_diff(concat, s)}"
            )
    out += _against_references(agg, concat, [r for r in singles if r not in small])
    if ref is not None:
        out.append("")
        out.append(
            f"**How much nDCG@10 is kept at 48× and 96×?** (of {ref['method']} {ref['precision']}@{ref['dim']} ="
            f" {ref[METRIC]:.3f}; paper: 89% at 48×)"
        )
        for target in (48, 96):
            at = [
                r for r in agg if r["compression"] >= 0.98 * target and not r["method"].startswith("model:")
            ]
            if not at:
                out.append(f"- {target}×: no configuration in the grid compresses this much")
                continue
            tr, free = (
                _best([r for r in at if r["method"] in trained]),
                _best([r for r in at if r["method"] not in trained]),
            )
            parts = []
            for label, r in (("trained", tr), ("training-free", free)):
                if r is not None:
                    parts.append(
                        f"best {label}: {r['method']} {_config(r)} ({r['compression']:.0f}×) {r[METRIC]:.3f} = "
                        f"{100 * r[METRIC] / ref[METRIC]:.1f}%"
                    )
            out.append(f"- ≥ {target}×: " + "; ".join(parts))
            caveat = prefix_caveat(free, base_dims) if free is not None else None
            out += [caveat] if caveat else []
    if "smec" in trained and "mrl" in trained:
        dims = sorted({r["dim"] for r in agg if r["method"] == "smec"})[:2]
        out.append("")
        out.append(
            "**Does SMEC beat MRL at low dims?** (float32; SMEC − MRL, paired over queries on the seed means ±"
            " SE; the 95% seed-bootstrap interval of the difference)"
        )
        for d in dims:
            a, b = find.get(("smec", d, "float32")), find.get(("mrl", d, "float32"))
            if a is not None and b is not None:
                out.append(
                    f"- {d} dims: SMEC {_fmt(a[METRIC], a['spread'])} ({_seeds(a)}) vs MRL "
                    f"{_fmt(b[METRIC], b['spread'])} ({_seeds(b)}): {_diff(a, b)}; {seed_interval(a, b)}"
                )
                out += _free_beside(agg, trained, find, a, d)
    out += _trained_vs_free(agg, trained, base_dims)
    return out


def _against_references(
    agg: Sequence[Mapping[str, Any]],
    concat: Mapping[str, Any] | None,
    references: Sequence[Mapping[str, Any]],
) -> list[str]:
    """The concat paper's first claim: the concatenation (full width, float32) against each larger single model
    (float32, full width); the best row made from the concatenation (any method, any code) at no more bits than
    that model's float32 vectors; and at every budget of at least :data:`ANSWER_MIN_COMPRESSION`, the model's
    best row against the concatenation's best, each in no more than that budget; paired differences."""
    if concat is None or not references:
        return []
    out = [
        "",
        "**Does the concatenation beat the larger single model?** (float32, full width; the best row made from"
        " the concatenation in no more than the single model's float32 bytes; then each side's best row in no"
        f" more than every budget >= {ANSWER_MIN_COMPRESSION:.0f}×; paired difference ± SE)",
    ]
    made = [x for x in agg if not x["method"].startswith("model:")]
    budgets = sorted(
        {budget_bits(x) for x in made if budget_compression(x) >= ANSWER_MIN_COMPRESSION}, reverse=True
    )
    for r in references:
        name = r["method"][6:]
        out.append(f"- concat {concat[METRIC]:.3f} vs {name} {r[METRIC]:.3f}: {_diff(concat, r)}")
        best = _best([x for x in made if budget_bits(x) <= r["bits"]])
        if best is not None:
            out.append(
                f"  - in ≤ {r['bits'] // 8} B: {best['method']} {_config(best)} {best[METRIC]:.3f} vs {name} "
                f"{r[METRIC]:.3f}: {_diff(best, r)}"
            )
        own = [x for x in agg if x["method"] == r["method"]]
        for bits in budgets:
            mine = _best([x for x in own if budget_bits(x) <= bits])
            theirs = _best([x for x in made if budget_bits(x) <= bits])
            if mine is not None and theirs is not None:
                out.append(
                    f"  - in ≤ {bits // 8} B: {name} {_config(mine)} {mine[METRIC]:.3f} vs {theirs['method']} "
                    f"{_config(theirs)} {theirs[METRIC]:.3f}: {_diff(mine, theirs)}"
                )
    return out


def _free_beside(
    agg: Sequence[Mapping[str, Any]],
    trained: Sequence[str],
    find: Mapping[tuple[str, int, str], Mapping[str, Any]],
    smec: Mapping[str, Any],
    dim: int,
) -> list[str]:
    """Beside a SMEC-vs-MRL answer: PCA at that size and the strongest training-free row (codes included) at
    no more bits than SMEC's row, each with SMEC's paired difference."""
    pca = find.get(("pca", dim, "float32"))
    free = [
        r
        for r in agg
        if r["method"] not in trained
        and not r["method"].startswith("model:")
        and budget_bits(r) <= smec["bits"]
    ]
    best = max(free, key=lambda r: r[METRIC], default=None)
    parts = [] if pca is None else [f"PCA float32@{dim} {pca[METRIC]:.3f} (SMEC − it {_diff(smec, pca)})"]
    if best is not None and best is not pca:
        parts.append(
            f"strongest training-free at ≤ {smec['bits']} bits: {best['method']} {_config(best)} "
            f"{best[METRIC]:.3f} (SMEC − it {_diff(smec, best)})"
        )
    return [f"  - beside it: {'; '.join(parts)}"] if parts else []


def _trained_vs_free(
    agg: Sequence[Mapping[str, Any]], trained: Sequence[str], base_dims: Sequence[tuple[str, int]] = ()
) -> list[str]:
    """At every budget of at least :data:`ANSWER_MIN_COMPRESSION`: the best trained row (codes on trained
    outputs included) against the strongest training-free row (PCA, OPQ + PQ, the codes, ...; single models
    left out, as in the budget table), paired difference ± SE."""
    by_bits = _by_slot(agg, trained, ANSWER_MIN_COMPRESSION)
    budgets = sorted(by_bits, reverse=True)
    if not trained or not budgets:
        return []
    out = [
        "",
        "**Does any trained method beat the training-free codes at the same bytes?** (at every budget "
        f">= {ANSWER_MIN_COMPRESSION:.0f}×: the best trained row against the strongest training-free row, codes"
        " included; paired difference ± SE)",
    ]
    for bits in budgets:
        same = by_bits[bits]
        tr = _best([r for r in same if r["method"] in trained])
        free = _best([r for r in same if r["method"] not in trained])
        head = f"- {bits // 8} B ({budget_compression(same[0], bits):.0f}×): "
        if tr is None or free is None:
            only = tr or free
            assert only is not None
            kind = "trained" if tr is not None else "training-free"
            out.append(head + f"only {kind} rows: {only['method']} {_config(only, bits)} {only[METRIC]:.3f}")
            caveat = prefix_caveat(only, base_dims) if tr is None else None
            out += [caveat] if caveat else []
            continue
        verdict = "yes" if tr[METRIC] > free[METRIC] else "no"
        out.append(
            head + f"{verdict}: {tr['method']} {_config(tr, bits)} {tr[METRIC]:.3f} vs {free['method']} "
            f"{_config(free, bits)} {free[METRIC]:.3f} ({_diff(tr, free)})"
        )
        caveat = prefix_caveat(free, base_dims)
        out += [caveat] if caveat else []
    return out


def _base_dims(
    agg: Sequence[Mapping[str, Any]], keys: Sequence[str], model_dims: Mapping[str, int] | None
) -> list[tuple[str, int]]:
    """(store key, width) of the concatenated models in order; empty when a width is unknown."""
    if model_dims is None:
        model_dims = {}
        for r in agg:
            if r["method"].startswith("model:"):
                key = r["method"][6:]
                model_dims[key] = max(model_dims.get(key, 0), int(r["dim"]))
    if not all(k in model_dims for k in keys):
        return []
    return [(k, int(model_dims[k])) for k in keys]


def write_report(
    config: Any,
    rows: Sequence[Mapping[str, Any]],
    input_dim: int,
    out: Path,
    runs: Sequence[tuple[str, int, Path]],
    exported: Sequence[Mapping[str, Any]] = (),
    model_dims: Mapping[str, int] | None = None,
) -> dict[str, Path]:
    """report.md, pareto.png and curves.png in ``out``; returns their paths. ``exported``: the records of the
    comparison's export step (:mod:`smec.experiment.exported`), printed after the budget table. ``model_dims``:
    each base model's width by store key (default: read from the single-model rows)."""
    from smec.experiment.budget_end import budget_end_lines
    from smec.experiment.exported import exported_lines
    from smec.experiment.fits import model_keys
    from smec.experiment.plots import method_colors, plot_curves, plot_grad_variance, plot_pareto

    trained = list(config.method_names)
    agg = aggregate(rows)
    methods = _method_order(agg, trained)
    ref = reference_row(agg, config.reference)
    base_dims = _base_dims(agg, model_keys(config.models), model_dims)
    paths = {"report": out / "report.md", "pareto": out / "pareto.png", "curves": out / "curves.png"}
    plot_pareto(agg, methods, trained, ref, paths["pareto"], title=f"{config.name}: {config.dataset}")
    curves = plot_curves(runs, paths["curves"], method_colors(methods, trained))
    if curves is None:
        del paths["curves"]
    # The SMEC paper's diagnostic, for fits that logged it (fit_callbacks.grad_variance).
    variance = plot_grad_variance({f"{m}/s{s}": root for m, s, root in runs}, out / "grad_variance.png")
    if variance is not None:
        paths["grad_variance"] = variance
    seeds = sorted({s for _, s, _ in runs})
    text = [
        f"# {config.name}: {config.dataset} / {config.split}",
        "",
        f"Base models: {', '.join(config.models)} (concatenation {input_dim}-d). Trained: {', '.join(trained)}"
        f" (seeds {', '.join(map(str, seeds)) or '–'}; checkpoints selected on dev). nDCG@10 on {config.split};"
        " ± is the SE over queries (one seed) or the std over seeds. CF = compression vs float32"
        f" {input_dim}-d.",
        "",
        "## Answers",
        "",
        *answers(agg, trained, ref, input_dim, base_dims, model_keys(config.reference_models)),
        "",
        *budget_end_lines(runs),
        "## Best of each method per budget",
        "",
        budget_table(agg, methods, ref, trained=trained),
        "![Pareto](pareto.png)",
        "",
    ]
    if curves is not None:
        text += ["![Training curves](curves.png)", ""]
    if variance is not None:
        text += ["![Gradient variance of the shared layer per step](grad_variance.png)", ""]
    text += exported_lines(exported)
    text += ["## Full grid", "", grid_table(agg, methods, ref)]
    paths["report"].write_text("\n".join(text), encoding="utf-8")
    return paths
