"""Realtime sessions under load: N agents stream text into WebSocket sessions and play the audio in real time, once at
a fixed depth and once with depth "auto" (the engine lowers the depth of new segments when frames fall behind).

    python -m cat_tts.tools.bench realtime [--sessions 4] [--preset tiny] [--sentences 4] [--frames 20]
                                           [--words-per-second 12] [--stagger 1.0] [--fixed-depth 32] [--json OUT]
    python -m cat_tts.tools.bench realtime --url http://host:8000 [--api-key KEY]     # a server already running

The server is the real one (`serve.py`'s command line in a child process on a free loopback port, stopped at the
end), on random-weight checkpoints of a model preset (`--preset`: a `CatTTSConfig` preset, written with the tiny
codec and tokenizer; `tiny` by default: on a CPU its frame time is dominated by the per-depth-position work, so a frame
at K = 32 costs several times one at K = 4, as on a GPU), with `--threads` torch threads (1: on a busy 2-core machine a
second intra-op thread mostly waits). `--url` benchmarks a running server instead (any model).

Each of the N sessions (`cat_tts.client.SpeechSession`) starts `--stagger` seconds after the previous one, sends
`--sentences` sentences word by word at `--words-per-second` (an LLM writing: faster than speech, so a player never
waits for text), then `text.done`; every segment is forced to `--frames` frames (min = max, so random weights make as
much audio as a real model would). A run is an untimed warm-up round (every session one short segment: allocations,
and the engine's frame clock measures the load) and the timed round. The same server runs "fixed" (`depth` =
`--fixed-depth`) then "auto" (`depth: "auto"`, ceiling `--fixed-depth`).

Per session, measured by the client: time to first audio (first text sent -> first audio received) and the playback
stall (a player that starts at the first audio and plays in real time waits this long in total;
`cat_tts.playback.stall_seconds`); per run: their p50/p95 over the sessions, the depths the segments got (from
`segment.started`), the stall split by the depth of the segment playing when the player waited (`stall_s_by_depth`),
and the server's own p95 stall (from the `done` events). The machine's load average is recorded
before and after each run: the numbers are only comparable within one run of this command.

Done when (issue 19): with "auto" the p95 stall is <= 0.25 s and at most a tenth of the fixed run's
(`"done_when": true`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from cat_tts.client import SAMPLE_RATE, SpeechSession
from cat_tts.errors import InputError
from cat_tts.playback import waits
from cat_tts.tools.bench import save_partial
from cat_tts.tools.bench.load import percentile
from cat_tts.tools.bench.serve import SERVER_MAIN, _stop, _wait_ready

# Sentences an assistant might say (8-14 words): the first segment of each session is its first clause.
SENTENCES = (
    "Sure, I can help you plan the trip to the coast next weekend.",
    "The forecast says it will be sunny on Saturday and cloudy on Sunday.",
    "You could leave early in the morning to avoid the traffic on the bridge.",
    "There is a small seafood place near the harbour that opens at noon.",
    "If you like walking, the cliff path takes about two hours each way.",
    "Remember to book the hotel soon, because summer weekends fill up quickly.",
    "I can also find a train that arrives before the museum opens.",
    "Let me know which of these plans sounds best and I will add the details.",
)
WARMUP_TEXT = "Hello there, this is a warm-up."
STALL_DONE_S = 0.25  # issue 19: auto's p95 stall at most this, ...
STALL_DONE_RATIO = 0.1  # ... and at most this share of the fixed run's
SESSION_TIMEOUT_S = 1800.0  # a round that takes longer fails the benchmark instead of hanging it


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sessions", type=int, default=4, help="concurrent sessions N (4)")
    parser.add_argument("--preset", default="tiny", help="model preset with random weights: tiny (default), small")
    parser.add_argument("--sentences", type=int, default=4, help="sentences each session speaks (4)")
    parser.add_argument("--frames", type=int, default=20, help="frames per segment, 80 ms each (20 = 1.6 s)")
    parser.add_argument("--words-per-second", type=float, default=12.0, help="how fast the text arrives (12)")
    parser.add_argument("--stagger", type=float, default=1.0, help="seconds between session starts (1.0)")
    parser.add_argument("--fixed-depth", type=int, default=32, help="depth of the fixed run, and auto's ceiling (32)")
    parser.add_argument("--min-depth", type=int, default=None, help="auto's lowest depth (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of the server (1)")
    parser.add_argument("--slots", type=int, default=None, help="engine slots (default N: a session holds one slot "
                        "at a time)")  # fmt: skip
    parser.add_argument("--device", default="cpu", help="device of the server's engine (cpu)")
    parser.add_argument("--compile", default="auto", choices=["auto", "on", "off"],
                        help="the server's engine compilation (auto: its default, eager on the CPU)")  # fmt: skip
    parser.add_argument("--url", default=None, help="benchmark this running server instead of starting one")
    parser.add_argument("--api-key", default=None, help="with --url: the server's API key (also CAT_TTS_API_KEY)")


def run(args: argparse.Namespace) -> dict:
    for name in ("sessions", "sentences", "frames", "fixed_depth", "threads"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.words_per_second <= 0 or args.stagger < 0:
        raise InputError("--words-per-second must be > 0 and --stagger >= 0")
    _client_available()
    n = args.sessions
    result: dict = {"sessions": n, "preset": args.preset if args.url is None else f"the server at {args.url}",
                    "device": args.device, "frames_per_segment": args.frames, "sentences": args.sentences,
                    "words_per_second": args.words_per_second, "stagger_s": args.stagger,
                    "threads": args.threads}  # fmt: skip
    print(f"realtime bench: {n} sessions, preset {result['preset']}, {args.sentences} sentences of "
          f"{args.frames}-frame segments, {args.words_per_second:g} words/s, starts {args.stagger:g} s apart",
          flush=True)  # fmt: skip
    print(f"{'run':>6} {'stall p50 s':>11} {'p95':>6} {'TTFA p50 ms':>11} {'p95':>6} {'server stall p95':>16} "
          f"{'load':>5}  depths", flush=True)  # fmt: skip
    with _server(args) as (url, key):
        for mode in ("fixed", "auto"):
            depth = {"depth": args.fixed_depth} if mode == "fixed" else {"depth": "auto", "max_depth": args.fixed_depth}
            if mode == "auto" and args.min_depth is not None:
                depth["min_depth"] = args.min_depth
            load_before = os.getloadavg()
            asyncio.run(_round(url, key, args, depth, warmup=True))
            sessions = asyncio.run(_round(url, key, args, depth, warmup=False))
            row = _summary(sessions)
            row.update(depth=depth["depth"], load_before=[round(x, 2) for x in load_before],
                       load_after=[round(x, 2) for x in os.getloadavg()])  # fmt: skip
            result[mode] = row
            save_partial(args, result)
            depths = ", ".join(f"{k}: {v}" for k, v in row["depths"].items())
            print(f"{mode:>6} {row['stall_s_p50']:>11.3f} {row['stall_s_p95']:>6.3f} {row['ttfa_ms_p50']:>11.0f} "
                  f"{row['ttfa_ms_p95']:>6.0f} {row['server_stall_s_p95']:>16.3f} {load_before[0]:>5.1f}  {{{depths}}}",
                  flush=True)  # fmt: skip
    fixed, auto = result["fixed"]["stall_s_p95"], result["auto"]["stall_s_p95"]
    result["stall_p95_ratio"] = auto / fixed if fixed > 0 else None
    result["done_when"] = bool(auto <= STALL_DONE_S and auto <= STALL_DONE_RATIO * fixed)
    print(f"auto p95 stall {auto:.3f} s vs fixed {fixed:.3f} s: done when <= {STALL_DONE_S} s and <= "
          f"{STALL_DONE_RATIO:g} x fixed: {'yes' if result['done_when'] else 'no'}", flush=True)  # fmt: skip
    return result


def _client_available() -> None:
    try:
        import websockets  # noqa: F401
    except ImportError:
        raise InputError("bench realtime needs websockets: pip install 'cat-tts[serve]'") from None


# ---------------------------------------------------------------------------------------------------- sessions
def session_words(index: int, sentences: int) -> list[str]:
    """The words session `index` sends: `sentences` sentences, starting at a different one per session."""
    chosen = [SENTENCES[(index + j) % len(SENTENCES)] for j in range(sentences)]
    return " ".join(chosen).split(" ")


async def _round(url: str, key: str | None, args: argparse.Namespace, depth: dict, warmup: bool) -> list:
    """N sessions, started `--stagger` seconds apart; returns the finished `SpeechSession`s."""
    frames = 2 if warmup else args.frames

    async def one(i: int) -> SpeechSession:
        await asyncio.sleep(i * args.stagger)
        fields = dict(depth, min_new_frames=frames, max_new_frames=frames, seed=i)
        async with SpeechSession(url, api_key=key, **fields) as session:
            words = WARMUP_TEXT.split(" ") if warmup else session_words(i, args.sentences)

            async def feed() -> None:
                for word in words:
                    await session.send_text(word + " ")
                    await asyncio.sleep(1.0 / args.words_per_second)
                await session.done()

            feeder = asyncio.create_task(feed())
            await session.wait_closed()
            await feeder
        if session.close_code != 1000 or session.errors:
            raise RuntimeError(f"session {i} ended with {session.close_code} {session.close_reason!r}: "
                               f"{session.errors[:3]}")  # fmt: skip
        return session

    return await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(args.sessions))), SESSION_TIMEOUT_S)


def stall_by_depth(session) -> dict[int, float]:
    """A session's playback stall split by the depth of the segment playing when each wait happened (no cancels)."""
    depth, depths, arrivals, durations = 0, [], [], []
    for message in session.received:
        if message.event is not None and message.event["type"] == "segment.started":
            depth = message.event["depth"]
        if message.audio is not None and len(message.audio):
            depths.append(depth)
            arrivals.append(message.at)
            durations.append(len(message.audio) / SAMPLE_RATE)
    by_depth: collections.Counter = collections.Counter()
    for depth, wait in zip(depths, waits(arrivals, durations), strict=True):
        by_depth[depth] += wait
    return {depth: wait for depth, wait in by_depth.items() if wait > 0}


