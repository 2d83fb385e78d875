"""What the results of a comparison folder depend on, recorded so that a rerun reuses exactly what still holds.

* ``runs/<name>/state.json``: the run nonce (W&B ids) and the data signature (dataset, store, models, split):
  another signature is another comparison, refused;
* the store's content (a digest of the shard hashes of every model it uses), recorded in ``state.json`` once
  the store is complete: a store embedded again since (other vectors under the same path) is refused, since the
  fits and grids of the folder are of the old vectors;
* the grid signature (the evaluation spec): stored with the baseline and test rows; a change re-evaluates
  them, no refit;
* ``<fit>/fit.json``: a fit's signature (recipe paths and contents, overrides, seed, and the evaluator settings
  its dev selection used): a fit that produced something under other settings is refused, one that produced
  nothing starts again with the new ones.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datamodules.files import atomic_write_bytes, atomic_write_json
from smec.experiment.config import ExperimentConfig, ExperimentError, MethodSpec
from smec.experiment.fits import FitRun, model_keys

if TYPE_CHECKING:
    from datamodules.store.reader import EmbeddingStore

__all__ = ["RunState"]

GRID_VERSION = 2
"""Bumped when the grid's code makes different rows from the same spec (2: RQ / LSQ without ``m`` sized by the
budget), so a stored grid of another version is re-evaluated rather than reused."""


class RunState:
    """The signatures of one comparison folder ``out`` (see the module docstring)."""

    def __init__(self, config: ExperimentConfig, out: Path) -> None:
        self.config = config
        self.out = Path(out)

    def data_signature(self) -> dict[str, Any]:
        """What every result in the folder depends on: changing it makes all of them stale."""
        cfg = self.config
        return {
            "dataset": cfg.dataset,
            "store": str(cfg.store),
            "models": list(cfg.models),
            "reference_models": list(cfg.reference_models),
            "split": cfg.split,
        }

    def grid_signature(self, method: MethodSpec | None = None) -> dict[str, Any]:
        """What a baseline or test grid (of ``method``, at its dims) depends on besides the data: a change
        re-evaluates (no refit)."""
        spec = self.config.evaluation if method is None else self.config.method_evaluation(method)
        return {"evaluation": spec.to_dict(), "grid_version": GRID_VERSION}

    def fit_signature(self, run: FitRun) -> dict[str, Any]:
        """What a fit depends on: its recipes (paths and contents), overrides, seed, trainer profiles, and the
        evaluator settings of its dev selection (the grid's dims and precisions do not bind it)."""
        files = [*run.method.config, *self.config.trainer]
        return {
            "recipes": {str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest()[:16] for p in files},
            "args": dict(run.method.args),
            "seed": run.seed,
            "evaluator": self.config.evaluation.evaluator_settings(),
        }

    def prepare(self) -> str:
        """Create the folder (or check it holds a comparison of the same data); return the run nonce.

        Editing the experiment file between runs is fine: new methods and seeds are added, a changed grid
        re-evaluates; a fit whose recipe or overrides changed is refused (see :meth:`check_fit`).
        """
        self.out.mkdir(parents=True, exist_ok=True)
        state_path = self.out / "state.json"
        data = self.data_signature()
        if state_path.exists():
            state = json.loads(state_path.read_text())
            if state.get("data") != data:
                raise ExperimentError(
                    f"{self.out} holds a comparison of other data ({state.get('data')}), not {data}: "
                    f"delete it (--fresh) or choose another experiment name"
                )
        else:
            state = {"nonce": uuid.uuid4().hex[:6], "data": data}
            atomic_write_json(state_path, state)
        if self.config.source is not None:
            atomic_write_bytes(self.out / "experiment.yaml", self.config.source.read_bytes())
        return state["nonce"]

    def check_store(self, store: EmbeddingStore) -> None:
        """Record the content digest (``EmbeddingStore.content_digest``) of the experiment's models in ``store``
        on the first run; refuse a later run whose store holds other vectors (embedded again since, by other code
        or models)."""
        cfg = self.config
        digest = store.content_digest(model_keys([*cfg.models, *cfg.reference_models]))
        state_path = self.out / "state.json"
        state = json.loads(state_path.read_text())
        had = state.get("store_content")
        if had is None:
            atomic_write_json(state_path, {**state, "store_content": digest})
        elif had != digest:
            raise ExperimentError(
                f"{cfg.store} holds other vectors than when {self.out} was started (store content {digest}, "
                f"recorded {had}): it was embedded again; its fits and grids are of the old vectors: restore "
                "that store, or start the comparison again (--fresh)"
            )

    def check_fit(self, run: FitRun, say: Callable[[str], None] = print) -> None:
        """Record a fit's settings before it starts; refuse to continue one whose settings changed.

        The record binds only once the fit produced something (a checkpoint, or fit.done): a fit that failed
        before its first checkpoint (a typo in its arguments, say) runs again with the corrected settings.
        """
        path = run.root / "fit.json"
        wanted = self.fit_signature(run)
        if path.exists():
            had = json.loads(path.read_text())
            if had == wanted:
                return
            if self.fit_produced(run):
                changed = sorted(k for k in wanted if had.get(k) != wanted[k])
                raise ExperimentError(
                    f"{run.root} was fitted with other settings ({', '.join(changed)} changed): delete that "
                    f"folder to refit it, or give the changed method another name"
                )
            say(f"{run.label}: its settings changed since a fit that left no checkpoint: starting it again")
        run.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, wanted)

    @staticmethod
    def fit_produced(run: FitRun) -> bool:
        """Whether the fit in ``run.root`` got as far as a checkpoint (or finished)."""
        return (
            run.done.exists()
            or any((run.root / "checkpoints").glob("*.ckpt"))
            or any(run.root.glob("hpc_ckpt_*.ckpt"))
        )
