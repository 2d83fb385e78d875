import re
from dataclasses import dataclass

import pytest

from smec.errors import ConfigError
from smec.validation import (
    check_dims,
    check_weights,
    integer,
    named_config_errors,
    nonnegative,
    one_of,
    optional_positive_int,
    positive,
    settings,
)


@pytest.mark.parametrize(
    ("check", "value", "message"),
    [
        (positive, 0, "lr must be a number > 0, got 0"),
        (positive, True, "lr must be a number > 0, got True"),  # a YAML slip, not 1
        (positive, float("inf"), "lr must be a number > 0, got inf"),
        (nonnegative, -1, "lr must be a number >= 0, got -1"),
        (nonnegative, "0", "lr must be a number >= 0, got '0'"),
        (optional_positive_int, 0, "lr must be a positive integer or null, got 0"),
    ],
)
def test_number_checks_name_the_argument(check, value, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        check("lr", value)


def test_passing_values_come_back_typed():
    assert positive("lr", 1) == 1.0 and isinstance(positive("lr", 1), float)
    assert nonnegative("w", 0) == 0.0
    assert integer("k", 3, 1, 4) == 3 and integer("n", 0, minimum=0) == 0
    assert optional_positive_int("h", None) is None
    assert one_of("mode", "a", ("a", "b")) == "a"


def test_integer_messages():
    with pytest.raises(ConfigError, match=r"^k must be a positive integer, got 0$"):
        integer("k", 0)
    with pytest.raises(ConfigError, match=r"^k must be an integer >= 0, got -1$"):
        integer("k", -1, minimum=0)
    with pytest.raises(ConfigError, match=re.escape("k must be an integer in [1, memory_size=4], got 5")):
        integer("k", 5, 1, 4, bound="memory_size=4")
    with pytest.raises(ConfigError, match=r"^k must be a positive integer, got True$"):
        integer("k", True)
    with pytest.raises(ConfigError, match=r"^mode must be one of a, b, got 'c'$"):
        one_of("mode", "c", ("a", "b"))


def test_dims_and_weights():
    assert check_dims([8, 16], 16) == (8, 16)
    assert check_weights(None, 3) == (1.0, 1.0, 1.0)
    assert check_weights([1, 2], 2) == (1.0, 2.0)
    for dims, message in [
        ([8, 8], "matryoshka_dims must be unique, got [8, 8]"),
        ([16, 8], "matryoshka_dims must be sorted ascending, got [16, 8]"),
        ([8, 32], "matryoshka_dims must all be <= output_dim=16, got [8, 32]"),
        ([], "matryoshka_dims must be a non-empty list of positive ints, got []"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            check_dims(dims, 16, name="matryoshka_dims")
    with pytest.raises(ConfigError, match=re.escape("weights must have one entry per dim (2), got [1]")):
        check_weights([1], 2)
    with pytest.raises(ConfigError, match=re.escape("weights must be positive numbers, got [1, 0]")):
        check_weights([1, 0], 2)


def test_named_config_errors_adds_the_section_once():
    def build(tau: float) -> float:
        return positive("tau", tau)

    assert named_config_errors("model.ads", build, 1.0) == 1.0
    with pytest.raises(ConfigError, match=r"^model\.ads\.tau must be a number > 0, got 0$"):
        named_config_errors("model.ads", build, 0)
    with pytest.raises(ConfigError, match=r"^model\.ads\.tau must be"):
        named_config_errors("model.ads", named_config_errors, "model.ads", build, 0)


@dataclass(frozen=True)
class Group:
    size: int = 4
    weight: float = 1.0


def test_settings_from_an_instance_a_mapping_or_none():
    assert settings(Group, None, "model.g") == Group()
    assert settings(Group, {"size": 8}, "model.g") == Group(size=8)
    instance = Group(size=2)
    assert settings(Group, instance, "model.g") is instance
    with pytest.raises(ConfigError, match=r"^model\.g: unknown key\(s\) sise; known: size, weight$"):
        settings(Group, {"sise": 8}, "model.g")
    with pytest.raises(ConfigError, match=r"^model\.g must be a mapping of settings, got True$"):
        settings(Group, True, "model.g")
