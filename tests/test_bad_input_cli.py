"""Bad input to the training verbs, checkpoints, predict, the evaluation grid and `smec compare`.

Every case: exit 2, exactly one error line naming the file or option and what was expected, no traceback, and
nothing created, removed or modified under the test's folder (``assert_fails_cleanly(..., watch=tmp_path)``);
cases that use the shared fitted run also check that its folder is untouched. Commands run in-process.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch  # noqa: F401  (see below)
import pytest
import yaml

from tests.cli_harness import assert_fails_cleanly, changes, run_smec, tree
from tests.conftest import build_store

# Lightning adds a logging.StreamHandler on sys.stderr when first imported: imported here, at collection, it
# writes to the session's stderr, not to one test's capsys stream (closed after that test, and a "Logging error"
# traceback in every later test's output).
REPO = Path(__file__).resolve().parents[1]
VERBS = ("fit", "validate", "test", "predict")
TRAINED = ("validate", "test", "predict")


def recipe(folder: Path, store: Path, root: Path, name: str = "recipe.yaml", **model: object) -> Path:
    """configs/mrl.yaml shrunk to the tiny store: an 8-d decoder, one epoch, checkpoints, CSV logs."""
    cfg = yaml.safe_load((REPO / "configs" / "mrl.yaml").read_text())
    cfg["model"]["init_args"].update(output_dim=8, dims=[2, 4, 8], **model)
    cfg["data"]["init_args"].update(store=str(store), models=None, batch_size=8)
    cfg["trainer"].update(
        default_root_dir=str(root),
        max_epochs=1,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[
            {
                "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                "init_args": {"save_last": True, "every_n_epochs": 1},
            }
        ],
    )
    path = folder / name
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One finished 1-epoch MRL fit, shared read-only by the cases that need a checkpoint."""
    from smec.lightning_cli import run_lightning_cli

    base = tmp_path_factory.mktemp("fitted")
    store = build_store(base / "store")
    root = base / "run"
    run_lightning_cli(["fit", "--config", str(recipe(base, store, root))])
    return SimpleNamespace(
        base=base,
        store=store,
        root=root,
        config=root / "config.yaml",
        last=root / "checkpoints" / "last.ckpt",
    )


@pytest.fixture
def fresh(tmp_path):
    """A store and a recipe whose run folder (inside tmp_path) does not exist yet."""
    store = build_store(tmp_path / "store")
    return SimpleNamespace(
        store=store, root=tmp_path / "run", recipe=recipe(tmp_path, store, tmp_path / "run")
    )


def fails(capsys, argv, expect: str, watch: Path, *untouched: Path, **kw):
    """assert_fails_cleanly, and the folders in ``untouched`` (a shared fitted run) stay as they were."""
    before = [tree(folder) for folder in untouched]
    outcome = assert_fails_cleanly(capsys, argv, expect=expect, watch=watch, **kw)
    for folder, was in zip(untouched, before):
        assert not changes(was, tree(folder)), f"{folder} changed"
    return outcome


