"""`SparseAutoEncoder`: CSR's top-k sparse autoencoder over a frozen embedding (Wen et al., ICML 2025, arXiv
2503.01776; docs/methods.md#csr).

A k-sparse code of a dictionary of ``hidden_dim`` latents, wider than the input:

    pre(x) = W (x − b_pre) + b_lat                      (H,)   W: (H, D), unit-norm rows at init
    z_k(x) = ReLU(TopK_k(pre(x)))                        (H,)   at most k non-zeros
    x̂_k    = W_decᵀ z_k + b_pre                          (D,)   W_dec = W (tied, default) or its own (H, D)

as the authors' recipe ported by sentence-transformers (``SparseAutoEncoder``): pre-bias subtracted before the
encoder and added back after the decoder, a latent bias, top-k then ReLU, decoder tied to the encoder. Dead
latents (not in any row's top-k for ``dead_steps`` training steps) feed the auxiliary code z_aux, the top
``k_aux`` pre-activations among dead latents. One :func:`torch.topk` at 4·k_max serves every k (sorted, so its
first k columns are the top k) and decoding gathers the k atoms (``embedding_bag``), never a dense (B, H) x
(H, D) product.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smec.validation import integer

__all__ = ["SparseAutoEncoder", "SparseAutoEncoderOutput"]


@dataclass(frozen=True)
class SparseAutoEncoderOutput:
    """What one training forward returns.

    Attributes:
        codes: k → z_k (B, H), the dense form of the k-sparse code (the contrastive term's input).
        reconstructions: k → x̂_k (B, D).
        reconstructions_4k: k → x̂_4k (B, D), the reconstruction from the top 4·k latents.
        aux_reconstruction: W_decᵀ z_aux (B, D), no pre-bias (None when k_aux is 0).
        aux_target: x − x̂_kmax, detached: the residual the dead latents are asked to explain (None with it).
    """

    codes: dict[int, Tensor]
    reconstructions: dict[int, Tensor]
    reconstructions_4k: dict[int, Tensor]
    aux_reconstruction: Tensor | None
    aux_target: Tensor | None


class SparseAutoEncoder(nn.Module):
    """Top-k sparse autoencoder: frozen input (B, D) → k-sparse codes (B, H) and their reconstructions.

    Args:
        input_dim: D.
        hidden_dim: H, the dictionary width (> D in CSR: 4 D in the demo recipe).
        k_aux: dead latents in the auxiliary code (0: no auxiliary term; capped at H).
        dead_steps: a latent is dead after this many training steps outside every row's top-k_max (the
            sentence-transformers default, 30).
        tied: decoder weight = encoder weight (default, as the authors' code ported by sentence-transformers);
            False gives the decoder its own weight, initialised to the same values.

    Init: W from ``nn.Linear``'s default (torch's generator, so ``seed_everything`` fixes it), rows scaled to
    unit norm (every atom starts with the same scale, as in the top-k SAE recipe CSR builds on); both biases 0.
    """

    def __init__(
        self, input_dim: int, hidden_dim: int, k_aux: int = 512, dead_steps: int = 30, tied: bool = True
    ) -> None:
        super().__init__()
        self.input_dim = integer("input_dim", input_dim)
        self.hidden_dim = integer("hidden_dim", hidden_dim)
        self.k_aux = min(integer("k_aux", k_aux, minimum=0), self.hidden_dim)
        self.dead_steps = integer("dead_steps", dead_steps)
        self.tied = bool(tied)
        self.pre_bias = nn.Parameter(torch.zeros(self.input_dim))
        self.encoder = nn.Linear(self.input_dim, self.hidden_dim, bias=False)
        self.latent_bias = nn.Parameter(torch.zeros(self.hidden_dim))
        with torch.no_grad():
            self.encoder.weight.div_(self.encoder.weight.norm(dim=1, keepdim=True).clamp_min(1e-12))
        self.decoder_weight_untied = None if self.tied else nn.Parameter(self.encoder.weight.detach().clone())
        self.register_buffer("steps_since_active", torch.zeros(self.hidden_dim, dtype=torch.long))

    @property
    def index_bits(self) -> int:
        """Bits of one latent index: ⌈log2 H⌉ (at least 1)."""
        return max(1, math.ceil(math.log2(self.hidden_dim)))

    def decoder_weight(self) -> Tensor:
        """W_dec (H, D): row h is latent h's atom."""
        return self.encoder.weight if self.decoder_weight_untied is None else self.decoder_weight_untied

    def pre_activation(self, x: Tensor) -> Tensor:
        """pre(x) = W (x − b_pre) + b_lat: (B, D) → (B, H)."""
        return F.linear(x - self.pre_bias, self.encoder.weight, self.latent_bias)

    def check_k(self, k: int) -> int:
        return integer("k", k, maximum=self.hidden_dim, bound=f"hidden_dim={self.hidden_dim}")

    def sparse(self, x: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """The k-sparse code as (values (B, k) >= 0, indices (B, k)), values descending."""
        top = torch.topk(self.pre_activation(x), self.check_k(k), dim=-1, sorted=True)
        return F.relu(top.values), top.indices

    def encode(self, x: Tensor, k: int) -> Tensor:
        """z_k(x) as a dense (B, H) tensor with at most k non-zeros (exactly k when pre(x)'s k-th is > 0)."""
        values, indices = self.sparse(x, k)
        return torch.zeros(len(x), self.hidden_dim, dtype=values.dtype, device=values.device).scatter(
            1, indices, values
        )

    def decode(self, values: Tensor, indices: Tensor, bias: bool = True) -> Tensor:
        """Σ_j values[:, j] · W_dec[indices[:, j]] (+ b_pre): (B, k), (B, k) → (B, D)."""
        out = F.embedding_bag(indices, self.decoder_weight(), per_sample_weights=values, mode="sum")
        return out + self.pre_bias if bias else out

    def forward(self, x: Tensor, ks: Sequence[int]) -> SparseAutoEncoderOutput:
        """Codes and reconstructions at every k of ``ks`` (and 4·k), the auxiliary term's inputs; in training,
        updates the dead-latent counters."""
        ks = sorted(self.check_k(k) for k in ks)
        pre = self.pre_activation(x)
        top = torch.topk(pre, min(4 * ks[-1], self.hidden_dim), dim=-1, sorted=True)
        values, indices = F.relu(top.values), top.indices
        codes, recon, recon_4k = {}, {}, {}
        for k in ks:
            v, i = values[:, :k], indices[:, :k]
            codes[k] = torch.zeros_like(pre).scatter(1, i, v)
            recon[k] = self.decode(v, i)
            recon_4k[k] = self.decode(values[:, : 4 * k], indices[:, : 4 * k])
        if self.training and torch.is_grad_enabled():
            self._count_dead(values[:, : ks[-1]], indices[:, : ks[-1]])
        aux, aux_target = None, None
        if self.k_aux:
            dead = self.steps_since_active > self.dead_steps
            aux_top = torch.topk(pre * dead, self.k_aux, dim=-1)
            aux = self.decode(F.relu(aux_top.values), aux_top.indices, bias=False)
            aux_target = (x - recon[ks[-1]]).detach()
        return SparseAutoEncoderOutput(codes, recon, recon_4k, aux, aux_target)

    @torch.no_grad()
    def _count_dead(self, values: Tensor, indices: Tensor) -> None:
        fired = torch.zeros_like(self.steps_since_active)
        fired.scatter_add_(0, indices.reshape(-1), (values > 1e-5).to(fired.dtype).reshape(-1))
        self.steps_since_active.mul_(1 - fired.clamp(max=1)).add_(1)
