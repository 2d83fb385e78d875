"""SMRL, sequential Matryoshka representation learning: compress D → D/2 → D/4 → … one stage at a time.

MRL (arXiv 2205.13147) trains every nested size at once on shared weights, and the small sizes' large gradients
fight the large sizes' (SMEC, arXiv 2510.12474, its gradient analysis of one FC layer). SMRL, SMEC's first part,
trains one halving step per stage and freezes what earlier stages learned, so a size already reached cannot be
degraded later, and a finished model can be compressed further by appending a stage.

Parametrisation chosen here (the paper does not publish its exact one; docs/methods.md#smrl). With dims
d_0 = D > d_1 > … > d_T there are T stages; stage t owns

- a square block  B_t: R^{d_t} → R^{d_t}  (linear by default, see `CompressionBlock`), and
- a selector      S_t: R^{d_t} → R^{d_{t+1}}  (ADS, or the MRL prefix).

The chain is   u_0 = h,   z_t = B_t(u_t),   u_{t+1} = S_t(z_t):

    h ─B_0─► z_0 (d_0) ─S_0─► u_1 (d_1) ─B_1─► z_1 (d_1) ─S_1─► u_2 (d_2) … ─B_{T−1}─► z_{T−1} ─S_{T−1}─► u_T (d_T)

Training stage t updates only B_t and S_t, with a loss on z_t (size d_t) and on u_{t+1} = S_t(z_t) (size d_{t+1}),
exactly the paper's "L(z_t) + L(z_t[S_t])"; blocks and selectors of earlier stages are frozen (no gradient, eval
mode, so a frozen ADS uses its deterministic top-k). This reconciles the paper's stage 1 (a D×D map whose output is
then halved by selection) with later stages: every block takes the previous stage's *selected* representation, so
the learned selection decides what the next block sees.

What each size's embedding is. Once stage t exists, the representation of size d_t is z_t, the output of the
block trained for that size (it refines the selection u_t it starts from); the smallest size reached, d_{t+1}, is
the selection u_{t+1}. `forward` returns these in a dict {d_0: z_0, d_1: z_1, …, d_t: z_t, d_{t+1}: u_{t+1}}, which
is also exactly what stage t's loss needs ({d_t, d_{t+1}} are its two sizes). The sizes are *not* sub-vectors of
one vector (each block makes a new vector), so evaluators must call `embed(x, dim)` per size rather than slicing
one output.

Joint training (`joint=True`, SMEC's ``no-smrl`` ablation) trains the *same* chain MRL-style: every stage is
active from the first step, nothing is frozen, and the objective covers every stage's pair of sizes
(`training_targets`).

Defaults and why:
- Blocks start as the identity (`identity_init=True`): stage 0 then starts with z_0 = h, i.e. zero loss at size
  D, and each selection starts as truncation of the teacher (with ADS's default "prefix" init), so training starts
  from the truncation baseline and can only move away from it by lowering the loss.
- `block="linear"`, no activation or normalisation: the paper analyses a single FC layer; "mlp" (Linear →
  GELU → Linear) is available. `residual=True` computes x + f(x) with f starting at zero; for the linear block it
  is the same function at init but weight decay then pulls towards the identity instead of towards zero.
- `selection="ads"`; `"prefix"` gives SMRL without ADS (the ablation).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Literal

import torch
from torch import nn

from smec.errors import ConfigError
from smec.nn.ads import AdaptiveDimensionSelector, Selection
from smec.validation import integer, is_int, named_config_errors, one_of, optional_positive_int

__all__ = [
    "CompressionBlock",
    "PrefixSelector",
    "SMRLCompressor",
    "SMRLSettings",
    "StageSchedule",
    "chain_dims",
    "halving_dims",
]

BlockKind = Literal["linear", "mlp"]
SelectionKind = Literal["ads", "prefix"]
BLOCKS = ("linear", "mlp")
SELECTIONS = ("ads", "prefix")
DEFAULT_EPOCHS_PER_STAGE = 4


@dataclass(frozen=True)
class SMRLSettings:
    """SMEC's SMRL settings, ``model.init_args.smrl``: how the chain trains.

    Args:
        enabled: stage by stage, earlier stages frozen (default True). False: the ``no-smrl`` ablation
            (configs/ablations/no-smrl.yaml), every stage trained jointly on the sum of all stages' objectives
            (``SMRLCompressor(joint=True)``); the stage budget then only sets the ADS annealing horizon.
        epochs_per_stage / steps_per_stage: the stage budget, at most one of them (an int, or a list with one
            entry per stage, 0 for stages loaded from ``model.extend_from``). Neither: 4 epochs per stage.
            ``trainer.max_epochs`` should cover the total (the last stage keeps training after its budget).
            To replace a recipe's epoch budget on the command line, give the group as JSON,
            ``--model.init_args.smrl='{"epochs_per_stage": null, "steps_per_stage": 500}'`` (jsonargparse reads
            ``--model.init_args.smrl.epochs_per_stage=null`` as the string "None").
        init: the first block's start, ``identity`` (default) or ``pca``: the orthogonal map onto the principal
            axes of a sample of training rows, largest variance first (:func:`principal_axes`), so the prefix
            pick of stage 0 starts at PCA (docs/methods.md#smec-where-the-paper-is-silent).
        init_sample: corpus rows the data-dependent initialisations (``init: pca``, ``ads.init: variance``) are
            fitted on, a seeded sample (:func:`smec.sampling.corpus_sample`; default 4096).
    """

    enabled: bool = True
    epochs_per_stage: int | list[int] | None = None
    steps_per_stage: int | list[int] | None = None
    init: str = "identity"
    init_sample: int = 4096

    def compressor_kwargs(self) -> dict[str, Any]:
        """The :class:`SMRLCompressor` arguments these settings decide (``init`` checked).

        ``toggle_requires_grad=False`` keeps every stage known to DDP from the start (see `SMRLCompressor`).
        """
        pca = one_of("model.smrl.init", self.init, ("identity", "pca")) == "pca"
        return {"toggle_requires_grad": False, "joint": not self.enabled, "pca_init": pca}

    def schedule(self, num_stages: int) -> StageSchedule:
        """The :class:`StageSchedule` of a chain of ``num_stages`` stages."""
        if self.epochs_per_stage is not None and self.steps_per_stage is not None:
            raise ConfigError(
                "steps_per_stage cannot be combined with epochs_per_stage (give one budget; on the command "
                """line: --model.init_args.smrl='{"epochs_per_stage": null, "steps_per_stage": N}')"""
            )
        if self.steps_per_stage is not None:
            return StageSchedule(num_stages, steps_per_stage=self.steps_per_stage)
        epochs = DEFAULT_EPOCHS_PER_STAGE if self.epochs_per_stage is None else self.epochs_per_stage
        return StageSchedule(num_stages, epochs_per_stage=epochs)


def principal_axes(rows: torch.Tensor) -> torch.Tensor:
    """(D, D) orthogonal matrix whose rows are the principal axes of ``rows`` (N, D), largest variance first.

    The eigenvectors of the centred covariance (in float64), each signed so its largest-magnitude entry is
    positive: a deterministic function of the rows (ties in the eigenvalues aside).
    """
    x = rows.detach().to(torch.float64)
    x = x - x.mean(dim=0)
    _, vectors = torch.linalg.eigh(x.T @ x / max(1, len(x) - 1))
    axes = vectors.flip(-1).T  # eigh sorts ascending
    signs = torch.sign(axes.gather(1, axes.abs().argmax(dim=1, keepdim=True)))
    return (axes * signs).to(rows.dtype)


def halving_dims(input_dim: int, min_dim: int) -> list[int]:
    """[input_dim, input_dim // 2, input_dim // 4, …] down to the smallest size >= min_dim.

    E.g. (1536, 48) → [1536, 768, 384, 192, 96, 48]; (1536, 64) → [1536, 768, 384, 192, 96].
    """
    integer("input_dim", input_dim, minimum=2)
    if not is_int(min_dim) or not 1 <= min_dim < input_dim:
        raise ConfigError(f"min_dim must be an integer in [1, input_dim={input_dim}), got {min_dim!r}")
    dims = [input_dim]
    while dims[-1] // 2 >= min_dim:
        dims.append(dims[-1] // 2)
    if len(dims) < 2:
        raise ConfigError(f"min_dim={min_dim} leaves no halving step below input_dim={input_dim}")
    return dims


def chain_dims(input_dim: int, dims: Sequence[int] | None, min_dim: int, name: str = "dims") -> list[int]:
    """The chain [D, d_1, …, d_T] of a system: its sizes (``name`` says which option gave them) or halving.

    ``dims`` may be in any order and may list D itself (the chain's start); None halves D down to ``min_dim``
    (:func:`halving_dims`). A size above D, or a list with no size below D, is an error: a chain wider than its
    input does not compress (a recipe written for a wider concatenation needs its dims set for the data).
    """
    integer("min_dim", min_dim)
    if dims is None:
        if min_dim >= input_dim:
            raise ConfigError(f"min_dim must be below input_dim={input_dim}, got {min_dim!r}")
        return halving_dims(input_dim, min_dim)
    if isinstance(dims, (str, bytes)) or not isinstance(dims, Sequence):
        raise ConfigError(f"{name} must be a list of positive integers, got {dims!r}")
    shown = list(dims)
    if any(not is_int(m) or m < 1 for m in shown):
        raise ConfigError(f"{name} must contain positive integers only, got {shown}")
    if len(set(shown)) != len(shown):
        raise ConfigError(f"{name} must be unique, got {shown}")
    above = sorted(m for m in shown if m > input_dim)
    below = sorted((m for m in shown if m < input_dim), reverse=True)
    if above or not below:
        what = f"sizes {above} are wider than" if above else "no size is below"
        example = halving_dims(input_dim, max(1, min(min_dim, input_dim // 2)))[1:]
        raise ConfigError(
            f"{name} {shown}: {what} the input (input_dim={input_dim}, the data's width): the chain must "
            f"compress, e.g. dims {example}"
        )
    return [input_dim, *below]


class CompressionBlock(nn.Module):
    """One stage's square map R^d → R^d, applied to the last dimension of (..., d).

    Args:
        dim: d.
        kind: "linear" (W x + b) or "mlp" (Linear(d, hidden) → GELU → Linear(hidden, d)).
        residual: return x + f(x) instead of f(x).
        hidden_dim: mlp width (default d).
        identity_init: start as the identity map where the block allows it: linear without residual gets
            W = I, b = 0; any residual block gets its last layer zeroed (f ≡ 0). An mlp without residual cannot
            be the identity and keeps PyTorch's default init.
    """

    def __init__(
        self,
        dim: int,
        kind: BlockKind = "linear",
        residual: bool = False,
        hidden_dim: int | None = None,
        identity_init: bool = True,
    ) -> None:
        super().__init__()
        one_of("kind", kind, BLOCKS)
        optional_positive_int("hidden_dim", hidden_dim)
        self.dim = dim
        self.kind = kind
        self.residual = residual
        if kind == "linear":
            self.net: nn.Module = nn.Linear(dim, dim)
            last = self.net
        else:
            hidden = hidden_dim or dim
            self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
            last = self.net[-1]
        if identity_init:
            with torch.no_grad():
                if residual:
                    last.weight.zero_()
                    last.bias.zero_()
                elif kind == "linear":
                    last.weight.copy_(torch.eye(dim))
                    last.bias.zero_()

    def extra_repr(self) -> str:
        return f"dim={self.dim}, kind={self.kind}, residual={self.residual}"

    @torch.no_grad()
    def init_orthogonal(self, q: torch.Tensor) -> None:
        """Start as the map x ↦ q x (q orthogonal, bias 0: every cosine kept); linear blocks without residual."""
        assert self.kind == "linear" and not self.residual, "init_orthogonal needs a plain linear block"
        self.net.weight.copy_(q)
        self.net.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return x + out if self.residual else out


class PrefixSelector(nn.Module):
    """MRL's selection: keep the first k of in_dim coordinates. Same interface as `AdaptiveDimensionSelector`."""

    def __init__(self, in_dim: int, k: int) -> None:
        super().__init__()
        integer("k", k, 1, in_dim, bound=f"in_dim={in_dim}")
        self.in_dim = in_dim
        self.k = k

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, k={self.k}"

    def selected_indices(self) -> torch.Tensor:
        return torch.arange(self.k)

    def select(self, generator: torch.Generator | None = None) -> Selection:
        mask = torch.zeros(self.in_dim)
        mask[: self.k] = 1.0
        return Selection(mask=mask, indices=self.selected_indices())

    @staticmethod
    def apply(x: torch.Tensor, selection: Selection) -> torch.Tensor:
        return x[..., : selection.indices.numel()]

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return x[..., : self.k], self.selected_indices().to(x.device)


class SMRLCompressor(nn.Module):
    """The SMRL chain of blocks and selectors (see the module docstring for the parametrisation).

    Args:
        dims: [d_0 = D, d_1, …, d_T], strictly decreasing positive integers (halving is the paper's choice but
            not required), e.g. [1536, 768, 384, 192, 96, 48]. Give either `dims` or `input_dim` + `min_dim`.
        input_dim, min_dim: build dims by halving, see `halving_dims`.
        block, residual, hidden_dim, identity_init: the block type, see `CompressionBlock` (defaults: linear, no
            residual, identity init).
        selection: "ads" (default) or "prefix".
        ads_kwargs: extra keyword arguments for every stage's `AdaptiveDimensionSelector` (init, tau_start,
            tau_end, schedule, …); its `in_dim` and `k` come from dims. Their errors are named ``ads.<key>``.
        toggle_requires_grad: freeze inactive stages by setting requires_grad=False (default). Inactive stages
            always run under `torch.no_grad()` as well, so with False they still get no gradient (grad stays
            None and optimizers skip them) while every parameter keeps requires_grad=True. Use False when the
            stage changes inside one DDP fit: DDP only synchronises the parameters that required grad when it
            wrapped the model, so a block unfrozen later would silently train unsynchronised on each rank (also
            set DDP's find_unused_parameters=True, since inactive stages are unused). With the default, wrap the
            model in DDP after `set_stage` (e.g. one fit per stage).
        joint: train every stage at once (see the module docstring): the last stage is the active one from the
            start, no stage is frozen or kept in eval mode, and `set_progress` reaches every selector.
        pca_init: start the first block at PCA of the rows `init_stage(0, rows)` gets (linear blocks without
            residual only; ``SMRLSettings.init``).

    State: `active_stage` () int64 buffer (the stage being / last trained; restored by `load_state_dict`, which
    re-applies the freezing) and `stage_dims` (T+1,) int64 buffer (checked on load, so a checkpoint with other
    dims fails with a message saying which dims to construct with). Starts at stage 0 (joint: at the last).
    """

    active_stage: torch.Tensor
    stage_dims: torch.Tensor

    def __init__(
        self,
        dims: Sequence[int] | None = None,
        input_dim: int | None = None,
        min_dim: int | None = None,
        block: BlockKind = "linear",
        residual: bool = False,
        hidden_dim: int | None = None,
        identity_init: bool = True,
        selection: SelectionKind = "ads",
        ads_kwargs: dict[str, Any] | None = None,
        toggle_requires_grad: bool = True,
        joint: bool = False,
        pca_init: bool = False,
    ) -> None:
        super().__init__()
        if pca_init and (block != "linear" or residual):
            raise ConfigError(
                "smrl.init: pca needs block: linear and residual: false (an orthogonal first block)"
            )
        self.pca_init = bool(pca_init)
        if dims is not None and (input_dim is not None or min_dim is not None):
            raise ConfigError("give either dims or input_dim + min_dim, not both")
        if dims is None:
            if input_dim is None or min_dim is None:
                raise ConfigError("give dims, or both input_dim and min_dim")
            dims = halving_dims(input_dim, min_dim)
        dims = list(dims)
        if len(dims) < 2 or not all(is_int(d) and d >= 1 for d in dims):
            raise ConfigError(f"dims must list at least two positive integers, got {dims!r}")
        if any(b >= a for a, b in pairwise(dims)):
            raise ConfigError(f"dims must be strictly decreasing, got {dims!r}")
        one_of("block", block, BLOCKS)
        optional_positive_int("hidden_dim", hidden_dim)
        one_of("selection", selection, SELECTIONS)
        if ads_kwargs is not None and {"in_dim", "k"} & set(ads_kwargs):
            raise ConfigError("ads_kwargs must not set in_dim or k; they come from dims")
        self.block_kwargs: dict[str, Any] = {
            "kind": block,
            "residual": residual,
            "hidden_dim": hidden_dim,
            "identity_init": identity_init,
        }
        self.selection = selection
        self.toggle_requires_grad = toggle_requires_grad
        self.joint = bool(joint)
        self.ads_kwargs = dict(ads_kwargs or {})
        self.dims: list[int] = [dims[0]]
        self.blocks = nn.ModuleList()
        self.selectors = nn.ModuleList()
        self.register_buffer("active_stage", torch.zeros((), dtype=torch.int64))
        self.register_buffer("stage_dims", torch.tensor(self.dims, dtype=torch.int64))
        for d in dims[1:]:
            self._append(d)
        self._apply_stage(self.num_stages - 1 if self.joint else 0)
        self.register_load_state_dict_post_hook(_reapply_stage_after_load)

    # structure ---------------------------------------------------------------------------------------------

    @property
    def num_stages(self) -> int:
        return len(self.blocks)

    @property
    def stage(self) -> int:
        return int(self.active_stage)

    @property
    def available_dims(self) -> list[int]:
        """Sizes reached so far: d_0 … d_{active+1}, largest first."""
        return self.dims[: self.stage + 2]

    def check_trained(self, dim: int) -> None:
        """Refuse, with one ConfigError, a size of the chain whose stage has not started (never trained)."""
        if dim in self.dims and dim not in self.available_dims:
            need = self.dims.index(dim) - 1
            raise ConfigError(
                f"smec: size {dim} was never trained: this model reached stage {self.stage} of "
                f"{self.num_stages} (trained sizes {sorted(self.available_dims)}); size {dim} needs stage {need} "
                "(train longer: model.smrl budget, trainer.max_epochs)"
            )

    @property
    def last_stage_started(self) -> bool:
        """Whether the last stage has started (joint training: always), i.e. every size has been trained."""
        return self.stage == self.num_stages - 1

    def target_stages(self) -> list[int]:
        """The stage of each representation `training_targets` returns, in its order."""
        stages = range(self.num_stages) if self.joint else [self.stage]
        return [s for s in stages for _ in range(2)]

    def extra_repr(self) -> str:
        return f"dims={self.dims}, active_stage={self.stage}, selection={self.selection}, joint={self.joint}"

    def _append(self, new_dim: int) -> None:
        d = self.dims[-1]
        block = CompressionBlock(d, **self.block_kwargs)
        if self.selection == "ads":
            selector: nn.Module = named_config_errors(
                "ads", AdaptiveDimensionSelector, d, new_dim, **self.ads_kwargs
            )
        else:
            selector = PrefixSelector(d, new_dim)
        if len(self.blocks) > 0:
            ref = next(self.blocks[0].parameters())
            block.to(device=ref.device, dtype=ref.dtype)
            selector.to(device=ref.device, dtype=ref.dtype)
        self.blocks.append(block)
        self.selectors.append(selector)
        self.dims.append(new_dim)
        self.stage_dims = torch.tensor(self.dims, dtype=torch.int64, device=self.active_stage.device)

    def add_stage(self, new_dim: int) -> int:
        """Compress a finished model further: append a stage d_T → new_dim and make it the active one.

        Every earlier block and selector is frozen. Returns the new stage's index. Build the optimizer again
        afterwards (or use `trainable_parameters()`), since the new block's parameters did not exist before.
        """
        if not is_int(new_dim) or not 1 <= new_dim < self.dims[-1]:
            raise ConfigError(f"new_dim must be an integer in [1, {self.dims[-1]}), got {new_dim!r}")
        self._append(new_dim)
        self.set_stage(self.num_stages - 1)
        return self.num_stages - 1

    def load_stages(self, state: dict[str, torch.Tensor], prefix: str = "") -> int:
        """Load the trained stages of a shorter chain this chain continues; return how many were loaded.

        ``state`` is a state dict of an `SMRLCompressor` (keys under ``prefix``) whose dims are a strict prefix
        of these dims: its blocks and selectors are copied into stages 0 … T'−1, the rest keep their init.
        """
        if prefix + "stage_dims" not in state:
            raise ConfigError(f"is not a checkpoint of an SMRL chain (no {prefix}stage_dims)")
        saved = [int(d) for d in state[prefix + "stage_dims"].tolist()]
        if len(self.dims) <= len(saved) or self.dims[: len(saved)] != saved:
            raise ConfigError(
                f"trained the chain {saved}; the chain must continue it with more sizes "
                f"(e.g. dims {[*saved[1:], saved[-1] // 2]}), got {self.dims}"
            )
        trained = len(saved) - 1
        keep = tuple(f"{prefix}{part}.{t}." for part in ("blocks", "selectors") for t in range(trained))
        result = self.load_state_dict(
            {k[len(prefix) :]: v for k, v in state.items() if k.startswith(keep)}, strict=False
        )
        assert not result.unexpected_keys, result.unexpected_keys
        return trained

    # stages ------------------------------------------------------------------------------------------------

    def set_stage(self, t: int) -> None:
        """Make stage t the trainable one: unfreeze block t and selector t, freeze every other stage.

        Frozen parameters get requires_grad=False (unless `toggle_requires_grad=False`) and their `.grad` cleared
        (so an optimizer built over all parameters skips them even if it was stepped before the switch; Adam's
        moments are not applied to a parameter whose grad is None), and their modules stay in eval mode while the
        compressor trains. Stages after t are frozen too: they are not on the path yet.
        """
        if not is_int(t) or not 0 <= t < self.num_stages:
            raise ValueError(f"smrl stage must be in [0, {self.num_stages}), got {t!r}")
        self._apply_stage(t)

    def _trains(self, s: int) -> bool:
        return self.joint or s == self.stage

    def _apply_stage(self, t: int) -> None:
        self.active_stage.fill_(t)
        for s, (block, selector) in enumerate(zip(self.blocks, self.selectors)):
            for p in (*block.parameters(), *selector.parameters()):
                if self.toggle_requires_grad:
                    p.requires_grad_(self._trains(s))
                if not self._trains(s):
                    p.grad = None
        self.train(self.training)

    def train(self, mode: bool = True) -> SMRLCompressor:
        """Set train/eval mode; frozen stages always stay in eval mode (deterministic selection, no dropout)."""
        super().train(mode)
        for s, (block, selector) in enumerate(zip(self.blocks, self.selectors)):
            if not self._trains(s):
                block.eval()
                selector.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters of the active stage only (its block and, with ADS, its selector's logits); joint: all."""
        if self.joint:
            return list(self.parameters())
        t = self.stage
        return [*self.blocks[t].parameters(), *self.selectors[t].parameters()]

    def param_groups(self, weight_decay: float, ads_lr: float) -> list[dict[str, Any]]:
        """The optimizer's groups over `trainable_parameters`: blocks with ``weight_decay``, ADS logits with
        ``ads_lr`` and no decay (decay would shrink the logits towards 0, i.e. towards more Gumbel
        exploration: not a prior we want). Empty groups are left out."""
        logits = {id(s.logits) for s in self.selectors if isinstance(s, AdaptiveDimensionSelector)}
        params = self.trainable_parameters()
        groups = [
            {"params": [p for p in params if id(p) not in logits], "weight_decay": weight_decay},
            {"params": [p for p in params if id(p) in logits], "weight_decay": 0.0, "lr": ads_lr},
        ]
        return [g for g in groups if g["params"]]

    @torch.no_grad()
    def init_stage(self, t: int, rows: torch.Tensor) -> None:
        """Data-dependent start of stage t from a sample of training rows (N, D), when the stage starts.

        ``pca_init`` (stage 0): block 0 becomes the orthogonal map onto the rows' principal axes. An ADS
        selector with ``init: variance``: its logits ranked by the per-coordinate variance of z_t on the rows
        (through the stages before t, in eval mode). Deterministic in the rows.
        """
        if t == 0 and self.pca_init:
            self.blocks[0].init_orthogonal(principal_axes(rows))
        selector = self.selectors[t]
        if isinstance(selector, AdaptiveDimensionSelector) and selector.init == "variance":
            with _eval_mode(self):
                u = rows if t == 0 else self.forward(rows, upto=t - 1)[self.dims[t]]
                selector.init_from_variance(self.blocks[t](u).var(dim=0))

    def init_stages(self, rows: torch.Tensor) -> None:
        """`init_stage` of the active stage (joint training: of every stage, in order) at the start of a fit."""
        for t in range(self.num_stages) if self.joint else [self.stage]:
            self.init_stage(t, rows)

    @property
    def needs_init_rows(self) -> bool:
        """Whether `init_stage` uses rows (PCA first block, or an ADS ``variance`` init)."""
        return self.pca_init or any(getattr(s, "init", None) == "variance" for s in self.selectors)

    def active_tau(self) -> float | None:
        """The active stage's ADS temperature (None without ADS)."""
        selector = self.selectors[self.stage]
        return float(selector.tau) if isinstance(selector, AdaptiveDimensionSelector) else None

    def set_progress(self, p: float) -> None:
        """Forward annealing progress p ∈ [0, 1] to the active stage's selector (joint: to every selector)."""
        for s, selector in enumerate(self.selectors):
            if self._trains(s) and isinstance(selector, AdaptiveDimensionSelector):
                selector.set_progress(p)

    # computation -------------------------------------------------------------------------------------------

    def select(self, generator: torch.Generator | None = None) -> list[Selection]:
        """Draw one selection per stage up to the active one (frozen stages: their deterministic top-k).

        Pass the result to several `forward` calls so queries and documents are pruned with the same draw.
        """
        return [self.selectors[s].select(generator) for s in range(self.stage + 1)]

    def forward(
        self,
        x: torch.Tensor,
        selections: Sequence[Selection] | None = None,
        generator: torch.Generator | None = None,
        upto: int | None = None,
    ) -> dict[int, torch.Tensor]:
        """Run the chain up to the active stage.

        Args:
            x: (..., D) frozen teacher embeddings (any leading shape; stack queries and documents to share one
                selection draw, or pass `selections`).
            selections: from `select()`; drawn here if None.
            generator: RNG for the draw when `selections` is None.
            upto: stop after stage `upto` (default: the active stage).

        Returns:
            {d_0: z_0, …, d_t: z_t, d_{t+1}: u_{t+1}} with t = `upto`; each value (..., size). Keys are in
            decreasing size order.
        """
        if x.shape[-1] != self.dims[0]:
            raise ValueError(f"smrl expects inputs with last dimension {self.dims[0]}, got {tuple(x.shape)}")
        t = self.stage if upto is None else upto
        if not 0 <= t <= self.stage:
            raise ValueError(f"smrl upto must be in [0, {self.stage}], got {upto!r}")
        if selections is None:
            selections = [self.selectors[s].select(generator) for s in range(t + 1)]
        elif len(selections) < t + 1:
            raise ValueError(f"smrl needs {t + 1} selections for stage {t}, got {len(selections)}")
        out: dict[int, torch.Tensor] = {}
        u = x
        for s in range(t + 1):
            # Frozen stages never need a graph: saves memory and keeps their parameters' grads None even when
            # requires_grad is left on (toggle_requires_grad=False).
            with torch.set_grad_enabled(torch.is_grad_enabled() and self._trains(s)):
                z = self.blocks[s](u)
                sel = selections[s]
                u = self.selectors[s].apply(z, Selection(sel.mask.to(z.device), sel.indices.to(z.device)))
            out[self.dims[s]] = z
        out[self.dims[t + 1]] = u
        return out

    def training_targets(
        self, x: torch.Tensor, selections: Sequence[Selection]
    ) -> list[tuple[int, torch.Tensor]]:
        """The representations the current objective trains, as (size, (..., size)) pairs, largest first.

        Stage by stage: the active stage t's block output z_t and selection u_{t+1} (the paper's
        "L(z_t) + L(z_t[S_t])"). Joint: every stage's pair (z_s, u_{s+1}), with gradient through every stage.
        """
        if not self.joint:
            out = self(x, selections=selections)
            t = self.stage
            return [(d, out[d]) for d in self.dims[t : t + 2]]
        targets: list[tuple[int, torch.Tensor]] = []
        u = x
        for s, (block, selector) in enumerate(zip(self.blocks, self.selectors)):
            z = block(u)
            u = selector.apply(z, selections[s])
            targets += [(self.dims[s], z), (self.dims[s + 1], u)]
        return targets

    def embed(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """The (..., dim) embedding of size `dim` (one of `available_dims`), computing only the stages it needs.

        Runs in eval mode, where every selection is its deterministic top-k, and restores every submodule's own
        mode afterwards (frozen stages stay in eval).
        """
        if dim not in self.available_dims:
            raise ValueError(f"smrl has no embedding of size {dim}; available sizes: {self.available_dims}")
        i = self.dims.index(dim)
        with _eval_mode(self):
            return self.forward(x, upto=min(i, self.stage))[dim]

    # checkpoints -------------------------------------------------------------------------------------------

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        saved = state_dict.get(prefix + "stage_dims")
        if saved is not None and saved.tolist() != self.dims:
            error_msgs.append(
                f"smrl checkpoint has dims {saved.tolist()} but this compressor has {self.dims}; "
                f"construct it with dims={saved.tolist()} (or call add_stage) before loading"
            )
            return
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


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


def _reapply_stage_after_load(module: SMRLCompressor, incompatible_keys: Any) -> None:
    # load_state_dict copies the active_stage buffer but not the freezing it implies.
    t = module.stage
    if 0 <= t < module.num_stages:
        module._apply_stage(t)


class StageSchedule:
    """Maps training progress (epoch, global step) to the SMRL stage to train, and to the progress within it.

    Give exactly one budget: `epochs_per_stage` or `steps_per_stage`, each an int (same for every stage) or a
    list with one int per stage (0 skips a stage that is already trained). Stage t runs for its budget, then t+1
    starts; after the last stage's budget the schedule stays on the last stage.

    Args:
        num_stages: T (= len(dims) − 1 of the compressor).
        epochs_per_stage: epochs per stage; stage boundaries fall on epoch starts.
        steps_per_stage: optimizer steps per stage (Lightning's `global_step`).
    """

    def __init__(
        self,
        num_stages: int,
        epochs_per_stage: int | Sequence[int] | None = None,
        steps_per_stage: int | Sequence[int] | None = None,
    ) -> None:
        integer("num_stages", num_stages)
        if (epochs_per_stage is None) == (steps_per_stage is None):
            raise ConfigError("give exactly one of epochs_per_stage and steps_per_stage")
        key = "epochs_per_stage" if epochs_per_stage is not None else "steps_per_stage"
        value = epochs_per_stage if epochs_per_stage is not None else steps_per_stage
        budgets = [value] * num_stages if isinstance(value, int) else list(value)  # type: ignore[arg-type]
        if len(budgets) != num_stages:
            raise ConfigError(f"{key} has {len(budgets)} entries but there are {num_stages} stages")
        # A list may give 0 to stages that are already trained (a model extended by a stage skips them).
        minimum = 1 if isinstance(value, int) else 0
        ints = all(is_int(b) and b >= minimum for b in budgets)
        first = next((t for t, b in enumerate(budgets) if ints and b > 0), None)
        if not ints or first is None or not all(b > 0 for b in budgets[first:]):
            what = (
                "a positive integer"
                if minimum
                else "positive integers, or 0 for leading stages that are already trained"
            )
            raise ConfigError(f"{key} must be {what}, got {value!r}")
        self.num_stages = num_stages
        self.unit = "epoch" if key == "epochs_per_stage" else "step"
        self.budgets: list[int] = budgets
        self.starts: list[int] = [sum(budgets[:t]) for t in range(num_stages)]
        self._warned_backwards = False

    def __repr__(self) -> str:
        return f"StageSchedule(num_stages={self.num_stages}, {self.unit}s_per_stage={self.budgets})"

    @property
    def total(self) -> int:
        """Epochs (or steps) until the last stage's budget is spent, e.g. for `Trainer(max_epochs=...)`."""
        return sum(self.budgets)

    def check_loaded(self, trained: int) -> None:
        """Refuse a budget that would retrain the ``trained`` stages loaded from a shorter chain."""
        if any(self.budgets[:trained]) or not self.budgets[trained]:
            example = [0] * trained + [DEFAULT_EPOCHS_PER_STAGE] * (self.num_stages - trained)
            raise ConfigError(
                f"{self.unit}s_per_stage: the {trained} stage(s) loaded from model.extend_from need budget 0 "
                f"and the next one a positive budget, e.g. {example}"
            )

    def trained_per_stage(self, epochs: int, global_step: int, steps_per_epoch: int) -> list[int]:
        """Optimizer steps each stage trained in a fit that ran ``epochs`` whole epochs of ``steps_per_epoch``
        steps (``global_step`` in all): the budget a report states per trained block. The last stage keeps
        what runs past its budget (as :meth:`stage_at` does)."""
        pos = epochs if self.unit == "epoch" else global_step
        ends = [*self.starts[1:], None]
        spent = [
            max(0, (pos if end is None else min(pos, end)) - start) for start, end in zip(self.starts, ends)
        ]
        return [n * steps_per_epoch for n in spent] if self.unit == "epoch" else spent

    def budget_details(self, trainer: Any) -> dict[str, Any]:
        """``{"steps_per_stage": [...]}`` of a finished fit (fit_result.json's budget), from its trainer."""
        steps = trainer.num_training_batches
        if not isinstance(steps, int):  # an unsized loader: the epochs' lengths are unknown
            return {}
        return {"steps_per_stage": self.trained_per_stage(trainer.current_epoch, trainer.global_step, steps)}

    def stage_at(self, epoch: int, global_step: int) -> int:
        """The stage to train at this (epoch, global_step)."""
        pos = epoch if self.unit == "epoch" else global_step
        if pos < 0:
            raise ValueError(f"epoch and global_step must be >= 0, got {epoch} and {global_step}")
        for t in range(self.num_stages - 1, -1, -1):
            if pos >= self.starts[t]:
                return t
        return 0

    def advance(self, current: int, epoch: int, global_step: int) -> int:
        """The stage to train now, given the one trained so far: the scheduled one, but never an earlier one.

        Going back would retrain a block the later blocks depend on. A schedule that asks for an earlier stage
        (a fit resumed with other budgets) keeps the current one, with one warning.
        """
        target = self.stage_at(epoch, global_step)
        if target < current:
            if not self._warned_backwards:
                warnings.warn(
                    f"smec: the schedule asks for stage {target} but stage {current} is already trained; "
                    f"keeping stage {current} (earlier stages are never retrained)",
                    stacklevel=2,
                )
                self._warned_backwards = True
            return current
        return target

    def progress(
        self, epoch: int, global_step: int, epoch_fraction: float = 0.0, stage: int | None = None
    ) -> float:
        """Fraction in [0, 1] of stage ``stage``'s budget spent (None: of the whole budget), e.g. for ADS's τ.

        Args:
            epoch, global_step: where training is.
            epoch_fraction: how far into the epoch (batch index / batches per epoch), so an epoch budget moves
                every step instead of once per epoch; ignored for a step budget.
            stage: whose budget: the stage being trained (SMRL), or None for joint training, which anneals over
                every stage's budget at once.
        """
        start, budget = (0, self.total) if stage is None else (self.starts[stage], self.budgets[stage])
        return self._fraction(epoch, global_step, epoch_fraction, start, budget)

    def _fraction(
        self, epoch: int, global_step: int, epoch_fraction: float, start: int, budget: int
    ) -> float:
        pos = global_step if self.unit == "step" else epoch + epoch_fraction
        return min(1.0, max(0.0, (pos - start) / budget)) if budget > 0 else 1.0
