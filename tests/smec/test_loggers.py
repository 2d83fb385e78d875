"""One decision for the W&B mode: the training logger and the comparison's summary run agree."""

import pytest

from smec import loggers
from smec.loggers import SmecWandbLogger, wandb_mode


@pytest.mark.parametrize(
    ("env", "credentials", "mode", "offline"),
    [
        (None, False, "offline", True),
        (None, True, "online", False),
        ("offline", True, "offline", True),
        ("online", False, "online", False),
        ("disabled", False, "disabled", False),  # not offline: Lightning would turn that into dryrun
    ],
)
def test_wandb_mode_and_logger_agree(monkeypatch, tmp_path, env, credentials, mode, offline):
    if env is None:
        monkeypatch.delenv("WANDB_MODE", raising=False)
    else:
        monkeypatch.setenv("WANDB_MODE", env)
    monkeypatch.setattr(loggers, "wandb_credentials_present", lambda: credentials)
    assert wandb_mode() == mode
    assert SmecWandbLogger(save_dir=str(tmp_path))._offline is offline
