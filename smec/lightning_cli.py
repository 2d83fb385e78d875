"""The training verbs of `smec` (fit / validate / test / predict): a LightningCLI over systems and DataModules.

Recipes compose with repeated ``--config`` (configs/mrl.yaml, then trainer/ and logger/ profiles). Conventions
added on top of LightningCLI:

- ``data.input_dim`` (read from the store) is linked to ``model.init_args.input_dim``;
- the project's standard callbacks (dev retrieval evaluation, best-on-dev ``ModelCheckpoint``,
  ``ResumeCheckpoint``, ``EarlyStopping``) come from two sections instead of each recipe's
  ``trainer.callbacks``: ``evaluation:`` (the :class:`~smec.evaluation.spec.EvaluationSpec` of the dev
  evaluation) and ``fit_callbacks:`` (:class:`~smec.fit_callbacks.FitCallbacks`: patience, ...); see
  :mod:`smec.fit_callbacks`;
- a fit that ends normally writes ``<trainer.default_root_dir>/fit_result.json`` (:mod:`smec.fit_result`): the
  checkpoint it selected, its epoch and score, the data settings a test grid needs, the run's ``regime`` and its
  optimizer-step budget;
- ``regime:`` (``unsupervised``, the default, or ``supervised``) names the training regime a recipe belongs to
  (configs/regimes/, docs/methods.md#supervised-regime): a tag only, recorded in config.yaml, fit_result.json and
  the W&B tags (``regime:<name>``); the overlays set the settings that make the regime;
- loggers and checkpoints default to ``trainer.default_root_dir`` (``runs/<name>``), and the resolved config
  is saved there (``config.yaml``) and sent to the loggers;
- a W&B logger without an ``id`` gets one written into the saved config, so
  ``smec fit --config runs/<name>/config.yaml --ckpt_path last`` resumes the same W&B run;
- ``--ckpt_path`` (a file, ``last``, ``best`` or ``hpc``) is resolved inside the run's ``checkpoints/`` folder,
  read with ``weights_only=True`` (:mod:`smec.checkpoint`) and checked against the config: a checkpoint trained
  with other model or input settings is an error naming every differing key (Lightning would otherwise merge
  the checkpoint's hyper-parameters into the config, silently replacing the command line's);
- validate / test / predict need a checkpoint and write nothing into the run folder: no config.yaml, no logger
  (their metrics are printed; predict's output is its writer's folder);
- every input error, from the parser (unknown key, wrong type, bad YAML), a constructor, the checkpoint or
  Lightning's ``MisconfigurationException``, is one :class:`~smec.errors.ConfigError` line naming the file or
  option, raised before anything is written (fit checks that ``trainer.default_root_dir`` can be written).
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Any, Literal

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from datamodules.embedding import EmbeddingDataModule
from datamodules.errors import InputError
from datamodules.paths import check_output_dir
from smec.checkpoint import check_matches, load_checkpoint, selected_checkpoint
from smec.errors import ConfigError
from smec.evaluation.errors import EvaluationError
from smec.evaluation.spec import EvaluationSpec
from smec.fit_callbacks import FitCallbacks
from smec.systems.base import CompressionSystem


class LoggerSaveConfigCallback(SaveConfigCallback):
    """Save the resolved config as ``<trainer.default_root_dir>/config.yaml`` and send it to every logger.

    Lightning's callback writes into ``trainer.log_dir``, which is the first logger's version folder
    (``csv/version_0``) or its save_dir depending on the logger; a fixed place next to ``checkpoints/`` is what
    ``smec fit --config runs/<name>/config.yaml --ckpt_path last`` relies on (`smec compare` reads a fit's
    ``fit_result.json`` instead, :mod:`smec.fit_result`).

    Written when the fit starts (after every setup hook and the checkpoint restore passed), and only by fit:
    a config that fails, or a validate / test / predict run, leaves the saved config as it was.
    """

    held_loggers: list[Any] | None = None
    """The fit's loggers, held back by :meth:`SmecCLI.before_fit` until the fit starts (see there)."""

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        pass  # Lightning's callback saves here, before the model's setup checks: see on_fit_start

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if self.held_loggers is not None:
            trainer.loggers, self.held_loggers = self.held_loggers, None
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
            self.save_config(trainer, pl_module, "fit")
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)

    def save_config(self, trainer: Any, pl_module: Any, stage: str) -> None:
        config = self.config.as_dict()
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": config})


def _get(ns: Any, key: str, default: Any = None) -> Any:
    return ns.get(key, default) if hasattr(ns, "get") else getattr(ns, key, default)


