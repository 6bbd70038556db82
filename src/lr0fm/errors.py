"""The user-facing error types: each becomes one clear line and a non-zero exit in the CLI.

A leaf module (no imports), so that reading records or reporting never loads torch for them."""


class InputError(ValueError):
    """A file or option the user gave cannot be used."""


class DatasetError(RuntimeError):
    """A dataset cannot be loaded (unknown key, files missing, package not installed)."""


class ModelError(RuntimeError):
    """A model cannot be built (unknown name, missing weights, missing backend)."""


class ProtocolError(ValueError):
    """A protocol setting the user gave cannot be used."""


class ViewError(RuntimeError):
    """Making the views of a readable image failed (an SR model, a custom view function)."""


class PassBusy(RuntimeError):
    """Another process is running this pass of an evaluation (and the caller chose not to wait)."""


class UnitsFailed(RuntimeError):
    """Units of an engine run failed (one line each); the other units finished and were written."""


USER_ERRORS = (DatasetError, ModelError, ProtocolError, InputError, ViewError, UnitsFailed)