class Evil:
    """Unpickling this calls ``open(marker, "w")``: a file appears if a loader runs code from the pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def crafted_checkpoint(path: Path, marker: Path) -> Path:
    import torch

    torch.save({"state_dict": {}, "epoch": 0, "payload": Evil(marker)}, path)
    return path


# --------------------------------------------------------------------------------------------------------
# the parser: config files, unknown keys, wrong types


@pytest.mark.parametrize("verb", VERBS)
def test_bad_yaml_names_the_file(verb, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [\n")
    fails(
        capsys,
        [verb, "--config", bad],
        r"--config \S*bad\.yaml: not valid YAML: .* at line 2, column 1$",
        tmp_path,
    )


@pytest.mark.parametrize("verb", VERBS)
def test_a_config_file_that_does_not_exist(verb, tmp_path, capsys):
    fails(
        capsys,
        [verb, "--config", tmp_path / "nowhere.yaml"],
        r"--config \S*nowhere\.yaml: no such file$",
        tmp_path,
    )


@pytest.mark.parametrize(
    ("text", "got"), [("", "an empty file"), ("- a\n- b\n", "a list")], ids=["empty", "list"]
)
def test_a_config_file_that_is_not_a_mapping(text, got, tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    fails(
        capsys,
        ["fit", "--config", path],
        rf"expected a mapping of sections \(model, data, trainer, ...\), got {got}$",
        tmp_path,
    )


@pytest.mark.parametrize(
    ("where", "key", "expect"),
    [
        ("yaml", "bogus", r"recipe\.yaml: bogus: not an option of smec fit$"),
        (
            "yaml",
            "trainer.max_epoch",
            r"recipe\.yaml: trainer\.max_epoch: not an option of smec fit \(did you mean 'max_epochs'\?\)",
        ),
        (
            "yaml",
            "model.init_args.lrr",
            r"recipe\.yaml: model\.init_args\.lrr: smec\.systems\.mrl\.MRLDecoderModule has no argument 'lrr' \(did you mean 'lr'\?\)",
        ),
        (
            "yaml",
            "data.init_args.batchsize",
            r"data\.init_args\.batchsize: .*EmbeddingDataModule has no argument 'batchsize' \(did you mean 'batch_size'\?\)",
        ),
        (
            "cli",
            "model.init_args.lrr",
            r"^smec fit: error: --model\.init_args\.lrr: .*MRLDecoderModule has no argument 'lrr'",
        ),
        # no abbreviations: a prefix of --trainer.max_epochs is not silently taken for it
        ("cli", "trainer.max_epoch", r"--trainer\.max_epoch: not an option of smec fit"),
        ("cli", "bogus", r"--bogus: not an option of smec fit"),
    ],
)
def test_an_unknown_key_names_it_and_where_it_was_set(where, key, expect, fresh, tmp_path, capsys):
    argv = ["fit", "--config", fresh.recipe]
    if where == "yaml":
        cfg = yaml.safe_load(fresh.recipe.read_text())
        node = cfg
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = 3
        fresh.recipe.write_text(yaml.safe_dump(cfg))
    else:
        argv += [f"--{key}", "3"]
    fails(capsys, argv, expect, tmp_path)


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--trainer.max_epochs", "abc"], r"--trainer\.max_epochs: expected int or null, got abc$"),
        (
            ["--model.init_args.output_dim", "abc"],
            r"--model\.init_args\.output_dim: expected int or null, got abc$",
        ),
        (
            ["--model.init_args.dims=[2, x]"],
            r"--model\.init_args\.dims: expected list\[int\] or null, got \[2, 'x'\]$",
        ),
        (["--data.init_args.batch_size", "x"], r"--data\.init_args\.batch_size: expected int, got x$"),
        (["--seed_everything", "abc"], r"--seed_everything: expected bool or int, got abc$"),
    ],
)
def test_a_wrong_value_type_is_one_line(args, expect, fresh, tmp_path, capsys):
    fails(capsys, ["fit", "--config", fresh.recipe, *args], expect, tmp_path)


def test_a_wrong_value_type_in_a_file_names_the_file(fresh, tmp_path, capsys):
    cfg = yaml.safe_load(fresh.recipe.read_text())
    cfg["trainer"]["callbacks"][0]["init_args"]["every_n_epochs"] = "often"
    fresh.recipe.write_text(yaml.safe_dump(cfg))
    expect = r"recipe\.yaml: trainer\.callbacks\.init_args\.every_n_epochs: expected int or null, got often$"
    fails(capsys, ["fit", "--config", fresh.recipe], expect, tmp_path)


def test_a_class_that_does_not_exist(fresh, tmp_path, capsys):
    expect = r"--model: cannot import the class 'smec\.systems\.mrl\.Nope' \(module 'smec\.systems\.mrl' has no attribute 'Nope'\)"
    fails(capsys, ["fit", "--config", fresh.recipe, "--model", "smec.systems.mrl.Nope"], expect, tmp_path)


def test_fit_without_a_recipe(tmp_path, capsys):
    expect = r"missing data, model: give a recipe with --config \(e\.g\. configs/mrl\.yaml\)"
    fails(capsys, ["fit", f"--trainer.default_root_dir={tmp_path / 'run'}"], expect, tmp_path)


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        # raised by the constructor, which jsonargparse wrapped in its Union report (was a traceback)
        (
            ["--model.init_args.dims=[2, 4, 16]"],
            r"model\.dims must all be <= output_dim=8, got \[2, 4, 16\]$",
        ),
        (["--data.init_args.batch_size", "0"], r"data\.batch_size: expected a positive integer, got 0$"),
        (["--data.init_args.models=[nope]"], r"model 'nope' is not in this store; it has \['m1', 'm2'\]"),
    ],
)
def test_a_value_the_constructor_refuses(args, expect, fresh, tmp_path, capsys):
    fails(capsys, ["fit", "--config", fresh.recipe, *args], expect, tmp_path)


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--trainer.accelerator", "gpu"], r"trainer: No supported gpu backend found!$"),
        (["--trainer.devices", "0"], r"trainer: `Trainer\(devices='0'\)` value is not a valid input"),
        (["--trainer.max_epochs", "-5"], r"trainer: `max_epochs` must be a non-negative integer or -1"),
        (["--seed_everything", "-1"], r"seed_everything: -1 is not in bounds"),
    ],
    ids=["gpu-on-cpu", "devices-0", "max_epochs", "seed"],
)
def test_an_impossible_trainer_setting(args, expect, fresh, tmp_path, capsys):
    fails(capsys, ["fit", "--config", fresh.recipe, *args], expect, tmp_path)


@pytest.mark.parametrize("verb", VERBS)
def test_a_store_that_does_not_exist(verb, fresh, tmp_path, capsys):
    argv = [verb, "--config", fresh.recipe, f"--data.init_args.store={tmp_path / 'nostore'}"]
    fails(capsys, argv, r"nostore: no such store folder; create one with `smec embed`", tmp_path)


def test_a_run_folder_under_a_file(fresh, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    argv = ["fit", "--config", fresh.recipe, f"--trainer.default_root_dir={tmp_path / 'notes.txt' / 'run'}"]
    expect = r"trainer\.default_root_dir: cannot create \S+/run: \S+notes\.txt is not a folder$"
    fails(capsys, argv, expect, tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_run_folder(fresh, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        argv = ["fit", "--config", fresh.recipe, f"--trainer.default_root_dir={locked / 'run'}"]
        fails(
            capsys,
            argv,
            r"trainer\.default_root_dir: \S+ cannot be created: \S+locked is not writable",
            tmp_path,
        )
    finally:
        locked.chmod(0o755)


def test_weights_only_false_is_refused(fitted, tmp_path, capsys):
    argv = ["predict", "--config", fitted.config, "--ckpt_path", fitted.last, "--weights_only", "false"]
    fails(
        capsys,
        argv,
        r"--weights_only false: smec reads checkpoints with weights_only=true only",
        tmp_path,
        fitted.base,
    )


# --------------------------------------------------------------------------------------------------------
# checkpoints: not a checkpoint, crafted, from another configuration, missing


def not_a_checkpoint(kind: str, tmp_path: Path) -> tuple[Path, str]:
    if kind == "readme":
        path = tmp_path / "README.md"
        path.write_text("# not a checkpoint\n")
        return path, r"README\.md is not a Lightning checkpoint \(not a file torch\.save wrote\)$"
    if kind == "empty":
        path = tmp_path / "empty.ckpt"
        path.write_bytes(b"")
        return path, r"empty\.ckpt is not a Lightning checkpoint \(an empty file\)$"
    if kind == "folder":
        path = tmp_path / "ckpts"
        path.mkdir()
        return path, r"ckpts is not a file \(expected a Lightning checkpoint, \*\.ckpt\)$"
    if kind == "state_dict":
        import torch

        path = tmp_path / "weights.pt"
        torch.save({"decoder.weight": torch.zeros(2, 2)}, path)
        return path, r"weights\.pt is not a Lightning checkpoint \(no state_dict\)$"
    return tmp_path / "missing.ckpt", r"missing\.ckpt: no such file$"


@pytest.mark.parametrize("kind", ["readme", "empty", "folder", "state_dict", "missing"])
@pytest.mark.parametrize("verb", VERBS)
def test_a_ckpt_path_that_is_not_a_checkpoint(verb, kind, fitted, tmp_path, capsys):
    path, expect = not_a_checkpoint(kind, tmp_path)
    fails(
        capsys,
        [verb, "--config", fitted.config, "--ckpt_path", path],
        r"--ckpt_path: \S*" + expect,
        tmp_path,
        fitted.base,
    )


@pytest.mark.parametrize("verb", VERBS)
def test_a_crafted_checkpoint_never_runs(verb, fitted, tmp_path, capsys):
    import torch

    marker = tmp_path / "ran"
    evil = crafted_checkpoint(tmp_path / "evil.ckpt", marker)
    probe = tmp_path / "probe"
    probe.mkdir()
    torch.load(crafted_checkpoint(probe / "evil.ckpt", probe / "ran"), weights_only=False)
    assert (probe / "ran").exists()  # the payload is live: an unrestricted load runs it
    expect = r"--ckpt_path: \S*evil\.ckpt: refused to load: it holds \S*open, which is not a type smec checkpoints contain"
    fails(capsys, [verb, "--config", fitted.config, "--ckpt_path", evil], expect, tmp_path, fitted.base)
    assert not marker.exists()


def test_a_crafted_checkpoint_as_extend_from_never_runs(fresh, tmp_path, capsys):
    marker = tmp_path / "ran"
    evil = crafted_checkpoint(tmp_path / "evil.ckpt", marker)
    cfg = yaml.safe_load((REPO / "configs" / "smec.yaml").read_text())
    cfg["model"]["init_args"].update(
        dims=[8, 4, 2], smrl={"epochs_per_stage": [0, 0, 1]}, sxbm={"memory_size": 32, "k": 4}
    )
    cfg["model"]["init_args"]["extend_from"] = str(evil)
    cfg["data"]["init_args"].update(store=str(fresh.store), models=None, batch_size=8)
    cfg["trainer"].update(default_root_dir=str(fresh.root), callbacks=[], enable_progress_bar=False)
    path = tmp_path / "smec.yaml"
    path.write_text(yaml.safe_dump(cfg))
    expect = r"model\.extend_from: \S*evil\.ckpt: refused to load: it holds \S*open"
    # the model reads it in its setup hook: held-back loggers leave no csv/ folder behind either
    fails(capsys, ["fit", "--config", path], expect, tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("verb", VERBS)
def test_a_checkpoint_of_another_configuration(verb, fitted, tmp_path, capsys):
    """Asked for other sizes than the checkpoint was trained with: every differing key, both values."""
    argv = [verb, "--config", fitted.config, "--ckpt_path", "last", "--model.init_args.dims=[2, 8]"]
    expect = (
        rf"--ckpt_path {re.escape(str(fitted.last))} was trained with other settings than this config: "
        r"model\.init_args\.dims: checkpoint \[2, 4, 8\], config \[2, 8\] \(run with its own config, --config "
    )
    fails(capsys, argv, expect, tmp_path, fitted.base)


def test_predict_with_another_input_than_the_checkpoint(fitted, tmp_path, capsys):
    """A 10-d checkpoint and a config reading 6-d input: named, instead of silently predicting."""
    argv = [
        "predict",
        "--config",
        fitted.config,
        "--ckpt_path",
        fitted.last,
        "--data.init_args.models=[m1]",
        "--model.init_args.output_dim=6",
        "--model.init_args.dims=[2, 6]",
    ]
    expect = (
        r"model\.init_args\.dims: checkpoint \[2, 4, 8\], config \[2, 6\]; model\.init_args\.input_dim: "
        r"checkpoint 10, config 6; model\.init_args\.output_dim: checkpoint 8, config 6; "
        r"data\.init_args\.models: checkpoint \['m1', 'm2'\], config \['m1'\]"
    )
    fails(capsys, argv, expect, tmp_path, fitted.base)


def test_resuming_from_another_store(fitted, tmp_path, capsys):
    other = build_store(tmp_path / "other", seed=1)
    argv = ["fit", "--config", fitted.config, "--ckpt_path", fitted.last, f"--data.init_args.store={other}"]
    fails(
        capsys,
        argv,
        r"data\.init_args\.store: checkpoint '\S+/store', config '\S+/other'",
        tmp_path,
        fitted.base,
    )


@pytest.mark.parametrize("verb", TRAINED)
def test_evaluating_without_a_checkpoint(verb, fresh, tmp_path, capsys):
    """No checkpoint given: an error, not the metrics / embeddings of an untrained model."""
    expect = rf"--ckpt_path: smec {verb} needs a trained checkpoint, e\.g\. --ckpt_path best"
    fails(capsys, [verb, "--config", fresh.recipe], expect, tmp_path)


@pytest.mark.parametrize("ckpt", ["last", "best"])
@pytest.mark.parametrize("verb", TRAINED)
def test_last_or_best_when_the_run_has_no_checkpoint(verb, ckpt, fresh, tmp_path, capsys):
    expect = (
        r"--ckpt_path last: no last\*\.ckpt in \S+/run/checkpoints$"
        if ckpt == "last"
        else (r"--ckpt_path best: no checkpoint found in \S+/run/checkpoints \(expected \S+last\.ckpt\)$")
    )
    fails(capsys, [verb, "--config", fresh.recipe, "--ckpt_path", ckpt], expect, tmp_path)


# --------------------------------------------------------------------------------------------------------
# predict's writer: names, existing output, unwritable output


def writer(output_dir: Path, **init: object) -> list[str]:
    args = [
        "--trainer.callbacks+=smec.prediction.StorePredictionWriter",
        f"--trainer.callbacks.output_dir={output_dir}",
    ]
    return args + [
        f"--trainer.callbacks.{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in init.items()
    ]


@pytest.fixture
def no_prediction(monkeypatch):
    """Predicting at all fails the test: the checks must come first."""
    from smec.systems.mrl import MRLDecoderModule

    def predict_step(*args, **kwargs):
        raise AssertionError("predicted before the output was checked")

    monkeypatch.setattr(MRLDecoderModule, "predict_step", predict_step)


@pytest.mark.parametrize("name", ["..", ".", "../escape", "a/b", ""])
def test_a_writer_name_that_leaves_the_output_folder(name, fitted, tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("the output's parent: must survive overwrite")
    out = tmp_path / "out"
    out.mkdir()
    argv = [
        "predict",
        "--config",
        fitted.config,
        "--ckpt_path",
        fitted.last,
        *writer(out, name=name, overwrite=True),
    ]
    expect = rf"StorePredictionWriter\.name: {re.escape(repr(name))} is not a plain name \(expected one folder name"
    fails(capsys, argv, expect, tmp_path, fitted.base)


def test_a_writer_target_that_exists_is_found_before_predicting(fitted, tmp_path, capsys, no_prediction):
    out = tmp_path / "out"
    (out / "mrl").mkdir(parents=True)
    argv = ["predict", "--config", fitted.config, "--ckpt_path", fitted.last, *writer(out)]
    fails(
        capsys,
        argv,
        r"\S+/out/mrl exists; set overwrite: true on StorePredictionWriter",
        tmp_path,
        fitted.base,
    )


def test_an_unwritable_predict_output_is_found_before_predicting(fitted, tmp_path, capsys, no_prediction):
    (tmp_path / "notes.txt").write_text("x")
    argv = [
        "predict",
        "--config",
        fitted.config,
        "--ckpt_path",
        fitted.last,
        *writer(tmp_path / "notes.txt" / "out"),
    ]
    expect = r"StorePredictionWriter\.output_dir: cannot create \S+/out: \S+notes\.txt is not a folder$"
    fails(capsys, argv, expect, tmp_path, fitted.base)


# --------------------------------------------------------------------------------------------------------
# systems whose output would not be narrower than their input


def test_the_mrl_recipe_on_a_narrow_store(fresh, tmp_path, capsys):
    """configs/mrl.yaml's 512-d decoder on a 10-d store would expand its input: refused."""
    argv = [
        "fit",
        "--config",
        REPO / "configs" / "mrl.yaml",
        f"--data.init_args.store={fresh.store}",
        "--data.init_args.models=[m1, m2]",
        f"--trainer.default_root_dir={fresh.root}",
    ]
    expect = r"model\.output_dim=512 is wider than the input \(model\.input_dim=10, the data's width\)"
    fails(capsys, argv, expect, tmp_path)


