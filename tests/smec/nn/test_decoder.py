import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from smec.errors import ConfigError
from smec.nn.decoder import Decoder, nested


def _layer_types(decoder: Decoder) -> list[type]:
    return [type(m) for m in decoder.net]


def test_default_is_plain_layernorm_linear_and_matches_reference():
    torch.manual_seed(0)
    decoder = Decoder(6, 4)
    assert _layer_types(decoder) == [nn.LayerNorm, nn.Linear, nn.Identity, nn.Identity]
    x = torch.randn(5, 6)
    linear = decoder.net[1]
    expected = F.layer_norm(x, (6,)) @ linear.weight.T + linear.bias
    torch.testing.assert_close(decoder(x), expected)


def test_default_equals_linear_preset_layout():
    assert _layer_types(Decoder(6, 4)) == _layer_types(Decoder.preset("linear", 6, 4))


def test_simple_encoder_preset_is_ln_linear_bn_leaky_relu():
    decoder = Decoder.preset("simple_encoder", 8, 4)
    assert _layer_types(decoder) == [nn.LayerNorm, nn.Linear, nn.BatchNorm1d, nn.LeakyReLU]
    assert decoder.net[3].negative_slope == 0.2


def test_encoder_only_preset_is_two_layers_ending_in_layernorm():
    decoder = Decoder.preset("encoder_only", 8, 4, hidden_dim=16)
    assert _layer_types(decoder) == [
        nn.LayerNorm,
        nn.Linear,
        nn.LayerNorm,
        nn.LeakyReLU,
        nn.Linear,
        nn.LayerNorm,
        nn.Identity,
    ]
    assert (decoder.net[1].in_features, decoder.net[1].out_features) == (8, 16)
    assert (decoder.net[4].in_features, decoder.net[4].out_features) == (16, 4)
    assert Decoder.preset("encoder_only", 8, 4).hidden_dim == 1024


def test_output_activation_override_and_dropout_placement():
    decoder = Decoder(8, 4, hidden_dim=6, activation="gelu", output_activation=True, dropout=0.5)
    assert _layer_types(decoder) == [
        nn.LayerNorm,
        nn.Dropout,
        nn.Linear,
        nn.Identity,
        nn.GELU,
        nn.Dropout,
        nn.Linear,
        nn.Identity,
        nn.GELU,
    ]
    assert _layer_types(Decoder(8, 4, input_norm=False))[0] is nn.Identity


def test_output_is_raw_not_normalised_and_shaped():
    torch.manual_seed(0)
    y = Decoder(16, 8)(torch.randn(4, 16))
    assert y.shape == (4, 8)
    assert not torch.allclose(y.norm(dim=1), torch.ones(4))


def test_kaiming_init_matches_paper_gain_and_zero_bias():
    torch.manual_seed(0)
    linear = Decoder(1536, 512).net[1]
    # Kaiming-normal, fan_in, leaky_relu with a=0: std = sqrt(2 / fan_in); 786k samples → ~0.1% sampling error.
    assert linear.weight.std().item() == pytest.approx(math.sqrt(2 / 1536), rel=0.01)
    assert torch.count_nonzero(linear.bias) == 0


def test_orthogonal_init_has_orthonormal_rows():
    torch.manual_seed(0)
    linear = Decoder(12, 5, init="orthogonal").net[1]
    torch.testing.assert_close(linear.weight @ linear.weight.T, torch.eye(5))
    assert torch.count_nonzero(linear.bias) == 0


def test_default_init_keeps_pytorch_nonzero_bias():
    torch.manual_seed(0)
    assert torch.count_nonzero(Decoder(12, 5, init="default").net[1].bias) > 0


def test_residual_starts_at_truncation_and_identity():
    torch.manual_seed(0)
    x = torch.randn(3, 10)
    torch.testing.assert_close(Decoder(10, 4, residual=True, hidden_dim=7, activation="relu")(x), x[:, :4])
    torch.testing.assert_close(Decoder(10, 10, residual=True)(x), x)


def test_residual_learns_through_the_zeroed_layer():
    torch.manual_seed(0)
    decoder = Decoder(10, 4, residual=True)
    decoder(torch.randn(3, 10)).square().sum().backward()
    assert decoder.net[1].weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_dim": 0}, r"input_dim must be a positive integer, got 0"),
        ({"output_dim": 2.5}, r"output_dim must be a positive integer, got 2.5"),
        ({"output_dim": True}, r"output_dim must be a positive integer, got True"),
        ({"hidden_dim": -1}, r"hidden_dim must be a positive integer, got -1"),
        ({"norm": "groupnorm"}, r"norm must be one of none, batchnorm, layernorm, got 'groupnorm'"),
        (
            {"activation": "tanh"},
            r"activation must be one of leaky_relu, gelu, relu, null, got 'tanh'",
        ),
        ({"init": "xavier"}, r"init must be one of kaiming, orthogonal, default, got 'xavier'"),
        ({"dropout": 1.0}, r"dropout must be a float in \[0, 1\), got 1.0"),
        (
            {"output_dim": 12, "residual": True},
            r"residual=True needs output_dim <= input_dim .* got output_dim=12, input_dim=8",
        ),
    ],
)
def test_bad_arguments_raise_config_error_naming_them(kwargs, message):
    args = {"input_dim": 8, "output_dim": 4, **kwargs}
    with pytest.raises(ConfigError, match=message):
        Decoder(**args)


def test_unknown_preset():
    with pytest.raises(ConfigError, match=r"preset must be one of linear, simple_encoder, encoder_only, got"):
        Decoder.preset("bn", 8, 4)


def test_forward_rejects_wrong_width():
    with pytest.raises(ValueError, match=r"Decoder expects x of shape \(B, 8\), got \(2, 7\)"):
        Decoder(8, 4)(torch.randn(2, 7))


def test_nested_returns_normalised_prefixes():
    y = torch.tensor([[3.0, 4.0, 12.0], [1.0, 0.0, 0.0]])
    out = nested(y, [1, 2, 3])
    assert list(out) == [1, 2, 3]
    torch.testing.assert_close(out[1], torch.tensor([[1.0], [1.0]]))
    torch.testing.assert_close(out[2], torch.tensor([[0.6, 0.8], [1.0, 0.0]]))
    torch.testing.assert_close(out[3], torch.tensor([[3 / 13, 4 / 13, 12 / 13], [1.0, 0.0, 0.0]]))


def test_nested_rejects_dims_beyond_width():
    with pytest.raises(
        ConfigError, match=r"dims must be ints in \[1, 3\] \(the output width\), got \[2, 4\]"
    ):
        nested(torch.randn(2, 3), [2, 4])
