"""The training verbs of `smec` (fit / validate / test / predict): a LightningCLI over systems and DataModules.

Recipes compose with repeated ``--config`` (configs/mrl.yaml, then trainer/ and logger/ profiles). Conventions
added on top of LightningCLI:

- ``data.input_dim`` (read from the store) is linked to ``model.init_args.input_dim``;
- loggers and checkpoints default to ``trainer.default_root_dir`` (``runs/<name>``), and the resolved config
  is saved there (``config.yaml``) and sent to the loggers;
- a W&B logger without an ``id`` gets one written into the saved config, so
  ``smec fit --config runs/<name>/config.yaml --ckpt_path last`` resumes the same W&B run.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from datamodules.embedding import EmbeddingDataModule
from smec.systems.base import CompressionSystem


class LoggerSaveConfigCallback(SaveConfigCallback):
    """Save the resolved config as ``<trainer.default_root_dir>/config.yaml`` and send it to every logger.

    Lightning's callback writes into ``trainer.log_dir``, which is the first logger's version folder
    (``csv/version_0``) or its save_dir depending on the logger; a fixed place next to ``checkpoints/`` is what
    ``smec fit --config runs/<name>/config.yaml --ckpt_path last`` and `smec compare` rely on.
    """

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if self.already_saved:
            return
        if trainer.is_global_zero:
            root = Path(trainer.default_root_dir)
            root.mkdir(parents=True, exist_ok=True)
            self.parser.save(
                self.config,
                str(root / self.config_filename),
                skip_none=False,
                overwrite=True,
                multifile=self.multifile,
            )
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)

    def save_config(self, trainer: Any, pl_module: Any, stage: str) -> None:
        config = self.config.as_dict()
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": config})


def _get(ns: Any, key: str, default: Any = None) -> Any:
    return ns.get(key, default) if hasattr(ns, "get") else getattr(ns, key, default)


class SmecCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.input_dim", "model.init_args.input_dim", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        root = _get(cfg.trainer, "default_root_dir") or "runs/default"
        cfg.trainer.default_root_dir = root
        loggers = cfg.trainer.logger
        for logger in loggers if isinstance(loggers, list) else [loggers]:
            class_path = _get(logger, "class_path", "") if logger not in (None, True, False) else ""
            if not class_path:
                continue
            init = logger.init_args
            if _get(init, "save_dir") is None:
                init.save_dir = root
            # Under `wandb agent` the sweep names the run (WANDB_RUN_ID): an id of ours would fork it.
            if (
                class_path.endswith("WandbLogger")
                and not _get(init, "id")
                and not os.environ.get("WANDB_RUN_ID")
            ):
                init.id = uuid.uuid4().hex[:8]

    def before_fit(self) -> None:
        check = getattr(self.datamodule, "check_world_size", None)
        if check is not None:  # in the launching process: before DDP starts the others, before any output
            check(self.trainer.world_size)
        self._tag_run()
        for cb in self.trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.dirpath is None:
                cb.dirpath = str(Path(self.trainer.default_root_dir) / "checkpoints")

    def _tag_run(self) -> None:
        from smec.loggers import SmecWandbLogger

        model, data = self.model, self.datamodule
        tags = [f"method:{getattr(model, 'method_name', type(model).__name__)}"]
        tags += [f"model:{k}" for k in getattr(data, "model_keys", [])]
        tags += [f"dims:{'-'.join(map(str, getattr(model, 'eval_dims', ())))}"]
        for logger in self.trainer.loggers:
            if isinstance(logger, SmecWandbLogger):
                logger._wandb_init["tags"] = sorted({*logger._wandb_init.get("tags", []), *tags})


def run_lightning_cli(args: list[str], **kwargs: Any) -> SmecCLI:
    import warnings

    # `smec fit ...` hands its own argv over on purpose; Lightning warns whenever args and sys.argv both exist.
    warnings.filterwarnings(
        "ignore", message="LightningCLI's args parameter is intended", category=UserWarning
    )
    return SmecCLI(
        CompressionSystem,
        EmbeddingDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=LoggerSaveConfigCallback,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"default_env": False},
        args=args,
        **kwargs,
    )
