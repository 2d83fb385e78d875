"""Resume is exact: a fit interrupted anywhere and resumed from ``last.ckpt`` ends bit-identical to an uninterrupted
one (final weights, selected epoch, every epoch's validation metrics), for the four trainable systems.

"Killed" fits are simulated in-process (a callback raises mid-epoch: what ``kill -9`` leaves is the last
``last.ckpt`` written), and SIGTERM / SIGUSR1 are real signals sent to this process. Between the interruption and
the resume every global generator is perturbed, so only what the checkpoint restores can make the runs agree.
The real ``kill -9`` / SIGTERM of a ``smec fit`` subprocess are in tests/smec/test_lightning_cli.py.
"""

from __future__ import annotations

import copy
import os
import random
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from datamodules.embedding import EmbeddingDataModule
from smec.checkpointing import ResumeCheckpoint
from smec.evaluation.callback import RetrievalEvalCallback
from smec.evaluation.spec import EvaluationSpec
from smec.fit_callbacks import SelectableEarlyStopping
from smec.systems.adaptors import MatryoshkaAdaptorModule, SearchAdaptorModule
from smec.systems.base import RNG_KEY
from smec.systems.mrl import MRLDecoderModule
from smec.systems.smec import SMECModule

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
MONITOR = "val/ndcg@10/mean"

# name -> (system factory, data mode, batch size, block rows, epochs). The tiny store concatenates to D = 10.
SYSTEMS: dict[str, tuple[Any, str, int, int, int]] = {
    # Blocks of 35 rows: epochs have 8 or 7 batches (epoch 1: 7), which Lightning measures once per fit.
    "mrl": (lambda: MRLDecoderModule(input_dim=10, output_dim=8, dims=[2, 4, 8]), "unsupervised", 16, 40, 5),
    "mrl-pca": (
        lambda: MRLDecoderModule(input_dim=10, output_dim=8, dims=[2, 4, 8], init_from="pca", init_sample=50),
        "unsupervised",
        16,
        32,
        5,
    ),
    # Chain 10 → 8 → 4, two epochs per stage: the stage switch (optimizer rebuilt) at epoch 2; the last stage
    # keeps training in epoch 4.
    "smec": (
        lambda: SMECModule(
            input_dim=10, dims=[8, 4], sxbm={"memory_size": 48, "k": 4}, smrl={"epochs_per_stage": 2}
        ),
        "both",
        16,
        32,
        5,
    ),
    # Unsupervised epochs 0-1, supervised (rank loss, lr × 0.1, Adam rebuilt) from epoch 2.
    "matryoshka-adaptor": (
        lambda: MatryoshkaAdaptorModule(
            input_dim=10, dims=[2, 4, 10], eval_dims=[2, 4], topk=4, unsupervised_epochs=2
        ),
        "both",
        16,
        32,
        5,
    ),
    "search-adaptor": (lambda: SearchAdaptorModule(input_dim=10, eval_dims=[2, 4]), "supervised", 8, 32, 5),
}


class Crash(Callback):
    """Raise at the end of training batch ``batch`` of ``epoch``: what a kill -9 there leaves on disk."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            raise RuntimeError("killed")


class SendSignal(Callback):
    """Send ``signum`` to this process at the end of training batch ``batch`` of ``epoch`` (or, with
    ``validation=True``, of validation batch ``batch`` after that epoch's training)."""

    def __init__(
        self, epoch: int, batch: int, signum: int = int(signal.SIGTERM), validation: bool = False
    ) -> None:
        self.epoch, self.batch, self.signum, self.validation = epoch, batch, signum, validation

    def _maybe(self, trainer, batch_idx):
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch) and not trainer.sanity_checking:
            os.kill(os.getpid(), self.signum)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not self.validation:
            self._maybe(trainer, batch_idx)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if self.validation:
            self._maybe(trainer, batch_idx)


class Recorder(Callback):
    """Every epoch's validation metrics, and the optimizer / scheduler state each epoch starts with."""

    def __init__(self) -> None:
        self.val: dict[int, dict[str, float]] = {}
        self.optim: dict[int, tuple[Any, Any]] = {}

    def on_train_epoch_start(self, trainer, pl_module):
        # Callbacks run before the system's own hook, so a stage switch (optimizer rebuild) comes after this.
        schedulers = [copy.deepcopy(c.scheduler.state_dict()) for c in trainer.lr_scheduler_configs]
        self.optim[trainer.current_epoch] = (copy.deepcopy(trainer.optimizers[0].state_dict()), schedulers)

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            metrics = trainer.callback_metrics
            self.val[trainer.current_epoch] = {
                k: float(v) for k, v in metrics.items() if k.startswith("val/")
            }


