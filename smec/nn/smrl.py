"""SMRL, sequential Matryoshka representation learning: compress D → D/2 → D/4 → … one stage at a time.

MRL trains every nested size at once on shared weights, and the small sizes' large gradients fight the large
sizes' (papers.md §2.2). SMRL (§2.4) trains one halving step per stage and freezes what earlier stages learned, so
a size already reached cannot be degraded later, and a finished model can be compressed further by appending a
stage.

Parametrisation chosen here (the paper's exact one is unknown, §2.10 item 1). With dims d_0 = D > d_1 > … > d_T
there are T stages; stage t owns

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
one output; `index_sets()` says which coordinates of z_t each selection keeps, for reports.

Defaults and why:
- Blocks start as the identity (`identity_init=True`): stage 0 then starts with z_0 = h, i.e. zero loss at size
  D, and each selection starts as truncation of the teacher (with ADS's default "prefix" init), so training starts
  from the truncation baseline and can only move away from it by lowering the loss.
- `block="linear"`, no activation or normalisation: the paper analyses a single FC layer (§2.3); "mlp" (Linear →
  GELU → Linear) is available. `residual=True` computes x + f(x) with f starting at zero; for the linear block it
  is the same function at init but weight decay then pulls towards the identity instead of towards zero.
- `selection="ads"`; `"prefix"` gives SMRL without ADS (the ablation).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any, Literal

import torch
from torch import nn

from smec.errors import ConfigError
from smec.nn.ads import AdaptiveDimensionSelector, Selection

__all__ = ["CompressionBlock", "PrefixSelector", "SMRLCompressor", "StageSchedule", "halving_dims"]

BlockKind = Literal["linear", "mlp"]
SelectionKind = Literal["ads", "prefix"]


def halving_dims(input_dim: int, min_dim: int) -> list[int]:
    """[input_dim, input_dim // 2, input_dim // 4, …] down to the smallest size >= min_dim.

    E.g. (1536, 48) → [1536, 768, 384, 192, 96, 48]; (1536, 64) → [1536, 768, 384, 192, 96].
    """
    if not isinstance(input_dim, int) or input_dim < 2:
        raise ConfigError(f"smrl input_dim must be an integer >= 2, got {input_dim!r}")
    if not isinstance(min_dim, int) or not 1 <= min_dim < input_dim:
        raise ConfigError(f"smrl min_dim must be an integer in [1, input_dim={input_dim}), got {min_dim!r}")
    dims = [input_dim]
    while dims[-1] // 2 >= min_dim:
        dims.append(dims[-1] // 2)
    if len(dims) < 2:
        raise ConfigError(f"smrl min_dim={min_dim} leaves no halving step below input_dim={input_dim}")
    return dims


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
        if kind not in ("linear", "mlp"):
            raise ConfigError(f"smrl block must be 'linear' or 'mlp', got {kind!r}")
        if hidden_dim is not None and (not isinstance(hidden_dim, int) or hidden_dim < 1):
            raise ConfigError(f"smrl hidden_dim must be a positive integer or None, got {hidden_dim!r}")
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return x + out if self.residual else out


class PrefixSelector(nn.Module):
    """MRL's selection: keep the first k of in_dim coordinates. Same interface as `AdaptiveDimensionSelector`."""

    def __init__(self, in_dim: int, k: int) -> None:
        super().__init__()
        if not 1 <= k <= in_dim:
            raise ConfigError(f"prefix selector k must be in [1, in_dim={in_dim}], got {k!r}")
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
            tau_end, schedule, …); its `in_dim` and `k` come from dims.
        toggle_requires_grad: freeze inactive stages by setting requires_grad=False (default). Inactive stages
            always run under `torch.no_grad()` as well, so with False they still get no gradient (grad stays
            None and optimizers skip them) while every parameter keeps requires_grad=True. Use False when the
            stage changes inside one DDP fit: DDP only synchronises the parameters that required grad when it
            wrapped the model, so a block unfrozen later would silently train unsynchronised on each rank (also
            set DDP's find_unused_parameters=True, since inactive stages are unused). With the default, wrap the
            model in DDP after `set_stage` (e.g. one fit per stage).

    State: `active_stage` () int64 buffer (the stage being / last trained; restored by `load_state_dict`, which
    re-applies the freezing) and `stage_dims` (T+1,) int64 buffer (checked on load, so a checkpoint with other
    dims fails with a message saying which dims to construct with). Starts at stage 0.
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
    ) -> None:
        super().__init__()
        if dims is not None and (input_dim is not None or min_dim is not None):
            raise ConfigError("smrl takes either dims or input_dim + min_dim, not both")
        if dims is None:
            if input_dim is None or min_dim is None:
                raise ConfigError("smrl needs dims, or both input_dim and min_dim")
            dims = halving_dims(input_dim, min_dim)
        dims = list(dims)
        if len(dims) < 2 or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in dims):
            raise ConfigError(f"smrl dims must list at least two positive integers, got {dims!r}")
        if any(b >= a for a, b in pairwise(dims)):
            raise ConfigError(f"smrl dims must be strictly decreasing, got {dims!r}")
        if selection not in ("ads", "prefix"):
            raise ConfigError(f"smrl selection must be 'ads' or 'prefix', got {selection!r}")
        if ads_kwargs is not None and {"in_dim", "k"} & set(ads_kwargs):
            raise ConfigError("smrl ads_kwargs must not set in_dim or k; they come from dims")
        self.block_kwargs: dict[str, Any] = {
            "kind": block,
            "residual": residual,
            "hidden_dim": hidden_dim,
            "identity_init": identity_init,
        }
        self.selection = selection
        self.toggle_requires_grad = toggle_requires_grad
        self.ads_kwargs = dict(ads_kwargs or {})
        self.dims: list[int] = [dims[0]]
        self.blocks = nn.ModuleList()
        self.selectors = nn.ModuleList()
        self.register_buffer("active_stage", torch.zeros((), dtype=torch.int64))
        self.register_buffer("stage_dims", torch.tensor(self.dims, dtype=torch.int64))
        for d in dims[1:]:
            self._append(d)
        self._apply_stage(0)
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

    def extra_repr(self) -> str:
        return f"dims={self.dims}, active_stage={self.stage}, selection={self.selection}"

    def _append(self, new_dim: int) -> None:
        d = self.dims[-1]
        block = CompressionBlock(d, **self.block_kwargs)
        if self.selection == "ads":
            selector: nn.Module = AdaptiveDimensionSelector(d, new_dim, **self.ads_kwargs)
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
        if not isinstance(new_dim, int) or not 1 <= new_dim < self.dims[-1]:
            raise ConfigError(
                f"smrl add_stage new_dim must be an integer in [1, {self.dims[-1]}), got {new_dim!r}"
            )
        self._append(new_dim)
        self.set_stage(self.num_stages - 1)
        return self.num_stages - 1

    # stages ------------------------------------------------------------------------------------------------

    def set_stage(self, t: int) -> None:
        """Make stage t the trainable one: unfreeze block t and selector t, freeze every other stage.

        Frozen parameters get requires_grad=False (unless `toggle_requires_grad=False`) and their `.grad` cleared
        (so an optimizer built over all parameters skips them even if it was stepped before the switch; Adam's
        moments are not applied to a parameter whose grad is None), and their modules stay in eval mode while the
        compressor trains. Stages after t are frozen too: they are not on the path yet.
        """
        if not isinstance(t, int) or not 0 <= t < self.num_stages:
            raise ValueError(f"smrl stage must be in [0, {self.num_stages}), got {t!r}")
        self._apply_stage(t)

    def _apply_stage(self, t: int) -> None:
        self.active_stage.fill_(t)
        for s, (block, selector) in enumerate(zip(self.blocks, self.selectors)):
            for p in (*block.parameters(), *selector.parameters()):
                if self.toggle_requires_grad:
                    p.requires_grad_(s == t)
                if s != t:
                    p.grad = None
        self.train(self.training)

    def train(self, mode: bool = True) -> SMRLCompressor:
        """Set train/eval mode; frozen stages always stay in eval mode (deterministic selection, no dropout)."""
        super().train(mode)
        t = self.stage
        for s, (block, selector) in enumerate(zip(self.blocks, self.selectors)):
            if s != t:
                block.eval()
                selector.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters of the active stage only (its block and, with ADS, its selector's logits)."""
        t = self.stage
        return [*self.blocks[t].parameters(), *self.selectors[t].parameters()]

    def set_progress(self, p: float) -> None:
        """Forward annealing progress p ∈ [0, 1] within the active stage to its selector (ADS temperature)."""
        selector = self.selectors[self.stage]
        if isinstance(selector, AdaptiveDimensionSelector):
            selector.set_progress(p)

    def index_sets(self) -> dict[int, torch.Tensor]:
        """{d_{s+1}: indices into z_s (width d_s) kept by selector s} for every stage reached, ascending.

        For reports only: the evaluator should use `embed`, since z_{s+1} is a new vector, not a subset.
        """
        return {self.dims[s + 1]: self.selectors[s].selected_indices() for s in range(self.stage + 1)}

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
            with torch.set_grad_enabled(torch.is_grad_enabled() and s == self.stage):
                z = self.blocks[s](u)
                sel = selections[s]
                u = self.selectors[s].apply(z, Selection(sel.mask.to(z.device), sel.indices.to(z.device)))
            out[self.dims[s]] = z
        out[self.dims[t + 1]] = u
        return out

    def embed(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """The (..., dim) embedding of size `dim` (one of `available_dims`), computing only the stages it needs.

        Meant for inference: call it in eval mode, where every selection is its deterministic top-k (in train
        mode the active stage's ADS draws a Gumbel sample).
        """
        if dim not in self.available_dims:
            raise ValueError(f"smrl has no embedding of size {dim}; available sizes: {self.available_dims}")
        i = self.dims.index(dim)
        upto = min(i, self.stage)
        return self.forward(x, upto=upto)[dim]

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


def _reapply_stage_after_load(module: SMRLCompressor, incompatible_keys: Any) -> None:
    # load_state_dict copies the active_stage buffer but not the freezing it implies.
    t = module.stage
    if 0 <= t < module.num_stages:
        module._apply_stage(t)


class StageSchedule:
    """Maps training progress (epoch, global step) to the SMRL stage to train.

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
        if not isinstance(num_stages, int) or num_stages < 1:
            raise ConfigError(f"num_stages must be a positive integer, got {num_stages!r}")
        if (epochs_per_stage is None) == (steps_per_stage is None):
            raise ConfigError("give exactly one of epochs_per_stage and steps_per_stage")
        key = "epochs_per_stage" if epochs_per_stage is not None else "steps_per_stage"
        value = epochs_per_stage if epochs_per_stage is not None else steps_per_stage
        budgets = [value] * num_stages if isinstance(value, int) else list(value)  # type: ignore[arg-type]
        if len(budgets) != num_stages:
            raise ConfigError(f"{key} has {len(budgets)} entries but there are {num_stages} stages")
        # A list may give 0 to stages that are already trained (a model extended by a stage skips them).
        minimum = 1 if isinstance(value, int) else 0
        ints = all(isinstance(b, int) and not isinstance(b, bool) and b >= minimum for b in budgets)
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

    def __repr__(self) -> str:
        return f"StageSchedule(num_stages={self.num_stages}, {self.unit}s_per_stage={self.budgets})"

    @property
    def total(self) -> int:
        """Epochs (or steps) until the last stage's budget is spent, e.g. for `Trainer(max_epochs=...)`."""
        return sum(self.budgets)

    def _position(self, epoch: int, global_step: int) -> int:
        return epoch if self.unit == "epoch" else global_step

    def stage_at(self, epoch: int, global_step: int) -> int:
        """The stage to train at this (epoch, global_step)."""
        pos = self._position(epoch, global_step)
        if pos < 0:
            raise ValueError(f"epoch and global_step must be >= 0, got {epoch} and {global_step}")
        for t in range(self.num_stages - 1, -1, -1):
            if pos >= self.starts[t]:
                return t
        return 0

    def progress(self, epoch: int, global_step: int, steps_per_epoch: int | None = None) -> float:
        """Fraction in [0, 1] of the current stage's budget spent, e.g. for ADS temperature annealing.

        For an epoch budget, pass `steps_per_epoch` for a per-step value (otherwise it moves once per epoch).
        """
        t = self.stage_at(epoch, global_step)
        if self.unit == "step":
            done, budget = global_step - self.starts[t], self.budgets[t]
        elif steps_per_epoch:
            done = global_step - self.starts[t] * steps_per_epoch
            budget = self.budgets[t] * steps_per_epoch
        else:
            done, budget = epoch - self.starts[t], self.budgets[t]
        return min(1.0, max(0.0, done / budget)) if budget > 0 else 1.0
