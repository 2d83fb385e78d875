"""The experiment YAML behind `smec compare`: what to embed, which methods to train, how to evaluate.

A minimal file::

    name: demo                                   # runs/<name>/ and the W&B group
    dataset: wordnet-demo                        # built-in name or a BEIR-format folder
    store: stores/wordnet-demo                   # made (or finished) by the embed step when incomplete
    models: [minilm-l6, paraphrase-l3, e5-small-q4]
    evaluation:                                  # the EvaluationSpec of the baselines, the dev selection and the
      dims: [48, 96, 192, 384]                   # test grid (smec/evaluation/spec.py): dims, precisions, ...
    methods:
      - name: mrl
        config: configs/mrl.yaml                 # any `smec fit` recipe, or a list composed in order
        args: {trainer.max_epochs: 12}           # CLI overrides, dotted keys

Every key, its default and its check are in :class:`ExperimentConfig` and :class:`MethodSpec`; the
``evaluation:`` keys are the fields of :class:`~smec.evaluation.spec.EvaluationSpec`. The older spellings still
load: top-level ``dims`` and ``precisions``, and ``baselines: {fit_sample, int_scoring, pq, pq_max_bits}`` (= the
spec's ``calibration_size``, ``int_scoring``, ``pq``, ``pq_max_bits``); a setting given both ways is an error.
Relative recipe paths are resolved against the current directory first, then the folder holding the experiment
file's ``configs/`` tree (so an experiment runs from the repository root or from inside configs/experiment/).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datamodules.errors import InputError
from smec.evaluation.errors import EvaluationError
from smec.evaluation.spec import PRECISIONS, EvaluationSpec
from smec.experiment.exported import ExportSpec


class ExperimentError(InputError):
    """An experiment file that cannot run: the message names the file and the key."""


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
LOGGERS = ("csv", "wandb")


@dataclass(frozen=True)
class MethodSpec:
    """One trained method of a comparison.

    Args:
        name: the ``method`` of its rows in results.json and its folder ``runs/<experiment>/<name>/s<seed>``.
        config: `smec fit` recipes (YAML), composed in this order (repeated ``--config``); the experiment file
            names one (``config: configs/mrl.yaml``) or a list (``[configs/mrl.yaml, configs/variants/mrl-pca.yaml]``).
        args: CLI overrides appended after the recipes, ``{dotted.key: value}`` (lists and mappings are passed as
            JSON), e.g. ``{"trainer.max_epochs": 12, "model.init_args.dims": [48, 96]}``. Not
            ``model.init_args.eval_dims``: every method is evaluated at the experiment's dims.
        seeds: seeds for this method (default: the experiment's ``seeds``).
        dims: the sizes this method is evaluated at (its ``eval_dims`` and its grid's dims; default: the
            experiment's ``evaluation.dims``). For a method whose sizes are not output widths, e.g. CSR's sparsity
            levels k, whose rows carry their own true bits so the report compares them at equal bytes.
        priority: fits of a higher priority start first (default 0; the queue is otherwise in file order). With
            ``jobs`` > 1, give the slowest method a higher priority so that it does not run alone at the end
            while the other slots idle (longest job first).
    """

    name: str
    config: tuple[Path, ...]
    args: Mapping[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] = ()
    dims: tuple[int, ...] | None = None
    priority: int = 0

    def cli_args(self) -> list[str]:
        return [f"--{key}={format_cli_value(value)}" for key, value in self.args.items()]


@dataclass(frozen=True)
class ExperimentConfig:
    """A comparison: one dataset, one set of frozen base models, baselines and trained methods, one test grid.

    Args:
        name: folder ``runs/<name>`` and the W&B group.
        dataset: built-in dataset or BEIR folder (the embed step's ``--dataset``).
        store: the embedding store folder (default ``stores/<dataset name>``).
        models: base models, concatenated in this order (the embed step's ``--models``).
        reference_models: models embedded and evaluated alone (e.g. a larger single model), not concatenated.
        split: qrels split of the final grid (default ``test``; the fits select checkpoints on dev, their
            ``fit_callbacks.split``).
        evaluation: the :class:`~smec.evaluation.spec.EvaluationSpec` of the baselines, of every fit's dev
            evaluation and of the test grid; its ``dims`` are required. Every grid point must be computable
            (checked before any work): each dim at most the input's width and producible by every method (the
            systems check their ``model.eval_dims``, which the runner sets to these dims), multiples of 8 with an
            explicit ``binary`` (with the default precisions, binary skips other dims with one warning).
        seeds: default seeds of every method (one fit per method and seed).
        trainer: recipe files appended to every fit (default ``configs/trainer/cpu.yaml``).
        logger: ``wandb`` (default; offline unless credentials exist) or ``csv``; a CSV log is always kept for
            the training curves.
        wandb_project: the W&B project.
        jobs: fits run in parallel (each with ``threads`` torch threads; default 1 job).
        threads: torch threads per fit (default: CPU count // jobs).
        reference: ``(method, dim, precision)`` the report's "% kept" column divides by (default: the float32
            concatenation at full width).
        baselines: run the training-free baselines (``baselines.enabled``, default true).
        export: export each budget's best trained model and score it with mteb (:mod:`smec.experiment.exported`;
            off by default).
        methods: see :class:`MethodSpec`.
        source: the file this came from (for messages).
    """

    name: str
    dataset: str
    models: tuple[str, ...]
    evaluation: EvaluationSpec
    methods: tuple[MethodSpec, ...]
    store: Path
    reference_models: tuple[str, ...] = ()
    split: str = "test"
    seeds: tuple[int, ...] = (0,)
    trainer: tuple[Path, ...] = ()
    logger: str = "wandb"
    wandb_project: str = "smec"
    jobs: int = 1
    threads: int | None = None
    reference: tuple[str, int, str] | None = None
    baselines: bool = True
    export: ExportSpec = field(default_factory=ExportSpec)
    source: Path | None = None

    @property
    def dims(self) -> tuple[int, ...]:
        """The grid's dims (the evaluation spec's, required for an experiment)."""
        assert self.evaluation.dims is not None
        return self.evaluation.dims

    @property
    def precisions(self) -> tuple[str, ...]:
        return self.evaluation.precisions

    def method_dims(self, method: MethodSpec) -> tuple[int, ...]:
        """The sizes ``method`` is evaluated at: its own ``dims``, else the grid's."""
        return method.dims if method.dims is not None else self.dims

    def method_evaluation(self, method: MethodSpec) -> EvaluationSpec:
        """The evaluation spec of ``method``'s dev selection and test grid: the experiment's, at its dims."""
        import dataclasses

        return dataclasses.replace(self.evaluation, dims=self.method_dims(method))

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
    "evaluation",
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
    "export",
)
# The older spellings of spec fields: (section, key) -> EvaluationSpec field.
_LEGACY_KEYS = {
    ("", "dims"): "dims",
    ("", "precisions"): "precisions",
    ("baselines.", "fit_sample"): "calibration_size",
    ("baselines.", "int_scoring"): "int_scoring",
    ("baselines.", "pq"): "pq",
    ("baselines.", "pq_max_bits"): "pq_max_bits",
}


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
    dataset = top.string("dataset")
    logger = top.string("logger", "wandb")
    if logger not in LOGGERS:
        raise top.fail("logger", " or ".join(LOGGERS), logger)
    config = ExperimentConfig(
        name=top.string("name", pattern=_NAME),
        dataset=dataset,
        store=Path(top.string("store", f"stores/{Path(dataset).name}")),
        models=top.str_list("models"),
        reference_models=top.str_list("reference_models", ()),
        split=top.string("split", "test"),
        evaluation=_read_evaluation(top),
        seeds=top.int_list("seeds", (0,)),
        trainer=tuple(
            _resolve(p, source, "trainer") for p in top.str_list("trainer", ("configs/trainer/cpu.yaml",))
        ),
        logger=logger,
        wandb_project=top.string("wandb_project", "smec"),
        jobs=top.integer("jobs", 1),
        threads=top.integer("threads", None),
        reference=_read_reference(top),
        baselines=_Reader(top.mapping("baselines"), source, "baselines.").boolean("enabled", True),
        methods=_read_methods(top),
        export=_read_export(top),
        source=source,
    )
    seed = config.export.seed
    if seed is not None and seed not in {s for _, s in config.runs()}:
        raise ExperimentError(f"{source}: export.seed: {seed} is not a seed of any method's fits")
    return config


