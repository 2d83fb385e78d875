"""`SMECModule`: SMEC (Zhang et al., EMNLP 2025; papers.md §2) — SMRL + ADS + S-XBM on frozen embeddings.

Thin wiring of the components:

- :class:`~smec.nn.smrl.SMRLCompressor` — the chain of square blocks and selectors D = d_0 → d_1 → … → d_T,
  trained one stage at a time (:class:`~smec.nn.smrl.StageSchedule` says which stage an epoch / step trains);
- :class:`~smec.nn.ads.AdaptiveDimensionSelector` (inside the compressor) — the learned keep-k-of-d selection,
  or the MRL prefix for the ``smec-no-ads`` ablation;
- :class:`~smec.nn.memory.CrossBatchMemory` + :class:`~smec.losses.alignment.SimilarityAlignmentLoss` — S-XBM;
- :class:`~smec.losses.matryoshka.MatryoshkaSimilarityLoss` (the unsupervised pair / top-k terms) and
  :class:`~smec.losses.rank.PairwiseRankLoss` / :class:`~smec.losses.rank.InfoNCELoss` (supervised terms).

The stage-t objective (papers.md §2.4, §2.7), on the two sizes stage t trains — d_t (the block output z_t) and
d_{t+1} (the selection u_{t+1} = S_t(z_t)):

    L_t = Σ_{e ∈ {z_t, u_{t+1}}} [ pair_weight·L_pair(e) + topk_weight·L_topk(e)
                                    + rank_weight·L_rank(e) + infonce_weight·L_NCE(e)
                                    + sxbm_weight·L_SXBM(e) ]

- L_pair / L_topk: similarity preservation of the batch rows x against the frozen input's cosines (the MRL
  paper's MSE, Matryoshka-Adaptor's top-k variant), unsupervised;
- L_rank: Matryoshka-Adaptor's pairwise logistic rank loss on (query, document) pairs, in-batch negatives, on
  L2-normalised embeddings (cosine scores); L_NCE the InfoNCE alternative (off by default);
- L_SXBM: for each row x_i, the K memory entries most cosine-similar to it *in the teacher space*; the memory
  rows are passed through the current compressor with the batch's own selection draw (without gradient, as XBM
  treats memory features as constants) and the student cosines cos(e(x_i), e(m_j)) are aligned with the
  teacher cosines cos(x_i, m_j). The memory holds past teacher rows
  (enqueued after the loss, no gradient; it all-gathers across ranks itself), so it never goes stale.

Where the paper is silent (papers.md §2.10) the choices here are:

- **Main term.** The paper's L is a supervised rank loss. On the demo data (≈12k unlabelled rows, 2k labelled
  pairs) a supervised term overfits (pilot-wordnet.md finding 4), so the default makes the unsupervised pair
  term the main term (pair_weight 1) and the rank loss a small nudge (rank_weight 0.1). Set
  ``pair_weight: 0, rank_weight: 1`` for the paper's supervised reading on a large labelled set.
- **S-XBM.** Squared error on cosines (``sxbm_distance: l2``), K = 16, N_mem = 4096, weight 1. No warm-up steps
  by default: XBM's warm-up exists because stored features drift; here they are frozen teacher rows and the
  student side is recomputed through the current compressor every step, so the only gate needed is a memory
  holding >= K entries. Batches carry no row ids, so an item's own row (or an exact duplicate) in the memory
  is detected as teacher cosine >= 1 − 1e-6 and masked out: identical inputs have identical outputs, such a
  pair carries no signal and would only dilute the mean.
- **ADS.** ``prefix`` init (training starts from truncation), τ 1 → 0.1 exponentially over each stage, and —
  unlike the component's default — the Gumbel noise annealed with τ (``ads_anneal_noise: true``) so the
  training pick converges to the deterministic eval pick by the end of the stage. The logits get no weight
  decay and their own learning rate (``ads_lr``, default 10 × lr: Adam moves a logit by about lr per step, and
  the logits must move by O(1) within one stage's few hundred steps to reorder coordinates).
- **Optimisation.** AdamW + StepLR (the MRL recipe's 1e-3 / 1e-4 / StepLR(10, 0.8)); at each stage switch the
  optimizer and scheduler are rebuilt over the new stage's parameters only, so Adam's moments and the LR
  schedule restart per stage (each stage is a new optimisation problem). The schedule never goes back to an
  earlier stage (that would retrain a block the later blocks depend on): if a resumed schedule asks for an
  earlier stage, the current one is kept with a warning.

``smrl: false`` (the ``smec-no-smrl`` ablation) trains the *same* chain MRL-style: every stage is active from
the first step, nothing is frozen, and the loss is the sum of every stage's objective above (all 2T terms), so
the ablation differs from SMEC only in training all sizes jointly instead of sequentially. The stage budget
still sets the ADS annealing horizon (over the whole run); the recipe trains for the same number of epochs.

Evaluation contract. The sizes are *not* sub-vectors of one vector (each block makes a new one), so
:meth:`index_sets` returns None and evaluators call :meth:`embed` per size; :meth:`selection_sets` gives each
selector's kept coordinates for reports. :meth:`embed` on a size the training has not reached yet (early
stages) returns the prefix of the smallest reached size above it — what truncating the current model gives —
so an evaluator asking for every size during training reports comparable numbers from the first epoch.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from smec.errors import ConfigError
from smec.losses.alignment import ALIGNMENT_DISTANCES, SimilarityAlignmentLoss, pair_cosines
from smec.losses.matryoshka import DISTANCES, MatryoshkaSimilarityLoss, check_dims
from smec.losses.rank import InfoNCELoss, PairwiseRankLoss
from smec.nn.ads import AdaptiveDimensionSelector
from smec.nn.memory import CrossBatchMemory
from smec.nn.smrl import SMRLCompressor, StageSchedule, halving_dims
from smec.systems.base import CompressionSystem, named_config_errors

__all__ = ["SMECModule"]

BLOCKS = ("linear", "mlp")
SELECTIONS = ("ads", "prefix")
ADS_INITS = ("prefix", "uniform_noise", "zeros")
ADS_SCHEDULES = ("exponential", "linear", "cosine")
SELF_MATCH = 1.0 - 1e-6
"""Teacher cosine at or above which a memory entry counts as the row itself (masked out of S-XBM)."""


def _is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _nonnegative(name: str, value: object) -> float:
    if not _is_number(value) or value < 0:  # type: ignore[operator]
        raise ConfigError(f"model.{name} must be a number >= 0, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def _positive(name: str, value: object) -> float:
    if not _is_number(value) or not value > 0:  # type: ignore[operator]
        raise ConfigError(f"model.{name} must be a number > 0, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def _one_of(name: str, value: object, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ConfigError(f"model.{name}: {value!r} is not one of {', '.join(choices)}")
    return str(value)


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Run with `module` in eval mode, then restore every submodule's own flag (frozen stages stay in eval)."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


class SMECModule(CompressionSystem):
    """SMEC: sequential Matryoshka compression with adaptive dimension selection and a selectable memory.

    Args:
        input_dim: width D of the frozen concatenation (linked from ``data.input_dim`` by the CLI).
        dims: the compressed sizes of the chain below D, e.g. ``[512, 256, 128, 64, 32]`` (any order, sorted
            largest first; D itself may be listed and is always the chain's start; a size above D is an error). Default None: halving from
            D down to the smallest size >= ``min_dim`` (the paper's D → D/2 → D/4 …).
        min_dim: floor for the default halving chain (default 32).
        block: stage block, ``linear`` (default; the paper's FC layer) or ``mlp`` (Linear → GELU → Linear).
        residual: blocks compute x + f(x) (default False; identity init either way).
        hidden_dim: mlp width (default: the block's width).
        selection: ``ads`` (default) or ``prefix`` (the ``smec-no-ads`` ablation: MRL truncation per stage).
        ads_init / ads_init_scale: initial ADS logits (default ``prefix`` with scale 1: starts from truncation).
        ads_tau_start / ads_tau_end / ads_schedule: ADS temperature, annealed over each stage (defaults 1.0 →
            0.1, ``exponential``; paper-silent).
        ads_gumbel_scale: Gumbel noise multiplier (default 1.0).
        ads_anneal_noise: shrink the noise with τ so the training pick converges to the eval pick (default True).
        ads_lr: learning rate of the ADS logits (default None: 10 × ``lr``); the logits get no weight decay.
        smrl: train stage by stage, freezing earlier stages (default True). False: the ``smec-no-smrl``
            ablation, every stage trained jointly on the sum of all stages' objectives (module docstring).
        epochs_per_stage / steps_per_stage: the stage budget, one of them (an int, or a list with one entry per
            stage). Default: 4 epochs per stage. ``trainer.max_epochs`` should cover the total (the last stage
            keeps training after its budget).
        pair_weight: similarity-preservation term on the batch rows (default 1.0, the main term; see above).
        distance: ``mse`` (default, the MRL paper) or ``l1`` (Matryoshka-Adaptor) for the pair / top-k terms.
        topk / topk_weight: Matryoshka-Adaptor's local term over each row's k nearest in-batch neighbours
            (default off).
        rank_weight / rank_temperature: supervised pairwise rank loss on (query, document) pairs (defaults 0.1,
            τ = 1, the adaptors' equation on raw cosines).
        infonce_weight / infonce_temperature: InfoNCE alternative (defaults 0, τ = 0.05).
        sxbm: use the selectable cross-batch memory (default True; False is the ``smec-no-sxbm`` ablation).
        memory_size / memory_k: N_mem and K (defaults 4096, 16; paper-silent).
        sxbm_weight / sxbm_distance: λ and the alignment distance (defaults 1.0, ``l2``).
        sxbm_warmup_steps: optimizer steps before the S-XBM term switches on (default 0; it also waits for the
            memory to hold >= ``memory_k`` entries).
        lr / weight_decay / step_size / gamma: AdamW + StepLR, the MRL recipe's 1e-3, 1e-4, 10, 0.8.
        eval_dims: sizes the evaluator reports (default: every size of the chain, ascending).
        predict_dim: size written by ``smec predict`` (default None: the largest, like :meth:`compress`).
        extend_from: a SMEC checkpoint whose chain ``dims`` begins (e.g. trained with ``[512, 256, 128]``, now
            ``dims: [512, 256, 128, 64]``): its stages are loaded at the start of a fit and stay frozen, and only
            the new stages train; give the loaded stages budget 0 (``epochs_per_stage: [0, 0, 0, 4]``). Not
            reloaded when a fit resumes from its own checkpoint (``--ckpt_path``).
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
        selection: str = "ads",
        ads_init: str = "prefix",
        ads_init_scale: float = 1.0,
        ads_tau_start: float = 1.0,
        ads_tau_end: float = 0.1,
        ads_schedule: str = "exponential",
        ads_gumbel_scale: float = 1.0,
        ads_anneal_noise: bool = True,
        ads_lr: float | None = None,
        smrl: bool = True,
        epochs_per_stage: int | list[int] | None = None,
        steps_per_stage: int | list[int] | None = None,
        pair_weight: float = 1.0,
        distance: str = "mse",
        topk: int = 0,
        topk_weight: float = 0.0,
        rank_weight: float = 0.1,
        rank_temperature: float = 1.0,
        infonce_weight: float = 0.0,
        infonce_temperature: float = 0.05,
        sxbm: bool = True,
        memory_size: int = 4096,
        memory_k: int = 16,
        sxbm_weight: float = 1.0,
        sxbm_distance: str = "l2",
        sxbm_warmup_steps: int = 0,
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
        if not _is_int(input_dim) or input_dim < 2:
            raise ConfigError(f"model.input_dim must be an integer >= 2, got {input_dim!r}")
        self.input_dim = self.output_dim = int(input_dim)
        chain = self._chain_dims(self.input_dim, dims, min_dim)
        _one_of("block", block, BLOCKS)
        _one_of("selection", selection, SELECTIONS)
        _one_of("ads_init", ads_init, ADS_INITS)
        _one_of("ads_schedule", ads_schedule, ADS_SCHEDULES)
        _one_of("distance", distance, DISTANCES)
        _one_of("sxbm_distance", sxbm_distance, ALIGNMENT_DISTANCES)
        if hidden_dim is not None and (not _is_int(hidden_dim) or hidden_dim < 1):
            raise ConfigError(f"model.hidden_dim must be a positive integer or null, got {hidden_dim!r}")
        _nonnegative("ads_init_scale", ads_init_scale)
        _positive("ads_tau_start", ads_tau_start)
        _positive("ads_tau_end", ads_tau_end)
        _nonnegative("ads_gumbel_scale", ads_gumbel_scale)
        self.lr = _positive("lr", lr)
        self.ads_lr = 10 * self.lr if ads_lr is None else _positive("ads_lr", ads_lr)
        _nonnegative("weight_decay", weight_decay)
        if not _is_int(step_size) or step_size < 1:
            raise ConfigError(f"model.step_size must be a positive integer, got {step_size!r}")
        _positive("gamma", gamma)

        # --- loss weights ---
        self.pair_weight = _nonnegative("pair_weight", pair_weight)
        self.topk_weight = _nonnegative("topk_weight", topk_weight)
        self.rank_weight = _nonnegative("rank_weight", rank_weight)
        self.infonce_weight = _nonnegative("infonce_weight", infonce_weight)
        self.sxbm_weight = _nonnegative("sxbm_weight", sxbm_weight)
        if not _is_int(topk) or topk < 0:
            raise ConfigError(f"model.topk must be an integer >= 0, got {topk!r}")
        if self.topk_weight > 0 and topk == 0:
            raise ConfigError(f"model.topk_weight={topk_weight} needs model.topk > 0 (neighbours per row)")
        self.sxbm = bool(sxbm) and self.sxbm_weight > 0
        if not _is_int(memory_size) or memory_size < 1:
            raise ConfigError(f"model.memory_size must be a positive integer, got {memory_size!r}")
        if not _is_int(memory_k) or not 1 <= memory_k <= memory_size:
            raise ConfigError(
                f"model.memory_k must be an integer in [1, memory_size={memory_size}], got {memory_k!r}"
            )
        if not _is_int(sxbm_warmup_steps) or sxbm_warmup_steps < 0:
            raise ConfigError(f"model.sxbm_warmup_steps must be an integer >= 0, got {sxbm_warmup_steps!r}")
        self.memory_k = memory_k
        self.sxbm_warmup_steps = sxbm_warmup_steps
        if (
            self.pair_weight == self.topk_weight == self.rank_weight == self.infonce_weight == 0
            and not self.sxbm
        ):
            raise ConfigError(
                "model: pair_weight, topk_weight, rank_weight, infonce_weight and sxbm_weight are all 0 "
                "(or sxbm is off): nothing to train"
            )

        # --- components ---
        # toggle_requires_grad=False: inactive stages run under no_grad (grads stay None, they are not in the
        # optimizer) but keep requires_grad=True, so DDP, which registers its hooks once when it wraps the
        # model, synchronises stages that become active later (with find_unused_parameters=True).
        self.smrl = bool(smrl)
        ads_kwargs = {
            "init": ads_init,
            "init_scale": float(ads_init_scale),
            "tau_start": float(ads_tau_start),
            "tau_end": float(ads_tau_end),
            "schedule": ads_schedule,
            "gumbel_scale": float(ads_gumbel_scale),
            "anneal_noise": bool(ads_anneal_noise),
        }
        self.compressor = named_config_errors(
            "model",
            SMRLCompressor,
            chain,
            block=block,
            residual=bool(residual),
            hidden_dim=hidden_dim,
            selection=selection,
            ads_kwargs=ads_kwargs if selection == "ads" else None,
            toggle_requires_grad=False,
        )
        num_stages = self.compressor.num_stages
        if epochs_per_stage is not None and steps_per_stage is not None:
            raise ConfigError("model: give one of epochs_per_stage and steps_per_stage, not both")
        if epochs_per_stage is None and steps_per_stage is None:
            epochs_per_stage = 4
        budget = {"epochs_per_stage": epochs_per_stage, "steps_per_stage": steps_per_stage}
        self.schedule = named_config_errors("model", StageSchedule, num_stages, **budget)
        if not self.smrl:
            # Joint MRL training of the whole chain: every stage active, nothing frozen (see `train`).
            self.compressor.set_stage(num_stages - 1)
        self.memory = CrossBatchMemory(memory_size, self.input_dim) if self.sxbm else None

        # Pair / top-k losses are per size (each size is its own tensor, not a prefix of one output); they hold
        # no state. The val ones are the plain pair MSE, so val/loss compares across weights and ablations.
        def pair_loss(m: int, **kw: Any) -> MatryoshkaSimilarityLoss:
            return named_config_errors("model", MatryoshkaSimilarityLoss, [m], distance=distance, **kw)

        self.pair_losses = nn.ModuleDict()
        if self.pair_weight > 0 or self.topk_weight > 0:
            for m in chain:
                self.pair_losses[str(m)] = pair_loss(
                    m,
                    pair_weight=self.pair_weight,
                    topk=topk if self.topk_weight > 0 else 0,
                    topk_weight=self.topk_weight,
                )
        self.val_pair_losses = nn.ModuleDict({str(m): pair_loss(m) for m in chain})
        self.rank_loss = PairwiseRankLoss(_positive("rank_temperature", rank_temperature))
        self.infonce_loss = InfoNCELoss(_positive("infonce_temperature", infonce_temperature))
        self.align_loss = SimilarityAlignmentLoss(sxbm_distance)

        self.eval_dims = tuple(
            check_dims(eval_dims, self.input_dim, name="model.eval_dims") if eval_dims else sorted(chain)
        )
        if predict_dim is not None and (not _is_int(predict_dim) or not 1 <= predict_dim <= self.input_dim):
            raise ConfigError(
                f"model.predict_dim must be an integer in [1, input_dim={self.input_dim}] or null, "
                f"got {predict_dim!r}"
            )
        self.predict_dim = predict_dim
        self.extend_from = extend_from
        if extend_from is not None and not self.smrl:
            raise ConfigError(
                "model.extend_from needs smrl: true (joint training has no frozen stages to keep)"
            )
        self._init_val_metrics(chain)
        self._warned_backwards = False
        self.train(self.training)

    @staticmethod
    def _chain_dims(input_dim: int, dims: list[int] | None, min_dim: int) -> list[int]:
        """[D, d_1, …, d_T] from the ``dims`` / ``min_dim`` arguments (see the class docstring).

        D itself may be listed (it is the chain's start); a size above D, or a list with no size below D, is an
        error: a chain wider than its input does not compress (a recipe written for a wider concatenation needs
        its ``dims`` set for the data it runs on).
        """
        if not _is_int(min_dim) or min_dim < 1:
            raise ConfigError(f"model.min_dim must be a positive integer, got {min_dim!r}")
        if dims is None:
            if min_dim >= input_dim:
                raise ConfigError(f"model.min_dim must be below input_dim={input_dim}, got {min_dim!r}")
            return halving_dims(input_dim, min_dim)
        if isinstance(dims, (str, bytes)) or not isinstance(dims, Sequence):
            raise ConfigError(f"model.dims must be a list of positive integers, got {dims!r}")
        shown = list(dims)
        if any(not _is_int(m) or m < 1 for m in shown):
            raise ConfigError(f"model.dims must contain positive integers only, got {shown}")
        if len(set(shown)) != len(shown):
            raise ConfigError(f"model.dims must be unique, got {shown}")
        above = sorted(m for m in shown if m > input_dim)
        below = sorted((m for m in shown if m < input_dim), reverse=True)
        if above or not below:
            what = f"sizes {above} are wider than" if above else "no size is below"
            raise ConfigError(
                f"model.dims {shown}: {what} the input (model.input_dim={input_dim}, the data's width): the chain "
                f"must compress, e.g. model.init_args.dims {halving_dims(input_dim, max(1, min(min_dim, input_dim // 2)))[1:]}"
            )
        return [input_dim, *below]

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

    def train(self, mode: bool = True) -> SMECModule:
        """Set train/eval mode. SMRL keeps frozen stages in eval mode; joint training (smrl=False) trains all."""
        super().train(mode)
        if mode and not self.smrl:
            # The compressor puts every stage but the active one in eval mode (deterministic selection); joint
            # MRL training needs every selector drawing Gumbel samples and every block in train mode.
            for m in (*self.compressor.blocks, *self.compressor.selectors):
                m.train()
        return self

    def embed(self, x: Tensor, dim: int) -> Tensor:
        """The (B, dim) embedding of size `dim`, computed in eval mode (deterministic ADS picks).

        Exact for a size in :attr:`available_dims`. Any other size in [1, D] is the prefix of the smallest
        reached size above it (the truncation of the current model; see the module docstring).
        """
        if not _is_int(dim) or not 1 <= dim <= self.input_dim:
            raise ValueError(f"smec embeds sizes in [1, {self.input_dim}], got {dim!r}")
        source = min(d for d in self.compressor.available_dims if d >= dim)
        with _eval_mode(self.compressor):
            return self.compressor.embed(x, source)[..., :dim]

    def compress(self, x: Tensor) -> Tensor:
        """The largest size's embedding z_0 (B, D). Smaller sizes are not its prefixes: use :meth:`embed`."""
        return self.embed(x, self.input_dim)

    def forward(self, x: Tensor, dim: int | None = None) -> Tensor:
        return self.embed(x, self.input_dim if dim is None else dim)

    def index_sets(self) -> dict[int, Tensor] | None:
        """None: SMEC's sizes are separate vectors, not coordinate sets of one output; evaluate with embed()."""
        return None

    def selection_sets(self) -> dict[int, Tensor]:
        """{d_{s+1}: coordinates of z_s kept by selector s} for every stage reached (for reports)."""
        return self.compressor.index_sets()

    # --- the objective ----------------------------------------------------------------------------------

    def _targets(self, inputs: Tensor, selections: Sequence[Any]) -> list[tuple[int, Tensor]]:
        """The representations the current objective trains, as (size, (N, size)) pairs.

        SMRL: the active stage's block output z_t and selection u_{t+1}. Joint (smrl=False): every stage's pair,
        computed with gradient through every stage.
        """
        if self.smrl:
            out = self.compressor(inputs, selections=selections)
            t = self.compressor.stage
            return [(d, out[d]) for d in self.compressor.dims[t : t + 2]]
        targets: list[tuple[int, Tensor]] = []
        u = inputs
        for s, (block, selector) in enumerate(zip(self.compressor.blocks, self.compressor.selectors)):
            z = block(u)
            u = selector.apply(z, selections[s])
            targets += [(self.compressor.dims[s], z), (self.compressor.dims[s + 1], u)]
        return targets

    def _sxbm_active(self) -> bool:
        return (
            self.memory is not None
            and len(self.memory) >= self.memory_k
            and self.global_step >= self.sxbm_warmup_steps
        )

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        x, q, d = batch.get("x"), batch.get("q"), batch.get("d")
        needs_rows = self._needs_rows()
        needs_pairs = self.rank_weight > 0 or self.infonce_weight > 0
        if (needs_rows and x is None) or (needs_pairs and (q is None or d is None)):
            raise ValueError(f"smec training batches need keys {self._needed_keys()}, got {sorted(batch)}")
        # One selection draw per step, shared by rows, queries, documents and memory entries.
        selections = self.compressor.select()
        parts: list[Tensor] = []
        if x is not None and needs_rows:
            parts.append(x)
        if needs_pairs:
            parts += [q, d]  # type: ignore[list-item]
        sizes = [len(p) for p in parts]
        targets = self._targets(torch.cat(parts), selections)
        sxbm_on = self._sxbm_active()
        memory_targets: list[tuple[int, Tensor]] = []
        if sxbm_on:
            assert self.memory is not None and x is not None
            teacher, slots = self.memory.topk(x, self.memory_k)
            keep = torch.isfinite(teacher) & (teacher < SELF_MATCH)
            teacher = teacher.masked_fill(~torch.isfinite(teacher), 0.0)
            # Each distinct memory row goes through the compressor once, however many items selected it, with
            # the batch's selection draw. No gradient on the memory side (XBM treats memory features as
            # constants): gradient reaches the compressor through the batch side, and skipping the backward
            # through up to N_mem rows is most of S-XBM's cost at a D×D first stage.
            unique, inverse = slots.unique(return_inverse=True)
            with torch.no_grad():
                memory_targets = self._targets(self.memory.queue[unique].to(x.dtype), selections)

        loss = x.new_zeros(()) if x is not None else q.new_zeros(())  # type: ignore[union-attr]
        terms: dict[str, Tensor] = {}

        def add(name: str, value: Tensor) -> None:
            terms[name] = terms.get(name, 0.0) + value.detach()

        for i, (m, e) in enumerate(targets):
            chunks = list(e.split(sizes))
            ex = chunks.pop(0) if x is not None and needs_rows else None
            if self.pair_losses:
                out = self.pair_losses[str(m)](ex, x)
                loss = loss + out.loss
                for name, value in out.terms.items():
                    add(name, value)
            if needs_pairs:
                eq, ed = F.normalize(chunks.pop(0), dim=-1), F.normalize(chunks.pop(0), dim=-1)
                if self.rank_weight > 0:
                    rank = self.rank_loss(eq, ed).loss
                    loss = loss + self.rank_weight * rank
                    add("rank", rank)
                if self.infonce_weight > 0:
                    nce = self.infonce_loss(eq, ed).loss
                    loss = loss + self.infonce_weight * nce
                    add("infonce", nce)
            if sxbm_on:
                # Normalise the U distinct memory rows before pair_cosines gathers them to (B, K, d).
                em = F.normalize(memory_targets[i][1], dim=-1)
                student = pair_cosines(F.normalize(ex, dim=-1), em, inverse, normalize=False)
                sxbm = self.align_loss(student, teacher, keep)
                loss = loss + self.sxbm_weight * sxbm
                add("sxbm", sxbm)
        if self.memory is not None:
            if not sxbm_on:
                terms["sxbm"] = loss.new_zeros(())
            # After the loss: the current batch is never its own neighbour. Gathers across ranks (a collective).
            self.memory.enqueue(x)  # type: ignore[arg-type]
        self._log_train(loss, terms, len(x) if x is not None else len(q), sxbm_on)  # type: ignore[arg-type]
        return loss

    def _needs_rows(self) -> bool:
        return len(self.pair_losses) > 0 or self.memory is not None

    def _needed_keys(self) -> list[str]:
        keys = ["x"] if self._needs_rows() else []
        return keys + (["q", "d"] if self.rank_weight > 0 or self.infonce_weight > 0 else [])

    def _log_train(self, loss: Tensor, terms: dict[str, Tensor], batch_size: int, sxbm_on: bool) -> None:
        self.log(
            "train/loss", loss.detach(), on_step=True, on_epoch=True, batch_size=batch_size, prog_bar=True
        )
        for name, value in terms.items():
            # Unweighted term values, summed over the sizes the step trains.
            self.log(f"train/loss/{name}", value, on_step=False, on_epoch=True, batch_size=batch_size)
        self.log("train/stage", float(self.stage), on_step=True, on_epoch=False, batch_size=batch_size)
        if self.memory is not None:
            self.log("train/sxbm_active", float(sxbm_on), on_step=True, on_epoch=False, batch_size=batch_size)
        tau = self._active_tau()
        if tau is not None:
            self.log("train/ads_tau", tau, on_step=True, on_epoch=False, batch_size=batch_size)

    def _active_tau(self) -> float | None:
        selector = self.compressor.selectors[self.stage]
        return float(selector.tau) if isinstance(selector, AdaptiveDimensionSelector) else None

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        x = batch["x"]
        # Eval mode (set by Lightning): every reached size, deterministic selections.
        out = self.compressor(x)
        losses = {m: self.val_pair_losses[str(m)](z, x).loss for m, z in out.items()}
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
        if (self.rank_weight > 0 or self.infonce_weight > 0) and mode == "unsupervised":
            raise ConfigError(
                "model.rank_weight / model.infonce_weight > 0 need (query, document) pairs: set data.mode to "
                "'both' (or 'supervised'), or the weights to 0"
            )
        if self._needs_rows() and mode == "supervised":
            raise ConfigError(
                "model.pair_weight / model.topk_weight / model.sxbm need corpus rows: set data.mode to 'both' "
                "(or 'unsupervised')"
            )

    def _scheduled_stage(self) -> int:
        return self.schedule.stage_at(self.current_epoch, self.global_step)

    def _sync_stage(self) -> None:
        """Switch to the scheduled stage if it moved on, and rebuild the optimizer over its parameters."""
        if not self.smrl:
            return
        target, current = self._scheduled_stage(), self.stage
        if target == current:
            return
        if target < current:
            if not self._warned_backwards:
                rank_zero_warn(
                    f"smec: the schedule asks for stage {target} but stage {current} is already trained; "
                    f"keeping stage {current} (earlier stages are never retrained)"
                )
                self._warned_backwards = True
            return
        self.compressor.set_stage(target)
        self.train(True)
        self.trainer.strategy.setup_optimizers(self.trainer)

    def _progress(self, batch_idx: int) -> float:
        """Annealing progress in [0, 1]: within the active stage (SMRL), or over the whole budget (joint)."""
        sched = self.schedule
        n = self.trainer.num_training_batches
        frac = batch_idx / n if isinstance(n, int) and n > 0 else 0.0
        pos = self.global_step if sched.unit == "step" else self.current_epoch + frac
        if self.smrl:
            start, budget = sched.starts[self.stage], sched.budgets[self.stage]
        else:
            start, budget = 0, sched.total
        return min(1.0, max(0.0, (pos - start) / budget)) if budget > 0 else 1.0

    def load_trained_stages(self, path: str) -> int:
        """Load the stages of a SMEC checkpoint whose chain this model's chain continues; return how many."""
        from smec.checkpoint import load_checkpoint

        state = load_checkpoint(path, "model.extend_from")["state_dict"]  # weights_only: a user's file
        if "compressor.stage_dims" not in state:
            raise ConfigError(
                f"model.extend_from: {path} is not a SMEC checkpoint (no compressor.stage_dims)"
            )
        saved = [int(d) for d in state["compressor.stage_dims"].tolist()]
        mine = [int(d) for d in self.compressor.dims]
        if len(mine) <= len(saved) or mine[: len(saved)] != saved:
            raise ConfigError(
                f"model.extend_from: {path} trained the chain {saved}; model.dims must continue it with "
                f"more sizes (e.g. {[*saved[1:], saved[-1] // 2]}), got the chain {mine}"
            )
        trained = len(saved) - 1
        budgets = self.schedule.budgets
        if any(budgets[:trained]) or not budgets[trained]:
            raise ConfigError(
                f"model.{self.schedule.unit}s_per_stage: the {trained} stage(s) loaded from model.extend_from "
                f"need budget 0 and the next one a positive budget, e.g. {[0] * trained + [4] * (len(budgets) - trained)}"
            )
        prefixes = tuple(
            f"compressor.{part}.{t}." for part in ("blocks", "selectors") for t in range(trained)
        )
        result = self.load_state_dict(
            {k: v for k, v in state.items() if k.startswith(prefixes)}, strict=False
        )
        assert not result.unexpected_keys, result.unexpected_keys
        return trained

    def on_fit_start(self) -> None:
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
        p = self._progress(batch_idx)
        if self.smrl:
            self.compressor.set_progress(p)
        else:
            for selector in self.compressor.selectors:
                if isinstance(selector, AdaptiveDimensionSelector):
                    selector.set_progress(p)

    def _trainable(self) -> list[nn.Parameter]:
        return list(self.compressor.trainable_parameters() if self.smrl else self.compressor.parameters())

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW over the active stage's parameters (all of them for smrl=False), StepLR per epoch.

        Called again at each stage switch; on resume the checkpoint's stage is restored before this runs, so
        the rebuilt param groups match the saved optimizer state.
        """
        hp = self.hparams
        logits = {id(s.logits) for s in self.compressor.selectors if isinstance(s, AdaptiveDimensionSelector)}
        params = self._trainable()
        groups = [
            {"params": [p for p in params if id(p) not in logits], "weight_decay": hp.weight_decay},
            # Decay would shrink the logits towards 0, i.e. towards more Gumbel exploration: not a prior we want.
            {"params": [p for p in params if id(p) in logits], "weight_decay": 0.0, "lr": self.ads_lr},
        ]
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=self.lr)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=hp.step_size, gamma=hp.gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
