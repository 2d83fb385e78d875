"""`smec compare`: embed → training-free baselines → fits (every method × seed) → test grid → report.

Every step leaves its result on disk and is skipped when that result is there, so an interrupted comparison
continues from what finished when it is run again:

    runs/<name>/
      experiment.yaml          the experiment file of the latest run
      state.json               the run nonce (W&B ids) and the data every result depends on
      baselines/results.json   the training-free grid
      <method>/s<seed>/        one `smec fit` root: fit.json (its settings), config.yaml, checkpoints/, csv/,
                               wandb/, fit.log, fit_result.json (written by the fit: the checkpoint it selected
                               on dev), fit.done (its process exited 0), test.json (its test rows)
      results.json, report.md, pareto.png, curves.png, wandb/ (the summary run)

The parts, one job each: :mod:`~smec.experiment.state` (what the results depend on),
:mod:`~smec.experiment.fits` (the fits' folders, command lines and checks), :mod:`~smec.experiment.jobs` (the
subprocess pool and its progress), :mod:`~smec.experiment.evaluate` (the test grid, from each fit's
``fit_result.json``). Fits run as `smec fit` subprocesses (``jobs`` at a time, each with its own torch thread
count), resumed from ``checkpoints/last.ckpt`` when one exists.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from smec.experiment.config import ExperimentConfig, ExperimentError
from smec.experiment.evaluate import TestGrid
from smec.experiment.fits import FitRun, MethodChecks, epoch_budget, fit_command, model_keys
from smec.experiment.jobs import Job, progress_bar, run_jobs
from smec.experiment.state import RunState

__all__ = ["ComparisonError", "ComparisonRunner", "epochs_logged", "remove_run"]


class ComparisonError(RuntimeError):
    """A step of the comparison failed (a fit exited non-zero): the message names the run and its log."""


class ComparisonRunner:
    """Runs one :class:`ExperimentConfig` into ``out`` (default ``runs/<name>``); see the module docstring.

    Args:
        config: the experiment.
        out: its folder.
        progress: progress bars (one per step, with ETA) on stderr; step lines are always printed.
        jobs: overrides ``config.jobs``.
        python: interpreter for the fit subprocesses.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        out: str | Path | None = None,
        *,
        progress: bool = True,
        jobs: int | None = None,
        python: str = sys.executable,
    ) -> None:
        self.config = config
        self.out = Path(out) if out is not None else Path("runs") / config.name
        self.progress = progress
        self.jobs = jobs or config.jobs
        self.python = python
        self.state = RunState(config, self.out)
        self.checks = MethodChecks(config, python)
        self.test_grid = TestGrid(config.evaluation, config.split)

    # ----------------------------------------------------------------------------------------- layout
    def fit_runs(self) -> list[FitRun]:
        return [FitRun(m, s, self.out / m.name / f"s{s}") for m, s in self.config.runs()]

    def say(self, message: str) -> None:
        print(f"[compare] {message}", file=sys.stderr, flush=True)

    def fit_command(self, run: FitRun, nonce: str) -> list[str]:
        """The `smec fit` command line of one run (:func:`smec.experiment.fits.fit_command`)."""
        return fit_command(self.config, run, nonce, self.python)

    def epoch_budget(self, run: FitRun) -> int:
        return epoch_budget(run)

    def model_dims(self) -> dict[str, int]:
        """Each concatenated model's width, by store key, in the concatenation's order."""
        store = self.store()
        return {k: store.model_dim(k) for k in model_keys(self.config.models)}

    def input_dim(self) -> int:
        return sum(self.model_dims().values())

    # ----------------------------------------------------------------------------------------- steps
    def embed(self) -> None:
        from datamodules.embed import embed_dataset

        cfg = self.config
        models = [*cfg.models, *cfg.reference_models]
        self.say(f"embed {cfg.dataset} with {', '.join(models)} -> {cfg.store} (finished parts are reused)")
        embed_dataset(cfg.dataset, models, cfg.store, progress=self.progress)

    def store(self) -> Any:
        from datamodules.store.reader import EmbeddingStore

        store = EmbeddingStore(self.config.store)
        wanted = model_keys([*self.config.models, *self.config.reference_models])
        missing = [k for k in wanted if k not in store.models]
        if missing:
            raise ExperimentError(f"{store.path}: models {missing} are not in the store: run the embed step")
        return store

    def baselines(self) -> list[dict[str, Any]]:
        from smec.evaluation.results import read_results, write_results
        from smec.evaluation.store_grid import baseline_rows

        cfg = self.config
        path = self.out / "baselines" / "results.json"
        if not cfg.baselines:
            return []
        if path.exists():
            rows, meta = read_results(path)
            if meta.get("grid") == self.state.grid_signature():
                self.say(f"baselines: reusing {path}")
                return rows
            self.say("baselines: the grid changed, recomputing")
        self.say("baselines: single models, concatenation, PCA, rotation, OPQ + PQ ...")
        start = time.perf_counter()
        store = self.store()
        keys = model_keys(cfg.models)
        rows, input_dim = baseline_rows(
            store, keys, cfg.split, cfg.evaluation, single_only=model_keys(cfg.reference_models)
        )
        seconds = time.perf_counter() - start
        write_results(
            path,
            rows,
            dataset=store.dataset,
            split=cfg.split,
            base_models=keys,
            input_dim=input_dim,
            metadata={"seconds": round(seconds, 1), "grid": self.state.grid_signature()},
        )
        self.say(f"baselines: {len(rows)} rows in {seconds:.0f} s")
        return rows

    def fit_all(self, nonce: str, runs: Sequence[FitRun]) -> None:
        """Fit every run without ``fit.done``, ``jobs`` at a time; raise after all ended if any failed."""
        for run in runs:
            self.state.check_fit(run, self.say)
        # Highest priority first (a stable sort: file order otherwise), so that the slowest fit does not run
        # alone at the end while the other slots idle.
        todo = sorted((r for r in runs if not r.done.exists()), key=lambda r: -r.method.priority)
        if not todo:
            self.say(f"fits: all {len(runs)} done")
            return
        threads = self.config.threads or max(1, (os.cpu_count() or 1) // self.jobs)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self.say(f"fits: {len(todo)} of {len(runs)} to run, {self.jobs} at a time, {threads} threads each")
        by_label = {run.label: run for run in todo}
        jobs = [
            Job(
                label=run.label,
                command=self.fit_command(run, nonce),
                log=run.log,
                budget=epoch_budget(run),
                done_so_far=lambda root=run.root: epochs_logged(root),
                resumed=run.resume_checkpoint() is not None,
            )
            for run in todo
        ]

        def finished(job: Job) -> None:
            by_label[job.label].done.write_text(time.strftime("%F %T\n"))

        failed = run_jobs(
            jobs, self.jobs, env, on_success=finished, desc="fits", unit="epoch", show_progress=self.progress
        )
        if failed:
            raise ComparisonError(
                f"{len(failed)} fit(s) failed: "
                + "; ".join(f"{job.label} (log: {job.log})" for job in failed)
                + ". Fix and rerun: finished fits are kept."
            )

    def evaluate(self, run: FitRun) -> list[dict[str, Any]]:
        """Test rows of a finished fit (cached in ``test.json``), from the checkpoint it selected on dev."""
        from smec.evaluation.results import read_results, write_results

        if run.test_results.exists():
            rows, meta = read_results(run.test_results)
            if meta.get("grid") == self.state.grid_signature(run.method):
                return rows
        rows, result, input_dim = self.test_grid.rows(
            run.root, run.method.name, self.config.method_dims(run.method)
        )
        for row in rows:
            row["seed"] = run.seed
        write_results(
            run.test_results,
            rows,
            dataset=self.config.dataset,
            split=self.config.split,
            base_models=list(self.config.models),
            input_dim=input_dim,
            metadata={
                "checkpoint": result.checkpoint,
                "epoch": result.epoch,
                "dev_score": result.score,
                "seed": run.seed,
                "grid": self.state.grid_signature(run.method),
            },
        )
        return rows

    def check_before_fitting(self, runs: Sequence[FitRun]) -> str:
        """Parse every method's arguments (before anything is written), create the folder, embed, and build
        each method's system on the grid (before any fit); return the run nonce."""
        self.checks.parse(runs)  # a typo is one line, not a failed fit
        nonce = self.state.prepare()
        self.embed()
        self.state.check_store(self.store())
        self.checks.check_systems(runs, self.input_dim())
        return nonce

    def prepare_data(self) -> None:
        """The steps every fit needs first: the store and the baseline grid (`smec compare --prepare`)."""
        self.check_before_fitting(self.fit_runs())
        self.baselines()

    def run(self, only: Sequence[int] | None = None) -> dict[str, Path]:
        """Every step; with ``only`` (task indices of :meth:`ExperimentConfig.runs`) just those fits + evals."""
        start = time.perf_counter()
        runs = self.fit_runs()
        if only is not None:
            bad = [i for i in only if not 0 <= i < len(runs)]
            if bad:
                raise ExperimentError(f"--task {bad[0]}: the experiment has tasks 0..{len(runs) - 1}")
            runs = [runs[i] for i in only]
        nonce = self.check_before_fitting(runs)
        # The baseline grid (numpy / faiss, in this process) overlaps with the fits (subprocesses).
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(self.baselines) if only is None else None
            self.fit_all(nonce, runs)
            baseline = pending.result() if pending is not None else []
        trained = self._test_grid(runs)
        if only is not None:
            return {run.label: run.test_results for run in runs}
        exported = []
        if self.config.export.enabled:
            from smec.experiment.exported import export_best

            exported = export_best(self.config, runs, trained, self.out, self.say)
        paths = self._report(nonce, runs, baseline + trained, exported)
        self.say(f"done in {time.perf_counter() - start:.0f} s")
        return paths

    def _test_grid(self, runs: Sequence[FitRun]) -> list[dict[str, Any]]:
        bar = progress_bar(len(runs), "test grid", self.progress)
        trained: list[dict[str, Any]] = []
        for run in runs:
            bar.set_postfix_str(run.label)
            trained += self.evaluate(run)
            bar.update(1)
        bar.close()
        return trained

    def _report(
        self,
        nonce: str,
        runs: Sequence[FitRun],
        rows: list[dict[str, Any]],
        exported: Sequence[Mapping[str, Any]] = (),
    ) -> dict[str, Path]:
        from smec.evaluation.results import write_results
        from smec.experiment.report import write_report

        model_dims = self.model_dims()
        input_dim = sum(model_dims.values())
        results = write_results(
            self.out / "results.json",
            rows,
            dataset=self.config.dataset,
            split=self.config.split,
            base_models=model_keys(self.config.models),
            input_dim=input_dim,
            metadata={
                "experiment": self.config.name,
                "seeds": list(self.config.seeds),
                "model_dims": model_dims,
            },
        )
        paths = write_report(
            self.config,
            rows,
            input_dim,
            self.out,
            [(r.method.name, r.seed, r.root) for r in runs],
            exported=exported,
            model_dims=model_dims,
        )
        paths["results"] = results
        if self.config.logger == "wandb":
            from smec.experiment.wandb_summary import log_summary

            paths["wandb"] = log_summary(self.config, nonce, rows, paths, self.out)
        return paths


def epochs_logged(root: Path) -> int:
    """Epochs a fit has finished so far, read from its CSV logs (0 when none yet, or while one is half-written)."""
    from smec.experiment.plots import read_curves

    try:
        epochs = read_curves(root).get("train/loss_epoch", {})
    except (OSError, ValueError, TypeError):
        return 0  # a log being written: the next poll reads it
    return max(epochs, default=-1) + 1


def remove_run(out: Path) -> None:
    """Delete a comparison folder (``smec compare --fresh``): only one that holds a comparison (or nothing)."""
    if not out.exists():
        return
    if not (out / "state.json").is_file() and any(out.iterdir()):
        raise ExperimentError(
            f"--fresh: {out} does not hold a comparison (no state.json): not deleting it; pick the run folder "
            "with --out or delete it yourself"
        )
    shutil.rmtree(out)
