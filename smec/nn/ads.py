"""ADS, adaptive dimension selection: learn which k of d coordinates survive a compression step.

MRL halves a representation by keeping its prefix; SMEC's ADS (arXiv 2510.12474) instead learns an importance logit
per coordinate and keeps the k most important ones, chosen during training by a Gumbel top-k so the choice
explores and stays differentiable.

Formalisation (training). Logits a ∈ R^d (a parameter), temperature τ (a buffer), Gumbel noise g_j ~ Gumbel(0, 1):

    s_j = (a_j + σ·g_j) / τ                       σ = `gumbel_scale` (× τ/τ_start if `anneal_noise`)
    S   = top-k indices of s                      (hard choice; ties → lower index)
    m   = hard − stop_grad(soft) + soft           (straight-through: forward value is the hard 0/1 mask)
    hard_j = 1[j ∈ S]
    soft_j = σ((s_j − θ))                          "sigmoid" relaxation (default), θ = midpoint of the k-th and
                                                  (k+1)-th largest s, detached
    soft_j = k · softmax(s)_j                     "softmax" relaxation (option)
    output = (x ⊙ m)[S sorted ascending]          (B, k)

The paper shows the Gumbel top-k but not the relaxation, τ or its schedule: the choices here are ours
(docs/methods.md#ads).

Evaluation: S = top-k of a (no noise), m = hard mask, no gradient path needed.

Why a sigmoid relaxation by default: as τ → 0, σ((s − θ)) tends to exactly the hard top-k mask, so the gradient
estimate and the forward value describe the same function; each soft_j lies in (0, 1) like the hard mask, and the
gradient is largest for the coordinates near the keep/drop boundary, which are the ones a small logit change can
swap. `k·softmax(s)` sums to k but, with k = d/2 and a small τ, concentrates its mass on a few coordinates (soft
values ≫ 1 for them, ≈ 0 for most kept ones), so most kept coordinates get almost no gradient.

Note that τ only shapes the relaxation (the gradient): the hard pick is top-k of a + σ·g whatever τ is. How much
the training pick explores is set by the spread of the logits relative to the Gumbel noise (σ ≈ 1.28 standard
deviations); `anneal_noise=True` shrinks the noise with τ so the training pick converges to the eval pick.

Using the mask on several tensors: query and document embeddings must be pruned with the *same* index set, so
draw one `Selection` per step with `select()` and `apply()` it to each tensor (or stack them into one `forward`
call). Gradient reaches a logit only through coordinates whose masked value is used: `apply()` / `forward()` return
the k kept coordinates, so only kept logits get gradient from them; losses on the full masked vector
`x * selection.mask` (zeros at dropped coordinates; identical dot products and norms) also give gradient to the
dropped logits, letting a dropped coordinate that would help climb back in.

Randomness: Gumbel noise comes from the global torch RNG unless a `torch.Generator` is passed, so
`lightning.seed_everything` / `torch.manual_seed` make training reproducible. Under DDP each rank draws its own
noise (the logits stay synchronised by DDP), which acts like dropout on the selection.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, NamedTuple

import torch
from torch import nn

from smec.errors import ConfigError
from smec.validation import integer, nonnegative, one_of, positive

__all__ = ["ADSSettings", "AdaptiveDimensionSelector", "Selection"]

Init = Literal["uniform_noise", "prefix", "zeros", "variance"]
Schedule = Literal["exponential", "linear", "cosine"]
Relaxation = Literal["sigmoid", "softmax"]
INITS = ("prefix", "uniform_noise", "zeros", "variance")
SCHEDULES = ("exponential", "linear", "cosine")
RELAXATIONS = ("sigmoid", "softmax")


@dataclass(frozen=True)
class ADSSettings:
    """SMEC's ADS settings, ``model.init_args.ads`` (the defaults are SMEC's, see docs/methods.md#ads).

    Args:
        enabled: learned selection (default True); False keeps the MRL prefix at every stage (the ``no-ads``
            ablation, configs/ablations/no-ads.yaml).
        init / init_scale / tau_start / tau_end / schedule / gumbel_scale / fixed_fraction: as
            :class:`AdaptiveDimensionSelector` (defaults ``prefix``, 1.0, 1.0 → 0.1 ``exponential``, 1.0, 0.0).
            ``init: variance`` ranks the logits by the per-coordinate variance of the stage's block output on a
            sample of training rows, set when the stage starts (:meth:`smec.nn.smrl.SMRLCompressor.init_stage`).
        anneal_noise: shrink the Gumbel noise with τ (default True here, unlike the component's False), so the
            training pick converges to the deterministic eval pick by the end of each stage.
        lr: learning rate of the logits (default None: 10 × ``model.lr``); they get no weight decay. Adam moves
            a logit by about lr per step, and the logits must move by O(1) within one stage's few hundred steps
            to reorder coordinates.
    """

    enabled: bool = True
    init: str = "prefix"
    init_scale: float = 1.0
    tau_start: float = 1.0
    tau_end: float = 0.1
    schedule: str = "exponential"
    gumbel_scale: float = 1.0
    anneal_noise: bool = True
    fixed_fraction: float = 0.0
    lr: float | None = None

    def selector_kwargs(self) -> dict[str, Any]:
        """The :class:`AdaptiveDimensionSelector` arguments (everything but ``enabled`` and ``lr``)."""
        return {k: v for k, v in asdict(self).items() if k not in ("enabled", "lr")}


class Selection(NamedTuple):
    """One draw of the selection, shared by every tensor it is applied to.

    mask: (in_dim,) float; the forward value is the hard 0/1 mask (or the soft mask if `hard=False`), and in
        training it carries the straight-through gradient to the logits.
    indices: (k,) int64, the kept coordinates in ascending order.
    """

    mask: torch.Tensor
    indices: torch.Tensor


def _topk_ascending(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest scores, ties broken towards the lower index, returned in ascending order."""
    order = torch.sort(scores, descending=True, stable=True).indices
    return torch.sort(order[:k]).values


class AdaptiveDimensionSelector(nn.Module):
    """Learnable keep-k-of-d coordinate selection with Gumbel top-k and a straight-through estimator.

    Args:
        in_dim: d, the width of the representation being pruned.
        k: how many coordinates survive (SMEC halves: k = d/2), 1 <= k <= in_dim.
        init: starting logits. "prefix" (default): linearly decreasing from +init_scale to −init_scale, so the
            initial eval pick is the MRL prefix and training starts from the truncation baseline.
            "uniform_noise": U(−init_scale, init_scale) i.i.d. (global RNG at construction). "zeros": all equal
            (the eval pick is then the prefix by tie-breaking, and training picks are uniformly random).
            "variance": as "prefix" until :meth:`init_from_variance` ranks the logits by data (the largest
            variance gets +init_scale).
        init_scale: magnitude of the initial logits (default 1.0).
        tau_start, tau_end: temperature at progress 0 and 1 (defaults 1.0 → 0.1; the paper gives no values).
        schedule: how τ moves between them with progress p ∈ [0, 1]: "exponential" (default)
            τ = τ_s·(τ_e/τ_s)^p, "linear" τ = τ_s + (τ_e − τ_s)·p, "cosine" τ = τ_e + ½(τ_s − τ_e)(1 + cos πp).
        hard: forward value of the mask. True (default): hard 0/1 with straight-through gradient. False: the soft
            mask itself (kept coordinates are scaled by their soft value).
        relaxation: "sigmoid" (default) or "softmax", the surrogate whose gradient the estimator uses (see the
            module docstring for the choice).
        gumbel_scale: σ, multiplier of the Gumbel noise (default 1.0; 0 makes training picks deterministic).
        anneal_noise: scale the noise by τ/τ_start too, so exploration fades as τ anneals (default False).
        fixed_fraction: f ∈ [0, 1), the noise-free end phase: τ anneals over progress [0, 1 − f], and from
            progress 1 − f on (f > 0) training uses the deterministic eval pick (no noise, no gradient to the
            logits), so the block trains on the pick it will be evaluated with (default 0: no such phase).

    State (all in the state_dict, so a resumed fit restores them): `logits` (in_dim,) parameter; `tau` () buffer;
    `progress` () buffer. Progress is set from outside (`set_progress`, e.g. by the SMRL stage schedule).
    """

    tau: torch.Tensor
    progress: torch.Tensor

    def __init__(
        self,
        in_dim: int,
        k: int,
        init: Init = "prefix",
        init_scale: float = 1.0,
        tau_start: float = 1.0,
        tau_end: float = 0.1,
        schedule: Schedule = "exponential",
        hard: bool = True,
        relaxation: Relaxation = "sigmoid",
        gumbel_scale: float = 1.0,
        anneal_noise: bool = False,
        fixed_fraction: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_dim = integer("in_dim", in_dim)
        self.k = integer("k", k, 1, in_dim, bound=f"in_dim={in_dim}")
        one_of("init", init, INITS)
        self.schedule = one_of("schedule", schedule, SCHEDULES)
        self.relaxation = one_of("relaxation", relaxation, RELAXATIONS)
        self.tau_start = positive("tau_start", tau_start)
        self.tau_end = positive("tau_end", tau_end)
        self.gumbel_scale = nonnegative("gumbel_scale", gumbel_scale)
        init_scale = nonnegative("init_scale", init_scale)
        self.hard = hard
        self.anneal_noise = anneal_noise
        self.init, self.init_scale = init, init_scale
        self.fixed_fraction = nonnegative("fixed_fraction", fixed_fraction)
        if self.fixed_fraction >= 1:
            raise ConfigError(f"fixed_fraction must be a number in [0, 1), got {fixed_fraction!r}")

        if init in ("prefix", "variance"):
            logits = torch.linspace(init_scale, -init_scale, in_dim) if in_dim > 1 else torch.zeros(1)
        elif init == "uniform_noise":
            logits = (torch.rand(in_dim) * 2 - 1) * init_scale
        else:
            logits = torch.zeros(in_dim)
        self.logits = nn.Parameter(logits)
        self.register_buffer("tau", torch.tensor(self.tau_start))
        self.register_buffer("progress", torch.tensor(0.0))

    def extra_repr(self) -> str:
        return (
            f"in_dim={self.in_dim}, k={self.k}, tau={float(self.tau):.4g}, schedule={self.schedule}, "
            f"hard={self.hard}, relaxation={self.relaxation}"
        )

    # temperature -------------------------------------------------------------------------------------------

    def tau_at(self, p: float) -> float:
        """Temperature the schedule gives at progress p ∈ [0, 1]."""
        s, e = self.tau_start, self.tau_end
        if self.schedule == "exponential":
            return s * (e / s) ** p
        if self.schedule == "linear":
            return s + (e - s) * p
        return e + 0.5 * (s - e) * (1 + math.cos(math.pi * p))

    @torch.no_grad()
    def set_progress(self, p: float) -> None:
        """Set annealing progress p ∈ [0, 1] (e.g. step within the stage / steps in the stage) and update τ."""
        p = float(p)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"ads progress must be in [0, 1], got {p}")
        self.progress.fill_(p)
        self.tau.fill_(self.tau_at(min(1.0, p / (1.0 - self.fixed_fraction))))

    @property
    def fixed(self) -> bool:
        """Whether training is in the noise-free end phase (``fixed_fraction``) and uses the eval pick."""
        return self.fixed_fraction > 0 and float(self.progress) >= 1.0 - self.fixed_fraction

    @torch.no_grad()
    def init_from_variance(self, variance: torch.Tensor) -> None:
        """Logits ranked by ``variance`` (in_dim,): the prefix init's values, ±init_scale, in variance order.

        The largest variance gets +init_scale, so the eval pick starts at the k highest-variance coordinates
        (ties: the lower index first), with the prefix init's spread against the Gumbel noise.
        """
        if variance.shape != (self.in_dim,):
            raise ValueError(f"ads variance must have shape ({self.in_dim},), got {tuple(variance.shape)}")
        order = torch.sort(variance.detach().to(self.logits), descending=True, stable=True).indices
        ramp = (
            torch.linspace(self.init_scale, -self.init_scale, self.in_dim)
            if self.in_dim > 1
            else torch.zeros(1)
        )
        self.logits.index_copy_(0, order, ramp.to(self.logits))

    # selection ---------------------------------------------------------------------------------------------

    def selected_indices(self) -> torch.Tensor:
        """The deterministic (eval) pick: top-k of the logits, ascending, as a (k,) LongTensor."""
        return _topk_ascending(self.logits.detach(), self.k)

    def _gumbel(self, generator: torch.Generator | None) -> torch.Tensor:
        u = torch.rand(self.in_dim, generator=generator, device=self.logits.device, dtype=self.logits.dtype)
        tiny = torch.finfo(u.dtype).tiny
        return -torch.log(-torch.log(u.clamp(min=tiny, max=1.0 - 1e-7)))

    def select(self, generator: torch.Generator | None = None) -> Selection:
        """Draw one selection: Gumbel top-k with a straight-through mask in training, top-k of the logits in eval.

        `generator` is used for the Gumbel noise when given (it must live on the logits' device); otherwise the
        global RNG is.
        """
        if not self.training or self.fixed:
            indices = self.selected_indices()
            mask = torch.zeros_like(self.logits, requires_grad=False)
            mask[indices] = 1.0
            return Selection(mask=mask, indices=indices)

        tau = self.tau.to(self.logits.dtype)
        noise_scale = self.gumbel_scale * (float(self.tau) / self.tau_start if self.anneal_noise else 1.0)
        perturbed = self.logits + noise_scale * self._gumbel(generator)  # a + σg, (in_dim,)
        scores = perturbed / tau
        indices = _topk_ascending(scores.detach(), self.k)
        hard = torch.zeros_like(scores).index_fill_(0, indices, 1.0)
        if self.relaxation == "softmax":
            soft = self.k * torch.softmax(scores, dim=0)
        else:
            if self.k < self.in_dim:
                top = torch.topk(scores.detach(), self.k + 1).values
                threshold = 0.5 * (top[-1] + top[-2])
            else:
                threshold = scores.detach().min() - 1.0  # everything is kept; any threshold below all works
            soft = torch.sigmoid(scores - threshold)
        mask = hard - soft.detach() + soft if self.hard else soft
        return Selection(mask=mask, indices=indices)

    @staticmethod
    def apply(x: torch.Tensor, selection: Selection) -> torch.Tensor:
        """Prune (..., in_dim) to (..., k): `(x * mask)` at the selected indices, ascending."""
        return (x * selection.mask.to(x.dtype)).index_select(-1, selection.indices)

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Select k of the last dimension's in_dim coordinates.

        Args:
            x: (..., in_dim), e.g. (B, in_dim), or (2, B, in_dim) to prune queries and documents with one draw.
            generator: optional RNG for the Gumbel noise (training only).

        Returns:
            (values (..., k), indices (k,) ascending). In training the values carry the straight-through gradient
            to the logits; in eval they are exactly `x[..., indices]`.
        """
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"ads expects inputs with last dimension {self.in_dim}, got {tuple(x.shape)}")
        selection = self.select(generator)
        return self.apply(x, selection), selection.indices
