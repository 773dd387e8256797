"""What goes wrong when a checkpoint is looked for or read; every class is a `cat_tts.errors.CheckpointError`
(a `UserError`: CLIs print it as one line and exit 2)."""

from __future__ import annotations

from cat_tts.errors import CheckpointError, ModelLoadError


class CheckpointNotFoundError(ModelLoadError, FileNotFoundError):
    """A local checkpoint directory, or a file it must hold, does not exist (also a `FileNotFoundError`)."""


class WrongCheckpointKindError(ModelLoadError):
    """A directory holds another kind of checkpoint than the one asked for (e.g. the codec given as the model)."""


class HubUnavailableError(ModelLoadError):
    """A hub id could not be fetched (no network, offline mode, unknown or private repository)."""


class DamagedCheckpointError(CheckpointError):
    """A checkpoint file cannot be read: truncated, a corrupt header, or keys stored twice."""
