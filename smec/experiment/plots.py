"""The comparison's figures: nDCG@10 against compression (Pareto fronts), the training curves, and the gradient
variance of the shared layer (:mod:`smec.grad_variance`)."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

METRIC = "ndcg@10"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


# Training-free baselines: dark greys with their own markers, so the colours stay for the trained methods.
FREE_STYLE = {
    "concat": ("#7f7f7f", "s"),
    "pca": ("#000000", "D"),
    "rotation": ("#bdbdbd", "v"),
    "opq-pq": ("#5b3a29", "^"),
}


# Code families, one marker each (every method's points carry its family's marker, in the method's colour):
# the grid's own precisions and the codes of smec/evaluation/codes (a row's ``family``).
FAMILY_MARKERS = {
    "float32": ("float32", "o"),
    "int": ("int8 / int4 (min-max)", "s"),
    "threshold": ("binary (threshold)", "v"),
    "pq": ("OPQ + PQ", "^"),
    "binary": ("ITQ binary", "<"),
    "rabitq": ("RaBitQ", "P"),
    "scalar": ("SQ (learned range)", "D"),
    "additive": ("RQ / LSQ", "X"),
}
_PRECISION_FAMILY = {"float32": "float32", "int8": "int", "int4": "int", "binary": "threshold", "pq": "pq"}


def row_family(row: Mapping[str, Any]) -> str:
    """The key of :data:`FAMILY_MARKERS` a row is drawn with: a code row's ``family``, else its precision's."""
    return str(row.get("family") or _PRECISION_FAMILY.get(row["precision"], "float32"))


def method_colors(methods: Sequence[str], trained: Sequence[str] = ()) -> dict[str, Any]:
    """One colour per method (single models excluded), the same in every figure of a report: trained methods
    take the distinct tab10 colours (tab20's dark shades after ten), training-free ones fixed greys."""
    plt = _pyplot()
    lines = [m for m in methods if not m.startswith("model:")]
    colors: dict[str, Any] = {m: FREE_STYLE[m][0] for m in lines if m in FREE_STYLE}
    rest = [m for m in lines if m not in colors]
    tab10, tab20 = plt.get_cmap("tab10"), plt.get_cmap("tab20")
    palette = [tab10(i) for i in range(10)] + [tab20(2 * i) for i in range(10)]
    colors.update({m: palette[i % len(palette)] for i, m in enumerate(rest)})
    return {m: colors[m] for m in lines}


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both compression (higher) and score (higher), by compression.

    >>> pareto_front([(2, 0.9), (4, 0.95), (8, 0.5), (8, 0.6)])
    [(4, 0.95), (8, 0.6)]
    """
    front: list[tuple[float, float]] = []
    best = float("-inf")
    for cf, score in sorted(points, key=lambda p: (-p[0], -p[1])):
        if score > best:
            front.append((cf, score))
            best = score
    return sorted(front)


def _family_points(ax: Any, rows: Sequence[Mapping[str, Any]], color: Any) -> set[str]:
    """One method's configurations as points in ``color``, each family with its marker; the families drawn."""
    families = list(dict.fromkeys(row_family(r) for r in rows))
    for family in families:
        at = [(r["compression"], r[METRIC]) for r in rows if row_family(r) == family]
        marker = FAMILY_MARKERS.get(family, (family, "o"))[1]
        ax.scatter(*zip(*at), s=14, color=color, alpha=0.35, marker=marker)
    return set(families)


def _family_legend(ax: Any, families: set[str]) -> None:
    from matplotlib.lines import Line2D

    known = [(FAMILY_MARKERS[f][0], FAMILY_MARKERS[f][1]) for f in FAMILY_MARKERS if f in families]
    known += [(f, "o") for f in sorted(families - set(FAMILY_MARKERS))]
    handles = [Line2D([], [], ls="", marker=m, color="dimgrey", label=label) for label, m in known]
    ax.legend(handles=handles, fontsize=7, loc="upper right", title="points: code family", title_fontsize=7)


def _model_stars(ax: Any, agg: Sequence[Mapping[str, Any]], methods: Sequence[str]) -> None:
    """Each single model's float32 full width as a black star; models with equal scores share one."""
    stars: dict[tuple[float, float], list[str]] = {}
    for method in (m for m in methods if m.startswith("model:")):
        full = max(
            (r for r in agg if r["method"] == method and r["precision"] == "float32"),
            key=lambda r: r["dim"],
            default=None,
        )
        if full is not None:
            stars.setdefault((full["compression"], round(full[METRIC], 3)), []).append(method[6:])
    for (cf, score), names in stars.items():  # models with equal scores share one star and one label
        ax.scatter([cf], [score], marker="*", s=90, color="black", zorder=5)
        ax.annotate(" = ".join(names), (cf, score), textcoords="offset points", xytext=(6, -3), fontsize=8)


def plot_pareto(
    agg: Sequence[Mapping[str, Any]],
    methods: Sequence[str],
    trained: Sequence[str],
    ref: Mapping[str, Any] | None,
    path: Path,
    title: str = "",
    marks: Sequence[float] = (48.0,),
) -> Path:
    """nDCG@10 against compression factor (log x): each method's Pareto front as a line, all its
    configurations as points in its colour with their code family's marker (:data:`FAMILY_MARKERS`, a second
    legend); single models as stars; the reference as a dashed line; 48× marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 5.5))
    colors = method_colors(methods, trained)
    families: set[str] = set()
    for method, color in colors.items():
        mine = [r for r in agg if r["method"] == method]
        pts = [(r["compression"], r[METRIC]) for r in mine]
        front = pareto_front(pts)
        style = "-" if method in trained else "--"
        families |= _family_points(ax, mine, color)
        ax.plot(
            *zip(*front),
            style,
            marker=FREE_STYLE.get(method, (None, "o"))[1],
            ms=5 if method in FREE_STYLE else 4,
            lw=2 if method in trained else 1.3,
            color=color,
            label=method,
        )
    _model_stars(ax, agg, methods)
    if ref is not None:
        ax.axhline(ref[METRIC], color="grey", ls=":", lw=1)
        ax.annotate(
            f"{ref['method']} {ref['precision']}@{ref['dim']}",
            (1.0, ref[METRIC]),
            textcoords="offset points",
            xytext=(2, 3),
            fontsize=8,
            color="grey",
        )
    for mark in marks:
        ax.axvline(mark, color="red", ls="--", lw=1, alpha=0.6)
        ax.annotate(
            f"{mark:.0f}×",
            (mark, ax.get_ylim()[0]),
            textcoords="offset points",
            xytext=(3, 4),
            color="red",
            fontsize=9,
        )
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}×"))
    ax.set_xlabel("compression factor vs float32 concatenation (log scale)")
    ax.set_ylabel("nDCG@10")
    ax.set_title(title or "nDCG@10 vs compression")
    ax.grid(True, which="both", alpha=0.25)
    legend = ax.legend(
        fontsize=8, loc="lower left", ncol=2, title="solid: trained · dashed: training-free", title_fontsize=8
    )
    if len(families) > 1:  # the family markers only say something when there is more than one
        from matplotlib.lines import Line2D

        handles = [
            Line2D([], [], ls="", marker=FAMILY_MARKERS.get(f, (f, "o"))[1], color="dimgrey", label=label)
            for f, (label, _) in (
                (f, FAMILY_MARKERS.get(f, (f, "o"))) for f in FAMILY_MARKERS if f in families
            )
        ]
        ax.legend(
            handles=handles, fontsize=7, loc="upper right", title="points: code family", title_fontsize=7
        )
        ax.add_artist(legend)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def read_curves(root: Path) -> dict[str, dict[int, float]]:
    """Epoch-level series from a fit's CSV logs (all versions, later ones winning: a resumed fit appends one)."""
    series: dict[str, dict[int, float]] = {}
    for metrics in sorted(
        (root / "csv").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1])
    ):
        with metrics.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                for key in ("val/ndcg@10/mean", "train/loss_epoch"):
                    if row.get(key):
                        series.setdefault(key, {})[int(row["epoch"])] = float(row[key])
    return series