def test_the_smec_recipe_on_a_narrow_store(fresh, tmp_path, capsys):
    argv = [
        "fit",
        "--config",
        REPO / "configs" / "smec.yaml",
        f"--data.init_args.store={fresh.store}",
        "--data.init_args.models=[m1, m2]",
        f"--trainer.default_root_dir={fresh.root}",
    ]
    expect = (
        r"model\.dims \[512, 256, 128, 64, 32\]: sizes \[32, 64, 128, 256, 512\] are wider than the input"
    )
    fails(capsys, argv, expect, tmp_path)


def test_a_setting_checked_in_setup_leaves_no_run_folder(fresh, tmp_path, capsys):
    """SMEC's rank loss without (query, document) pairs is found in its setup hook, after Lightning would have
    created the loggers' folders: nothing is left behind."""
    argv = [
        "fit",
        "--config",
        REPO / "configs" / "smec.yaml",
        f"--data.init_args.store={fresh.store}",
        "--data.init_args.models=[m1, m2]",
        "--data.init_args.mode=unsupervised",
        "--model.init_args.dims=[8, 4]",
        f"--trainer.default_root_dir={fresh.root}",
    ]
    fails(
        capsys,
        argv,
        r"model\.rank_weight / model\.infonce_weight > 0 need \(query, document\) pairs",
        tmp_path,
    )


