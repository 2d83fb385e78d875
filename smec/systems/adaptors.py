"""The two adaptor baselines SMEC is compared against (SMEC, arXiv 2510.12474, compares with both).

Both learn a residual adaptor on the frozen input c ∈ R^D and keep its width: ĉ = f(c) = c + g_θ(c), with
g_θ = Linear(D→h) → ReLU → Linear(h→D) whose last layer is zero-initialised, so that training starts from the
identity (plain truncation). Nested sizes are prefixes ĉ[:m] (the evaluator L2-normalises them).

- :class:`MatryoshkaAdaptorModule` ("matryoshka-adaptor", Yoon et al., EMNLP 2024, arXiv 2407.20243): two-stage
  training.
  Stage 1 (unsupervised, Eq. 4): L_topk + α·L_pair + β·L_rec over the nested sizes; stage 2 (supervised, Eq. 6)
  adds γ·L_rank, the pairwise logistic rank loss summed over the nested sizes, with the learning rate scaled down.
- :class:`SearchAdaptorModule` ("search-adaptor", Yoon et al., ACL 2024, arXiv 2310.08750): supervised only; the
  pairwise rank loss
  on the *full* dimension plus β·L_rec plus the prediction term of a training-only query predictor. Not Matryoshka: it is evaluated by truncating ĉ, as presumably in SMEC's
  comparison.

Thin wiring only: the adaptor is a :class:`~smec.nn.decoder.Decoder` with ``residual=True``, the losses are
:class:`~smec.losses.matryoshka.MatryoshkaSimilarityLoss` and :class:`~smec.losses.rank.PairwiseRankLoss`.
Retrieval metrics come from the shared evaluator callback, which calls :meth:`compress`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric

from smec.errors import ConfigError
from smec.losses.matryoshka import LossOutput, MatryoshkaSimilarityLoss
from smec.losses.query_prediction import QueryPredictionLoss
from smec.losses.rank import PairBatch, PairwiseRankLoss, nested_rank_inputs
from smec.losses.reconstruction import reconstruction_loss
from smec.nn.corpus_neighbours import CorpusNeighbours, NeighbourPick
from smec.nn.decoder import Decoder
from smec.systems.base import CompressionSystem, resolve_eval_dims, trained_sizes
from smec.validation import (
    check_dims,
    check_weights,
    integer,
    named_config_errors,
    nonnegative,
    one_of,
    positive,
)

__all__ = ["NEIGHBOURS", "MatryoshkaAdaptorModule", "SearchAdaptorModule", "default_dims"]

# Where Matryoshka-Adaptor's top-k neighbours come from (docs/methods.md#matryoshka-adaptor-where-the-paper-is-silent).
NEIGHBOURS = ("corpus", "batch")

log = logging.getLogger(__name__)

# Smallest default nested size: below 32 dims nDCG collapses for every method (docs/methods.md#wordnet-pilot).
SMALLEST_DEFAULT_DIM = 32


def default_dims(input_dim: int) -> list[int]:
    """Powers of two from 32 up to (excluding) ``input_dim``, then ``input_dim``: e.g. 384 → [32, …, 256, 384].

    For input_dim <= 32 this is ``[input_dim]`` alone, where the unsupervised terms are 0 at the identity.
    """
    dims, m = [], SMALLEST_DEFAULT_DIM
    while m < input_dim:
        dims.append(m)
        m *= 2
    return [*dims, input_dim]


def _check_nested_dims(name: str, dims: list[int], input_dim: int) -> tuple[int, ...]:
    dims_t = check_dims(dims, None, name=name)
    if dims_t[-1] > input_dim:
        raise ConfigError(
            f"{name} must all be <= input_dim={input_dim} (the adaptor keeps the input width), got {list(dims)}"
        )
    return dims_t


def _prefix_sizes(input_dim: int) -> tuple[Callable[[int], bool], str]:
    """What an adaptor evaluated by truncation produces: any prefix of its D-wide output."""
    return (lambda d: d <= input_dim), f"any prefix of its output, sizes up to model.input_dim={input_dim}"


class _ResidualAdaptorSystem(CompressionSystem):
    """Shared wiring: the residual adaptor ĉ = c + g(c), compress / predict, Adam, and the data-mode check.

    Subclasses call :meth:`_build_adaptor` and set ``eval_dims``; ``data_modes`` lists the EmbeddingDataModule
    modes whose batches carry the keys their ``training_step`` reads.
    """

    data_modes: tuple[str, ...] = ()

    def _build_adaptor(self, input_dim: int, hidden_dim: int | None, input_norm: bool) -> None:
        if isinstance(input_dim, bool) or not isinstance(input_dim, int) or input_dim < 1:
            raise ConfigError(f"model.input_dim must be a positive int, got {input_dim!r}")
        self.input_dim = self.output_dim = int(input_dim)
        # g = [LN →] Linear(D→h) → ReLU → Linear(h→D), last Linear zero-initialised (Decoder's residual mode), so
        # f is exactly the identity at init. No norm after the layers: the papers' g is a plain MLP.
        self.adaptor = named_config_errors(
            "model",
            Decoder,
            self.input_dim,
            self.output_dim,
            hidden_dim=self.input_dim if hidden_dim is None else hidden_dim,
            norm="none",
            activation="relu",
            input_norm=input_norm,
            residual=True,
        )

    @staticmethod
    def _check_optim(lr: float, weight_decay: float) -> None:
        positive("model.lr", lr)
        nonnegative("model.weight_decay", weight_decay)

    def forward(self, x: Tensor) -> Tensor:
        return self.adaptor(x)

    def compress(self, x: Tensor) -> Tensor:
        """ĉ = c + g(c), shape (B, D), not normalised; nested sizes are its prefixes."""
        return self.adaptor(x)

    def reconstruction(self, x: Tensor) -> Tensor:
        """L_rec = mean |ĉ − c| = mean |g(c)| over the batch and the D coordinates (0 at init)."""
        return reconstruction_loss(self.adaptor(x), x)

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self.compress(batch["x"])

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage != "fit" or self._trainer is None:
            return
        mode = getattr(getattr(self.trainer, "datamodule", None), "mode", None)
        # Only EmbeddingDataModule-like data have a mode; other data fail on the batch keys instead.
        if mode is not None and mode not in self.data_modes:
            raise ConfigError(self._data_mode_message(mode))

    def _data_mode_message(self, mode: str) -> str:
        wanted = " or ".join(self.data_modes)
        return f"model: {self.method_name} trains on data.mode: {wanted}, got {mode!r}"

    def _log_terms(self, prefix: str, terms: dict[str, Tensor], batch_size: int) -> None:
        for name, value in terms.items():
            self.log(f"{prefix}/{name}", value, on_step=False, on_epoch=True, batch_size=batch_size)

    def _adam(self, lr: float) -> torch.optim.Optimizer:
        # Plain Adam (Matryoshka-Adaptor, arXiv 2407.20243, Table 5: Adam, lr 1e-3); no scheduler, none is reported.
        return torch.optim.Adam(self.parameters(), lr=lr, weight_decay=self.hparams.weight_decay)


class MatryoshkaAdaptorModule(_ResidualAdaptorSystem):
    """Matryoshka-Adaptor (arXiv 2407.20243): residual adaptor, unsupervised stage, then supervised stage.

    Objective per step, over the nested sizes M (prefixes of ĉ, cosine similarities, in-batch):

    - stage 1 (epochs < ``unsupervised_epochs``): ``topk_weight·L_topk + pair_weight·L_pair +
      reconstruction_weight·L_rec`` (Eq. 4 with weights 1, α, β), on corpus rows ``x``;
    - stage 2: the same plus ``rank_weight·L_rank`` (Eq. 6, γ), L_rank = Σ_m w_m · pairwise logistic rank loss of
      the train (query, document) pairs ``(q, d)`` with in-batch negatives, plus each query's mined hard
      negatives when the data has them (``data.negatives``, docs/methods.md#supervised-regime).

    At the first stage-2 epoch the optimizer is rebuilt with ``lr × stage2_lr_scale`` (fresh Adam moments). The
    stage lives in the registered buffer ``stage`` (1 or 2), so it is saved in checkpoints and a resumed run
    continues in the right stage with the right learning rate. Set ``rank_weight: 0`` (and ``data.mode:
    unsupervised``) for the unsupervised-only adaptor; stage 2 is then only the lower learning rate.

    Data: ``data.mode: both`` (batches ``{"x", "q", "d"}``); ``unsupervised`` is accepted when rank_weight is 0.
    Validation (corpus rows only) logs the unsupervised objective, ``val/loss`` and ``val/loss/d{m}``; the rank
    loss has no validation pairs, the dev-split retrieval metrics of the evaluator callback select the epoch.

    Choices where the paper is silent (docs/methods.md#matryoshka-adaptor):

    - ``hidden_dim`` defaults to D (a "shallow MLP" of unknown width); ``input_norm`` False: g sees c as is, as in
      the paper's ĉ = c + g(c). The inputs are unit-norm already, and a LayerNorm would scale g's input up by
      √D, making each early Adam step move ĉ by far more than c's own coordinates.
    - M defaults to powers of two from 32 below D plus D itself (the re-implementation's {64, …, 512}-style list,
      extended so the full width is trained too); all w_m = 1.
    - Top-k neighbours (k = 10): ``neighbours: corpus`` (default) takes each row's k most cosine-similar corpus
      rows under the frozen input (the store's whole corpus, exact search, the row itself excluded), and passes
      them through the trained adaptor, so the term compares adapted similarities with frozen ones as the
      paper's Eq. 4 does; ``neighbours: batch`` is the earlier in-batch search (top k of the B−1 other rows).
    - The terms are means, not sums (see MatryoshkaSimilarityLoss, PairwiseRankLoss), so α, β, γ keep their
      meaning whatever B, k and D are; α = β = γ = 1 as in the re-implementation.
    - The rank loss uses raw cosines (temperature 1, the paper's equation). Its gradient is bounded and much
      weaker than InfoNCE at τ = 0.05, which overfit 2k pairs in the WordNet pilot (docs/methods.md#wordnet-pilot); with the 10× lower
      stage-2 learning rate and the unsupervised terms still on, this is the conservative default.
    - ``unsupervised_epochs`` defaults to half of ``trainer.max_epochs``; the 10× lr drop follows the
      re-implementation (possibly its own choice).

    Args:
        input_dim: width D of the frozen input (linked from ``data.input_dim`` by the CLI); also the output width.
        hidden_dim: width h of g's hidden layer (default None → D).
        input_norm: LayerNorm on g's input (default False, see above).
        dims: nested sizes M, ascending, each <= D (default None → ``eval_dims`` if given, else
            :func:`default_dims`).
        weights: per-size weights w_m of every term (default None → all 1).
        topk: neighbours k of L_topk (default 10); topk_weight: its weight (default 1.0).
        neighbours: where L_topk's neighbours come from: ``"corpus"`` (default; the data module's corpus rows,
            loaded at setup: needs :class:`datamodules.embedding.EmbeddingDataModule` or :meth:`use_corpus`) or
            ``"batch"`` (the other rows of the batch, the behaviour before corpus neighbours existed).
        pair_weight: α (default 1.0); reconstruction_weight: β (default 1.0); rank_weight: γ (default 1.0).
        distance: ``"l1"`` (default, the paper's |·|) or ``"mse"`` for the similarity terms.
        temperature: τ dividing the rank loss's score differences (default 1.0).
        unsupervised_epochs: epochs of stage 1 (default None → ``trainer.max_epochs // 2`` of the current fit, so
            a resume with a larger max_epochs moves a boundary not yet reached; 0 → stage 2 at once).
        stage2_lr_scale: learning-rate factor of stage 2 (default 0.1).
        lr: Adam learning rate of stage 1 (default 1e-3, the paper's Table 5); weight_decay: Adam's (default 0).
        eval_dims: sizes the evaluator reports, each a trained size (default: ``dims``).
    """

    method_name = "matryoshka-adaptor"

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int | None = None,
        input_norm: bool = False,
        dims: list[int] | None = None,
        weights: list[float] | None = None,
        topk: int = 10,
        topk_weight: float = 1.0,
        pair_weight: float = 1.0,
        reconstruction_weight: float = 1.0,
        rank_weight: float = 1.0,
        distance: str = "l1",
        neighbours: str = "corpus",
        temperature: float = 1.0,
        unsupervised_epochs: int | None = None,
        stage2_lr_scale: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        eval_dims: list[int] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self._build_adaptor(input_dim, hidden_dim, input_norm)
        trained, source = trained_sizes(dims, eval_dims, default_dims(self.input_dim))
        self.dims = _check_nested_dims(f"model.{source}", list(trained), self.input_dim)
        what = f"its trained prefix sizes model.dims {list(self.dims)}"
        self.eval_dims = resolve_eval_dims(
            eval_dims, self.dims, self.method_name, self.dims.__contains__, what
        )
        self.rank_weight = nonnegative("model.rank_weight", rank_weight)
        self.stage2_lr_scale = positive("model.stage2_lr_scale", stage2_lr_scale)
        self._check_optim(lr, weight_decay)
        if unsupervised_epochs is not None:
            integer("model.unsupervised_epochs", unsupervised_epochs, minimum=0)
        self.sim_loss = named_config_errors(
            "model",
            MatryoshkaSimilarityLoss,
            self.dims,
            weights=weights,
            output_dim=self.output_dim,
            topk=topk,
            topk_weight=topk_weight,
            reconstruction_weight=reconstruction_weight,
            pair_weight=pair_weight,
            distance=distance,
        )
        self.neighbours = one_of("model.neighbours", neighbours, NEIGHBOURS)
        self._corpus: CorpusNeighbours | None = None
        self.rank_loss = named_config_errors("model", PairwiseRankLoss, temperature=temperature)
        self.rank_dim_weights = dict(zip(self.dims, check_weights(weights, len(self.dims), "model.weights")))
        # 1 = unsupervised, 2 = supervised. A buffer, so checkpoints carry it (resume keeps the stage and lr).
        self.register_buffer("stage", torch.tensor(1, dtype=torch.long))
        self._stage = 1  # host copy, refreshed each epoch, so that training_step needs no device sync
        self._unsupervised_epochs: int | None = unsupervised_epochs
        self._init_val_metrics(self.dims)

    # -- data / stage --------------------------------------------------------------------------------------
    @property
    def data_modes(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("both",) if self.rank_weight > 0 else ("both", "unsupervised")

    def _data_mode_message(self, mode: str) -> str:
        return (
            f"model: matryoshka-adaptor trains on corpus rows and query-document pairs and needs data.mode: both, "
            f"got {mode!r} (set model.rank_weight: 0 for the unsupervised-only adaptor)"
        )

    @property
    def unsupervised_epochs(self) -> int:
        """Epochs of stage 1, resolved from ``trainer.max_epochs`` when not configured."""
        if self._unsupervised_epochs is None:
            max_epochs = self.trainer.max_epochs if self._trainer is not None else None
            if max_epochs is None or max_epochs < 0:
                raise ConfigError(
                    "model.unsupervised_epochs must be set when trainer.max_epochs is not "
                    "(it defaults to half of trainer.max_epochs)"
                )
            self._unsupervised_epochs = max_epochs // 2
        return self._unsupervised_epochs

    @property
    def uses_corpus(self) -> bool:
        """Whether L_topk takes its neighbours from the corpus (``neighbours: corpus`` and the term on)."""
        return self.neighbours == "corpus" and self.sim_loss.topk_weight > 0

    def use_corpus(self, corpus: Tensor | np.ndarray) -> None:
        """The frozen corpus rows (N, D) L_topk searches (``setup`` hands over the data module's)."""
        if corpus.shape[1:] != (self.input_dim,):
            raise ConfigError(
                f"model.neighbours: corpus rows have shape {tuple(corpus.shape)}, expected (N, {self.input_dim})"
            )
        self._corpus = CorpusNeighbours(corpus)

    def _load_corpus(self) -> None:
        eval_data = getattr(getattr(self.trainer, "datamodule", None), "eval_data", None)
        if eval_data is None:
            raise ConfigError(
                "model.neighbours: corpus needs the store's corpus rows (data: an EmbeddingDataModule); "
                "set model.neighbours: batch for in-batch neighbours"
            )
        # The evaluator callback loads the same object (cached per split): no second copy of the corpus.
        self.use_corpus(eval_data().corpus)

    def _corpus_pick(self, x: Tensor) -> NeighbourPick | None:
        """This batch's corpus neighbours (k = topk, at most N − 1), or None with in-batch neighbours."""
        if not self.uses_corpus:
            return None
        if self._corpus is None:
            raise ConfigError("model.neighbours: corpus, but no corpus was loaded (fit or call use_corpus)")
        k = min(self.sim_loss.topk, len(self._corpus) - 1)
        return self._corpus.to(x.device).select(x, k) if k > 0 else None

    def _adapt(
        self, x: Tensor, pairs: PairBatch | None
    ) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor, Tensor] | None, Tensor | None]:
        """One adaptor pass (no batch statistics in g: exact) over the rows, their corpus neighbours and the
        pairs: (ĉ of the rows, the loss's ``neighbours`` argument or None, ĉ of ``pairs.stacked()`` or None)."""
        pick = self._corpus_pick(x)
        parts = [x]
        if pick is not None:
            parts.append(self._corpus.gather(pick.slots).to(x))
        if pairs is not None:
            parts.append(pairs.stacked())
        out = list(self.adaptor(torch.cat(parts)).split([len(p) for p in parts]))
        y = out.pop(0)
        given = None if pick is None else (out.pop(0), pick.teacher, pick.keep, pick.inverse.to(x.device))
        return y, given, (out.pop(0) if pairs is not None else None)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage in ("fit", "validate") and self.uses_corpus and self._trainer is not None:
            self._load_corpus()
        if stage != "fit":
            return
        n_stage1 = self.unsupervised_epochs
        max_epochs = self.trainer.max_epochs
        if self.rank_weight > 0 and max_epochs is not None and 0 <= max_epochs <= n_stage1:
            warnings.warn(
                f"model.unsupervised_epochs={n_stage1} >= trainer.max_epochs={max_epochs}: the supervised stage "
                "never starts",
                stacklevel=2,
            )

    def on_train_start(self) -> None:
        # A fit resumed mid-epoch does not rerun on_train_epoch_start: take the restored stage from the buffer.
        self._stage = int(self.stage.item())

    def on_train_epoch_start(self) -> None:
        self._stage = int(self.stage.item())
        if self._stage == 1 and self.current_epoch >= self.unsupervised_epochs:
            self.stage.fill_(2)
            self._stage = 2
            # configure_optimizers reads the buffer, so this builds stage 2's Adam with the scaled lr (and fresh
            # moments: stage 2 optimises a different objective).
            self.trainer.strategy.setup_optimizers(self.trainer)
            log.info(
                "matryoshka-adaptor: supervised stage from epoch %d, lr %.3g",
                self.current_epoch,
                self.hparams.lr * self.stage2_lr_scale,
            )
        self.log("train/stage", float(self._stage), on_step=False, on_epoch=True, batch_size=1)

    # -- steps ---------------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        x = batch["x"]
        supervised = self._stage == 2 and self.rank_weight > 0
        pairs = PairBatch.of(batch) if supervised else None
        y, neighbours, y_pairs = self._adapt(x, pairs)
        out = self.sim_loss(y, x, neighbours=neighbours)
        loss, terms = out.loss, dict(out.terms)
        if supervised:
            nested_pairs, negatives = nested_rank_inputs(*pairs.unstack(y_pairs), self.dims)
            rank = self.rank_loss(
                nested_pairs, weights=self.rank_dim_weights, negatives=negatives, mask=pairs.mask
            )
            loss = loss + self.rank_weight * rank.loss
            terms["rank"] = rank.loss.detach()
        self._log_train_loss(LossOutput(loss=loss, per_dim=out.per_dim), len(x))
        self._log_terms("train", terms, len(x))
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        x = batch["x"]
        y, neighbours, _ = self._adapt(x, None)
        out = self.sim_loss(y, x, neighbours=neighbours)
        self._log_val_losses(out.loss, out.per_dim, len(x))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        scale = self.stage2_lr_scale if int(self.stage.item()) == 2 else 1.0
        return self._adam(self.hparams.lr * scale)


class SearchAdaptorModule(_ResidualAdaptorSystem):
    """Search-Adaptor (arXiv 2310.08750): residual adaptor trained on (query, document) pairs, full dimension only.

    Loss per step on a batch of B train pairs (q_i, d_i), shared adaptor f on both sides::

        L = PairwiseRank(normalize(f(q)), normalize(f(d)))  +  reconstruction_weight · mean |g([q; d])|
            +  prediction_weight · mean |p(f(d)) − q|

    with in-batch negatives (document i is the positive of query i, the others negatives), plus each query's
    mined hard negatives when the data has them (``data.negatives``; they pass through f too, so L_rec covers
    them; docs/methods.md#supervised-regime). The rank loss sees
    only the full D-dim ĉ: Search-Adaptor is not Matryoshka, and smaller sizes are evaluated by truncating ĉ
    (the default :meth:`embed`), as SMEC's comparison presumably does.

    plus ``prediction_weight · L_pred``, the paper's prediction term: a training-only query predictor p reads
    each relevant document's adapted embedding f(d_i) and predicts its query's frozen embedding q_i,
    L_pred = mean |p(f(d_i)) − q_i| (:class:`~smec.losses.query_prediction.QueryPredictionLoss`; its form is
    ours, docs/methods.md#search-adaptor-where-the-paper-is-silent). p is dropped at inference: the adaptor
    alone is the evaluated model. ``prediction_weight: 0`` builds no predictor and trains exactly the objective
    before the term existed.

    Data: ``data.mode: supervised`` (batches ``{"q", "d"}``; ``both`` is accepted and its rows are ignored).
    Validation (corpus rows only) logs ``val/reconstruction``; the epoch is selected by the evaluator
    callback's dev-split retrieval metrics.

    Choices where the paper is silent: the adaptor's shape (``hidden_dim`` D, ReLU, zero-initialised last layer,
    no input LayerNorm) as for :class:`MatryoshkaAdaptorModule`; L_rec is the mean absolute adaptor output and
    β = 1; raw cosines in the rank loss (temperature 1), which is gentle on small label sets; Adam lr 1e-3 and
    no weight decay, as for Matryoshka-Adaptor.

    Args:
        input_dim: width D of the frozen input (linked from ``data.input_dim``); also the output width.
        hidden_dim: width h of g's hidden layer (default None → D).
        input_norm: LayerNorm on g's input (default False).
        reconstruction_weight: β of the reconstruction regulariser (default 1.0).
        prediction_weight: weight of the prediction term L_pred (default 1.0, as β: both are mean absolute
            errors of D-wide vectors; the paper's value is not in the available sources). 0 = no predictor.
        predictor_hidden_dim: width of the query predictor's hidden layer (default None → D).
        temperature: τ dividing the rank loss's score differences (default 1.0).
        lr: Adam learning rate (default 1e-3); weight_decay: Adam's (default 0).
        dims: accepted for the dims contract every system follows (:mod:`smec.systems.base`), but nothing is
            trained per size: it is only the default of ``eval_dims``.
        eval_dims: sizes the evaluator reports, ascending, each <= D (any prefix: evaluated by truncation;
            default: ``dims``, else :func:`default_dims`).
    """

    method_name = "search-adaptor"
    data_modes = ("supervised", "both")

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int | None = None,
        input_norm: bool = False,
        reconstruction_weight: float = 1.0,
        prediction_weight: float = 1.0,
        predictor_hidden_dim: int | None = None,
        temperature: float = 1.0,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        dims: list[int] | None = None,
        eval_dims: list[int] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self._build_adaptor(input_dim, hidden_dim, input_norm)
        trained, source = trained_sizes(dims, eval_dims, default_dims(self.input_dim))
        sizes = _check_nested_dims(f"model.{source}", list(trained), self.input_dim)
        produces, what = _prefix_sizes(self.input_dim)
        self.eval_dims = resolve_eval_dims(eval_dims, sizes, self.method_name, produces, what)
        self.reconstruction_weight = nonnegative("model.reconstruction_weight", reconstruction_weight)
        self.prediction_weight = nonnegative("model.prediction_weight", prediction_weight)
        self._check_optim(lr, weight_decay)
        self.rank_loss = named_config_errors("model", PairwiseRankLoss, temperature=temperature)
        # Built only when on, so that prediction_weight 0 has the parameters (and checkpoints) of before.
        self.prediction = (
            named_config_errors("model", QueryPredictionLoss, self.input_dim, hidden_dim=predictor_hidden_dim)
            if self.prediction_weight > 0
            else None
        )
        self.val_reconstruction = MeanMetric()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        pairs = PairBatch.of(batch)
        c = (
            pairs.stacked()
        )  # queries, documents and (if mined) negatives: one pass, one L_rec over all of them
        c_hat = self.adaptor(c)
        y_q, y_d, y_n = pairs.unstack(c_hat)
        y_n = None if y_n is None else F.normalize(y_n, dim=-1)
        rank = self.rank_loss(
            F.normalize(y_q, dim=-1), F.normalize(y_d, dim=-1), negatives=y_n, mask=pairs.mask
        )
        rec = reconstruction_loss(c_hat, c)
        loss = rank.loss + self.reconstruction_weight * rec
        terms = {"rank": rank.loss.detach(), "reconstruction": rec.detach()}
        if self.prediction is not None:
            pred = self.prediction(y_d, pairs.q)
            loss = loss + self.prediction_weight * pred
            terms["prediction"] = pred.detach()
        batch_size = len(pairs.q)
        self.log(
            "train/loss", loss.detach(), on_step=True, on_epoch=True, batch_size=batch_size, prog_bar=True
        )
        self._log_terms("train", terms, batch_size)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        x = batch["x"]
        self.val_reconstruction.update(self.reconstruction(x), weight=len(x))
        self.log("val/reconstruction", self.val_reconstruction, on_step=False, on_epoch=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self._adam(self.hparams.lr)