def plot_curves(
    runs: Sequence[tuple[str, int, Path]], path: Path, colors: Mapping[str, Any] | None = None
) -> Path | None:
    """Dev nDCG@10 (mean over dims) and training loss per epoch, one line per method (its first seed)."""
    first: dict[str, Path] = {}
    for method, _seed, root in runs:
        first.setdefault(method, root)
    curves = {m: read_curves(root) for m, root in first.items()}
    curves = {m: c for m, c in curves.items() if c}
    if not curves:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for (key, label), ax in zip(
        (("val/ndcg@10/mean", "dev nDCG@10 (mean over dims)"), ("train/loss_epoch", "training loss")), axes
    ):
        for method, series in curves.items():
            if key in series:
                epochs = sorted(series[key])
                color = (colors or {}).get(method)
                ax.plot(epochs, [series[key][e] for e in epochs], marker=".", label=method, color=color)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.25)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


GRAD_VAR = "train/grad_var/"


def read_grad_variance(root: Path) -> dict[str, dict[int, float]]:
    """Per-step ``train/grad_var/<module>`` series from a fit's CSV logs (all versions, later ones winning)."""
    series: dict[str, dict[int, float]] = {}
    for metrics in sorted(
        (root / "csv").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1])
    ):
        with metrics.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                for key, value in row.items():
                    if key.startswith(GRAD_VAR) and not key.endswith("/sq_norm") and value:
                        series.setdefault(key, {})[int(row["step"])] = float(value)
    return series


def plot_grad_variance(runs: Mapping[str, Path], path: Path) -> Path | None:
    """The shared layer's gradient variance per optimizer step, one line per run (e.g. SMEC vs ``no-smrl``).

    ``runs`` maps a label to a fit's folder (``trainer.default_root_dir``, holding ``csv/version_*``); runs
    without the metric (``fit_callbacks.grad_variance`` off) are left out, and nothing is written if none has it.
    """
    curves = {label: read_grad_variance(Path(root)) for label, root in runs.items()}
    curves = {label: c for label, c in curves.items() if c}
    if not curves:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, series in curves.items():
        for key, values in series.items():
            steps = sorted(values)
            name = label if len(series) == 1 else f"{label}: {key[len(GRAD_VAR) :]}"
            ax.plot(steps, [values[s] for s in steps], label=name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("gradient variance of the shared layer (EMA, mean over elements)")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.25)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
