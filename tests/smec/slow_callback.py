"""Callbacks that make a fit take a while, so a test can kill or signal it at a chosen kind of moment."""

import time

from lightning.pytorch.callbacks import Callback


class SlowEpochs(Callback):
    """Sleep at each training epoch's end (kill between checkpoints)."""

    def __init__(self, seconds: float = 1.5) -> None:
        self.seconds = seconds

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        time.sleep(self.seconds)


class SlowSteps(Callback):
    """Sleep after each training batch (a signal then most likely lands mid-epoch)."""

    def __init__(self, seconds: float = 0.2) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        time.sleep(self.seconds)
