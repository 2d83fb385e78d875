"""``<trainer.default_root_dir>/fit_result.json``: what a finished `smec fit` selected, written by the fit itself.

Every `smec fit` that returns normally writes it at its end (:meth:`smec.lightning_cli.SmecCLI.after_fit`, on
global rank 0): the checkpoint its selecting ``ModelCheckpoint`` kept (best on the monitor, e.g. dev
``val/ndcg@10/mean``; its ``last`` checkpoint when nothing was monitored), that checkpoint's epoch and monitor
value, the system's class, and the data settings a test grid needs to rebuild the fit's input (store, models,
normalisation, model weights), the run's regime (``regime:`` of the recipe, docs/methods.md#supervised-regime)
and its budget (optimizer steps and epochs trained). `smec compare` evaluates a fit from this file alone: it needs neither
Lightning's callback state nor the fit's config.yaml. A fit that is stopped (a signal, an error) writes
nothing, and a resumed fit rewrites the file when it ends.

The checkpoint is stored relative to the run folder, so the folder can move, and on reading it must resolve
inside the folder: a path read from a file never leads outside its run.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from smec.errors import ConfigError

__all__ = ["FIT_RESULT", "FitResult", "read_fit_result", "write_fit_result"]

FIT_RESULT = "fit_result.json"
FORMAT = 1


@dataclass(frozen=True)
class FitResult:
    """A finished fit's selection (see the module docstring).

    Attributes:
        checkpoint: the selected checkpoint, relative to the run folder.
        epoch: its epoch (0-based), monitor: the metric it was selected on (None: not monitored), score: its value.
        model_class: the system's import path, e.g. ``smec.systems.mrl.MRLDecoderModule``.
        data: ``store``, ``models`` (the concatenated model keys, in order), ``normalization``, ``model_weights``.
        regime: ``unsupervised`` or ``supervised``, the recipe's ``regime:`` tag (files written before it existed
            read as ``unsupervised``).
        budget: ``optimizer_steps`` (the trainer's global step at the end: every method's comparable budget),
            ``epochs`` (epochs run) and what the system adds (``CompressionSystem.budget_details``: SMEC's
            ``steps_per_stage``, the steps each trained block got); None in files written before it existed.
    """

    checkpoint: str
    epoch: int | None
    monitor: str | None
    score: float | None
    model_class: str
    data: dict[str, Any]
    regime: str = "unsupervised"
    budget: dict[str, Any] | None = None

    def checkpoint_path(self, root: Path) -> Path:
        return Path(root) / self.checkpoint


def _selecting_checkpoint(trainer: Any) -> Any:
    """The fit's selecting ModelCheckpoint: the first that is not the resume checkpoint, else that one."""
    from smec.checkpointing import ResumeCheckpoint

    callbacks = list(trainer.checkpoint_callbacks)
    chosen = [cb for cb in callbacks if not isinstance(cb, ResumeCheckpoint)] or callbacks
    return chosen[0] if chosen else None


def write_fit_result(trainer: Any, model: Any, datamodule: Any, regime: str = "unsupervised") -> Path | None:
    """Write ``fit_result.json`` into ``trainer.default_root_dir`` (rank 0 only; returns its path there)."""
    from datamodules.files import atomic_write_json
    from smec.checkpoint import load_checkpoint

    if not trainer.is_global_zero:
        return None
    root = Path(trainer.default_root_dir)
    callback = _selecting_checkpoint(trainer)
    found = (callback.best_model_path or callback.last_model_path) if callback is not None else ""
    if not found:
        raise ConfigError(
            f"{root}: the fit saved no checkpoint to select (a ModelCheckpoint is needed: fit_callbacks, or "
            "trainer.callbacks)"
        )
    path = Path(found).resolve()
    try:
        relative = path.relative_to(root.resolve())
    except ValueError:
        raise ConfigError(
            f"{path}: the selected checkpoint is outside the run folder {root} (keep ModelCheckpoint's dirpath "
            "inside trainer.default_root_dir)"
        ) from None
    epoch = load_checkpoint(path, "fit_result").get("epoch")
    score = callback.best_model_score if callback.best_model_path else None
    result = FitResult(
        checkpoint=relative.as_posix(),
        epoch=None if epoch is None else int(epoch),
        monitor=callback.monitor if callback.best_model_path else None,
        score=None if score is None else float(score),
        model_class=f"{type(model).__module__}.{type(model).__qualname__}",
        data={
            "store": str(datamodule.hparams.get("store", datamodule.store.path)),
            "models": list(datamodule.model_keys),
            "normalization": datamodule.normalization,
            "model_weights": None if datamodule.model_weights is None else list(datamodule.model_weights),
        },
        regime=regime,
        budget={
            "optimizer_steps": int(trainer.global_step),
            "epochs": int(trainer.current_epoch),
            **(model.budget_details(trainer) if hasattr(model, "budget_details") else {}),
        },
    )
    atomic_write_json(root / FIT_RESULT, {"format": FORMAT, **asdict(result)})
    return root / FIT_RESULT


def read_fit_result(root: Path, what: str = "fit result") -> FitResult:
    """The :class:`FitResult` a fit wrote into ``root``; one ConfigError line for a missing or bad file."""
    path = Path(root) / FIT_RESULT
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{what}: {path} is missing: the fit in {root} did not finish (or ran with an older smec): fit it "
            "again (resume: --ckpt_path last)"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what}: {path} is not valid JSON ({exc})") from None
    fields = set(FitResult.__dataclass_fields__)
    required = {k for k, f in FitResult.__dataclass_fields__.items() if f.default is dataclasses.MISSING}
    if not isinstance(raw, dict) or raw.get("format") != FORMAT or not required <= set(raw):
        raise ConfigError(f"{what}: {path} is not a fit result of format {FORMAT} (keys {sorted(required)})")
    result = FitResult(**{k: raw[k] for k in fields if k in raw})
    checkpoint = result.checkpoint_path(root)
    if not isinstance(result.checkpoint, str) or not checkpoint.resolve().is_relative_to(
        Path(root).resolve()
    ):
        raise ConfigError(f"{what}: {path}: checkpoint {result.checkpoint!r} is not inside {root}")
    if not checkpoint.is_file():
        raise ConfigError(f"{what}: {path}: its checkpoint {checkpoint} does not exist")
    return result
