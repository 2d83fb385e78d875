"""`smec compare`: embed → training-free baselines → fits (every method × seed) → test grid → report.

Every step leaves its result on disk and is skipped when that result is there, so an interrupted comparison
continues from what finished when it is run again:

    runs/<name>/
      experiment.yaml          the experiment file of the latest run
      state.json               the run nonce (W&B ids) and the data every result depends on
      baselines/results.json   the training-free grid
      <method>/s<seed>/        one `smec fit` root: fit.json (its settings), config.yaml, checkpoints/, csv/,
                               wandb/, fit.log, fit.done (the fit ended), test.json (its test rows)
      results.json, report.md, pareto.png, curves.png, wandb/ (the summary run)

Fits run as `smec fit` subprocesses (``jobs`` at a time, each with its own torch thread count), resumed from
``checkpoints/last.ckpt`` when one exists; their test rows are computed here, on the checkpoint their
``ModelCheckpoint`` selected on the dev split.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datamodules.store import atomic_write_bytes, atomic_write_json
from smec.experiment.config import ExperimentConfig, ExperimentError, MethodSpec, format_cli_value


class ComparisonError(RuntimeError):
    """A step of the comparison failed (a fit exited non-zero): the message names the run and its log."""


@dataclass(frozen=True)
class FitRun:
    """One (method, seed) fit of a comparison and where it lives."""

    method: MethodSpec
    seed: int
    root: Path

    @property
    def label(self) -> str:
        return f"{self.method.name}/s{self.seed}"

    @property
    def log(self) -> Path:
        return self.root / "fit.log"

    @property
    def done(self) -> Path:
        return self.root / "fit.done"

    @property
    def test_results(self) -> Path:
        return self.root / "test.json"

    @property
    def last_checkpoint(self) -> Path:
        return self.root / "checkpoints" / "last.ckpt"

    def resume_checkpoint(self) -> Path | None:
        """The newest of ``checkpoints/last.ckpt`` and Lightning's SLURM ``hpc_ckpt_*.ckpt``, if any."""
        found = [p for p in [self.last_checkpoint, *self.root.glob("hpc_ckpt_*.ckpt")] if p.exists()]
        return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGTERM this fit when `smec compare` dies, even by kill -9, so no orphan keeps writing its run."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _bar(total: int, desc: str, enabled: bool, unit: str = "run") -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True)


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
        self._data_cache: dict[str, Any] = {}
        self._evaluators: dict[int, Any] = {}
        self._parsed: dict[str, Any] = {}

    # ----------------------------------------------------------------------------------------- layout
    def fit_runs(self) -> list[FitRun]:
        return [FitRun(m, s, self.out / m.name / f"s{s}") for m, s in self.config.runs()]

    def say(self, message: str) -> None:
        print(f"[compare] {message}", file=sys.stderr, flush=True)

    def data_signature(self) -> dict[str, Any]:
        """What every result in the folder depends on: changing it makes all of them stale."""
        cfg = self.config
        return {
            "dataset": cfg.dataset,
            "store": str(cfg.store),
            "models": list(cfg.models),
            "reference_models": list(cfg.reference_models),
            "split": cfg.split,
        }

    def grid_signature(self) -> dict[str, Any]:
        """What a test grid depends on besides the data: a change re-evaluates (no refit)."""
        cfg = self.config
        return {"dims": list(cfg.dims), "precisions": list(cfg.precisions), "baselines": vars(cfg.baselines)}

    def fit_signature(self, run: FitRun) -> dict[str, Any]:
        """What a fit depends on: its recipe (path and content), overrides, seed, trainer profiles."""
        files = [*run.method.config, *self.config.trainer]
        return {
            "recipes": {str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest()[:16] for p in files},
            "args": dict(run.method.args),
            "seed": run.seed,
        }

    def prepare(self) -> str:
        """Create the run folder (or check it holds a comparison of the same data); return the run nonce.

        Editing the experiment file between runs is fine: new methods and seeds are added, a changed grid
        re-evaluates; a fit whose recipe or overrides changed is refused (see :meth:`check_fit`).
        """
        self.out.mkdir(parents=True, exist_ok=True)
        state_path = self.out / "state.json"
        data = self.data_signature()
        if state_path.exists():
            state = json.loads(state_path.read_text())
            if state.get("data") != data:
                raise ExperimentError(
                    f"{self.out} holds a comparison of other data ({state.get('data')}), not {data}: "
                    f"delete it (--fresh) or choose another experiment name"
                )
        else:
            state = {"nonce": uuid.uuid4().hex[:6], "data": data}
            atomic_write_json(state_path, state)
        if self.config.source is not None:
            atomic_write_bytes(self.out / "experiment.yaml", self.config.source.read_bytes())
        return state["nonce"]

    def check_fit(self, run: FitRun) -> None:
        """Record a fit's settings before it starts; refuse to continue one whose settings changed.

        The record binds only once the fit produced something (a checkpoint, or fit.done): a fit that failed
        before its first checkpoint (a typo in its arguments, say) runs again with the corrected settings.
        """
        path = run.root / "fit.json"
        wanted = self.fit_signature(run)
        if path.exists():
            had = json.loads(path.read_text())
            if had == wanted:
                return
            if self.fit_produced(run):
                changed = sorted(k for k in wanted if had.get(k) != wanted[k])
                raise ExperimentError(
                    f"{run.root} was fitted with other settings ({', '.join(changed)} changed): delete that "
                    f"folder to refit it, or give the changed method another name"
                )
            self.say(
                f"{run.label}: its settings changed since a fit that left no checkpoint: starting it again"
            )
        atomic_write_json(path, wanted)

    @staticmethod
    def fit_produced(run: FitRun) -> bool:
        """Whether the fit in ``run.root`` got as far as a checkpoint (or finished)."""
        return (
            run.done.exists()
            or any((run.root / "checkpoints").glob("*.ckpt"))
            or any(run.root.glob("hpc_ckpt_*.ckpt"))
        )

    def check_methods(self, runs: Sequence[FitRun]) -> None:
        """Every method's `smec fit` arguments through the CLI's parser, before anything is embedded or fitted.

        A typo in a method's ``args`` (or its recipe) is one ExperimentError naming the experiment file, the
        method and the key. The parsed configs are kept for :meth:`check_widths`.
        """
        from smec.errors import ConfigError
        from smec.lightning_cli import parse_args

        for run in runs:
            if run.method.name in self._parsed:
                continue
            cmd = self.fit_command(run, "check")  # the nonce only names the W&B run
            try:
                self._parsed[run.method.name] = parse_args(cmd[cmd.index("fit") :])
            except ConfigError as exc:
                raise ExperimentError(f"{self.config.source}: method {run.method.name}: {exc}") from None

    def check_widths(self, runs: Sequence[FitRun]) -> None:
        """The grid's dims against the input's width and each method's declared output width (after embed).

        A method declares its width with a ``model.init_args.output_dim`` (MRL's decoder); without one, its
        output is as wide as its input (SMEC's chain, the adaptors).
        """
        store = self.store()
        width = sum(store.model_dim(k) for k in _keys(self.config.models))
        dims = sorted(self.config.dims)
        source = self.config.source
        wide = [d for d in dims if d > width]
        if wide:
            raise ExperimentError(
                f"{source}: dims {wide} are wider than the input: {', '.join(self.config.models)} concatenate to "
                f"{width} dims"
            )
        for run in runs:
            parsed = self._parsed.get(run.method.name)
            init = parsed.fit.model.get("init_args") if parsed is not None else None
            declared = init.get("output_dim") if init is not None else None
            if isinstance(declared, int) and not isinstance(declared, bool):
                wide = [d for d in dims if d > declared]
                if wide:
                    raise ExperimentError(
                        f"{source}: method {run.method.name}: dims {wide} are wider than its output "
                        f"(model.init_args.output_dim={declared}); every method must produce every dim of the grid"
                    )

    # ----------------------------------------------------------------------------------------- steps
    def embed(self) -> None:
        from datamodules.embed import embed_dataset

        cfg = self.config
        models = [*cfg.models, *cfg.reference_models]
        self.say(f"embed {cfg.dataset} with {', '.join(models)} -> {cfg.store} (finished parts are reused)")
        embed_dataset(cfg.dataset, models, cfg.store, progress=self.progress)

    def store(self) -> Any:
        from datamodules.store import EmbeddingStore, model_key

        store = EmbeddingStore(self.config.store)
        wanted = [*self.config.models, *self.config.reference_models]
        missing = [model_key(m) for m in wanted if model_key(m) not in store.models]
        if missing:
            raise ExperimentError(f"{store.path}: models {missing} are not in the store: run the embed step")
        return store

    def baselines(self) -> list[dict[str, Any]]:
        from smec.commands.eval import baseline_rows
        from smec.evaluation.results import read_results, write_results

        cfg, spec = self.config, self.config.baselines
        path = self.out / "baselines" / "results.json"
        if not spec.enabled:
            return []
        if path.exists():
            rows, meta = read_results(path)
            if meta.get("grid") == self.grid_signature():
                self.say(f"baselines: reusing {path}")
                return rows
            self.say("baselines: the grid changed, recomputing")
        self.say("baselines: single models, concatenation, PCA, rotation, OPQ + PQ ...")
        start = time.perf_counter()
        store = self.store()
        keys = _keys(cfg.models)
        rows, input_dim = baseline_rows(
            store,
            keys,
            cfg.split,
            cfg.dims,
            cfg.precisions,
            fit_sample=spec.fit_sample,
            int_scoring=spec.int_scoring,
            pq=spec.pq,
            pq_max_bits=spec.pq_max_bits,
            single_only=_keys(cfg.reference_models),
        )
        seconds = time.perf_counter() - start
        write_results(
            path,
            rows,
            dataset=store.dataset,
            split=cfg.split,
            base_models=keys,
            input_dim=input_dim,
            metadata={"seconds": round(seconds, 1), "grid": self.grid_signature()},
        )
        self.say(f"baselines: {len(rows)} rows in {seconds:.0f} s")
        return rows

    def fit_command(self, run: FitRun, nonce: str) -> list[str]:
        """The `smec fit` command line of one run (resuming from its last checkpoint when there is one)."""
        cfg = self.config
        loggers: list[dict[str, Any]] = [{"class_path": "smec.loggers.SmecCSVLogger"}]
        if cfg.logger == "wandb":
            loggers.append(
                {
                    "class_path": "smec.loggers.SmecWandbLogger",
                    "init_args": {
                        "project": cfg.wandb_project,
                        "group": cfg.name,
                        "job_type": "train",
                        "name": f"{run.method.name}-s{run.seed}",
                        "id": f"{nonce}-{run.method.name}-s{run.seed}",
                    },
                }
            )
        cmd = [self.python, "-m", "smec.cli", "fit"]
        for profile in (*run.method.config, *cfg.trainer):
            cmd += ["--config", str(profile)]
        cmd += [
            f"--data.init_args.store={cfg.store}",
            f"--data.init_args.models={format_cli_value(_keys(cfg.models))}",
            *run.method.cli_args(),
            f"--seed_everything={run.seed}",
            f"--data.init_args.seed={run.seed}",
            f"--trainer.default_root_dir={run.root}",
            "--trainer.enable_progress_bar=false",
            f"--trainer.logger={json.dumps(loggers)}",
        ]
        resume = run.resume_checkpoint()
        if resume is not None:
            cmd += [f"--ckpt_path={resume}"]
        return cmd

    def fit_all(self, nonce: str, runs: Sequence[FitRun]) -> None:
        """Fit every run without ``fit.done``, ``jobs`` at a time; raise after all ended if any failed."""
        for run in runs:
            self.check_fit(run)
        todo = [r for r in runs if not r.done.exists()]
        if not todo:
            self.say(f"fits: all {len(runs)} done")
            return
        threads = self.config.threads or max(1, (os.cpu_count() or 1) // self.jobs)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self.say(f"fits: {len(todo)} of {len(runs)} to run, {self.jobs} at a time, {threads} threads each")
        # The bar counts epochs (each fit's max_epochs; a fit that stops early fills up its share), so the ETA
        # moves while long fits run instead of only when one ends.
        budget = {run.label: self.epoch_budget(run) for run in todo}
        bar = _bar(sum(budget.values()), "fits", self.progress, unit="epoch")
        shown: dict[str, int] = {}

        def show(run: FitRun, epochs: int) -> None:
            epochs = max(min(epochs, budget[run.label]), shown.get(run.label, 0))  # never moves back
            bar.update(epochs - shown.get(run.label, 0))
            shown[run.label] = epochs

        pending, active, failed = list(todo), [], []
        last_poll = 0.0
        try:
            while pending or active:
                while pending and len(active) < self.jobs:
                    run = pending.pop(0)
                    resumed = run.resume_checkpoint() is not None
                    cmd = self.fit_command(run, nonce)
                    log = run.log.open("a", encoding="utf-8")
                    log.write(
                        f"\n# {'resume' if resumed else 'start'} {time.strftime('%F %T')}: {shlex.join(cmd)}\n"
                    )
                    log.flush()
                    proc = subprocess.Popen(
                        cmd, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent
                    )
                    active.append((run, proc, log))
                    bar.set_postfix_str(", ".join(r.label for r, _, _ in active))
                time.sleep(0.2)
                if time.monotonic() - last_poll > 2.0:
                    last_poll = time.monotonic()
                    for run, _, _ in active:
                        show(run, epochs_logged(run.root))
                for item in list(active):
                    run, proc, log = item
                    if proc.poll() is None:
                        continue
                    log.close()
                    active.remove(item)
                    if proc.returncode == 0:
                        run.done.write_text(time.strftime("%F %T\n"))
                    else:
                        failed.append(run)
                        bar.write(f"[compare] fit {run.label} failed (exit {proc.returncode}): see {run.log}")
                    show(run, budget[run.label])
        except BaseException:
            for _, proc, _log in active:
                proc.terminate()
            for _, proc, log in active:
                proc.wait()
                log.close()
            raise
        finally:
            bar.close()
        if failed:
            raise ComparisonError(
                f"{len(failed)} fit(s) failed: "
                + "; ".join(f"{r.label} (log: {r.log})" for r in failed)
                + ". Fix and rerun: finished fits are kept."
            )

    def epoch_budget(self, run: FitRun) -> int:
        """``trainer.max_epochs`` of a fit: its override, else its recipe's, else 1 (unknown: one tick)."""
        import yaml

        value = run.method.args.get("trainer.max_epochs")
        for path in run.method.config if value is None else ():  # the last file that sets it wins
            recipe = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
            value = (recipe.get("trainer") or {}).get("max_epochs", value)
        return int(value) if isinstance(value, int) and value > 0 else 1

    def _eval_data(self, run_config: dict[str, Any]) -> Any:
        from datamodules.embedding import EmbeddingDataModule

        init = dict(run_config["data"]["init_args"])
        key = json.dumps(
            [init.get("store"), init.get("models"), init.get("normalization"), init.get("model_weights")],
            default=str,
        )
        if key not in self._data_cache:
            dm = EmbeddingDataModule(
                store=init["store"],
                models=init.get("models"),
                normalization=init.get("normalization", "l2-concat-l2"),
                model_weights=init.get("model_weights"),
            )
            self._data_cache[key] = dm.eval_data(self.config.split)
        return self._data_cache[key]

    def _evaluator(self, input_dim: int) -> Any:
        """The baselines' evaluator configuration (commands.eval.store_evaluator), one per input width."""
        from smec.commands.eval import store_evaluator

        spec = self.config.baselines
        if input_dim not in self._evaluators:
            self._evaluators[input_dim] = store_evaluator(
                self.store(), self.config.split, input_dim, spec.fit_sample, spec.int_scoring
            )
        return self._evaluators[input_dim]

    def evaluate(self, run: FitRun) -> list[dict[str, Any]]:
        """Test rows of a finished fit (cached in ``test.json``), from its dev-selected checkpoint."""
        from smec.evaluation.callback import evaluate_system
        from smec.evaluation.results import read_results, write_results

        if run.test_results.exists():
            rows, meta = read_results(run.test_results)
            if meta.get("grid") == self.grid_signature():
                return rows
        import yaml

        run_config = yaml.safe_load((run.root / "config.yaml").read_text(encoding="utf-8"))
        checkpoint = selected_checkpoint(run.root)
        model = load_system(run_config["model"]["class_path"], checkpoint)
        data = self._eval_data(run_config)
        width = int(getattr(model, "output_dim", data.input_dim))
        wide = [d for d in self.config.dims if d > width]
        if wide:  # check_widths catches this before the fit; a fit from before that check may not match
            raise ExperimentError(
                f"{self.config.source}: dims {wide} are wider than the output of {run.label} ({width} dims, "
                f"{checkpoint})"
            )
        rows = evaluate_system(
            model,
            data.queries,
            data.corpus,
            self._evaluator(int(data.input_dim)),
            list(self.config.dims),
            self.config.precisions,
            run.method.name,
        )
        for row in rows:
            row["seed"] = run.seed
        write_results(
            run.test_results,
            rows,
            dataset=self.config.dataset,
            split=self.config.split,
            base_models=list(self.config.models),
            input_dim=int(data.input_dim),
            metadata={"checkpoint": str(checkpoint), "seed": run.seed, "grid": self.grid_signature()},
        )
        return rows

    def prepare_data(self) -> None:
        """The steps every fit needs first: the store and the baseline grid (`smec compare --prepare`)."""
        runs = self.fit_runs()
        self.check_methods(runs)
        self.prepare()
        self.embed()
        self.check_widths(runs)
        self.baselines()

    def run(self, only: Sequence[int] | None = None) -> dict[str, Path]:
        """Every step; with ``only`` (task indices of :meth:`ExperimentConfig.runs`) just those fits + evals."""
        from smec.evaluation.results import write_results

        start = time.perf_counter()
        runs = self.fit_runs()
        if only is not None:
            bad = [i for i in only if not 0 <= i < len(runs)]
            if bad:
                raise ExperimentError(f"--task {bad[0]}: the experiment has tasks 0..{len(runs) - 1}")
            runs = [runs[i] for i in only]
        self.check_methods(runs)  # before anything is written: a typo is one line, not a failed fit
        nonce = self.prepare()
        self.embed()
        self.check_widths(runs)
        # The baseline grid (numpy / faiss, in this process) overlaps with the fits (subprocesses).
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(self.baselines) if only is None else None
            self.fit_all(nonce, runs)
            baseline = pending.result() if pending is not None else []
        bar = _bar(len(runs), "test grid", self.progress)
        trained: list[dict[str, Any]] = []
        for run in runs:
            bar.set_postfix_str(run.label)
            trained += self.evaluate(run)
            bar.update(1)
        bar.close()
        if only is not None:
            return {run.label: run.test_results for run in runs}
        from smec.experiment.report import write_report

        rows = baseline + trained
        store = self.store()
        input_dim = sum(store.model_dim(k) for k in _keys(self.config.models))
        results = write_results(
            self.out / "results.json",
            rows,
            dataset=self.config.dataset,
            split=self.config.split,
            base_models=list(_keys(self.config.models)),
            input_dim=input_dim,
            metadata={"experiment": self.config.name, "seeds": list(self.config.seeds)},
        )
        paths = write_report(
            self.config, rows, input_dim, self.out, [(r.method.name, r.seed, r.root) for r in runs]
        )
        paths["results"] = results
        if self.config.logger == "wandb":
            from smec.experiment.wandb_summary import log_summary

            paths["wandb"] = log_summary(self.config, nonce, rows, paths, self.out)
        self.say(f"done in {time.perf_counter() - start:.0f} s")
        return paths


def _keys(models: Sequence[str]) -> list[str]:
    from datamodules.store import model_key

    return [model_key(m) for m in models]


def epochs_logged(root: Path) -> int:
    """Epochs a fit has finished so far, read from its CSV logs (0 when none yet, or while one is half-written)."""
    from smec.experiment.plots import read_curves

    try:
        epochs = read_curves(root).get("train/loss_epoch", {})
    except (OSError, ValueError, TypeError):
        return 0  # a log being written: the next poll reads it
    return max(epochs, default=-1) + 1


def selected_checkpoint(root: Path) -> Path:
    """The checkpoint the fit in ``root`` selected on dev (see :func:`smec.checkpoint.selected_checkpoint`)."""
    from smec.checkpoint import selected_checkpoint as select

    return select(root / "checkpoints", "test grid")


def load_system(class_path: str, checkpoint: Path) -> Any:
    """A compression system of ``class_path`` restored from a Lightning checkpoint, in eval mode on CPU.

    The checkpoint is read with ``weights_only=True`` (:func:`smec.checkpoint.load_checkpoint` first, for one
    clear line on a file that is not a checkpoint); ``class_path`` must name a compression system.
    """
    import importlib

    import torch

    from smec.checkpoint import SAFE_GLOBALS, load_checkpoint
    from smec.systems.base import CompressionSystem

    module_name, _, cls_name = class_path.rpartition(".")
    try:
        cls: Callable[..., Any] = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError, ValueError):
        cls = None  # type: ignore[assignment]
    if not (isinstance(cls, type) and issubclass(cls, CompressionSystem)):
        raise ExperimentError(
            f"{checkpoint}: model.class_path {class_path!r} is not a smec compression system"
        )
    load_checkpoint(checkpoint, "test grid")
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        model = cls.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True)
    model.eval()
    return model


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
