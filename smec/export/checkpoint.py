"""Restoring a trained system from a Lightning checkpoint without unpickling arbitrary objects.

Every read is ``torch.load(..., weights_only=True)`` (tensors, containers and primitives only; a checkpoint that
needs anything else is refused with one clear error rather than trusted). The system class comes from the
``_class_path`` LightningCLI stores in the hyper-parameters; it must live in the ``smec`` package and be a
compression system (``compress`` / ``embed`` / ``eval_dims``). Lightning then rebuilds it with
``load_from_checkpoint(..., weights_only=True)``: it only instantiates classes that are already imported, which
is why the class's module is imported here first.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import Any

from smec.errors import ConfigError

SYSTEM_METHODS = ("compress", "embed")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's contents, loaded with ``weights_only=True``; one clear error for anything else."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"{path}: not a checkpoint that loads with torch.load(weights_only=True) ({first})"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ConfigError(f"{path}: not a Lightning checkpoint (no 'state_dict')")
    return ckpt


def system_class(ckpt: dict[str, Any], path: str | Path) -> type:
    """The compression system class named by the checkpoint (``hyper_parameters._class_path``), imported."""
    import lightning as L

    class_path = (ckpt.get("hyper_parameters") or {}).get("_class_path")
    if not isinstance(class_path, str) or "." not in class_path:
        raise ConfigError(
            f"{path}: the checkpoint names no system class (hyper_parameters._class_path); expected a "
            "checkpoint written by `smec fit`"
        )
    module_name, _, name = class_path.rpartition(".")
    if module_name != "smec" and not module_name.startswith("smec."):
        raise ConfigError(
            f"{path}: system class {class_path!r} is outside the smec package; refusing to import it"
        )
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"{path}: cannot import the system class {class_path!r} ({e})") from None
    if not (
        isinstance(cls, type)
        and issubclass(cls, L.LightningModule)
        and all(callable(getattr(cls, m, None)) for m in SYSTEM_METHODS)
    ):
        raise ConfigError(f"{path}: {class_path!r} is not a compression system (compress / embed)")
    return cls


def load_system(path: str | Path, ckpt: dict[str, Any] | None = None) -> Any:
    """The trained system of checkpoint ``path``, on the CPU, in eval mode, without gradients."""
    ckpt = read_checkpoint(path) if ckpt is None else ckpt
    cls = system_class(ckpt, path)
    system = cls.load_from_checkpoint(str(path), map_location="cpu", weights_only=True)
    system.eval()
    system.requires_grad_(False)
    return system


def slim_checkpoint(ckpt: dict[str, Any]) -> dict[str, Any]:
    """What ``load_from_checkpoint`` needs and nothing else (no optimizer, loop or callback state)."""
    keep = ("state_dict", "hyper_parameters", "hparams_name", "pytorch-lightning_version")
    return {k: ckpt[k] for k in keep if k in ckpt}
