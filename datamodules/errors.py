"""Errors raised for bad input. Each message names the file or option at fault and what was expected."""


class InputError(ValueError):
    """Base class: the user gave something we cannot use (a file, a spec, an option)."""


class DatasetError(InputError):
    """A dataset folder or file is missing or malformed."""


class EncoderError(InputError):
    """A model spec cannot be resolved, or an encoder produced unusable output."""


class StoreError(InputError):
    """An embedding store on disk is missing, corrupt, or incompatible."""
