"""`ResumeCheckpoint`: a ``last.ckpt`` a killed or stopped fit resumes from exactly.

Lightning's ``ModelCheckpoint(save_last=True)`` refreshes ``last.ckpt`` only when it saves a top-k checkpoint,
i.e. when the monitored metric improved, so a fit killed after its best epoch redid every epoch since. This
callback writes ``last.ckpt`` after every validation, whatever the metrics did (at the end of a training epoch
when that epoch ran no validation), and when the fit is asked to stop:

- **SIGTERM** (and **SIGUSR1** unless Lightning's SLURM auto-requeue owns it, which writes ``hpc_ckpt_*.ckpt``
  and requeues): Lightning stops the fit at the next batch boundary; ``last.ckpt`` is written there, mid-epoch,
  and the process exits with status 128 + the signal's number (not 0: nothing may take the fit for finished)
  after one line saying how to resume. A signal during validation waits for its end (a checkpoint of a half-run
  validation is not resumable), where ``last.ckpt`` is written anyway.
- **kill -9** leaves the last ``last.ckpt`` written (saves are atomic), at most one epoch old.

Resuming (``--ckpt_path last``) is exact, not approximate: the checkpoint holds every generator's state
(:mod:`smec.rng`, through :class:`smec.systems.base.CompressionSystem`), the training stream's position
(:class:`datamodules.streams.loader.StreamLoader`), the state of every other callback as it is after this
validation (this callback runs after all of them), and ``trainer.should_stop`` (an EarlyStopping that fired
before ``min_epochs`` still stops the resumed fit when the uninterrupted one would).
"""

from __future__ import annotations

import signal
import sys
import threading
import weakref
from typing import Any

import lightning.pytorch as pl
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

__all__ = ["ResumeCheckpoint"]


class ResumeCheckpoint(ModelCheckpoint):
    """``last.ckpt`` in ``dirpath`` (default ``<trainer.default_root_dir>/checkpoints``) after every validation
    and on SIGTERM / SIGUSR1; see the module docstring. Keep a ``ModelCheckpoint`` (without ``save_last``) for
    the best-on-dev checkpoint next to it.

    Args:
        dirpath: folder of ``last.ckpt`` (None: resolved like ``ModelCheckpoint``'s).
        signals: signal names that stop the fit with a resumable checkpoint (default SIGTERM, SIGUSR1).
    """

    def __init__(self, dirpath: str | None = None, signals: tuple[str, ...] = ("SIGTERM", "SIGUSR1")) -> None:
        super().__init__(
            dirpath=dirpath,
            monitor=None,
            save_top_k=0,
            save_last=True,
            save_on_train_epoch_end=False,
            # Always the same file: a fresh fit into a used folder overwrites it instead of writing last-v1.ckpt.
            enable_version_counter=False,
        )
        self.signals = tuple(signal.Signals[name] for name in signals)
        self._trainer_ref: Any = None
        self._batches_since_save = 0
        self._handlers: dict[int, Any] = {}  # signal -> the handler ours replaced
        self._received: int | None = None  # the stopping signal, once one arrived
        self._validating = False
        self._deferred = False

    # -- order and state ------------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._trainer_ref = weakref.ref(trainer)
        self._batches_since_save = 0
        # Last of all callbacks, so last.ckpt holds the others' state after this validation (EarlyStopping's
        # count, the best checkpoint's score). A new list: setup hooks are being called from the old one.
        if trainer.callbacks[-1] is not self:
            trainer.callbacks = [cb for cb in trainer.callbacks if cb is not self] + [self]

    def state_dict(self) -> dict[str, Any]:
        trainer = self._trainer_ref() if self._trainer_ref is not None else None
        return {**super().state_dict(), "should_stop": bool(trainer is not None and trainer.should_stop)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        should_stop = bool(state.pop("should_stop", False))
        super().load_state_dict(state)
        trainer = self._trainer_ref() if self._trainer_ref is not None else None
        if trainer is not None and should_stop:
            trainer.should_stop = True

    # -- when last.ckpt is written ------------------------------------------------------------------------
    def _save_last(self, trainer: pl.Trainer) -> None:
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        self._batches_since_save = 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args)  # saves nothing: no step or time interval
        self._batches_since_save += 1

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validating = True
        if trainer.received_sigterm:
            # Lightning would stop inside the validation loop; hold the request until validation ended.
            trainer._signal_connector.received_sigterm = False
            self._deferred = True

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last(trainer)
        self._validating = False
        deferred = self._deferred
        if trainer.world_size > 1:  # every rank stops at the same point, or none does
            deferred = trainer.strategy.reduce_boolean_decision(deferred, all=False)
        if deferred:
            self._deferred = False
            self._stop(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # An epoch that ran no validation (check_val_every_n_epoch > 1) still ends with a last.ckpt.
        if self._batches_since_save and not self._should_skip_saving_checkpoint(trainer):
            self._save_last(trainer)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._restore_handlers()
        if not isinstance(exception, SIGTERMException):
            return  # a crash: last.ckpt stays what the last epoch end wrote
        # Lightning raises between two batches (or after the epoch): a consistent point to resume from.
        if self._batches_since_save and not trainer.validating and not trainer.sanity_checking:
            self._save_last(trainer)
        signum = self._received or signal.SIGTERM
        exception.code = 128 + int(signum)
        if trainer.is_global_zero:
            where = f"epoch {trainer.current_epoch}, step {trainer.global_step}"
            if self.last_model_path:
                saved = f"saved in {self.last_model_path}: resume with --ckpt_path last"
            else:
                saved = "nothing trained yet, no checkpoint written"
            name = signal.Signals(signum).name
            print(f"smec fit: stopped by {name} at {where}, {saved}", file=sys.stderr, flush=True)

    # -- signals ------------------------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After Lightning registered its own handlers (end of setup), which ours forward to.
        if threading.current_thread() is not threading.main_thread():
            return
        environment = trainer._accelerator_connector.cluster_environment
        slurm_requeue = isinstance(environment, SLURMEnvironment) and environment.auto_requeue
        for signum in self.signals:
            requeue_signal = environment.requeue_signal if slurm_requeue else None
            if slurm_requeue and signum == (requeue_signal or signal.SIGUSR1):
                continue  # Lightning's SLURM requeue: hpc checkpoint + scontrol requeue
            self._handlers[signum] = signal.getsignal(signum)
            signal.signal(signum, self._on_signal)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_handlers()

    def _restore_handlers(self) -> None:
        for signum, previous in self._handlers.items():
            if signal.getsignal(signum) == self._on_signal:
                signal.signal(signum, previous)
        self._handlers = {}

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._received = signum
        trainer = self._trainer_ref() if self._trainer_ref is not None else None
        if trainer is None:
            return
        if self._validating:
            self._deferred = True
            return
        self._stop(trainer, frame)

    def _stop(self, trainer: pl.Trainer, frame: Any = None) -> None:
        """Ask Lightning to stop at the next batch boundary, through its SIGTERM handler when there is one (it
        also stops the processes a launcher started)."""
        lightning = self._handlers.get(signal.SIGTERM)
        if callable(lightning):
            lightning(signal.SIGTERM, frame)
        if not trainer.received_sigterm:
            trainer._signal_connector.received_sigterm = True