def _read_export(top: _Reader) -> ExportSpec:
    section = _Reader(top.mapping("export"), top.source, "export.")
    section.check_unknown(("enabled", "min_cf", "seed", "batch_size"))
    min_cf = section.get("min_cf", ExportSpec.min_cf)
    if isinstance(min_cf, bool) or not isinstance(min_cf, (int, float)) or min_cf < 1:
        raise section.fail("min_cf", "a compression factor >= 1", min_cf)
    return ExportSpec(
        enabled=section.boolean("enabled", False),
        min_cf=float(min_cf),
        seed=section.integer("seed", None, minimum=0),
        batch_size=section.integer("batch_size", ExportSpec.batch_size),
    )


def _read_reference(top: _Reader) -> tuple[str, int, str] | None:
    reference = top.get("reference", None)
    if reference is None:
        return None
    ok = (
        isinstance(reference, list)
        and len(reference) == 3
        and isinstance(reference[0], str)
        and isinstance(reference[1], int)
        and reference[2] in PRECISIONS
    )
    if not ok:
        raise top.fail("reference", "[method, dim, precision]", reference)
    return (reference[0], int(reference[1]), reference[2])


def _read_legacy(top: _Reader, b: _Reader) -> dict[str, tuple[str, Any]]:
    """The spec fields the older keys set: ``{field: (the key as written, value)}``, type-checked."""
    found: dict[str, tuple[str, Any]] = {}
    if "dims" in top.data:
        found["dims"] = ("dims", top.int_list("dims", minimum=1))
    if "precisions" in top.data:
        precisions = top.str_list("precisions")
        if not set(precisions) <= set(PRECISIONS):
            raise top.fail("precisions", f"values among {', '.join(PRECISIONS)}", list(precisions))
        found["precisions"] = ("precisions", precisions)
    if "fit_sample" in b.data:
        found["calibration_size"] = ("baselines.fit_sample", b.integer("fit_sample"))
    if "int_scoring" in b.data:
        scoring = b.string("int_scoring")
        if scoring not in ("symmetric", "asymmetric"):
            raise b.fail("int_scoring", "symmetric or asymmetric", scoring)
        found["int_scoring"] = ("baselines.int_scoring", scoring)
    if "pq" in b.data:
        found["pq"] = ("baselines.pq", b.boolean("pq", True))
    if "pq_max_bits" in b.data:
        found["pq_max_bits"] = ("baselines.pq_max_bits", b.integer("pq_max_bits", None, minimum=8))
    return found


