"""What the engine raises when it cannot serve a request. None is the caller's fault (no `UserError`): a server answers
them with 429 / 503 / 500, a CLI says the engine is busy or failed."""

from __future__ import annotations


class QueueFull(RuntimeError):
    """Every slot is busy and the waiting queue is full: the engine is busy; retry later."""


class EngineClosed(RuntimeError):
    """The engine no longer admits requests, or shut down before a request finished (its audio is cut short)."""


class EngineError(RuntimeError):
    """The engine could not run a request (the traceback is in the log); other requests are unaffected."""
