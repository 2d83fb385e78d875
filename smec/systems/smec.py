"""`SMECModule`: SMEC (Zhang et al., EMNLP 2025, arXiv 2510.12474) — SMRL + ADS + S-XBM on frozen embeddings.

Wiring only, as :class:`~smec.systems.mrl.MRLDecoderModule`; the maths, and the choices where the paper is
silent, live in the components (overview: docs/methods.md#smec):

- :class:`~smec.nn.smrl.SMRLCompressor`: the chain D = d_0 → d_1 → … → d_T of blocks and selectors (ADS, or the
  MRL prefix with ``ads.enabled: false``), trained one stage at a time or jointly (``smrl.enabled: false``);
  its :class:`~smec.nn.smrl.StageSchedule` says which stage a step trains and how far its τ has annealed;
- :class:`~smec.losses.sxbm.SXBM`: the memory of frozen teacher rows, the neighbour selection, the alignment term;
- :class:`~smec.losses.smec_objective.SMECObjective`: every term of a step, summed over the sizes it trains.

Evaluation: the sizes are *not* sub-vectors of one vector (each block makes a new one), so evaluators call
:meth:`embed` per size. A size outside the chain is an error, and so is (a ConfigError) a size whose stage has
not started; SMRL is :attr:`selectable` on dev only once its last stage has started (docs/methods.md#checkpoint-selection).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor

from smec.errors import ConfigError
from smec.losses.smec_objective import SMECObjective
from smec.losses.sxbm import SXBM, SXBMSettings
from smec.nn.ads import ADSSettings
from smec.nn.smrl import SMRLCompressor, SMRLSettings, chain_dims
from smec.sampling import corpus_sample
from smec.systems.base import CompressionSystem, resolve_eval_dims, trained_sizes
from smec.validation import integer, is_int, named_config_errors, nonnegative, positive, settings

__all__ = ["SMECModule"]

DEFAULT_SMRL, DEFAULT_ADS, DEFAULT_SXBM = SMRLSettings(), ADSSettings(), SXBMSettings()


class SMECModule(CompressionSystem):
    """SMEC: sequential Matryoshka compression with adaptive dimension selection and a selectable memory.

    Args:
        input_dim: width D of the frozen concatenation (linked from ``data.input_dim`` by the CLI).
        dims / min_dim: the chain's sizes below D, e.g. ``[512, 256, 128, 64, 32]``; default: ``eval_dims`` if
            given, else halving from D down to ``min_dim`` (default 32); see :func:`~smec.nn.smrl.chain_dims`.
        block / residual / hidden_dim: the stage blocks, ``linear`` (default; the paper's FC layer) or ``mlp``,
            x + f(x) or not (default not; identity init either way), the mlp's width (default: the block's).
        smrl / ads / sxbm: the grouped settings (:class:`~smec.nn.smrl.SMRLSettings`,
            :class:`~smec.nn.ads.ADSSettings`, :class:`~smec.losses.sxbm.SXBMSettings`), stored as plain dicts.
        pair_weight / distance / topk / topk_weight / rank_weight / rank_temperature / infonce_weight /
            infonce_temperature: the objective's terms (:class:`~smec.losses.smec_objective.SMECObjective`;
            defaults: pair 1.0 with ``mse``, rank 0.1 with τ = 1, the others off).
        lr / weight_decay / step_size / gamma: AdamW + StepLR, the MRL recipe's 1e-3, 1e-4, 10, 0.8, rebuilt
            over the new stage's parameters at each stage switch (each stage is a new optimisation problem).
        eval_dims: sizes the evaluator reports, ascending, each a size of the chain (default: all, D included).
        predict_dim: size written by ``smec predict``, a size of the chain (default None: D).
        extend_from: a SMEC checkpoint whose chain ``dims`` begins (trained with ``[512, 256, 128]``, now ``dims:
            [512, 256, 128, 64]``): its stages are loaded at the start of a fresh fit and stay frozen; give them
            budget 0 (``smrl.epochs_per_stage: [0, 0, 0, 4]``). A resumed fit (``--ckpt_path``) does not reload.
    """

    method_name = "smec"
    prefix_nested = False  # each size is its own vector: the evaluator calls embed(x, dim) per size

    def __init__(
        self,
        input_dim: int,
        dims: list[int] | None = None,
        min_dim: int = 32,
        block: str = "linear",
        residual: bool = False,
        hidden_dim: int | None = None,
        smrl: SMRLSettings = DEFAULT_SMRL,
        ads: ADSSettings = DEFAULT_ADS,
        sxbm: SXBMSettings = DEFAULT_SXBM,
        pair_weight: float = 1.0,
        distance: str = "mse",
        topk: int = 0,
        topk_weight: float = 0.0,
        rank_weight: float = 0.1,
        rank_temperature: float = 1.0,
        infonce_weight: float = 0.0,
        infonce_temperature: float = 0.05,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        step_size: int = 10,
        gamma: float = 0.8,
        eval_dims: list[int] | None = None,
        predict_dim: int | None = None,
        extend_from: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        smrl, ads = settings(SMRLSettings, smrl, "model.smrl"), settings(ADSSettings, ads, "model.ads")
        sxbm = settings(SXBMSettings, sxbm, "model.sxbm")
        self._plain_hyperparameters(smrl=smrl, ads=ads, sxbm=sxbm)
        self.input_dim = self.output_dim = integer("model.input_dim", input_dim, minimum=2)
        sizes, source = trained_sizes(dims, eval_dims, None)
        chain = named_config_errors("model", chain_dims, self.input_dim, sizes, min_dim, source)
        self.smrl = bool(smrl.enabled)
        blocks = {"block": block, "residual": bool(residual), "hidden_dim": hidden_dim}
        sel = {"selection": "ads" if ads.enabled else "prefix", "ads_kwargs": ads.selector_kwargs()}
        self.compressor = named_config_errors(
            "model", SMRLCompressor, chain, **smrl.compressor_kwargs(), **blocks, **sel
        )
        self.init_sample, self._init_rows = integer("model.smrl.init_sample", smrl.init_sample), None
        self.schedule = named_config_errors("model.smrl", smrl.schedule, self.compressor.num_stages)
        self.lr = positive("model.lr", lr)
        self.ads_lr = 10 * self.lr if ads.lr is None else positive("model.ads.lr", ads.lr)
        self.weight_decay = nonnegative("model.weight_decay", weight_decay)
        self.step_size, self.gamma = integer("model.step_size", step_size), positive("model.gamma", gamma)
        self.sxbm = named_config_errors(
            "model.sxbm", SXBM.from_settings, self.input_dim, sxbm, len(chain) - 1
        )
        on = self.sxbm is not None  # λ (per stage) is applied inside the S-XBM term: weight 1 here
        terms = {k: v for k, v in locals().items() if k in SMECObjective.TERMS}  # the arguments, by name
        self.objective = named_config_errors("model", SMECObjective, chain, sxbm_weight=float(on), **terms)
        if not (self.objective.trains_rows or self.objective.needs_pairs or on):
            weights = "pair_weight, topk_weight, rank_weight, infonce_weight and sxbm.weight"
            raise ConfigError(f"model: {weights} are all 0 (or sxbm.enabled is false): nothing to train")
        what = f"the sizes of its chain {sorted(chain)} (model.dims and model.input_dim)"
        self.eval_dims = resolve_eval_dims(eval_dims, chain, "smec", chain.__contains__, what)
        if predict_dim is not None and predict_dim not in chain:
            raise ConfigError(
                f"model.predict_dim must be a size of the chain {chain} or null, got {predict_dim!r}"
            )
        if extend_from is not None and not self.smrl:
            raise ConfigError("model.extend_from needs smrl.enabled: true (joint training freezes no stage)")
        self.predict_dim, self.extend_from = predict_dim, extend_from
        self._init_val_metrics(chain)

    # --- structure / evaluation contract ----------------------------------------------------------------

    @property
    def dims(self) -> list[int]:
        """The chain [d_0 = D, d_1, …, d_T], largest first."""
        return list(self.compressor.dims)

    @property
    def stage(self) -> int:
        """The stage being (or last) trained; restored from checkpoints."""
        return self.compressor.stage

    @property
    def available_dims(self) -> tuple[int, ...]:
        """Sizes the training has reached so far (d_0 … d_{stage+1}), ascending. :meth:`embed` is exact on them."""
        return tuple(sorted(self.compressor.available_dims))

    @property
    def selectable(self) -> bool:
        """Whether dev selection may pick this state: once the last stage has started (joint: always)."""
        return self.compressor.last_stage_started

    def budget_details(self, trainer: Any) -> dict[str, Any]:
        return self.schedule.budget_details(trainer) if self.smrl else {}  # joint: every block every step

    def embed(self, x: Tensor, dim: int) -> Tensor:
        """The (B, dim) embedding of size `dim`, a size of the chain, computed in eval mode (deterministic ADS).

        A size whose stage has not started (never trained) is a ConfigError (see the module docstring).
        """
        if not is_int(dim) or dim not in self.compressor.dims:
            raise ValueError(f"smec embeds the sizes of its chain {sorted(self.dims)}, got {dim!r}")
        self.compressor.check_trained(dim)
        return self.compressor.embed(x, dim)

    def compress(self, x: Tensor) -> Tensor:
        """The largest size's embedding z_0 (B, D). Smaller sizes are not its prefixes: use :meth:`embed`."""
        return self.embed(x, self.input_dim)

    def forward(self, x: Tensor, dim: int | None = None) -> Tensor:
        return self.embed(x, self.input_dim if dim is None else dim)

    # --- steps ------------------------------------------------------------------------------------------

    def _needs_rows(self) -> bool:
        return self.objective.trains_rows or self.sxbm is not None

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        x = batch.get("x")
        # Rows, queries, documents and mined negatives (objective.step_inputs) in one pass with one selection
        # draw per step, shared by them and the memory entries.
        stacked, rows, pairs = self.objective.step_inputs(batch, self._needs_rows(), "smec")
        selections = self.compressor.select()
        targets = self.compressor.training_targets(stacked, selections)
        sxbm_term = None
        if self.sxbm is not None:  # the memory side goes through the compressor with the step's draw
            encode = lambda m: [e for _, e in self.compressor.training_targets(m, selections)]  # noqa: E731
            sxbm_term = self.sxbm.term(rows, self.global_step, encode, self.compressor.target_stages())
        out = self.objective(targets, rows, pairs, sxbm_term)
        if self.sxbm is not None:
            self.sxbm.enqueue(x)  # type: ignore[arg-type]  # after the loss: a batch is never its own neighbour
        self._log_train(out.loss, out.terms, len(x if x is not None else batch["q"]), sxbm_term is not None)
        return out.loss

    def _log_train(self, loss: Tensor, terms: dict[str, Tensor], batch_size: int, sxbm_on: bool) -> None:
        log = functools.partial(self.log, batch_size=batch_size)
        log("train/loss", loss.detach(), on_step=True, on_epoch=True, prog_bar=True)
        for name, value in terms.items():  # unweighted, summed over the sizes the step trains
            log(f"train/loss/{name}", value, on_step=False, on_epoch=True)
        log("train/stage", float(self.stage), on_step=True, on_epoch=False)
        if self.sxbm is not None:
            log("train/sxbm_active", float(sxbm_on), on_step=True, on_epoch=False)
        tau = self.compressor.active_tau()
        if tau is not None:
            log("train/ads_tau", tau, on_step=True, on_epoch=False)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        x = batch["x"]
        # Eval mode (set by Lightning): every reached size, deterministic selections.
        losses = self.objective.validation(self.compressor(x), x)
        self._log_val_losses(torch.stack(list(losses.values())).mean(), losses, len(x))

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self.embed(batch["x"], self.predict_dim or self.input_dim)

    # --- stages, annealing, optimizers ------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and self.extend_from is not None and self.trainer.ckpt_path is None:
            self.load_trained_stages(self.extend_from)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        mode = getattr(datamodule, "mode", None)
        if stage != "fit" or mode is None:
            return
        if self.objective.needs_pairs and mode == "unsupervised":
            need = "model.rank_weight / model.infonce_weight > 0 need (query, document) pairs"
            raise ConfigError(f"{need}: set data.mode to 'both' (or 'supervised'), or the weights to 0")
        if self._needs_rows() and mode == "supervised":
            need = "model.pair_weight / model.topk_weight / model.sxbm need corpus rows"
            raise ConfigError(f"{need}: set data.mode to 'both' (or 'unsupervised')")

    def load_trained_stages(self, path: str) -> int:
        """Load the stages of a SMEC checkpoint whose chain this model's chain continues; return how many."""
        from smec.checkpoint import load_checkpoint

        state = load_checkpoint(path, "model.extend_from")["state_dict"]  # weights_only: a user's file
        try:
            trained = self.compressor.load_stages(state, "compressor.")
        except ConfigError as e:
            raise ConfigError(f"model.extend_from: {path} {e}") from None
        named_config_errors("model.smrl", self.schedule.check_loaded, trained)
        return trained

    def _sync_stage(self) -> None:
        """Switch to the scheduled stage if it moved on, and rebuild the optimizer over its parameters."""
        if not self.smrl:
            return
        target = self.schedule.advance(self.stage, self.current_epoch, self.global_step)
        if target != self.stage:
            self.compressor.set_stage(target)
            if self._init_rows is not None:
                self.compressor.init_stage(target, self._init_rows)
            self.train(True)
            self.trainer.strategy.setup_optimizers(self.trainer)

    def on_fit_start(self) -> None:
        if self.compressor.needs_init_rows:  # data-dependent starts of the stages (smrl.init, ads.init)
            self._init_rows = corpus_sample(self.trainer.datamodule, self.init_sample, self.device)
            if self.trainer.ckpt_path is None and (not self.smrl or self.schedule.budgets[0] > 0):
                self.compressor.init_stages(self._init_rows)  # a fresh fit: stage 0 (joint: every stage)
        # Frozen stages are in eval mode on purpose (deterministic ADS pick), which Lightning's "modules in eval
        # mode at the start of training" check would flag on every fit: flip the flags until on_train_start,
        # which runs right after that check (the sanity-check validation in between restores flags as found).
        for m in self.modules():
            m.training = True

    def on_train_start(self) -> None:
        self.train(True)

    def on_train_epoch_start(self) -> None:
        self._sync_stage()
        # Lightning keeps module modes as they were at fit start; re-assert the stage's modes every epoch.
        self.train(True)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.schedule.unit == "step":
            self._sync_stage()
        n = self.trainer.num_training_batches
        frac = batch_idx / n if isinstance(n, int) and n > 0 else 0.0
        stage = self.stage if self.smrl else None  # joint training anneals over the whole budget
        self.compressor.set_progress(
            self.schedule.progress(self.current_epoch, self.global_step, frac, stage)
        )

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW over the active stage's parameters (all of them for joint training), StepLR per epoch.

        Called again at each stage switch; on resume the checkpoint's stage is restored before this runs, so
        the rebuilt param groups match the saved optimizer state.
        """
        optimizer = torch.optim.AdamW(
            self.compressor.param_groups(self.weight_decay, self.ads_lr), lr=self.lr
        )
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=self.step_size, gamma=self.gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