# --------------------------------------------------------------------------------------------------------
# smec eval: the grid and the output folder


@pytest.fixture
def no_grid(monkeypatch):
    import smec.commands.eval as command
    import smec.evaluation.baselines as baselines

    def fail(*args, **kwargs):
        raise AssertionError("computed before the output was checked")

    monkeypatch.setattr(command, "baseline_rows", fail)
    monkeypatch.setattr(baselines, "evaluate_grid", fail)


def test_an_unwritable_eval_output_is_found_before_computing(tmp_path, capsys, no_grid):
    store = build_store(tmp_path / "store")
    (tmp_path / "notes.txt").write_text("x")
    argv = ["eval", "--store", store, "--out", tmp_path / "notes.txt" / "eval"]
    fails(capsys, argv, r"--out: cannot create \S+/eval: \S+notes\.txt is not a folder$", tmp_path)


def test_an_eval_output_that_is_a_file(tmp_path, capsys, no_grid):
    store = build_store(tmp_path / "store")
    (tmp_path / "results").write_text("x")
    fails(
        capsys,
        ["eval", "--store", store, "--out", tmp_path / "results"],
        r"--out: \S+results exists and is not a folder$",
        tmp_path,
    )


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (
            ["--dims", "2", "16"],
            r"--dims \[16\]: wider than the input \(the concatenation of m1, m2 has 10 dims\)$",
        ),
        (
            ["--dims", "2", "4", "--precisions", "binary"],
            r"--dims \[2, 4\] with --precisions binary: binary codes need a multiple of 8 dims$",
        ),
        (["--dims", "0"], r"--dims: expected positive integers, got \[0\]$"),
        (["--models", "m3"], r"--models \['m3'\]: not in \S+store \(it holds \['m1', 'm2'\]\)$"),
        (["--fit-sample", "0"], r"argument --fit-sample: expected an integer >= 1, got 0"),
        (["--pq-max-bits", "4"], r"argument --pq-max-bits: expected an integer >= 8, got 4"),
        (["--precisions", "int3"], r"unknown precision 'int3'"),
        (["--int-scoring", "both"], r"argument --int-scoring: invalid choice: 'both'"),
    ],
    ids=[
        "dims-wider",
        "binary-odd",
        "dims-0",
        "unknown-model",
        "fit-sample-0",
        "pq-bits",
        "precision",
        "scoring",
    ],
)
def test_an_eval_grid_that_cannot_be_computed(args, expect, tmp_path, capsys):
    store = build_store(tmp_path / "store")
    fails(capsys, ["eval", "--store", store, "--out", tmp_path / "eval", "--no-pq", *args], expect, tmp_path)


