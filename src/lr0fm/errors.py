"""The user-facing error types: each becomes one clear line and a non-zero exit in the CLI."""
from .datasets.base import DatasetError
from .models.base import ModelError
from .protocol import ProtocolError


class InputError(ValueError):
    """A file or option the user gave cannot be used."""


class ViewError(RuntimeError):
    """Making the views of a readable image failed (an SR model, a custom view function)."""


class PassBusy(RuntimeError):
    """Another process is running this pass of an evaluation (and the caller chose not to wait)."""


USER_ERRORS = (DatasetError, ModelError, ProtocolError, InputError, ViewError)
