"""Reading checkpoints safely, and checking that one belongs to the configuration it is used with.

Every checkpoint a user hands to smec (``--ckpt_path`` of every training verb, ``model.extend_from``, the fits
of `smec compare`) is read with ``torch.load(weights_only=True)``: the restricted unpickler builds tensors,
containers and plain values only, so a crafted file cannot run code. The types our checkpoints hold beyond
those are allow-listed in :data:`SAFE_GLOBALS` (today none: Lightning saves plain dicts, tensors and strings);
anything else is refused with one line naming the file and the type.

:func:`load_system` turns a checkpoint into the trained compression system (on the CPU, in eval mode), for
the comparison's test grid and `smec export`; its class must be a compression system of the ``smec`` package.

A checkpoint also records the hyper-parameters it was trained with. :func:`check_matches` compares them with the
configuration of the current run (see :data:`IGNORED_MODEL_KEYS` and :data:`DATA_KEYS` for what counts), so a
checkpoint from another configuration is an error instead of weights silently mixed with other settings.
"""

from __future__ import annotations

import importlib
import os
import pickle
import re
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from smec.errors import ConfigError

SAFE_GLOBALS: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = []
"""Globals our checkpoints need beyond what ``weights_only=True`` builds by default (tensors, dicts, lists,
tuples, str/int/float/bool/None, OrderedDict). Add a type here only when a checkpoint of ours holds it."""

IGNORED_MODEL_KEYS = frozenset({"_instantiator", "eval_dims", "predict_dim", "extend_from"})
"""Model hyper-parameters a checkpoint may disagree on: the bookkeeping of LightningCLI's instantiator, what the
evaluator reports (``eval_dims``) or `smec predict` writes (``predict_dim``), and ``extend_from``, a path read
only at the start of a fresh fit. Every other model hyper-parameter defines the weights or how they were
trained, and must match."""

DATA_KEYS = ("models", "normalization", "model_weights")
"""Data hyper-parameters that define the model's input; they must match for every verb."""

FIT_DATA_KEYS = ("store", "mode", "include_train_queries", "train_split")
"""Further data hyper-parameters a resumed fit must share: the training rows themselves. Other data settings
(batch size, seed, workers, block sizes, validation rows and splits) and every trainer, logger and callback
setting may change, e.g. ``trainer.max_epochs`` raised to train longer or a fresh W&B id."""