def test_eval_without_out_is_one_line(tmp_path, capsys):
    store = build_store(tmp_path / "store")
    fails(
        capsys,
        ["eval", "--store", store],
        r"the following arguments are required: --out \(see smec eval --help\)$",
        tmp_path,
    )


def test_an_automatic_grid_says_once_what_it_left_out(tmp_path, capsys):
    """The default dims (32 … 256) on a 10-d store, binary at widths that are not whole bytes: one warning."""
    store = build_store(tmp_path / "store")
    outcome = run_smec(
        capsys, ["eval", "--store", store, "--out", tmp_path / "eval", "--no-pq", "--fit-sample", "100"]
    )
    assert outcome.code == 0, outcome.err
    warned = [line for line in outcome.err.splitlines() if "warning" in line]
    assert warned == [
        "smec eval: warning: left out of the grid: default dims [32, 64, 128, 256] (wider than the input: the "
        "concatenation of m1, m2 has 10 dims); model:m1 binary at dims [6] (binary codes need a multiple of 8 "
        "dims); model:m2 binary at dims [4] (binary codes need a multiple of 8 dims); concat binary at dims [10] "
        "(binary codes need a multiple of 8 dims)"
    ]


# --------------------------------------------------------------------------------------------------------
# smec compare: method arguments, grid widths, options


