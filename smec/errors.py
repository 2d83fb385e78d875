"""Errors raised by the methods side (`smec`). Each message names the argument or key at fault and what was expected."""

from datamodules.errors import InputError

__all__ = ["ConfigError", "InputError"]


class ConfigError(InputError):
    """A component was configured with an unusable value (a bad dims list, an unknown norm, a negative weight).

    Raised at construction time, so a bad YAML recipe fails before any data is loaded. It is a `ValueError`
    (through `InputError`), so callers that catch `ValueError` keep working.
    """