class SmecCLI(LightningCLI):
    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        # Parse errors raise (run_lightning_cli turns them into one line) instead of printing usage and exiting;
        # no abbreviations, so `--trainer.max_epoch 3` is the error it is in a YAML file, not max_epochs.
        kwargs.setdefault("exit_on_error", False)
        kwargs.setdefault("allow_abbrev", False)
        return super().init_parser(**kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.input_dim", "model.init_args.input_dim", apply_on="instantiate")
        parser.add_class_arguments(EvaluationSpec, "evaluation", instantiate=False)
        parser.add_class_arguments(FitCallbacks, "fit_callbacks", instantiate=False)
        parser.add_argument(
            "--regime",
            type=Literal["unsupervised", "supervised"],
            default="unsupervised",
            help="the training regime the recipe belongs to (configs/regimes/): recorded, changes nothing",
        )

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        """The trainer, with the standard callbacks (:mod:`smec.fit_callbacks`) after ``trainer.callbacks``."""
        listed = self._get(self.config_init, "trainer", default={}).get("callbacks") or []
        listed = listed if isinstance(listed, list) else [listed]
        return super().instantiate_trainer(**kwargs, callbacks=[*listed, *self._standard_callbacks()])

    def _standard_callbacks(self) -> list[Any]:
        spec_args = _as_dict(self._get(self.config, "evaluation", default=None))
        callback_args = _as_dict(self._get(self.config, "fit_callbacks", default=None))
        try:
            spec = EvaluationSpec(**spec_args)
        except EvaluationError as exc:
            raise ConfigError(f"evaluation: {exc}") from None
        return FitCallbacks(**callback_args).build(spec)

    def after_fit(self) -> None:
        from smec.fit_result import write_fit_result

        write_fit_result(self.trainer, self.model, self.datamodule, regime=self._regime())

    def _regime(self) -> str:
        return str(self._get(self.config, "regime", default="unsupervised") or "unsupervised")

    def _parse_ckpt_path(self) -> None:
        """Lightning parses a checkpoint's hyper-parameters into the config here, silently replacing the
        command line's. We compare them instead, once the classes exist (:meth:`_prepare_checkpoint`)."""

    def _set_seed(self) -> None:
        try:
            super()._set_seed()
        except ValueError as exc:  # an out-of-range seed
            raise ConfigError(f"seed_everything: {exc}") from None

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        if _get(cfg, "weights_only") is False:
            raise ConfigError(
                "--weights_only false: smec reads checkpoints with weights_only=true only (a checkpoint of ours "
                "never needs more; a crafted one could run code)"
            )
        root = _get(cfg.trainer, "default_root_dir") or "runs/default"
        cfg.trainer.default_root_dir = root
        if self.subcommand not in (None, "fit"):
            # validate / test / predict evaluate a finished run: they log nothing into its folder.
            cfg.trainer.logger = False
            return
        check_output_dir(root, "trainer.default_root_dir", ConfigError)
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

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except MisconfigurationException as exc:
            raise ConfigError(f"trainer: {exc}") from None
        except ValueError as exc:
            # jsonargparse wraps what a constructor raised (a ConfigError of ours) in its Union report.
            cause = _input_error_in(exc)
            if cause is None:
                raise
            raise cause from None

    def before_fit(self) -> None:
        self._prepare_checkpoint()
        check = getattr(self.datamodule, "check_world_size", None)
        if check is not None:  # in the launching process: before DDP starts the others, before any output
            check(self.trainer.world_size)
        self._tag_run()
        # Lightning creates every logger's folder (csv/version_N, the W&B run) before the datamodule's and the
        # model's setup hooks, where some settings are checked (SMEC's data mode, model.extend_from). Held back
        # until the fit starts, a config those hooks refuse leaves nothing in the run folder. Hyper-parameters
        # are logged after on_fit_start, so the loggers see everything they saw before.
        saver = next((c for c in self.trainer.callbacks if isinstance(c, LoggerSaveConfigCallback)), None)
        if saver is not None and self.trainer.loggers:
            saver.held_loggers = list(self.trainer.loggers)
            self.trainer.loggers = []

    def before_validate(self) -> None:
        self._prepare_checkpoint()

    def before_test(self) -> None:
        self._prepare_checkpoint()

    def before_predict(self) -> None:
        self._prepare_checkpoint()

    def _checkpoint_dirs(self) -> list[Path]:
        """Every ModelCheckpoint's folder (default: ``<trainer.default_root_dir>/checkpoints``)."""
        folders = []
        for cb in self.trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint):
                if cb.dirpath is None:
                    cb.dirpath = str(Path(self.trainer.default_root_dir) / "checkpoints")
                folders.append(Path(cb.dirpath))
        return folders or [Path(self.trainer.default_root_dir) / "checkpoints"]

    def _resolve_checkpoint(self, ckpt_path: Any, folders: list[Path]) -> Path | None:
        """``--ckpt_path`` as a file: a path, or ``last`` / ``best`` / ``hpc`` looked up in the run's folders."""
        from lightning.fabric.plugins.environments import SLURMEnvironment

        hpc = self.trainer._checkpoint_connector._hpc_resume_path
        if ckpt_path is None:
            # Lightning resumes a requeued SLURM job from its hpc checkpoint by itself: check that one too.
            return Path(hpc) if hpc is not None and SLURMEnvironment.detect() else None
        if ckpt_path == "last":
            found = [p for f in folders if f.is_dir() for p in f.glob("last*.ckpt") if p.is_file()]
            if not found and self.subcommand != "fit":
                raise ConfigError(f"--ckpt_path last: no last*.ckpt in {', '.join(map(str, folders))}")
            # A first fit with `--ckpt_path last` starts fresh (Lightning's convention), a rerun resumes.
            return max(found, key=lambda p: p.stat().st_mtime) if found else None
        if ckpt_path == "best":
            return selected_checkpoint(folders[0], "--ckpt_path best")
        if ckpt_path == "hpc":
            if hpc is None:
                raise ConfigError(f"--ckpt_path hpc: no hpc_ckpt_*.ckpt in {self.trainer.default_root_dir}")
            return Path(hpc)
        return Path(ckpt_path)

    def _prepare_checkpoint(self) -> None:
        """Resolve ``--ckpt_path``, read it safely, and refuse a checkpoint of another configuration."""
        subcommand = str(self.subcommand)
        cfg = self.config_init[subcommand]
        folders = self._checkpoint_dirs()  # also where this fit saves its checkpoints
        path = self._resolve_checkpoint(cfg.get("ckpt_path"), folders)
        if path is None and subcommand != "fit":
            raise ConfigError(
                f"--ckpt_path: smec {subcommand} needs a trained checkpoint, e.g. --ckpt_path best (the one the "
                f"fit selected in {folders[0]}), last, or a file"
            )
        if path is not None:
            checkpoint = load_checkpoint(path, "--ckpt_path")
            data = self.datamodule
            check_matches(
                path,
                checkpoint,
                dict(self.model.hparams),
                dict(data.hparams) if data is not None else None,
                fit=subcommand == "fit",
                store_models=data.store.models if isinstance(data, EmbeddingDataModule) else None,
            )
        cfg["ckpt_path"] = None if path is None else str(path)
        cfg["weights_only"] = True

    def _tag_run(self) -> None:
        from smec.loggers import SmecWandbLogger

        model, data = self.model, self.datamodule
        tags = [f"method:{getattr(model, 'method_name', type(model).__name__)}"]
        tags += [f"model:{k}" for k in getattr(data, "model_keys", [])]
        tags += [f"dims:{'-'.join(map(str, getattr(model, 'eval_dims', ())))}", f"regime:{self._regime()}"]
        for logger in self.trainer.loggers:
            if isinstance(logger, SmecWandbLogger):
                logger._wandb_init["tags"] = sorted({*logger._wandb_init.get("tags", []), *tags})