def load_checkpoint(path: str | os.PathLike[str], option: str) -> dict[str, Any]:
    """The checkpoint at ``path`` read with ``weights_only=True`` (on CPU), or one ConfigError naming it.

    Args:
        path: the file.
        option: the option or key that named it (``--ckpt_path``, ``model.extend_from``), for messages.
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{option}: {path}: no such file")
    if not path.is_file():
        raise ConfigError(f"{option}: {path} is not a file (expected a Lightning checkpoint, *.ckpt)")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        unsafe = re.search(r"GLOBAL (\S+) was not an allowed global", str(exc))
        if unsafe:
            raise ConfigError(
                f"{option}: {path}: refused to load: it holds {unsafe.group(1)}, which is not a type smec "
                "checkpoints contain (loaded with weights_only=True, so nothing in it ran)"
            ) from None
        raise ConfigError(
            f"{option}: {path} is not a Lightning checkpoint (not a file torch.save wrote)"
        ) from None
    except OSError as exc:
        if exc.filename is None:  # torch reports a truncated archive as a bare OSError
            raise ConfigError(f"{option}: {path} is not a Lightning checkpoint ({exc})") from None
        raise
    except (EOFError, RuntimeError, ValueError, KeyError, IndexError, TypeError, zipfile.BadZipFile):
        reason = "an empty file" if path.stat().st_size == 0 else "not a file torch.save wrote"
        raise ConfigError(f"{option}: {path} is not a Lightning checkpoint ({reason})") from None
    if not isinstance(checkpoint, Mapping) or "state_dict" not in checkpoint:
        raise ConfigError(f"{option}: {path} is not a Lightning checkpoint (no state_dict)")
    return dict(checkpoint)


def system_class(class_path: object, origin: str) -> type:
    """The compression system class ``class_path`` names, imported; one ConfigError unless it is one.

    Only modules of the ``smec`` package are imported: a class path read from a file must not import (and so
    run) anything else. ``origin`` names the file or option the class path came from, for messages.
    """
    from smec.systems.base import CompressionSystem

    if not isinstance(class_path, str) or "." not in class_path:
        raise ConfigError(
            f"{origin}: the checkpoint names no system class (hyper_parameters._class_path); expected a "
            "checkpoint written by `smec fit`"
        )
    module_name, _, name = class_path.rpartition(".")
    if module_name != "smec" and not module_name.startswith("smec."):
        raise ConfigError(f"{origin}: model.class_path {class_path!r} is not a smec compression system")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"{origin}: cannot import the system class {class_path!r} ({e})") from None
    if not (isinstance(cls, type) and issubclass(cls, CompressionSystem)):
        raise ConfigError(f"{origin}: model.class_path {class_path!r} is not a smec compression system")
    return cls


def load_system(
    path: str | os.PathLike[str],
    option: str,
    class_path: str | None = None,
    checkpoint: Mapping[str, Any] | None = None,
) -> Any:
    """The trained compression system of checkpoint ``path``, on the CPU, in eval mode, without gradients.

    Args:
        path: the checkpoint file.
        option: the option or key that named it, for messages (``--ckpt``, ``test grid``).
        class_path: the system class (a fit's ``fit_result.json`` records it); default: the one LightningCLI
            stored in the checkpoint's hyper-parameters (``_class_path``).
        checkpoint: the file's contents when the caller has read them already (:func:`load_checkpoint`).
    """
    import torch

    origin = f"{option}: {path}"
    cls = None if class_path is None else system_class(class_path, origin)  # a bad class before any read
    checkpoint = load_checkpoint(path, option) if checkpoint is None else checkpoint
    if cls is None:
        cls = system_class((checkpoint.get("hyper_parameters") or {}).get("_class_path"), origin)
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        system = cls.load_from_checkpoint(str(path), map_location="cpu", weights_only=True)
    system.eval()
    system.requires_grad_(False)
    return system


def slim_checkpoint(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """What ``load_from_checkpoint`` needs and nothing else (no optimizer, loop or callback state)."""
    keep = ("state_dict", "hyper_parameters", "hparams_name", "pytorch-lightning_version")
    return {k: checkpoint[k] for k in keep if k in checkpoint}


def selected_checkpoint(folder: Path, option: str = "checkpoint") -> Path:
    """The checkpoint a fit's ``ModelCheckpoint`` selected (best on its monitor), else ``last.ckpt``.

    ``folder`` is the fit's checkpoint folder (``<trainer.default_root_dir>/checkpoints``). The best checkpoint
    recorded in ``last.ckpt`` is looked up by file name inside ``folder``: the recorded path is absolute, so it
    goes stale when the run folder moves, and a path read from a file must not lead outside the run.
    """
    last = folder / "last.ckpt"
    if last.exists():
        state = load_checkpoint(last, option)
        for key, value in (state.get("callbacks") or {}).items():
            best = value.get("best_model_path") if isinstance(value, Mapping) else None
            if str(key).startswith("ModelCheckpoint") and isinstance(best, str) and best:
                candidate = folder / Path(best).name
                if candidate.is_file():
                    return candidate
        return last
    bests = sorted(folder.glob("best-*.ckpt"), key=lambda p: p.stat().st_mtime)
    if bests:
        return bests[-1]
    raise ConfigError(f"{option}: no checkpoint found in {folder} (expected {last})")


def _plain(value: Any) -> Any:
    """Tuples as lists, mappings as dicts, recursively: hyper-parameters compare by value, not container type."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _leaves(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """Nested settings (SMEC's ``smrl`` / ``ads`` / ``sxbm`` groups) as dotted keys, values made plain.

    Grouped settings are stored as plain dicts (``torch.load(weights_only=True)`` builds them), so a checkpoint
    and a config that differ in one setting of a group differ in one dotted key (``sxbm.k``), not in the
    whole group; a key that only one side has compares with None.
    """
    out: dict[str, Any] = {}
    for key, value in hparams.items():
        if isinstance(value, Mapping) and value:
            out.update({f"{key}.{k}": v for k, v in _leaves(value).items()})
        else:
            out[str(key)] = _plain(value)
    return out


def _same_path(a: Any, b: Any) -> bool:
    if a == b:
        return True
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    return Path(a).resolve() == Path(b).resolve()


def differences(
    checkpoint: Mapping[str, Any],
    model_hparams: Mapping[str, Any],
    data_hparams: Mapping[str, Any] | None,
    *,
    fit: bool,
    store_models: Sequence[str] | None = None,
) -> list[str]:
    """``key: checkpoint X, config Y`` for every setting of the run that the checkpoint disagrees with.

    Args:
        checkpoint: the loaded checkpoint (its ``hyper_parameters`` and ``datamodule_hyper_parameters``).
        model_hparams / data_hparams: the hyper-parameters of the run's model and datamodule.
        fit: a resumed fit (the training data must match too, :data:`FIT_DATA_KEYS`).
        store_models: every model of the run's store, what ``models: null`` stands for.
    """
    from datamodules.store.layout import model_key

    found: list[str] = []
    saved_model = dict(checkpoint.get("hyper_parameters") or {})
    mine = dict(model_hparams)
    saved_class, my_class = saved_model.pop("_class_path", None), mine.pop("_class_path", None)
    if saved_class is not None and my_class is not None and saved_class != my_class:
        # Another system altogether: its arguments would only add noise to the message.
        return [f"model.class_path: checkpoint {saved_class}, config {my_class}"]
    saved_leaves = _leaves({k: v for k, v in saved_model.items() if k not in IGNORED_MODEL_KEYS})
    my_leaves = _leaves({k: v for k, v in mine.items() if k not in IGNORED_MODEL_KEYS})
    for key in sorted(set(saved_leaves) | set(my_leaves)):
        had, want = saved_leaves.get(key), my_leaves.get(key)
        if had != want:
            found.append(f"model.init_args.{key}: checkpoint {had!r}, config {want!r}")

    saved_data = checkpoint.get("datamodule_hyper_parameters")
    if saved_data is None or data_hparams is None:
        return found

    def models_of(value: Any) -> Any:
        if value is None:
            return list(store_models) if store_models is not None else None
        return [model_key(str(m)) for m in value]

    for key in (*DATA_KEYS, *(FIT_DATA_KEYS if fit else ())):
        had, want = saved_data.get(key), data_hparams.get(key)
        if key == "models":
            had, want = models_of(had), models_of(want)
        same = _same_path(had, want) if key == "store" else _plain(had) == _plain(want)
        if not same:
            found.append(f"data.init_args.{key}: checkpoint {_plain(had)!r}, config {_plain(want)!r}")
    return found


def check_matches(
    path: str | os.PathLike[str],
    checkpoint: Mapping[str, Any],
    model_hparams: Mapping[str, Any],
    data_hparams: Mapping[str, Any] | None,
    *,
    fit: bool,
    store_models: Sequence[str] | None = None,
) -> None:
    """Raise one ConfigError listing every difference (:func:`differences`) between checkpoint and config."""
    found = differences(checkpoint, model_hparams, data_hparams, fit=fit, store_models=store_models)
    if not found:
        return
    own = Path(path).resolve().parent.parent / "config.yaml"
    hint = (
        f"run with its own config, --config {own}"
        if own.is_file()
        else "run with the config it was trained with"
    )
    raise ConfigError(
        f"--ckpt_path {path} was trained with other settings than this config: {'; '.join(found)} ({hint})"
    )
