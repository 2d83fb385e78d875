"""Experiment loggers. W&B is offline unless credentials exist, so a fit never needs the network."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, WandbLogger


class SmecCSVLogger(CSVLogger):
    """`CSVLogger` whose ``save_dir`` may be left out: the CLI then puts it under ``trainer.default_root_dir``."""

    def __init__(
        self, save_dir: str | None = None, name: str = "csv", version: int | str | None = None, **kwargs: Any
    ):
        super().__init__(save_dir=save_dir or "runs", name=name, version=version, **kwargs)


def wandb_credentials_present() -> bool:
    """An API key in the environment or a `wandb login` entry in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_mode() -> str:
    """``WANDB_MODE`` when set (``online``, ``offline``, ``disabled``, ...), else online with credentials and
    offline without, so a run never needs the network. The one place the project decides it."""
    mode = os.environ.get("WANDB_MODE", "")
    if mode:
        return mode
    return "online" if wandb_credentials_present() else "offline"


class SmecWandbLogger(WandbLogger):
    """`WandbLogger` with the project's conventions.

    Args:
        project: W&B project (default ``smec``).
        group: the experiment; every run of one comparison shares it.
        job_type: ``train`` / ``eval`` / ``summary``.
        tags: free tags; the CLI adds method, base models and dims.
        offline: None (default) = as :func:`wandb_mode` decides (``WANDB_MODE=disabled`` writes nothing);
            offline runs land in ``<save_dir>/wandb/offline-run-*`` and upload later with ``wandb sync``.
        id: run id; the CLI fills in a fresh one and writes it into the saved config, so resuming from that
            config continues the same W&B run.
        save_dir: where the run folder goes (the CLI defaults it to ``trainer.default_root_dir``).
    """

    def __init__(
        self,
        project: str = "smec",
        group: str | None = None,
        job_type: str = "train",
        tags: list[str] | None = None,
        name: str | None = None,
        save_dir: str | None = None,
        offline: bool | None = None,
        id: str | None = None,
        **kwargs: Any,
    ) -> None:
        if offline is None:
            # Not offline for "disabled": Lightning would turn an offline logger into WANDB_MODE=dryrun, and
            # wandb.init reads "disabled" from the environment itself.
            offline = wandb_mode() in ("offline", "dryrun")
        save_dir = save_dir or "runs"
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        super().__init__(
            name=name,
            save_dir=save_dir,
            offline=offline,
            id=id,
            project=project,
            group=group,
            job_type=job_type,
            tags=list(tags or []),
            resume="allow" if id else None,
            **kwargs,
        )
        if self._wandb_init.get("anonymous") is None:
            # Lightning always passes `anonymous`; wandb (0.31 here) warns that it has no effect, None included.
            self._wandb_init.pop("anonymous", None)