def _read_evaluation(top: _Reader) -> EvaluationSpec:
    """The experiment's EvaluationSpec: the ``evaluation:`` section and the older keys (module docstring)."""
    source = top.source
    b = _Reader(top.mapping("baselines"), source, "baselines.")
    b.check_unknown(("enabled", "pq", "pq_max_bits", "fit_sample", "int_scoring"))
    section = _Reader(top.mapping("evaluation"), source, "evaluation.")
    section.check_unknown(EvaluationSpec.field_names())
    settings = dict(section.data)
    for field_name, (key, value) in _read_legacy(top, b).items():
        if field_name in settings:
            raise ExperimentError(
                f"{source}: {key} and evaluation.{field_name} are the same setting: keep evaluation.{field_name}"
            )
        settings[field_name] = value
    if settings.get("dims") is None:
        raise ExperimentError(f"{source}: missing required key evaluation.dims (the grid's dims)")
    if isinstance(settings["dims"], list):
        settings["dims"] = section.int_list("dims", minimum=1)
    try:
        spec = EvaluationSpec(**settings)
    except EvaluationError as exc:
        raise ExperimentError(f"{source}: evaluation: {exc}") from None
    odd = [d for d in spec.dims or () if d % 8]
    explicit = "precisions" in settings
    if "binary" in spec.precisions and odd and explicit:
        # Asked for explicitly, every grid point must be computable: binary codes are whole bytes. (With the
        # default precisions, binary is left out at those dims with one warning, as `smec eval` does.)
        raise ExperimentError(
            f"{source}: dims {odd} with precision binary: binary codes need a multiple of 8 dims (change dims or "
            "drop binary from precisions)"
        )
    return spec


def _read_methods(top: _Reader) -> tuple[MethodSpec, ...]:
    source = top.source
    raw_methods = top.get("methods", [])
    if not isinstance(raw_methods, list):
        raise top.fail("methods", "a list of {name, config, args, seeds}", raw_methods)
    methods = []
    for i, raw in enumerate(raw_methods):
        if not isinstance(raw, Mapping):
            raise top.fail(f"methods[{i}]", "a mapping with name and config", raw)
        m = _Reader(raw, source, f"methods[{i}].")
        m.check_unknown(("name", "config", "args", "seeds", "dims", "priority"))
        args = m.mapping("args")
        for key in args:
            if not isinstance(key, str) or key.startswith("-"):
                raise m.fail("args", "dotted CLI keys without leading dashes (trainer.max_epochs: 10)", key)
        if "model.init_args.eval_dims" in args:
            raise ExperimentError(
                f"{source}: methods[{i}].args: model.init_args.eval_dims is the experiment's evaluation.dims for "
                "every method: drop it (to select checkpoints on fewer sizes: fit_callbacks.mean_dims)"
            )
        configs = m.str_list("config")
        methods.append(
            MethodSpec(
                name=m.string("name", pattern=_NAME),
                config=tuple(_resolve(c, source, f"methods[{i}].config") for c in configs),
                args=dict(args),
                seeds=m.int_list("seeds", ()),
                dims=m.int_list("dims", None, minimum=1),
                priority=m.integer("priority", 0, minimum=0),
            )
        )
    names = [m.name for m in methods]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise ExperimentError(f"{source}: methods: the name {duplicate!r} is used twice")
    return tuple(methods)
