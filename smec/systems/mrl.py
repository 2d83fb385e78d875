"""`MRLDecoderModule`: the concat-decoder MRL system (Ben Ayad et al. 2025, arXiv 2510.04626).

Thin wiring only: a :class:`~smec.nn.decoder.Decoder` maps the frozen concatenation x (B, D) to y (B, d_max),
and a :class:`~smec.losses.matryoshka.MatryoshkaSimilarityLoss` keeps the input's pairwise cosines at every
nested prefix of y. An optional supervised term (``rank_weight`` > 0, default 0: the paper's unsupervised
objective, unchanged) adds the :class:`~smec.losses.rank.PairwiseRankLoss` of the train (query, document) pairs
at every prefix, over in-batch and the batch's mined negatives (docs/methods.md#supervised-regime). Retrieval metrics come from the shared evaluator callback
(:class:`smec.evaluation.callback.RetrievalEvalCallback`), which calls :meth:`compress`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from smec.errors import ConfigError
from smec.losses.matryoshka import LossOutput, MatryoshkaSimilarityLoss
from smec.losses.rank import PairBatch, PairwiseRankLoss, nested_rank_inputs
from smec.nn.decoder import PRESETS, Decoder
from smec.systems.base import CompressionSystem, resolve_eval_dims, trained_sizes
from smec.validation import check_dims, named_config_errors, nonnegative, one_of

DEFAULT_DIMS = (32, 64, 128, 256, 512)


class MRLDecoderModule(CompressionSystem):
    """Concat → decoder → nested prefixes, trained with the Matryoshka similarity-preservation loss.

    Args:
        input_dim: width D of the frozen concatenation (linked from ``data.input_dim`` by the CLI).
        output_dim: d_max, the decoder's width, at most ``input_dim`` (default: the largest trained size).
        dims: nested sizes M trained by the loss, ascending, each <= output_dim (default: ``eval_dims`` if
            given, else 32, 64, 128, 256, 512).
        weights: per-size loss weights (default: equal, as in the paper's code).
        n_dims_per_step: train a random subset of the dims each step (-1: all, default).
        arch: decoder variant: ``linear`` (default: LN → Linear, best in the WordNet pilot,
            docs/methods.md#wordnet-pilot), ``simple_encoder``
            (the paper's LN → Linear → BN → LeakyReLU), ``encoder_only`` (two layers); see ``Decoder.preset``.
        hidden_dim / residual / init / dropout: overrides for the chosen preset (None keeps the preset's).
        distance: ``mse`` (paper) or ``l1``.
        topk / topk_weight / reconstruction_weight: Matryoshka-Adaptor's optional extra terms (off by default).
        pair_weight: weight of the all-pairs similarity term (default 1.0, the paper's loss).
        rank_weight / rank_temperature: the optional supervised pairwise rank loss over the nested prefixes of
            the train (query, document) pairs, in-batch plus mined negatives (``data.negatives``), each size
            weighted as in ``weights`` (default 0: off, the paper's unsupervised objective; τ = 1, raw cosines).
            Needs ``data.mode: both``.
        lr / weight_decay / step_size / gamma: AdamW + StepLR, the paper code's defaults (1e-3, 1e-4, 10, 0.8).
        eval_dims: sizes the evaluator reports, each a trained size (default: ``dims``).
        init_from: ``pca`` starts the output Linear at PCA of a corpus sample (``init_sample`` rows), i.e. at
            the strongest training-free baseline (the evaluator's own :class:`~smec.evaluation.baselines.PCA`);
            None (default) keeps the preset's random init (the paper).
    """

    method_name = "mrl"

    def __init__(
        self,
        input_dim: int,
        output_dim: int | None = None,
        dims: list[int] | None = None,
        weights: list[float] | None = None,
        n_dims_per_step: int = -1,
        arch: str = "linear",
        hidden_dim: int | None = None,
        residual: bool | None = None,
        init: str | None = None,
        dropout: float | None = None,
        distance: str = "mse",
        topk: int = 0,
        topk_weight: float = 0.0,
        reconstruction_weight: float = 0.0,
        pair_weight: float = 1.0,
        rank_weight: float = 0.0,
        rank_temperature: float = 1.0,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        step_size: int = 10,
        gamma: float = 0.8,
        eval_dims: list[int] | None = None,
        init_from: str | None = None,
        init_sample: int = 10_000,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        one_of("model.init_from", init_from, (None, "pca"))
        one_of("model.arch", arch, tuple(PRESETS))
        sizes, source = trained_sizes(dims, eval_dims, DEFAULT_DIMS)
        dims = list(check_dims(sizes, output_dim, name=f"model.{source}"))
        output_dim = dims[-1] if output_dim is None else output_dim
        self.input_dim, self.output_dim = int(input_dim), int(output_dim)
        overrides = {
            k: v
            for k, v in dict(hidden_dim=hidden_dim, residual=residual, init=init, dropout=dropout).items()
            if v is not None
        }
        self.decoder = named_config_errors(
            "model", Decoder.preset, arch, self.input_dim, self.output_dim, **overrides
        )
        self.loss_fn = named_config_errors(
            "model",
            MatryoshkaSimilarityLoss,
            dims,
            weights=weights,
            n_dims_per_step=n_dims_per_step,
            output_dim=self.output_dim,
            topk=topk,
            topk_weight=topk_weight,
            reconstruction_weight=reconstruction_weight,
            pair_weight=pair_weight,
            distance=distance,
        )
        self.rank_weight = nonnegative("model.rank_weight", rank_weight)
        self.rank_loss = named_config_errors("model", PairwiseRankLoss, temperature=rank_temperature)
        self.rank_dim_weights = dict(zip(self.loss_fn.dims, self.loss_fn.weights))
        if self.output_dim > self.input_dim:
            # Not a compressor: e.g. the recipe's 512-d decoder on a 64-d store would expand its input.
            raise ConfigError(
                f"model.output_dim={self.output_dim} is wider than the input (model.input_dim={self.input_dim}, "
                f"the data's width): set model.init_args.output_dim and dims to at most {self.input_dim}"
            )
        what = f"its trained prefix sizes model.dims {dims}"
        self.eval_dims = resolve_eval_dims(eval_dims, dims, self.method_name, dims.__contains__, what)
        self._init_val_metrics(dims)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        mode = (
            getattr(getattr(self.trainer, "datamodule", None), "mode", None)
            if self._trainer is not None
            else None
        )
        if stage == "fit" and self.rank_weight > 0 and mode not in (None, "both"):
            raise ConfigError(
                f"model.rank_weight > 0 trains on corpus rows and (query, document) pairs: set data.mode to 'both', "
                f"got {mode!r}"
            )

    def on_fit_start(self) -> None:
        # A fresh fit only: a resumed one has its weights from the checkpoint.
        if self.hparams.init_from == "pca" and self.trainer.ckpt_path is None:
            self._init_from_pca()

    @torch.no_grad()
    def _init_from_pca(self) -> None:
        """Start the output Linear at PCA of its own input, so training starts from the PCA baseline.

        PCA is the bar the decoder has to clear (README, training-free baselines); starting there, the Matryoshka
        loss only has to improve on it. The components are fit, by the evaluator's PCA baseline, on a seeded
        sample of corpus rows as they reach the output Linear (i.e. after the input LayerNorm). Only
        single-layer decoders without a residual path.
        """
        linears = [m for m in self.decoder.net if isinstance(m, nn.Linear)]
        if len(linears) != 1 or self.decoder.residual:
            raise ConfigError(
                "model.init_from: pca needs a single-layer decoder without residual (arch: linear)"
            )
        import numpy as np

        from smec.evaluation.baselines import PCA

        dm = self.trainer.datamodule
        corpus = dm.store.concat(dm.model_keys, "corpus", dm.normalization, dm.model_weights)
        rng = np.random.default_rng(0)
        rows = np.sort(rng.choice(len(corpus), min(self.hparams.init_sample, len(corpus)), replace=False))
        x = torch.from_numpy(corpus.take(rows)).to(self.device)
        linear = linears[0]
        h = self.decoder.net[: list(self.decoder.net).index(linear)](x)  # what the Linear sees
        if min(h.shape) < self.output_dim:
            raise ConfigError(f"model.init_from: pca needs >= output_dim={self.output_dim} sample rows")
        pca = PCA(self.output_dim).fit(h.cpu().numpy())
        components = torch.from_numpy(pca.components).to(linear.weight)
        linear.weight.copy_(components)
        linear.bias.copy_(-(components @ torch.from_numpy(pca.mean).to(linear.bias)))

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(x)

    def compress(self, x: Tensor) -> Tensor:
        return self.decoder(x)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        x = batch["x"]
        out = self.loss_fn(self.decoder(x), x)
        if self.rank_weight > 0:
            out = self._with_rank_term(out, PairBatch.of(batch), len(x))
        self._log_train_loss(out, len(x))
        return out.loss

    def _with_rank_term(self, out: LossOutput, pairs: PairBatch, batch_size: int) -> LossOutput:
        """``out`` plus rank_weight · Σ_m w_m L_rank^(m) of the pairs (and their mined negatives).

        The pairs take their own decoder pass: with a BatchNorm preset the rows' batch statistics stay the
        rows' alone, as without the term.
        """
        nested_pairs, negatives = nested_rank_inputs(
            *pairs.unstack(self.decoder(pairs.stacked())), self.loss_fn.dims
        )
        rank = self.rank_loss(
            nested_pairs, weights=self.rank_dim_weights, negatives=negatives, mask=pairs.mask
        )
        self.log("train/rank", rank.loss.detach(), on_step=False, on_epoch=True, batch_size=batch_size)
        return LossOutput(loss=out.loss + self.rank_weight * rank.loss, per_dim=out.per_dim, terms=out.terms)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        x = batch["x"]
        out = self.loss_fn(self.decoder(x), x)
        self._log_val_losses(out.loss, out.per_dim, len(x))

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self.compress(batch["x"])

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=hp.step_size, gamma=hp.gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
