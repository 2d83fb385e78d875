"""Argument checks shared by the methods side (nn/, losses/, systems/): one message per kind of mistake.

Every check takes the argument's ``name`` as the user wrote it and raises :class:`~smec.errors.ConfigError`
``"<name> must be …, got <value>"``. Components name their own arguments (``tau_end must be a number > 0, got
0``); a system builds them through :func:`named_config_errors`, which adds the YAML path the value came from
(``model.ads.tau_end must be …``), so a component never needs to know where it is configured.

``bool`` is refused wherever a number is expected: it is an ``int`` subclass, and ``true`` as a width, a rate
or a weight is always a YAML slip.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from smec.errors import ConfigError

__all__ = [
    "check_dims",
    "check_weights",
    "integer",
    "is_int",
    "named_config_errors",
    "nonnegative",
    "one_of",
    "optional_positive_int",
    "positive",
    "settings",
]

T = TypeVar("T")


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def positive(name: str, value: object) -> float:
    """``value`` as a float, or ConfigError unless it is a finite number > 0."""
    if not _is_number(value) or not value > 0:  # type: ignore[operator]
        raise ConfigError(f"{name} must be a number > 0, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def nonnegative(name: str, value: object) -> float:
    """``value`` as a float, or ConfigError unless it is a finite number >= 0."""
    if not _is_number(value) or value < 0:  # type: ignore[operator]
        raise ConfigError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def integer(name: str, value: object, minimum: int = 1, maximum: int | None = None, bound: str = "") -> int:
    """``value``, or ConfigError unless it is an int in [minimum, maximum].

    ``bound`` names the upper bound in the message (``"memory_size=64"`` → ``in [1, memory_size=64]``).
    """
    if maximum is not None:
        if not is_int(value) or not minimum <= value <= maximum:  # type: ignore[operator]
            raise ConfigError(f"{name} must be an integer in [{minimum}, {bound or maximum}], got {value!r}")
    elif not is_int(value) or value < minimum:  # type: ignore[operator]
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{name} must be {what}, got {value!r}")
    return int(value)  # type: ignore[arg-type]


def optional_positive_int(name: str, value: object) -> int | None:
    """``value`` (None allowed), or ConfigError unless it is a positive int."""
    if value is not None and (not is_int(value) or value < 1):  # type: ignore[operator]
        raise ConfigError(f"{name} must be a positive integer or null, got {value!r}")
    return value  # type: ignore[return-value]


def one_of(name: str, value: T, choices: Sequence[object]) -> T:
    """``value``, or ConfigError unless it is one of ``choices`` (listed in the message, in their order)."""
    if value not in choices:
        shown = ", ".join("null" if c is None else str(c) for c in choices)  # as YAML writes it
        raise ConfigError(f"{name} must be one of {shown}, got {value!r}")
    return value


def check_dims(dims: Sequence[int], output_dim: int | None = None, name: str = "dims") -> tuple[int, ...]:
    """Validate a nested-dims list: non-empty, positive ints, unique, sorted ascending, each <= output_dim.

    Unsorted input is an error rather than silently sorted, so that a `weights` list written next to it in a
    YAML recipe cannot end up paired with the wrong dims.
    """
    if isinstance(dims, (str, bytes)) or not isinstance(dims, Sequence) or len(dims) == 0:
        raise ConfigError(f"{name} must be a non-empty list of positive ints, got {dims!r}")
    shown = list(dims)
    if any(not is_int(m) or m < 1 for m in dims):
        raise ConfigError(f"{name} must contain positive ints only, got {shown}")
    if len(set(dims)) != len(dims):
        raise ConfigError(f"{name} must be unique, got {shown}")
    if shown != sorted(shown):
        raise ConfigError(f"{name} must be sorted ascending, got {shown}")
    if output_dim is not None and dims[-1] > output_dim:
        raise ConfigError(f"{name} must all be <= output_dim={output_dim}, got {shown}")
    return tuple(dims)


def check_weights(weights: Sequence[float] | None, n: int, name: str = "weights") -> tuple[float, ...]:
    """Validate per-dim weights: None → all 1.0; else exactly `n` positive numbers."""
    if weights is None:
        return (1.0,) * n
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence) or len(weights) != n:
        raise ConfigError(f"{name} must have one entry per dim ({n}), got {weights!r}")
    if any(not _is_number(w) or not w > 0 for w in weights):
        raise ConfigError(f"{name} must be positive numbers, got {list(weights)}")
    return tuple(float(w) for w in weights)


def named_config_errors(prefix: str, factory: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``factory(*args, **kwargs)``, its ConfigError messages prefixed with the section they belong to.

    ``named_config_errors("model.ads", f)`` turns ``tau_end must be …`` into ``model.ads.tau_end must be …``; a
    message that already starts with the prefix is left alone.
    """
    try:
        return factory(*args, **kwargs)
    except ConfigError as e:
        message = str(e)
        raise ConfigError(message if message.startswith(f"{prefix}.") else f"{prefix}.{message}") from None


def settings(cls: type[T], value: object, name: str) -> T:
    """A settings dataclass from what a caller passed: an instance, a mapping of some of its fields, or None.

    LightningCLI passes instances; ``load_from_checkpoint`` without the CLI passes the plain dicts the
    checkpoint stores (``SystemBase._plain_hyperparameters``). An unknown key is a ConfigError naming it.
    """
    if isinstance(value, cls):
        return value
    if value is None:
        return cls()
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name} must be a mapping of settings, got {value!r}")
    known = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(str(k) for k in value if k not in known)
    if unknown:
        raise ConfigError(f"{name}: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return cls(**value)