def _as_dict(ns: Any) -> dict[str, Any]:
    """A parsed section (jsonargparse Namespace, or None) as plain keyword arguments."""
    if ns is None:
        return {}
    return dict(ns.as_dict()) if hasattr(ns, "as_dict") else dict(vars(ns))


def _input_error_in(exc: BaseException) -> InputError | None:
    """The InputError that caused ``exc``, following ``__cause__`` / ``__context__``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, InputError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _cli_kwargs() -> dict[str, Any]:
    return {
        "subclass_mode_model": True,
        "subclass_mode_data": True,
        "save_config_callback": LoggerSaveConfigCallback,
        "save_config_kwargs": {"overwrite": True},
        "parser_kwargs": {"default_env": False},
    }


class _NoTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")  # an advertisement for another logger


def quiet_expected_warnings() -> None:
    """Silence what Lightning and torch print in every fit that says nothing about this run (so that fit.log
    shows what does): each filter names the one message it drops. Calling it again adds nothing."""
    import warnings

    # `smec fit ...` hands its own argv over on purpose; Lightning warns whenever args and sys.argv both exist.
    warnings.filterwarnings(
        "ignore", message="LightningCLI's args parameter is intended", category=UserWarning
    )
    # Lightning 2.6 builds torch's LeafSpec, which torch 2.13 deprecates: theirs to change, once per fit.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # Our streams define __len__ and split whole windows (or batches) between DataLoader workers, so the length
    # Lightning warns about is exact (tests/datamodules/test_embedding.py checks it with workers).
    warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined")

    tips = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _NoTips) for f in tips.filters):
        tips.addFilter(_NoTips())


def run_lightning_cli(args: list[str], **kwargs: Any) -> SmecCLI:
    """``smec <verb> ...``: the LightningCLI, with every input error raised as one ConfigError line."""
    from jsonargparse import ArgumentError

    from smec.config_errors import describe_parse_error, read_config_files

    quiet_expected_warnings()
    configs = read_config_files(args)
    try:
        return SmecCLI(CompressionSystem, EmbeddingDataModule, args=args, **{**_cli_kwargs(), **kwargs})
    except ArgumentError as exc:
        raise ConfigError(describe_parse_error(str(exc), args, configs)) from None
    except MisconfigurationException as exc:
        # Lightning's word for an impossible trainer / callback setting, wherever the run found it.
        raise ConfigError(str(exc)) from None


class _Parsed(Exception):
    def __init__(self, parser: LightningArgumentParser) -> None:
        self.parser = parser


class _ParserOnly(SmecCLI):
    """Builds the CLI's parser and stops: nothing parsed, seeded, instantiated or run."""

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        raise _Parsed(parser)