def _summary(sessions: list) -> dict:
    stalls = [s.stall_seconds for s in sessions]
    by_depth: collections.Counter = collections.Counter()
    for s in sessions:
        by_depth.update(stall_by_depth(s))
    ttfa = [s.ttfa_ms for s in sessions]
    server_stalls = [s.done_event["stall_seconds"] for s in sessions]
    depths = collections.Counter(e["depth"] for s in sessions for e in s.segments)
    return {
        "stall_s_p50": percentile(stalls, 50),
        "stall_s_p95": percentile(stalls, 95),
        "ttfa_ms_p50": percentile(ttfa, 50),
        "ttfa_ms_p95": percentile(ttfa, 95),
        "depths": {str(k): depths[k] for k in sorted(depths, reverse=True)},  # depth -> segments
        "stall_s_by_depth": {str(k): round(by_depth[k], 3) for k in sorted(by_depth, reverse=True)},  # all sessions
        "segments": sum(depths.values()),
        "audio_s": sum(s.done_event["usage"]["audio_seconds"] for s in sessions),
        "server_stall_s_p95": percentile(server_stalls, 95),
        "server_ttfa_ms_p50": percentile([s.done_event["ttfa_ms"] for s in sessions], 50),
    }


# ---------------------------------------------------------------------------------------------------- the server
def write_checkpoints(out: Path, preset: str) -> tuple[Path, Path]:
    """Random-weight checkpoints of `preset` (model, with the tiny tokenizer) and the tiny codec under `out`."""
    from cat_tts.codec.tiny import write_tiny_codec
    from cat_tts.model import CatTTSConfig
    from cat_tts.model.tiny import build_tiny_model
    from cat_tts.text.tiny_tokenizer import write_tiny_tokenizer

    try:
        config = CatTTSConfig.from_preset(preset)
    except ValueError as err:
        raise InputError(f"--preset: {err}") from None
    model = build_tiny_model(seed=0, config=config).save_pretrained(out / "model")
    write_tiny_tokenizer(model)
    return model, write_tiny_codec(out / "codec")