@dataclass
class Fit:
    state: dict[str, torch.Tensor]
    best: str
    val: dict[int, dict[str, float]]
    optim: dict[int, tuple[Any, Any]]
    global_step: int
    trainer: Any = field(repr=False, default=None)
    stopped: BaseException | None = None


def fit(
    name: str,
    store: Path,
    root: Path,
    extra: tuple[Callback, ...] = (),
    ckpt_path: Path | None = None,
    patience: int = 3,
    epochs: int | None = None,
    expect: type[BaseException] | None = None,
    **trainer_kw: Any,
) -> Fit:
    """One fit with the recipes' callbacks (evaluator, best-on-dev checkpoint, ResumeCheckpoint, early stopping).

    ``expect``: the exception the fit must end with (an interruption); it is kept in ``Fit.stopped``.
    """
    factory, mode, batch_size, block_rows, max_epochs = SYSTEMS[name]
    L.seed_everything(0, verbose=False)
    model = factory()
    dm = EmbeddingDataModule(str(store), mode=mode, batch_size=batch_size, block_rows=block_rows)
    recorder = Recorder()
    callbacks = [
        RetrievalEvalCallback(EvaluationSpec(precisions=("float32",))),
        ModelCheckpoint(
            dirpath=root,
            monitor=MONITOR,
            mode="max",
            save_on_train_epoch_end=False,
            filename="best-{epoch:02d}",
        ),
        ResumeCheckpoint(dirpath=str(root)),
        SelectableEarlyStopping(
            monitor=MONITOR, mode="max", patience=patience, check_on_train_epoch_end=False
        ),
        recorder,
        *extra,
    ]
    trainer = L.Trainer(
        max_epochs=epochs or max_epochs,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        **trainer_kw,
    )
    stopped = None
    if expect is None:
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    else:
        with pytest.raises(expect) as info:
            trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
        stopped = info.value
    return Fit(
        state={k: v.detach().clone() for k, v in model.state_dict().items()},
        best=Path(trainer.checkpoint_callback.best_model_path).name,
        val=recorder.val,
        optim=recorder.optim,
        global_step=trainer.global_step,
        trainer=trainer,
        stopped=stopped,
    )


def perturb_every_generator() -> None:
    torch.manual_seed(12345)
    torch.rand(7)
    np.random.seed(54321)
    random.seed(999)


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors differ: {different}"


def assert_same_optim(a: tuple[Any, Any], b: tuple[Any, Any]) -> None:
    (opt_a, sched_a), (opt_b, sched_b) = a, b
    assert opt_a["param_groups"] == opt_b["param_groups"]
    assert opt_a["state"].keys() == opt_b["state"].keys()
    for i, state in opt_a["state"].items():
        assert state.keys() == opt_b["state"][i].keys()
        assert all(
            torch.equal(torch.as_tensor(v), torch.as_tensor(opt_b["state"][i][k])) for k, v in state.items()
        )
    assert sched_a == sched_b


def assert_resumed_fit_is_exact(reference: Fit, first: Fit, resumed: Fit, resumed_from_epoch: int) -> None:
    assert_same_state(resumed.state, reference.state)
    assert resumed.best == reference.best
    assert resumed.global_step == reference.global_step
    # Every epoch's validation metrics: those logged before the interruption, then those of the resumed fit.
    assert {**{e: v for e, v in first.val.items() if e < resumed_from_epoch}, **resumed.val} == reference.val
    # The optimizer / scheduler the resumed fit starts with are the ones the uninterrupted fit had there.
    assert_same_optim(resumed.optim[resumed_from_epoch], reference.optim[resumed_from_epoch])


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from tests.conftest import build_store

    return build_store(tmp_path_factory.mktemp("resume") / "store")


