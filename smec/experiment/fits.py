"""The fits of a comparison: where each lives, its `smec fit` command line, and the checks before any runs.

Every (method, seed) of an experiment is one `smec fit` subprocess in ``runs/<name>/<method>/s<seed>/``. The
command line composes the method's recipes and the trainer profiles, then sets what the experiment decides for
every fit: the store and models, the seed, the run folder, the loggers, the grid as the system's
``model.init_args.eval_dims`` (so dev selection and the test grid evaluate the same sizes) and the experiment's
evaluation spec as ``--evaluation`` (so dev selection uses the test grid's evaluator settings, see
:mod:`smec.fit_callbacks`).

Before anything is embedded or fitted, :class:`MethodChecks` parses each method's command line through the CLI
(a typo is one line naming the method and the key) and, once the store gives the input width, builds each
method's system with ``eval_dims`` = the grid: a grid size a method cannot produce is the system's own
ConfigError, raised before any fit starts.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smec.experiment.config import ExperimentConfig, ExperimentError, MethodSpec, format_cli_value
from smec.fit_result import FIT_RESULT

__all__ = ["FitRun", "MethodChecks", "epoch_budget", "fit_command", "model_keys"]


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
        """Written by the runner when the fit's process exited 0."""
        return self.root / "fit.done"

    @property
    def result(self) -> Path:
        """Written by the fit itself at its end (:mod:`smec.fit_result`): the checkpoint it selected."""
        return self.root / FIT_RESULT

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


def model_keys(models: Sequence[str]) -> list[str]:
    """The store keys of model specs (``tests.x:make`` -> ``tests.x--make``)."""
    from datamodules.store.layout import model_key

    return [model_key(m) for m in models]


def _loggers(config: ExperimentConfig, run: FitRun, nonce: str) -> list[dict[str, Any]]:
    loggers: list[dict[str, Any]] = [{"class_path": "smec.loggers.SmecCSVLogger"}]
    if config.logger == "wandb":
        loggers.append(
            {
                "class_path": "smec.loggers.SmecWandbLogger",
                "init_args": {
                    "project": config.wandb_project,
                    "group": config.name,
                    "job_type": "train",
                    "name": f"{run.method.name}-s{run.seed}",
                    "id": f"{nonce}-{run.method.name}-s{run.seed}",
                },
            }
        )
    return loggers


def fit_command(config: ExperimentConfig, run: FitRun, nonce: str, python: str = sys.executable) -> list[str]:
    """The `smec fit` command line of one run (resuming from its last checkpoint when there is one)."""
    cmd = [python, "-m", "smec.cli", "fit"]
    for recipe in [*run.method.config, *config.trainer]:
        cmd += ["--config", str(recipe)]
    cmd += [
        f"--data.init_args.store={config.store}",
        f"--data.init_args.models={format_cli_value(model_keys(config.models))}",
        *run.method.cli_args(),
        f"--model.init_args.eval_dims={format_cli_value(list(config.method_dims(run.method)))}",
        f"--evaluation={json.dumps(config.method_evaluation(run.method).to_dict())}",
        f"--seed_everything={run.seed}",
        f"--data.init_args.seed={run.seed}",
        f"--trainer.default_root_dir={run.root}",
        "--trainer.enable_progress_bar=false",
        f"--trainer.logger={json.dumps(_loggers(config, run, nonce))}",
    ]
    resume = run.resume_checkpoint()
    if resume is not None:
        cmd += [f"--ckpt_path={resume}"]
    return cmd


def epoch_budget(run: FitRun) -> int:
    """``trainer.max_epochs`` of a fit: its override, else its last recipe's that sets it, else 1 (one tick)."""
    import yaml

    value = run.method.args.get("trainer.max_epochs")
    if value is None:
        for recipe in run.method.config:
            trainer = (yaml.safe_load(Path(recipe).read_text(encoding="utf-8")) or {}).get("trainer") or {}
            value = trainer.get("max_epochs", value)
    return int(value) if isinstance(value, int) and value > 0 else 1


class MethodChecks:
    """Each method's `smec fit` arguments checked before anything runs: parsed, then its system built.

    Args:
        config: the experiment.
        python: the interpreter of the fits (only in the command lines that are parsed).
    """

    def __init__(self, config: ExperimentConfig, python: str = sys.executable) -> None:
        self.config = config
        self.python = python
        self._parsed: dict[str, Any] = {}

    def parse(self, runs: Sequence[FitRun]) -> None:
        """Every method's command line through the CLI's parser (nothing instantiated or written).

        A typo in a method's ``args`` (or its recipe) is one ExperimentError naming the experiment file, the
        method and the key.
        """
        from smec.errors import ConfigError
        from smec.lightning_cli import parse_args

        for run in runs:
            if run.method.name in self._parsed:
                continue
            cmd = fit_command(self.config, run, "check", self.python)  # the nonce only names the W&B run
            try:
                self._parsed[run.method.name] = parse_args(cmd[cmd.index("fit") :])
            except ConfigError as exc:
                raise ExperimentError(f"{self.config.source}: method {run.method.name}: {exc}") from None

    def check_systems(self, runs: Sequence[FitRun], input_dim: int) -> None:
        """Build each method's data module, and its system on the ``input_dim``-wide input with the grid as its
        ``eval_dims``.

        A grid size it cannot produce (MRL: a size it does not train; SMEC: a size not in its chain; any: wider
        than its output) is its constructor's ConfigError, named here with the method. Call :meth:`parse` first.
        """
        from datamodules.errors import InputError
        from smec.lightning_cli import build_data, build_model

        wide = [d for d in self.config.dims if d > input_dim]
        if wide:
            raise ExperimentError(
                f"{self.config.source}: dims {wide} are wider than the input: {', '.join(self.config.models)} "
                f"concatenate to {input_dim} dims"
            )
        for name in dict.fromkeys(run.method.name for run in runs):
            try:
                build_data(self._parsed[name].fit.data)
                build_model(self._parsed[name].fit.model, input_dim)
            except InputError as exc:
                raise ExperimentError(f"{self.config.source}: method {name}: {exc}") from None
