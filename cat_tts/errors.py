"""The error classes every part of cat-tts raises for problems a user can fix.

Every CLI (infer.py, train.py, app.py, serve.py, `python -m cat_tts.data.prepare`, `python -m eval.seedtts`)
prints a `UserError` as one line and exits with `USER_ERROR_EXIT_CODE`; the server answers it with a 4xx. Any
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

USER_ERROR_EXIT_CODE = 2  # exit status of every CLI for bad input, bad configs, damaged files


class UserError(ValueError):
    """A problem the user can fix; the message says what was wrong and how to fix it."""


class InputError(UserError):
    """A user input (text, reference clip, depth, sampling value, path) is not usable."""


class FieldError(InputError):
    """One field of a request is not usable; `field` names it as the request spells it (`top_k`, `duration`, ...).

    Front ends show it under their own label for the field (`--top-k`, "Top-k") with `labelled`.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field

    def labelled(self, labels: dict[str, str]) -> str:
        """The message with the field's name replaced by the front end's label for it (unknown fields unchanged)."""
        label = labels.get(self.field, self.field)
        message = str(self)
        if label == self.field:
            return message
        return label + message[len(self.field) :] if message.startswith(self.field) else f"{label}: {message}"


class CheckpointError(UserError):
    """A checkpoint (model, codec, training state) is missing, damaged, of the wrong kind or does not match."""


class ModelLoadError(CheckpointError):
    """A model or codec could not be loaded (missing directory, unreachable hub, wrong kind of directory)."""