@pytest.fixture(scope="module")
def references(store, tmp_path_factory):
    """Uninterrupted fits, one per system, shared by the tests of this module."""
    cache: dict[str, Fit] = {}

    def get(name: str) -> Fit:
        if name not in cache:
            cache[name] = fit(name, store, tmp_path_factory.mktemp(f"reference-{name}"))
        return cache[name]

    return get


# The kill lands mid-epoch, after at least one epoch-end last.ckpt: for SMEC inside stage 1 (after one stage
# switch), for Matryoshka-Adaptor after its switch to the supervised stage, and (epoch 2) in its switch epoch.
KILLS = [
    ("mrl", 3, 2),
    ("mrl-pca", 2, 1),
    ("smec", 3, 2),
    ("matryoshka-adaptor", 3, 2),
    ("matryoshka-adaptor", 2, 3),
    ("search-adaptor", 2, 1),
]


@pytest.mark.parametrize(("name", "epoch", "batch"), KILLS)
def test_killed_fit_resumes_bit_identical(name, epoch, batch, store, references, tmp_path):
    reference = references(name)
    first = fit(name, store, tmp_path, extra=(Crash(epoch, batch),), expect=RuntimeError)
    assert str(first.stopped) == "killed"
    last = tmp_path / "last.ckpt"
    saved = load(last)
    assert saved["epoch"] == epoch - 1  # written at the end of the epoch before the kill, improved or not
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["epoch"] == epoch - 1
    perturb_every_generator()
    resumed = fit(name, store, tmp_path, ckpt_path=last)
    assert_resumed_fit_is_exact(reference, first, resumed, epoch)


@pytest.mark.parametrize(
    ("name", "epoch", "batch", "signum"),
    [
        ("mrl", 1, 3, signal.SIGTERM),
        ("smec", 2, 0, signal.SIGUSR1),
        ("smec", 3, 2, signal.SIGTERM),
        ("matryoshka-adaptor", 2, 4, signal.SIGTERM),
        ("search-adaptor", 3, 2, signal.SIGUSR1),
    ],
)
def test_signal_mid_epoch_writes_last_ckpt_there_and_resumes_bit_identical(
    name, epoch, batch, signum, store, references, tmp_path, capsys
):
    reference = references(name)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    first = fit(name, store, tmp_path, extra=(SendSignal(epoch, batch, signum),), expect=SystemExit)
    assert first.stopped.code == 128 + signum  # never 0: nothing may take the fit for finished
    assert {s: signal.getsignal(s) for s in handlers} == handlers  # the fit put the handlers back
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"smec fit: stopped by {signal.Signals(signum).name} at epoch {epoch}, step {first.global_step}, "
        f"saved in {tmp_path / 'last.ckpt'}: resume with --ckpt_path last"
    )
    saved = load(tmp_path / "last.ckpt")
    assert saved["epoch"] == epoch and saved["global_step"] == first.global_step  # mid-epoch, after the batch
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"epoch": epoch, "batches": batch + 1}
    ]
    perturb_every_generator()
    resumed = fit(name, store, tmp_path, ckpt_path=tmp_path / "last.ckpt")
    assert_same_state(resumed.state, reference.state)
    assert resumed.best == reference.best and resumed.global_step == reference.global_step
    assert {**{e: v for e, v in first.val.items() if e < epoch}, **resumed.val} == reference.val