FAKE = "tests.datamodules.fake_encoder:make"


def experiment(tmp_path: Path, **overrides: object) -> Path:
    """A comparison of one MRL fit on a tiny BEIR folder embedded by the model-free 8-d fake encoder."""
    data = tmp_path / "beir"
    (data / "qrels").mkdir(parents=True)
    (data / "corpus.jsonl").write_text(
        "".join(
            json.dumps({"_id": f"d{i}", "text": f"document {i} on topic {i % 7}"}) + "\n" for i in range(40)
        )
    )
    (data / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": f"about topic {i % 7}"}) + "\n" for i in range(12))
    )
    for split, queries in (("train", range(0, 6)), ("dev", range(6, 9)), ("test", range(9, 12))):
        rows = "".join(f"q{i}\td{(3 * i) % 40}\t1\n" for i in queries)
        (data / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows)
    fit = recipe(tmp_path, tmp_path / "store", tmp_path / "unused", name="tiny-mrl.yaml")
    cfg = {
        "name": "tiny",
        "dataset": str(data),
        "store": str(tmp_path / "store"),
        "models": [FAKE],
        "dims": [2, 4],
        "precisions": ["float32"],
        "trainer": [str(REPO / "configs/trainer/cpu.yaml")],
        "logger": "csv",
        "baselines": {"pq": False, "fit_sample": 40},
        "methods": [{"name": "mrl", "config": str(fit), "args": {"trainer.max_epochs": 1}}],
    }
    cfg.update(overrides)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def compare_argv(tmp_path: Path, config: Path, *extra: str) -> list:
    return ["compare", "--config", config, "--out", tmp_path / "run", "--no-progress", *extra]


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (
            {"model.init_args.lrr": 0.01},
            r"--model\.init_args\.lrr: smec\.systems\.mrl\.MRLDecoderModule has no argument 'lrr' \(did you mean 'lr'\?\)$",
        ),
        ({"trainer.max_epoch": 3}, r"--trainer\.max_epoch: not an option of smec fit"),
        (
            {"model.init_args.dims": "many"},
            r"--model\.init_args\.dims: expected list\[int\] or null, got many$",
        ),
    ],
    ids=["model-typo", "trainer-typo", "wrong-type"],
)
def test_a_typo_in_a_method_argument_is_found_before_embedding(args, expect, tmp_path, capsys):
    methods = [{"name": "mrl", "config": str(tmp_path / "tiny-mrl.yaml"), "args": args}]
    config = experiment(tmp_path, methods=methods)
    fails(
        capsys,
        compare_argv(tmp_path, config),
        rf"^smec compare: error: \S+tiny\.yaml: method mrl: {expect[0:]}",
        tmp_path,
    )


