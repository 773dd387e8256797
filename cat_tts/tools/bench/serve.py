"""The speech server under Seed-TTS-Eval-shaped load: HTTP clients streaming WAV, as users see it.

    python -m cat_tts.tools.bench serve --tiny                          # make_tiny checkpoints (plumbing, CPU)
    python -m cat_tts.tools.bench serve --model M --codec C --device cuda [--concurrency 1,4,8,16,32,64]
                                        [--requests-per-client 2] [--frames 40-100] [--depth 32] [--baseline]
    python -m cat_tts.tools.bench serve --url http://host:8000 [--api-key KEY]   # a server that is already running

The server is the real one, started as a user starts it (`serve.py`'s command line, in a child process, on a free
loopback port; it is stopped at the end), unless `--url` names a running one. First `--voices` reference clips of
3-10 s (synthetic 16 kHz WAV with a transcript: the server resamples and encodes them with its codec) are stored
through `POST /v1/audio/voices`. Then, for each concurrency N, N clients start together and each sends
`--requests-per-client` streaming requests one after another (`POST /v1/audio/speech`, `response_format` wav, one
sentence of text, a stored voice, depth K, min = max frames drawn in 40-100: see `cat_tts.tools.bench.load`). Per
stream, from the arrival of the WAV data: time to first audio (request sent -> first audio bytes), real-time factor
(sent -> last audio, over the audio's duration read from the WAV header's rate) and the playback stall; per N: the
aggregate real-time rate (audio seconds / wall seconds), p50/p95 of the per-stream numbers, and the aggregate rate
relative to the first N listed. `--baseline` also runs a server of one slot (one request at a time: what a server
with a generation lock does) and reports the engine server's rate relative to it. Random checkpoints (--tiny) make
noise: that is for plumbing; the numbers that matter come from the released weights on a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from cat_tts.tools.bench import save_partial
from cat_tts.tools.bench.load import StreamTiming, parse_ints, parse_range, request_shape, run_clients, summarize

# One sentence each, of the length of Seed-TTS-Eval's English targets (10-25 words).
TEXTS = (
    "The quick brown fox jumps over the lazy dog while the farmer watches from the porch.",
    "Please remember to bring your umbrella tomorrow, because the forecast says it will rain all afternoon.",
    "She opened the old wooden box and found a stack of letters tied together with a faded ribbon.",
    "Our train was delayed by almost an hour, so we missed the beginning of the concert.",
    "He said the new library would open next spring, with twice as many books as the old one.",
    "If you turn left at the bakery, the museum will be on your right just after the bridge.",
)
REFERENCE_TEXT = "This is a reference recording of my voice for the benchmark."
REFERENCE_RATE = 16000  # Hz: Seed-TTS-Eval's prompt clips are 16 kHz, so the server resamples as it would for them
STARTUP_TIMEOUT_S = 1800.0  # model load + warm-up (compilation, CUDA graph capture) of the child server
REQUEST_TIMEOUT_S = 3600.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None, help="benchmark this running server instead of starting one")
    parser.add_argument("--api-key", default=None, help="with --url: the server's API key (also CAT_TTS_API_KEY)")
    parser.add_argument("--tiny", action="store_true", help="use fresh make_tiny checkpoints (ignores --model/--codec)")
    parser.add_argument("--model", default=None, help="TTS model directory or hub id (default: the released one)")
    parser.add_argument("--codec", default=None, help="codec directory or hub id (default: the released one)")
    parser.add_argument("--device", default="cpu", help="device of the server's engine (cpu, cuda, cuda:1)")
    parser.add_argument("--dtype", default="auto", help="weights dtype (auto: bf16 on GPU, fp32 on CPU)")
    parser.add_argument("--compile", default="auto", choices=["auto", "on", "off"], help="engine compilation")
    parser.add_argument("--slots", type=int, default=None, help="the server's slots (default: the largest N)")
    parser.add_argument("--concurrency", default="1,4,8,16,32,64", help="comma-separated client counts N")
    parser.add_argument("--requests-per-client", type=int, default=2, help="requests each client sends in turn (2)")
    parser.add_argument("--reference-seconds", default="3-10", help="reference clip durations, LO-HI seconds (3-10)")
    parser.add_argument("--frames", default="40-100", help="frames generated per request, LO-HI (40-100)")
    parser.add_argument("--voices", type=int, default=4, help="reference clips stored, spread over the range (4)")
    parser.add_argument("--depth", type=int, default=32, help="depth K of every request (32 = 4 kbps)")
    parser.add_argument("--baseline", action="store_true", help="also run a one-slot server and compare")


def run(args: argparse.Namespace) -> dict:
    counts = parse_ints(args.concurrency, "--concurrency")
    parse_ints(str(args.requests_per_client), "--requests-per-client")
    parse_ints(str(args.voices), "--voices")
    parse_range(args.frames, "--frames")
    parse_range(args.reference_seconds, "--reference-seconds")
    slots = args.slots or max(counts)
    result = {"depth": args.depth, "frames": args.frames, "reference_seconds": args.reference_seconds,
              "requests_per_client": args.requests_per_client, "rows": []}  # fmt: skip
    servers = [("engine", slots)] + ([("baseline", 1)] if args.baseline else [])
    with _checkpoints(args) as (model, codec):
        result["model"] = args.url or model
        print(f"serve bench: {result['model']}, device {args.device}, K={args.depth}, {args.frames} frames/request, "
              f"{args.reference_seconds} s reference clips, {args.requests_per_client} requests/client",
              flush=True)  # fmt: skip
        print(f"{'server':>8} {'N':>3} {'x realtime':>10} {'vs N=' + str(counts[0]):>8} {'RTF p50':>8} {'p95':>6} "
              f"{'>=1':>4} {'TTFA p50 ms':>11} {'p95':>6} {'stall p50 s':>11} {'p95':>6}", flush=True)  # fmt: skip
        for label, n_slots in servers:
            with _server(args, model, codec, n_slots, counts) as (url, headers):
                _measure(args, url, headers, label, n_slots, counts, result)
    if args.baseline:
        base = {r["concurrency"]: r["aggregate_realtime"] for r in result["rows"] if r["server"] == "baseline"}
        for r in result["rows"]:
            if r["server"] == "engine":
                r["vs_one_slot_server"] = r["aggregate_realtime"] / base[r["concurrency"]]
        ratios = [
            f"N={r['concurrency']} {r['vs_one_slot_server']:.2f}x" for r in result["rows"] if r["server"] == "engine"
        ]
        print("engine server / one-slot server: " + ", ".join(ratios), flush=True)
    return result


def _measure(args, url: str, headers: dict, label: str, slots: int, counts: list[int], result: dict) -> None:
    import httpx

    ref = parse_range(args.reference_seconds, "--reference-seconds")
    frames = parse_range(args.frames, "--frames")
    with httpx.Client(timeout=REQUEST_TIMEOUT_S, headers=headers) as http:
        voices = _add_voices(http, url, args.voices, ref)
    try:

        def one_request(client: int, index: int, frames_override: int | None = None) -> StreamTiming:
            shape = request_shape(client, index, ref, (1, 1), frames)
            n = frames_override or shape.frames
            body = {"input": TEXTS[shape.seed % len(TEXTS)], "voice": voices[shape.seed % len(voices)],
                    "response_format": "wav", "depth": args.depth, "min_new_frames": n, "max_new_frames": n,
                    "seed": shape.seed}  # fmt: skip
            with httpx.Client(timeout=REQUEST_TIMEOUT_S, headers=headers) as http:
                return _stream_speech(http, url, body)

        run_clients(min(slots, max(counts)), 1, lambda i, j: one_request(i, j, frames_override=2))  # untimed
        baseline = None
        for n in counts:
            s = summarize(**run_clients(n, args.requests_per_client, one_request))
            baseline = baseline or s["aggregate_realtime"]
            shapes = [
                request_shape(i, j, ref, (1, 1), frames) for i in range(n) for j in range(args.requests_per_client)
            ]
            row = {"bench": "serve", "server": label, "slots": slots, "concurrency": n, "depth": args.depth,
                   "frames_per_request": sum(x.frames for x in shapes) / len(shapes), **s,
                   "speedup": s["aggregate_realtime"] / baseline}  # fmt: skip
            result["rows"].append(row)
            save_partial(args, result)
            print(f"{label:>8} {n:>3} {s['aggregate_realtime']:>10.2f} {row['speedup']:>7.2f}x "
                  f"{s['stream_rtf_p50']:>8.3f} {s['stream_rtf_p95']:>6.3f} {s['streams_slower_than_realtime']:>4} "
                  f"{s['ttfa_ms_p50']:>11.0f} {s['ttfa_ms_p95']:>6.0f} {s['stall_s_p50']:>11.2f} "
                  f"{s['stall_s_p95']:>6.2f}", flush=True)  # fmt: skip
    finally:
        with httpx.Client(timeout=60, headers=headers) as http:
            for name in voices:
                http.delete(f"{url}/v1/audio/voices/{name}")


def _stream_speech(http, url: str, body: dict) -> StreamTiming:
    """Sends one streaming speech request; records when each piece of audio data arrived and its duration."""
    timing = StreamTiming(sent=time.perf_counter())
    reader = WavReader()
    with http.stream("POST", f"{url}/v1/audio/speech", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"speech request failed: HTTP {response.status_code}: {response.read()[:300]!r}")
        for data in response.iter_bytes():
            seconds = reader.feed(data)
            if seconds > 0:
                timing.arrivals.append(time.perf_counter())
                timing.durations.append(seconds)
    return timing


class WavReader:
    """Audio seconds in each piece of a streamed 16-bit WAV (the header's rate and channels; sizes not trusted)."""

    def __init__(self) -> None:
        self._head = b""  # bytes received before the end of the header
        self._frame = 0  # bytes per sample frame (all channels), from the fmt chunk
        self._rate_bytes = 0  # bytes per second, from the fmt chunk
        self._bytes_per_second: int | None = None  # set once the data chunk starts
        self._carry = 0  # bytes of an incomplete sample frame carried to the next piece

    def feed(self, data: bytes) -> float:
        """Takes the next bytes of the response; returns the audio seconds they complete."""
        if self._bytes_per_second is None:
            self._head += data
            data = self._parse_header()
            if self._bytes_per_second is None:
                return 0.0
        whole = (self._carry + len(data)) // self._frame * self._frame
        self._carry = self._carry + len(data) - whole
        return whole / self._bytes_per_second

    def _parse_header(self) -> bytes:
        head = self._head
        if len(head) < 12:
            return b""
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise RuntimeError(f"the server did not send WAV (starts with {head[:12]!r})")
        pos = 12
        while pos + 8 <= len(head):
            kind, size = head[pos : pos + 4], struct.unpack("<I", head[pos + 4 : pos + 8])[0]
            if kind == b"fmt ":
                if pos + 24 > len(head):
                    return b""
                channels, rate = struct.unpack("<HI", head[pos + 10 : pos + 16])
                bits = struct.unpack("<H", head[pos + 22 : pos + 24])[0]
                self._frame = channels * bits // 8
                self._rate_bytes = rate * self._frame
            elif kind == b"data":
                self._bytes_per_second = self._rate_bytes
                return head[pos + 8 :]
            pos += 8 + size
        return b""


def _reference_clip(seconds: float, seed: int) -> bytes:
    """A voiced-sounding synthetic clip (harmonics of a gliding pitch, syllable-rate envelope, a little noise) as
    16-bit mono WAV bytes at `REFERENCE_RATE`."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * REFERENCE_RATE)) / REFERENCE_RATE
    pitch = 110 + 40 * rng.random() + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / REFERENCE_RATE
    voice = sum(np.sin(h * phase) / h for h in range(1, 8))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    samples = 0.2 * voice * envelope + 0.01 * rng.standard_normal(len(t))
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(REFERENCE_RATE)
        f.writeframes(pcm.tobytes())
    return buffer.getvalue()


def _add_voices(http, url: str, count: int, seconds: tuple[float, float]) -> list[str]:
    """Stores `count` reference clips spread evenly over the duration range; returns their names."""
    names = []
    tag = f"{os.getpid()}-{int(time.time())}"
    for i in range(count):
        duration = seconds[0] + (seconds[1] - seconds[0]) * (i / max(count - 1, 1))
        name = f"bench-{tag}-{i}"
        files = {"audio": (f"{name}.wav", _reference_clip(duration, i), "audio/wav")}
        response = http.post(f"{url}/v1/audio/voices", data={"name": name, "text": REFERENCE_TEXT}, files=files)
        if response.status_code != 200:
            raise RuntimeError(f"storing a voice failed: HTTP {response.status_code}: {response.text[:300]}")
        names.append(name)
    return names


@contextlib.contextmanager
def _checkpoints(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    if args.url or not args.tiny:
        yield args.model or "the released model", args.codec or "the released codec"
        return
    from cat_tts.tools.make_tiny import make_tiny

    with tempfile.TemporaryDirectory(prefix="cat-tts-bench-") as tmp:
        paths = make_tiny(tmp)
        yield str(paths["model"]), str(paths["codec"])


# The server as a user starts it: serve.py's command line (cat_tts.server.cli.main) in a child process.
SERVER_MAIN = "import sys; from cat_tts.server.cli import main; sys.exit(main(sys.argv[1:]))"


@contextlib.contextmanager
def _server(args, model: str, codec: str, slots: int, counts: list[int]) -> Iterator[tuple[str, dict]]:
    """Yields (base URL, request headers) of a ready server: `--url`, or a child process stopped at the end."""
    key = args.api_key or os.environ.get("CAT_TTS_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if args.url:
        _wait_ready(args.url.rstrip("/"), None, None)
        yield args.url.rstrip("/"), headers
        return
    with socket.socket() as s:  # a free port (a race with another program is possible and would fail loudly)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="cat-tts-bench-serve-") as tmp:
        command = [sys.executable, "-c", SERVER_MAIN, "--host", "127.0.0.1", "--port", str(port),
                   "--device", args.device, "--dtype", args.dtype, "--compile", args.compile,
                   "--max-slots", str(slots), "--max-queue", str(max(counts) * args.requests_per_client + slots),
                   "--voices-dir", str(Path(tmp) / "voices"), "--request-timeout", str(REQUEST_TIMEOUT_S),
                   "--log-level", "warning"]  # fmt: skip
        if args.model or args.tiny:
            command += ["--model", model]
        if args.codec or args.tiny:
            command += ["--codec", codec]
        env = {k: v for k, v in os.environ.items() if k != "CAT_TTS_API_KEY"}  # our own server: no key
        log_path = Path(tmp) / "server.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, proc, log_path)
            yield url, {}
        finally:
            _stop(proc)


def _wait_ready(url: str, proc: subprocess.Popen | None, log_path: Path | None) -> None:
    """Polls /health until the server says ok (warm), the child exits, or the start-up time runs out."""
    import httpx

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:] if log_path else ""
            raise RuntimeError(f"the server exited with code {proc.returncode} during start-up:\n{tail}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the server at {url} was not ready after {STARTUP_TIMEOUT_S:.0f} s")


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM (the server drains and exits), then SIGKILL of its process group if it lingers."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
