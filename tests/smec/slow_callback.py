"""A callback that makes each training epoch take a while, so a test can kill a fit between checkpoints."""

import time

from lightning.pytorch.callbacks import Callback


class SlowEpochs(Callback):
    def __init__(self, seconds: float = 1.5) -> None:
        self.seconds = seconds

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        time.sleep(self.seconds)
