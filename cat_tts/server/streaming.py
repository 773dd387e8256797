"""Bridges one request's blocking audio iterator to the event loop.

The pipeline's stream blocks in `next()` until the engine has the next piece, so each request's iterator runs in
its own thread (`AudioPump`), which also encodes the pieces (MP3/Opus/FLAC encoding costs CPU that must not stall
the event loop) and hands bytes to the loop through an `asyncio.Queue`. Only that thread touches the iterator:
`cancel()` sets a flag the thread checks after every piece, then it closes the iterator, which frees the engine
slot. A Python generator cannot be closed from another thread while it runs, hence the flag.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from cat_tts.server.formats import AudioEncoder

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Chunk:
    """Encoded audio ready to send."""

    data: bytes  # encoded bytes (may be empty: the encoder is buffering)
    samples: int  # samples this chunk carries (0 for the final flush)
    final: bool = False  # the last chunk of a completed stream
    cancelled: bool = False  # the stream was cancelled (by the server: time limit, shutdown); nothing follows


class AudioPump:
    """Runs `pieces` in a thread, encodes each piece with `encoder`, and queues the bytes for the event loop.

    Args:
        pieces: the pipeline's lazy audio iterator (float32 pieces); closed by the pump thread when done.
        encoder: the response format's encoder.
        loop: the event loop that consumes the chunks.
        name: thread name (for logs).
    """

    def __init__(self, pieces: Iterator[np.ndarray], encoder: AudioEncoder, loop: asyncio.AbstractEventLoop,
                 name: str = "audio-pump") -> None:  # fmt: skip
        self._pieces = pieces
        self._encoder = encoder
        self._loop = loop
        self._queue: asyncio.Queue = asyncio.Queue()
        self._pending: asyncio.Future | None = None  # a queue read that outlived a timeout (kept, so no item is lost)
        self._cancelled = threading.Event()
        self.done = threading.Event()  # set when the thread has closed the iterator
        self.samples = 0  # samples produced so far
        self.started_at = time.monotonic()
        self.first_audio_at: float | None = None  # monotonic time of the first non-empty piece
        self.finished_at: float | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> AudioPump:
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Stops the generation after the piece in progress and ends the stream for its reader at once.

        Call it from the event loop's thread; idempotent.
        """
        if not self._cancelled.is_set():
            self._cancelled.set()
            self._queue.put_nowait(Chunk(b"", 0, cancelled=True))

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    async def get(self, timeout: float | None) -> Chunk:
        """The next chunk. Raises the iterator's exception, or `TimeoutError` after `timeout` seconds."""
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._queue.get())
        done, _ = await asyncio.wait({self._pending}, timeout=timeout)
        if not done:
            raise TimeoutError
        item, self._pending = self._pending.result(), None
        if isinstance(item, BaseException):
            raise item
        return item

    def close_reader(self) -> None:
        """Drops a queue read still pending (the reader is gone)."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None

    def _put(self, item: Chunk | BaseException) -> bool:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
            return True
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self._cancelled.set()
            return False

    def _run(self) -> None:
        try:
            for piece in self._pieces:
                if piece.size and self.first_audio_at is None:
                    self.first_audio_at = time.monotonic()
                self.samples += int(piece.size)
                if self._cancelled.is_set():
                    break
                if not self._put(Chunk(self._encoder.encode(piece), int(piece.size))) or self._cancelled.is_set():
                    break
            else:
                self.finished_at = time.monotonic()
                self._put(Chunk(self._encoder.finish(), 0, final=True))
        except BaseException as err:  # handed to the request, which answers it (a 4xx, a 429 or a logged 500)
            self._put(err)
        finally:
            try:
                close = getattr(self._pieces, "close", None)
                if close is not None:
                    close()
            except Exception:
                logger.exception("closing a generation failed")
            self.done.set()