def test_compare_dims_wider_than_a_method_are_found_before_fitting(tmp_path, capsys):
    config = experiment(tmp_path, dims=[2, 4, 8])
    methods = yaml.safe_load(config.read_text())["methods"]
    methods[0]["args"] = {"model.init_args.output_dim": 4, "model.init_args.dims": [2, 4]}
    config.write_text(yaml.safe_dump({**yaml.safe_load(config.read_text()), "methods": methods}))
    expect = r"method mrl: dims \[8\] are wider than its output \(model\.init_args\.output_dim=4\)"
    # The embed step ran (its store is reused by the rerun) and the run folder holds its state; no fit started.
    fails(
        capsys,
        compare_argv(tmp_path, config),
        expect,
        tmp_path,
        may_change=lambda p: p.startswith(("store", "run")),
    )
    assert not (tmp_path / "run" / "mrl").exists()


def test_compare_dims_wider_than_the_input(tmp_path, capsys):
    config = experiment(tmp_path, dims=[2, 16])
    expect = (
        r"dims \[16\] are wider than the input: tests\.datamodules\.fake_encoder:make concatenate to 8 dims$"
    )
    fails(
        capsys,
        compare_argv(tmp_path, config),
        expect,
        tmp_path,
        may_change=lambda p: p.startswith(("store", "run")),
    )
    assert not (tmp_path / "run" / "mrl").exists()