@contextlib.contextmanager
def _server(args: argparse.Namespace) -> Iterator[tuple[str, str | None]]:
    """(URL, API key) of a ready server: `--url`, or a child process on fresh checkpoints, stopped at the end."""
    if args.url:
        url = args.url.rstrip("/")
        _wait_ready(url, None, None)
        yield url, args.api_key or os.environ.get("CAT_TTS_API_KEY")
        return
    import socket

    with tempfile.TemporaryDirectory(prefix="cat-tts-bench-realtime-") as tmp:
        model, codec = write_checkpoints(Path(tmp), args.preset)
        with socket.socket() as s:  # a free port (a race with another program would fail loudly)
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        slots = args.slots or args.sessions
        command = [sys.executable, "-c", SERVER_MAIN, "--model", str(model), "--codec", str(codec),
                   "--host", "127.0.0.1", "--port", str(port), "--device", args.device, "--max-slots", str(slots),
                   "--max-queue", str(4 * args.sessions), "--cpu-prepack", "off", "--compile", args.compile,
                   "--voices-dir", str(Path(tmp) / "voices"), "--request-timeout", str(SESSION_TIMEOUT_S),
                   "--log-level", "warning"]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k != "CAT_TTS_API_KEY"}  # our own server: no key
        env["OMP_NUM_THREADS"] = str(args.threads)
        log_path = Path(tmp) / "server.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            started = time.monotonic()
            _wait_ready(url, proc, log_path)
            print(f"server ready in {time.monotonic() - started:.1f} s ({slots} slots)", flush=True)
            yield url, None
        finally:
            _stop(proc)
