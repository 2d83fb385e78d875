"""The experiment YAML behind `smec compare`: what to embed, which methods to train, how to evaluate.

A minimal file::

    name: demo                                   # runs/<name>/ and the W&B group
    dataset: wordnet-demo                        # built-in name or a BEIR-format folder
    store: stores/wordnet-demo                   # made (or finished) by the embed step when incomplete
    models: [minilm-l6, paraphrase-l3, e5-small-q4]
    dims: [48, 96, 192, 384]
    methods:
      - name: mrl
        config: configs/mrl.yaml                 # any `smec fit` recipe
        args: {trainer.max_epochs: 12}           # CLI overrides, dotted keys

Every key, its default and its check are in :class:`ExperimentConfig` and :class:`MethodSpec`. Relative recipe
paths are resolved against the current directory first, then the folder holding the experiment file's
``configs/`` tree (so an experiment runs from the repository root or from inside configs/experiment/).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datamodules.errors import InputError
from smec.evaluation.quantize import PRECISIONS


class ExperimentError(InputError):
    """An experiment file that cannot run: the message names the file and the key."""


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
LOGGERS = ("csv", "wandb")


@dataclass(frozen=True)
class MethodSpec:
    """One trained method of a comparison.

    Args:
        name: the ``method`` of its rows in results.json and its folder ``runs/<experiment>/<name>/s<seed>``.
        config: a `smec fit` recipe (YAML), or a recipe and overlays composed in order (repeated ``--config``:
            ``[configs/smec.yaml, configs/ablations/no-smrl.yaml]``).
        args: CLI overrides appended after the recipe, ``{dotted.key: value}`` (lists and mappings are passed as
            JSON), e.g. ``{"trainer.max_epochs": 12, "model.init_args.dims": [48, 96]}``.
        seeds: seeds for this method (default: the experiment's ``seeds``).
    """

    name: str
    config: tuple[Path, ...]
    args: Mapping[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] = ()

    def cli_args(self) -> list[str]:
        return [f"--{key}={format_cli_value(value)}" for key, value in self.args.items()]


@dataclass(frozen=True)
class BaselineSpec:
    """The training-free grid of ``smec eval`` (see :func:`smec.evaluation.baselines.run_baselines`)."""

    enabled: bool = True
    pq: bool = True
    pq_max_bits: int | None = 1024
    fit_sample: int = 10_000
    int_scoring: str = "symmetric"


@dataclass(frozen=True)
class ExperimentConfig:
    """A comparison: one dataset, one set of frozen base models, baselines and trained methods, one test grid.

    Args:
        name: folder ``runs/<name>`` and the W&B group.
        dataset: built-in dataset or BEIR folder (the embed step's ``--dataset``).
        store: the embedding store folder (default ``stores/<dataset name>``).
        models: base models, concatenated in this order (the embed step's ``--models``).
        reference_models: models embedded and evaluated alone (e.g. a larger single model), not concatenated.
        split: qrels split of the final grid (default ``test``; the fits select checkpoints on their own
            ``data.val_split``, dev in the recipes).
        dims, precisions: the evaluation grid. Every point must be computable (checked before any work): each
            dim at most the input's width and every method's output width, multiples of 8 with an explicit
            ``binary`` (with the default precisions, binary skips other dims with one warning).
        seeds: default seeds of every method (one fit per method and seed).
        trainer: recipe files appended to every fit (default ``configs/trainer/cpu.yaml``).
        logger: ``wandb`` (default; offline unless credentials exist) or ``csv``; a CSV log is always kept for
            the training curves.
        wandb_project: the W&B project.
        jobs: fits run in parallel (each with ``threads`` torch threads; default 1 job).
        threads: torch threads per fit (default: CPU count // jobs).
        reference: ``(method, dim, precision)`` the report's "% kept" column divides by (default: the float32
            concatenation at full width).
        baselines: see :class:`BaselineSpec`.
        methods: see :class:`MethodSpec`.
        source: the file this came from (for messages).
    """

    name: str
    dataset: str
    models: tuple[str, ...]
    dims: tuple[int, ...]
    methods: tuple[MethodSpec, ...]
    store: Path
    reference_models: tuple[str, ...] = ()
    split: str = "test"
    precisions: tuple[str, ...] = ("float32", "int8", "int4", "binary")
    seeds: tuple[int, ...] = (0,)
    trainer: tuple[Path, ...] = ()
    logger: str = "wandb"
    wandb_project: str = "smec"
    jobs: int = 1
    threads: int | None = None
    reference: tuple[str, int, str] | None = None
    baselines: BaselineSpec = BaselineSpec()
    source: Path | None = None

    def method(self, name: str) -> MethodSpec:
        for m in self.methods:
            if m.name == name:
                return m
        raise ExperimentError(f"{self.source}: no method named {name!r} (methods: {self.method_names})")

    @property
    def method_names(self) -> list[str]:
        return [m.name for m in self.methods]

    def runs(self) -> list[tuple[MethodSpec, int]]:
        """Every (method, seed) fit, in file order: the task list of `smec compare --task N`."""
        return [(m, s) for m in self.methods for s in (m.seeds or self.seeds)]


def format_cli_value(value: Any) -> str:
    """A YAML value as jsonargparse reads it on the command line (lists, mappings, bools, null as JSON)."""
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _resolve(path: str, source: Path, key: str) -> Path:
    candidates = [Path(path)]
    if not Path(path).is_absolute():
        # configs/experiment/x.yaml -> the folder that holds configs/ (the repository root)
        for parent in source.resolve().parents:
            if parent.name == "configs":
                candidates.append(parent.parent / path)
                break
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ExperimentError(f"{source}: {key}: file not found: {path}")


class _Reader:
    """Typed access to one mapping of the YAML, every error naming the file and the dotted key."""

    def __init__(self, data: Mapping[str, Any], source: Path, prefix: str = "") -> None:
        self.data, self.source, self.prefix = data, source, prefix
        self.used: set[str] = set()

    def fail(self, key: str, expected: str, value: Any) -> ExperimentError:
        return ExperimentError(f"{self.source}: {self.prefix}{key}: expected {expected}, got {value!r}")

    def get(self, key: str, default: Any = ..., *, required: bool = False) -> Any:
        self.used.add(key)
        if key not in self.data or (self.data[key] is None and default is not ...):
            if required or default is ...:
                raise ExperimentError(f"{self.source}: missing required key {self.prefix}{key}")
            return default
        return self.data[key]

    def string(self, key: str, default: Any = ..., pattern: re.Pattern[str] | None = None) -> Any:
        value = self.get(key, default)
        if value is default and default is not ...:
            return value
        if not isinstance(value, str) or not value or (pattern and not pattern.match(value)):
            what = "a name of letters, digits, '_', '.', '-'" if pattern else "a non-empty string"
            raise self.fail(key, what, value)
        return value

    def integer(self, key: str, default: Any = ..., minimum: int = 1) -> Any:
        value = self.get(key, default)
        if value is default and default is not ...:
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(key, f"an integer >= {minimum}", value)
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, "true or false", value)
        return value

    def int_list(self, key: str, default: Any = ..., minimum: int = 0, nonempty: bool = True) -> Any:
        value = self.get(key, default)
        if value is default and default is not ...:
            return value
        ok = isinstance(value, list) and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value
        )
        if not ok or (nonempty and not value) or len(set(value)) != len(value):
            raise self.fail(key, f"a list of distinct integers >= {minimum}", value)
        return tuple(value)

    def str_list(self, key: str, default: Any = ...) -> Any:
        value = self.get(key, default)
        if value is default and default is not ...:
            return value
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise self.fail(key, "a non-empty list of strings", value)
        return tuple(value)

    def mapping(self, key: str) -> Mapping[str, Any]:
        value = self.get(key, {})
        if not isinstance(value, Mapping):
            raise self.fail(key, "a mapping", value)
        return value

    def check_unknown(self, known: Sequence[str]) -> None:
        unknown = sorted(set(self.data) - set(known))
        if unknown:
            raise ExperimentError(
                f"{self.source}: unknown key {self.prefix}{unknown[0]} (expected one of {', '.join(known)})"
            )


_TOP_KEYS = (
    "name",
    "dataset",
    "store",
    "models",
    "reference_models",
    "split",
    "dims",
    "precisions",
    "seeds",
    "trainer",
    "logger",
    "wandb_project",
    "jobs",
    "threads",
    "reference",
    "baselines",
    "methods",
)


def load_experiment(path: str | Path) -> ExperimentConfig:
    """Read and check an experiment YAML; every error is one :class:`ExperimentError` naming file and key."""
    import yaml

    source = Path(path)
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExperimentError(f"experiment file not found: {source}") from None
    except yaml.YAMLError as exc:
        raise ExperimentError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise ExperimentError(f"{source}: expected a mapping of experiment keys, got {type(data).__name__}")
    top = _Reader(data, source)
    top.check_unknown(_TOP_KEYS)
    name = top.string("name", pattern=_NAME)
    dataset = top.string("dataset")
    store = Path(top.string("store", f"stores/{Path(dataset).name}"))
    models = top.str_list("models")
    reference_models = top.str_list("reference_models", ())
    split = top.string("split", "test")
    dims = tuple(sorted(top.int_list("dims", minimum=1)))
    precisions = top.str_list("precisions", ("float32", "int8", "int4", "binary"))
    for p in precisions:
        if p not in PRECISIONS:
            raise top.fail("precisions", f"values among {', '.join(PRECISIONS)}", list(precisions))
    odd = [d for d in dims if d % 8]
    if "binary" in precisions and odd and "precisions" in data:
        # Asked for explicitly, every grid point must be computable: binary codes are whole bytes. (With the
        # default precisions, binary is left out at those dims with one warning, as `smec eval` does.)
        raise ExperimentError(
            f"{source}: dims {odd} with precision binary: binary codes need a multiple of 8 dims (change dims or "
            "drop binary from precisions)"
        )
    seeds = top.int_list("seeds", (0,))
    trainer = tuple(
        _resolve(p, source, "trainer") for p in top.str_list("trainer", ("configs/trainer/cpu.yaml",))
    )
    logger = top.string("logger", "wandb")
    if logger not in LOGGERS:
        raise top.fail("logger", " or ".join(LOGGERS), logger)
    reference = top.get("reference", None)
    if reference is not None:
        ok = (
            isinstance(reference, list)
            and len(reference) == 3
            and isinstance(reference[0], str)
            and isinstance(reference[1], int)
            and reference[2] in PRECISIONS
        )
        if not ok:
            raise top.fail("reference", "[method, dim, precision]", reference)
        reference = (reference[0], int(reference[1]), reference[2])

    b = _Reader(top.mapping("baselines"), source, "baselines.")
    b.check_unknown(("enabled", "pq", "pq_max_bits", "fit_sample", "int_scoring"))
    int_scoring = b.string("int_scoring", "symmetric")
    if int_scoring not in ("symmetric", "asymmetric"):
        raise b.fail("int_scoring", "symmetric or asymmetric", int_scoring)
    baselines = BaselineSpec(
        enabled=b.boolean("enabled", True),
        pq=b.boolean("pq", True),
        pq_max_bits=b.integer("pq_max_bits", 1024, minimum=8),
        fit_sample=b.integer("fit_sample", 10_000),
        int_scoring=int_scoring,
    )

    raw_methods = top.get("methods", [])
    if not isinstance(raw_methods, list):
        raise top.fail("methods", "a list of {name, config, args, seeds}", raw_methods)
    methods = []
    for i, raw in enumerate(raw_methods):
        if not isinstance(raw, Mapping):
            raise top.fail(f"methods[{i}]", "a mapping with name and config", raw)
        m = _Reader(raw, source, f"methods[{i}].")
        m.check_unknown(("name", "config", "args", "seeds"))
        args = m.mapping("args")
        for key in args:
            if not isinstance(key, str) or key.startswith("-"):
                raise m.fail("args", "dotted CLI keys without leading dashes (trainer.max_epochs: 10)", key)
        methods.append(
            MethodSpec(
                name=m.string("name", pattern=_NAME),
                config=tuple(_resolve(p, source, f"methods[{i}].config") for p in m.str_list("config")),
                args=dict(args),
                seeds=m.int_list("seeds", ()),
            )
        )
    names = [m.name for m in methods]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise ExperimentError(f"{source}: methods: the name {duplicate!r} is used twice")
    return ExperimentConfig(
        name=name,
        dataset=dataset,
        store=store,
        models=models,
        reference_models=reference_models,
        split=split,
        dims=dims,
        precisions=precisions,
        seeds=seeds,
        trainer=trainer,
        logger=logger,
        wandb_project=top.string("wandb_project", "smec"),
        jobs=top.integer("jobs", 1),
        threads=top.integer("threads", None),
        reference=reference,
        baselines=baselines,
        methods=tuple(methods),
        source=source,
    )
