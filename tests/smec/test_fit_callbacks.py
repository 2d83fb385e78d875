"""The standard fit callbacks, defined once (smec/fit_callbacks.py) and added by the CLI to every run."""

from __future__ import annotations

import pytest
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from smec.checkpointing import ResumeCheckpoint
from smec.errors import ConfigError
from smec.evaluation.callback import RetrievalEvalCallback
from smec.evaluation.spec import EvaluationSpec
from smec.fit_callbacks import FitCallbacks
from tests.cli_harness import assert_fails_cleanly
from tests.conftest import build_store
from tests.smec.test_fit_result import tiny_mrl


def test_the_standard_callbacks_and_their_settings():
    spec = EvaluationSpec(calibration_size=123, ndcg_at=5)
    evaluation, best, resume, stop = FitCallbacks(patience=3, mean_dims=(8,)).build(spec)
    assert isinstance(evaluation, RetrievalEvalCallback) and evaluation.spec is spec
    assert evaluation.split == "dev" and evaluation.mean_dims == [8]
    assert type(best) is ModelCheckpoint and best.monitor == stop.monitor == "val/ndcg@5/mean"
    assert best.mode == stop.mode == "max" and best.filename == "best-{epoch:02d}"
    assert isinstance(resume, ResumeCheckpoint)
    assert isinstance(stop, EarlyStopping) and stop.patience == 3
    assert len(FitCallbacks(patience=None).build(spec)) == 3  # no early stopping
    assert FitCallbacks(enabled=False).build(spec) == []
    with pytest.raises(
        ConfigError, match=r"^fit_callbacks\.patience must be a positive integer or null, got 0"
    ):
        FitCallbacks(patience=0).build(spec)
    with pytest.raises(ConfigError, match=r"^fit_callbacks\.signals: \['SIGFOO'\] are not signal names"):
        FitCallbacks(signals=("SIGFOO",)).build(spec)


def test_the_cli_adds_them_after_the_recipes_own_and_builds_the_evaluator_from_the_spec(tmp_path):
    from smec.lightning_cli import run_lightning_cli

    store = build_store(tmp_path / "store")
    args = ["--config", str(tiny_mrl(tmp_path, store)), "--evaluation.calibration_size=7"]
    cli = run_lightning_cli([*args, "--trainer.callbacks+=tests.smec.slow_callback.SlowEpochs"], run=False)
    names = [type(c).__name__ for c in cli.trainer.callbacks]
    assert names.index("SlowEpochs") < names.index("RetrievalEvalCallback")
    for name in ("RetrievalEvalCallback", "ModelCheckpoint", "ResumeCheckpoint", "SelectableEarlyStopping"):
        assert names.count(name) == 1, names
    (evaluation,) = [c for c in cli.trainer.callbacks if isinstance(c, RetrievalEvalCallback)]
    assert evaluation.spec == EvaluationSpec(calibration_size=7)
    off = run_lightning_cli([*args, "--fit_callbacks.enabled=false"], run=False)
    assert not [c for c in off.trainer.callbacks if isinstance(c, (RetrievalEvalCallback, EarlyStopping))]


def test_the_spec_smec_compare_passes_builds_with_its_codes(tmp_path):
    """`smec compare` passes the whole spec as JSON (`--evaluation={...}`): its codes reach the callback."""
    import json

    from smec.evaluation.spec import CodeSpec
    from smec.lightning_cli import run_lightning_cli

    store = build_store(tmp_path / "store")
    spec = EvaluationSpec(dims=(2, 4), codes=({"name": "rabitq", "budgets": [1], "methods": ["pca"]},))
    args = ["--config", str(tiny_mrl(tmp_path, store)), f"--evaluation={json.dumps(spec.to_dict())}"]
    cli = run_lightning_cli(args, run=False)
    (evaluation,) = [c for c in cli.trainer.callbacks if isinstance(c, RetrievalEvalCallback)]
    assert evaluation.spec == spec
    assert evaluation.spec.codes == (CodeSpec("rabitq", {}, budgets=(1,), methods=("pca",)),)


def test_a_bad_evaluation_setting_is_one_line_before_anything_is_written(tmp_path, capsys):
    store = build_store(tmp_path / "store")
    recipe = tiny_mrl(tmp_path, store)
    assert_fails_cleanly(
        capsys,
        ["fit", "--config", recipe, "--evaluation.int_scoring=both"],
        expect=r"evaluation: int_scoring must be one of \['symmetric', 'asymmetric'\], got 'both'$",
        watch=tmp_path,
    )
