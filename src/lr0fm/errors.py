"""The user-facing error types: each becomes one clear line and a non-zero exit in the CLI."""
from .datasets.base import DatasetError
from .models.base import ModelError
from .protocol import ProtocolError


class InputError(ValueError):
    """A file or option the user gave cannot be used."""


USER_ERRORS = (DatasetError, ModelError, ProtocolError, InputError)