def test_signal_during_validation_waits_for_its_end(store, references, tmp_path):
    reference = references("smec")
    first = fit("smec", store, tmp_path, extra=(SendSignal(2, 1, validation=True),), expect=SystemExit)
    assert first.stopped.code == 128 + signal.SIGTERM
    assert sorted(first.val) == [0, 1, 2]  # epoch 2's validation ran to its end
    saved = load(tmp_path / "last.ckpt")
    assert (
        saved["epoch"] == 2 and saved["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["epoch"] == 2
    )
    perturb_every_generator()
    resumed = fit("smec", store, tmp_path, ckpt_path=tmp_path / "last.ckpt")
    assert_resumed_fit_is_exact(reference, first, resumed, 3)


def test_an_epoch_without_validation_ends_with_last_ckpt_too(store, tmp_path):
    every_other = {"check_val_every_n_epoch": 2}
    reference = fit("smec", store, tmp_path / "reference", **every_other)
    assert sorted(reference.val) == [1, 3]
    first = fit("smec", store, tmp_path, extra=(Crash(3, 2),), expect=RuntimeError, **every_other)
    assert (
        load(tmp_path / "last.ckpt")["epoch"] == 2
    )  # written at the end of training, epoch 2 validated nothing
    perturb_every_generator()
    resumed = fit("smec", store, tmp_path, ckpt_path=tmp_path / "last.ckpt", **every_other)
    assert_resumed_fit_is_exact(reference, first, resumed, 3)


def test_last_ckpt_is_written_every_epoch_whatever_the_metric_did(store, tmp_path):
    seen = []

    class Watch(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            seen.append(load(tmp_path / "last.ckpt")["epoch"])

    result = fit("smec", store, tmp_path, extra=(Watch(),))
    assert len(result.val) >= 4 and seen == list(range(len(result.val)))
    # The metric did not improve every epoch, yet last.ckpt followed every one; best-* only the improvements.
    best_epochs = [int(p.stem.split("=")[1]) for p in tmp_path.glob("best-*.ckpt")]
    assert best_epochs == [int(result.best.split("=")[1].split(".")[0])]
    assert len({tuple(sorted(v.items())) for v in result.val.values()}) > 1
    assert sorted(p.name for p in tmp_path.glob("last*.ckpt")) == ["last.ckpt"]


def test_a_fit_stopped_by_early_stopping_stays_stopped_when_resumed(store, tmp_path):
    # patience 0: the first epoch that does not improve stops the fit; last.ckpt records that it should stop.
    first = fit("mrl", store, tmp_path, patience=0, epochs=12)
    assert first.global_step < 12 * 9
    saved = load(tmp_path / "last.ckpt")
    state = next(v for k, v in saved["callbacks"].items() if k.startswith("ResumeCheckpoint"))
    assert state["should_stop"] is True
    resumed = fit("mrl", store, tmp_path, patience=0, epochs=12, ckpt_path=tmp_path / "last.ckpt")
    assert resumed.global_step == first.global_step  # a kill right after that checkpoint changes nothing
    assert_same_state(resumed.state, first.state)


def test_checkpoints_carry_every_rank_generator_state_loadable_with_weights_only(store, references):
    reference = references("smec")
    saved = torch.load(Path(reference.trainer.checkpoint_callback.dirpath) / "last.ckpt", weights_only=True)
    (states,) = saved[RNG_KEY]  # one process: one entry
    assert set(states) >= {"torch", "numpy", "python"}


@pytest.mark.parametrize("recipe", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_recipe_writes_last_ckpt_with_resume_checkpoint(recipe):
    """The recipes run the standard callbacks (smec/fit_callbacks.py) and list no checkpoint of their own."""
    from smec.fit_callbacks import FitCallbacks

    config = yaml.safe_load((CONFIGS / recipe).read_text())
    assert not (config["trainer"].get("callbacks") or [])
    callbacks = FitCallbacks(**config.get("fit_callbacks", {})).build(EvaluationSpec())
    assert [type(c) for c in callbacks].count(ResumeCheckpoint) == 1
    (best,) = [c for c in callbacks if type(c) is ModelCheckpoint]
    # One writer of last.ckpt: two would alternate and version it (last-v1.ckpt).
    assert not best.save_last and best.monitor == MONITOR


def test_resume_checkpoint_runs_after_every_other_callback(store, tmp_path):
    resume = ResumeCheckpoint(dirpath=str(tmp_path))
    early = SelectableEarlyStopping(monitor=MONITOR, mode="max", check_on_train_epoch_end=False)
    best = ModelCheckpoint(dirpath=tmp_path, monitor=MONITOR, mode="max", save_on_train_epoch_end=False)
    trainer = L.Trainer(
        max_epochs=1,
        callbacks=[resume, RetrievalEvalCallback(EvaluationSpec(precisions=("float32",))), best, early],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(SYSTEMS["mrl"][0](), datamodule=EmbeddingDataModule(str(store), batch_size=16, block_rows=32))
    assert trainer.callbacks[-1] is resume
    assert trainer.checkpoint_callback is best  # "best" still resolves to the best-on-dev checkpoint
    saved = load(tmp_path / "last.ckpt")
    best_state = next(v for k, v in saved["callbacks"].items() if k.startswith("ModelCheckpoint"))
    assert best_state["best_model_path"] == best.best_model_path  # saved after the best one's update
