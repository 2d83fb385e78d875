"""The decoder: a shallow network that maps a frozen (concatenated) embedding x ∈ R^D to y ∈ R^{d_max}.

Nested ("Matryoshka") embeddings are read off its output with `nested` (L2-normalised prefixes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from smec.errors import ConfigError
from smec.validation import integer, is_int, one_of

__all__ = ["ACTIVATIONS", "INITS", "NORMS", "PRESETS", "Decoder", "nested"]

NORMS = ("none", "batchnorm", "layernorm")
ACTIVATIONS = ("leaky_relu", "gelu", "relu")
INITS = ("kaiming", "orthogonal", "default")
# LeakyReLU slope of the concat-decoder authors' code (arXiv 2510.04626; eigenAyoub/embed-fusion, model.py).
LEAKY_SLOPE = 0.2

# Named variants of that code (docs/methods.md#wordnet-pilot calls them lin / bn / mlp2).
PRESETS: dict[str, dict[str, Any]] = {
    # LN → Linear. The pilot's best decoder.
    "linear": {"hidden_dim": None, "norm": "none", "activation": None},
    # LN → Linear → BatchNorm1d → LeakyReLU(0.2): the paper code's final `SimpleEncoder`.
    "simple_encoder": {"hidden_dim": None, "norm": "batchnorm", "activation": "leaky_relu"},
    # LN → Linear(D→1024) → LN → LeakyReLU(0.2) → Linear(1024→d_max) → LN: the paper code's `EncoderOnly`.
    "encoder_only": {"hidden_dim": 1024, "norm": "layernorm", "activation": "leaky_relu"},
}


def _make_norm(norm: str, dim: int) -> nn.Module:
    if norm == "batchnorm":
        return nn.BatchNorm1d(dim)
    if norm == "layernorm":
        return nn.LayerNorm(dim)
    return nn.Identity()


def _make_activation(activation: str | None) -> nn.Module:
    if activation == "leaky_relu":
        return nn.LeakyReLU(LEAKY_SLOPE)
    if activation == "gelu":
        return nn.GELU()
    if activation == "relu":
        return nn.ReLU()
    return nn.Identity()


class Decoder(nn.Module):
    """Shallow decoder x (B, D) → y (B, output_dim), one or two Linear layers.

    Layout (optional parts in brackets)::

        [LayerNorm(D)] → [Dropout → Linear(D→hidden) → norm → activation] → Dropout → Linear(→output_dim)
                       → norm → [activation]                                        (+ [skip(x)])

    The three variants of the concat-decoder paper's code (arXiv 2510.04626) are available as
    `Decoder.preset(name, D, d)`:

    - ``"linear"``: LN → Linear. **The default**: in the WordNet pilot (docs/methods.md#wordnet-pilot) it beat
      the paper's BN variant at every dim in float32 and int8 (int8@128: 95.5% vs 86.6%/80.7% retention over two
      seeds) and was far less seed-sensitive.
    - ``"simple_encoder"``: LN → Linear → BatchNorm1d → LeakyReLU(0.2) (the paper code's final ``SimpleEncoder``;
      its more bit-balanced output was only better for binary codes with median thresholds).
    - ``"encoder_only"``: LN → Linear(D→1024) → LN → LeakyReLU(0.2) → Linear(1024→d_max) → LN (``EncoderOnly``).

    Args:
        input_dim: D, width of the input (the concatenation).
        output_dim: d_max, width of the output; nested sizes are prefixes of it.
        hidden_dim: width of one hidden layer; None (default) for a single Linear layer.
        norm: ``"none"`` (default) | ``"batchnorm"`` | ``"layernorm"``, applied after the output Linear (and after
            the hidden Linear when there is one).
        activation: ``"leaky_relu"`` (slope 0.2) | ``"gelu"`` | ``"relu"`` | None (default). Applied after the
            hidden layer's norm, and after the output norm when `output_activation` is true.
        input_norm: LayerNorm on the input (default True, as in every variant of the paper code).
        residual: add a fixed skip path from the raw input x (not its LayerNorm) to the output, making the
            decoder an adaptor ``y = x[:, :output_dim] + g(x)`` (Matryoshka-Adaptor, arXiv 2407.20243;
            Search-Adaptor, arXiv 2310.08750).
            When output_dim == input_dim this is the identity skip; when smaller, the skip is the input's first
            output_dim coordinates (no learned projection, so the adaptor starts from plain truncation).
            Requires output_dim <= input_dim. The last Linear is then zero-initialised so that training starts
            from the skip path exactly, like the adaptors' near-zero last layer. Default False.
        output_activation: apply `activation` after the output norm too. None (default) follows the paper code:
            yes for the one-layer decoder (``SimpleEncoder`` ends in LeakyReLU), no for the two-layer one
            (``EncoderOnly`` ends in LayerNorm).
        init: ``"kaiming"`` (default; Kaiming-normal, fan_in, gain √2, zero bias, as the paper code) |
            ``"orthogonal"`` (orthonormal rows, zero bias: a random orthogonal projection, which preserves
            cosines well before any training) | ``"default"`` (PyTorch's Linear init).
        dropout: dropout probability on the input of every Linear layer, in [0, 1). Default 0.0.

    Shapes:
        forward: x (B, input_dim) → y (B, output_dim), raw (not normalised). Use `nested` for L2-normalised
        prefixes. With ``norm="batchnorm"`` training needs B > 1.
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        hidden_dim: int | None = None,
        norm: str = "none",
        activation: str | None = None,
        input_norm: bool = True,
        residual: bool = False,
        init: str = "kaiming",
        dropout: float = 0.0,
        output_activation: bool | None = None,
    ) -> None:
        super().__init__()
        self.input_dim = integer("input_dim", input_dim)
        self.output_dim = integer("output_dim", output_dim)
        if hidden_dim is not None:
            integer("hidden_dim", hidden_dim)
        one_of("norm", norm, NORMS)
        one_of("activation", activation, (*ACTIVATIONS, None))
        one_of("init", init, INITS)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be a float in [0, 1), got {dropout!r}")
        if residual and output_dim > input_dim:
            raise ConfigError(
                f"residual=True needs output_dim <= input_dim (the skip is x[:, :output_dim]), "
                f"got output_dim={output_dim}, input_dim={input_dim}"
            )
        if output_activation is None:
            output_activation = hidden_dim is None
        self.hidden_dim = hidden_dim
        self.residual = bool(residual)

        layers: list[nn.Module] = [nn.LayerNorm(input_dim) if input_norm else nn.Identity()]
        width = input_dim
        if hidden_dim is not None:
            layers += self._block(width, hidden_dim, norm, activation, dropout)
            width = hidden_dim
        layers += self._block(width, output_dim, norm, activation if output_activation else None, dropout)
        self.net = nn.Sequential(*layers)
        self._init_weights(init)

    @staticmethod
    def _block(
        in_dim: int, out_dim: int, norm: str, activation: str | None, dropout: float
    ) -> list[nn.Module]:
        block: list[nn.Module] = [nn.Dropout(dropout)] if dropout > 0 else []
        return [*block, nn.Linear(in_dim, out_dim), _make_norm(norm, out_dim), _make_activation(activation)]

    def _init_weights(self, init: str) -> None:
        linears = [m for m in self.net if isinstance(m, nn.Linear)]
        if init != "default":
            for linear in linears:
                if init == "kaiming":
                    nn.init.kaiming_normal_(linear.weight, mode="fan_in", nonlinearity="leaky_relu")
                else:
                    nn.init.orthogonal_(linear.weight)
                nn.init.zeros_(linear.bias)
        if self.residual:
            nn.init.zeros_(linears[-1].weight)
            nn.init.zeros_(linears[-1].bias)

    @classmethod
    def preset(cls, name: str, input_dim: int, output_dim: int, **overrides: Any) -> Decoder:
        """Build a named variant (see `PRESETS`); `overrides` replace any constructor argument."""
        one_of("preset", name, tuple(PRESETS))
        return cls(input_dim, output_dim, **{**PRESETS[name], **overrides})

    def forward(self, x: Tensor) -> Tensor:
        """x (B, input_dim) → y (B, output_dim), not normalised."""
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"Decoder expects x of shape (B, {self.input_dim}), got {tuple(x.shape)}")
        y = self.net(x)
        if self.residual:
            y = y + x[:, : self.output_dim]
        return y


def nested(y: Tensor, dims: Sequence[int]) -> dict[int, Tensor]:
    """L2-normalised prefixes of `y`: ``{m: normalize(y[..., :m])}`` for each m in `dims`.

    Args:
        y: decoder output, shape (..., d_max).
        dims: prefix lengths, each in [1, d_max].

    Returns:
        dict m → tensor of shape (..., m), unit-norm along the last axis, in the order of `dims`.
    """
    width = y.shape[-1]
    for m in dims:
        if not is_int(m) or not 1 <= m <= width:
            raise ConfigError(f"dims must be ints in [1, {width}] (the output width), got {list(dims)}")
    return {m: F.normalize(y[..., :m], dim=-1) for m in dims}