_parser: LightningArgumentParser | None = None
_section_parsers: dict[str, Any] = {}


def parse_args(args: list[str]) -> Any:
    """The config ``smec <verb> <args>`` would run (parsed and type-checked, nothing instantiated or written).

    One ConfigError line (naming the file or option and the key) for anything the parser rejects. The parser is
    built once per process (building it inspects every class signature).
    """
    global _parser
    from jsonargparse import ArgumentError

    from smec.config_errors import describe_parse_error, read_config_files

    configs = read_config_files(args)
    if _parser is None:
        try:
            _ParserOnly(CompressionSystem, EmbeddingDataModule, args=[], **_cli_kwargs())
        except _Parsed as done:
            _parser = done.parser
    assert _parser is not None
    try:
        return _parser.parse_args(args)
    except ArgumentError as exc:
        raise ConfigError(describe_parse_error(str(exc), args, configs)) from None


def build_data(data: Any) -> Any:
    """The data module a parsed ``data`` section (of :func:`parse_args`) describes, constructed as `smec fit`
    would construct it (its own checks run: ``data.mode``, ``data.negatives``, ...; nothing is mined or read
    beyond what its constructor reads). An InputError naming ``data.<key>`` otherwise."""
    import lightning as L

    return _instantiate("data", L.LightningDataModule, _section(data))


def build_model(model: Any, input_dim: int) -> CompressionSystem:
    """The system a parsed ``model`` section (of :func:`parse_args`) describes, built on an ``input_dim``-wide
    input as `smec fit` would build it (nothing trained, nothing written).

    The system's own checks run (a ConfigError naming ``model.<key>``), so a caller can refuse settings before
    any fit starts. The parser is built once per process.
    """
    section = _section(model)
    section = {**section, "init_args": {**(section.get("init_args") or {}), "input_dim": int(input_dim)}}
    return _instantiate("model", CompressionSystem, section)


def _section(value: Any) -> dict[str, Any]:
    return value.as_dict() if hasattr(value, "as_dict") else dict(value)


def _instantiate(key: str, base: type, section: dict[str, Any]) -> Any:
    """``section`` (class_path + init_args) built as a subclass of ``base`` under ``key``, with one parser per
    key and process; what the constructor raised comes out as itself (an InputError naming ``<key>.<arg>``)."""
    from jsonargparse import ArgumentParser

    if key not in _section_parsers:
        parser = ArgumentParser(exit_on_error=False)
        parser.add_subclass_arguments(base, key, required=True, fail_untyped=False)
        _section_parsers[key] = parser
    parser = _section_parsers[key]
    try:
        return getattr(parser.instantiate(parser.parse_object({key: section})), key)
    except ValueError as exc:  # jsonargparse wraps what the constructor raised
        cause = _input_error_in(exc)
        if cause is None:
            raise
        raise cause from None
