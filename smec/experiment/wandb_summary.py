"""The comparison's final W&B run: the results table, the report table and the plots, in the experiment's group."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from smec.loggers import wandb_mode

COLUMNS = (
    "method",
    "seed",
    "dim",
    "precision",
    "bits",
    "compression",
    "ndcg@10",
    "ndcg@10_se",
    "recall@100",
    "mrr@10",
)


def log_summary(
    config: Any, nonce: str, rows: Sequence[Mapping[str, Any]], paths: Mapping[str, Path], out: Path
) -> Path:
    """One run (``job_type: eval``, name ``<experiment>-summary``) holding every row, the report and plots.

    Returns the run's local folder (``wandb sync <folder>`` uploads an offline run).
    """
    import wandb

    run = wandb.init(
        project=config.wandb_project,
        group=config.name,
        job_type="eval",
        name=f"{config.name}-summary",
        id=f"{nonce}-summary",
        resume="allow",
        dir=str(out),
        mode=wandb_mode(),
        config={"experiment": config.name, "dataset": config.dataset, "models": list(config.models)},
        settings=wandb.Settings(console="off", silent=True),
    )
    try:
        table = wandb.Table(columns=list(COLUMNS))
        for r in rows:
            table.add_data(*(r.get(c) for c in COLUMNS))
        payload: dict[str, Any] = {"results": table}
        for key in ("pareto", "curves"):
            if key in paths and Path(paths[key]).exists():
                payload[key] = wandb.Image(str(paths[key]))
        run.log(payload)
        for r in rows:
            if r.get("seed") in (None, config.seeds[0]):
                run.summary[f"test/{r['method']}/ndcg@10/d{r['dim']}/{r['precision']}"] = r["ndcg@10"]
        if "report" in paths:
            run.summary["report"] = Path(paths["report"]).read_text(encoding="utf-8")
        return Path(run.dir).parent
    finally:
        run.finish()