def test_compare_binary_at_dims_that_are_not_whole_bytes(tmp_path, capsys):
    config = experiment(tmp_path, precisions=["float32", "binary"])
    expect = r"dims \[2, 4\] with precision binary: binary codes need a multiple of 8 dims"
    fails(capsys, compare_argv(tmp_path, config), expect, tmp_path)


@pytest.mark.parametrize("jobs", ["0", "-1", "two"])
def test_compare_jobs_must_be_positive(jobs, tmp_path, capsys):
    config = experiment(tmp_path)
    fails(
        capsys,
        compare_argv(tmp_path, config, "--jobs", jobs),
        r"argument --jobs: expected an integer >= 1",
        tmp_path,
    )


def test_compare_fresh_deletes_only_a_comparison(tmp_path, capsys):
    config = experiment(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "thesis.tex").write_text("not a comparison")
    expect = r"--fresh: \S+/run does not hold a comparison \(no state\.json\): not deleting it"
    fails(capsys, compare_argv(tmp_path, config, "--fresh"), expect, tmp_path)


def test_compare_unwritable_out(tmp_path, capsys):
    config = experiment(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    argv = ["compare", "--config", config, "--out", tmp_path / "notes.txt" / "run", "--no-progress"]
    fails(capsys, argv, r"--out: cannot create \S+/run: \S+notes\.txt is not a folder$", tmp_path)


def test_a_verb_the_system_does_not_have(fitted, tmp_path, capsys):
    """MRL has no test_step: Lightning's MisconfigurationException, raised once the run starts, is one line."""
    argv = ["test", "--config", fitted.config, "--ckpt_path", fitted.last]
    fails(capsys, argv, r"No `test_step\(\)` method defined to run `Trainer\.test`", tmp_path, fitted.base)
