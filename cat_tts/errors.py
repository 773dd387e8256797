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


class CheckpointError(UserError):
    """A checkpoint (model, codec, training state) is missing, damaged, of the wrong kind or does not match."""


class ModelLoadError(CheckpointError):
    """A model or codec could not be loaded (missing directory, unreachable hub, wrong kind of directory)."""
