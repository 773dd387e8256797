"""Bridges one request's blocking audio stream to the event loop.

The pipeline's stream blocks in `next()` until the engine has the next piece, so each request's stream runs in its
own thread (`AudioPump`), which also encodes the pieces (MP3/Opus/FLAC encoding costs CPU that must not stall the
event loop) and hands bytes to the loop through an `asyncio.Queue`. `cancel()` (from the loop) cancels the stream
itself, which is thread-safe and frees the request's engine slot at once, queued or running: a client that leaves
while its request waits for a slot leaves the queue at that moment.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass

from cat_tts.server.backend import AudioStream
from cat_tts.server.formats import AudioEncoder

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Chunk:
    """Encoded audio ready to send."""

    data: bytes  # encoded bytes (may be empty: the encoder is buffering)
    samples: int  # samples this chunk carries (0 for the final flush)
    final: bool = False  # the last chunk of a completed stream
    cancelled: bool = False  # the server cancelled the stream (time limit, shutdown, client gone); nothing follows


class AudioPump:
    """Runs `stream` in a thread, encodes each piece with `encoder`, and queues the bytes for the event loop.

    Args:
        stream: the backend's audio stream (float32 pieces).
        encoder: the response format's encoder.
        loop: the event loop that consumes the chunks.
    """

    def __init__(self, stream: AudioStream, encoder: AudioEncoder, loop: asyncio.AbstractEventLoop) -> None:
        self.stream = stream
        self._encoder = encoder
        self._loop = loop
        self._queue: asyncio.Queue = asyncio.Queue()
        self._pending: asyncio.Future | None = None  # a queue read that outlived a timeout (kept, so no item is lost)
        self._cancelled = threading.Event()
        self.samples = 0  # samples produced so far
        self.started_at = time.monotonic()
        self.first_audio_at: float | None = None  # monotonic time of the first non-empty piece
        self.finished_at: float | None = None
        self._thread = threading.Thread(target=self._run, name="speech-pump", daemon=True)

    def start(self) -> AudioPump:
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Cancels the generation now (its engine slot is freed, queued or running) and ends the stream for its
        reader. Call it from the event loop's thread; idempotent."""
        if self._cancelled.is_set():
            return
        self._cancelled.set()
        try:
            self.stream.cancel()
        except Exception:  # pragma: no cover - cancelling must never fail the request handling
            logger.exception("cancelling a generation failed")
        self._queue.put_nowait(Chunk(b"", 0, cancelled=True))

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def depth(self) -> int | None:
        """The depth of the first segment, once it was admitted (known when its first chunk has arrived)."""
        depths = self.stream.depths
        return depths[0] if depths else None

    async def get(self, timeout: float | None) -> Chunk:
        """The next chunk. Raises the stream's exception, or `TimeoutError` after `timeout` seconds."""
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
            for piece in self.stream:
                if piece.size and self.first_audio_at is None:
                    self.first_audio_at = time.monotonic()
                self.samples += int(piece.size)
                if self._cancelled.is_set() or not self._put(Chunk(self._encoder.encode(piece), int(piece.size))):
                    return
            if not self._cancelled.is_set():  # a cancelled stream ends early: it must not look complete
                self.finished_at = time.monotonic()
                self._put(Chunk(self._encoder.finish(), 0, final=True))
        except BaseException as err:  # handed to the request, which answers it (a 4xx, 429, 503, or a cut stream)
            if not self._cancelled.is_set():
                self._put(err)
        finally:
            self.stream.cancel()  # idempotent; frees the slot if the stream stopped early
