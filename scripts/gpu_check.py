"""The GPU check: the `gpu` tests and the benchmarks at the released sizes, time-boxed, into one report.

    bash scripts/gpu_check.sh [--dry-run] [--out DIR] [--budget SECONDS] [--only KEY,...] [--list]

Steps run in order of importance, each in its own process group with its own time limit (sized from the last real
run, see `STEPS`), within a total budget (default 540 s: the 9 minutes of device time a check may take); a step
that would not fit in what is left is skipped, and one that runs out of time is stopped (the benchmarks save their
finished rows as they go, so a stopped step still reports them). `--dry-run` runs every step on the CPU at tiny
sizes through the same code (same commands, same report), so the script's own bugs show before device time is
spent. Each run writes DIR/report.md, DIR/report.json (see `scripts/gpu_report.py` for its format) and
DIR/gpu_check.log (everything the steps printed). Default DIR: docs/notes/gpu/DATE/ for a real run (commit it), a
temporary directory for a dry run.

Offline machines: wheels in ./.whl (made here by `bash scripts/gpu_wheels.sh`; DeepSpeed as its source archive) are
installed into /tmp/site first and put on the steps' PYTHONPATH; a dry run checks them without installing. Nothing
else is fetched: HF_HUB_OFFLINE=1 for every step.

Only the standard library is imported here: the steps import torch, after the wheels are in place.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / ".whl"
SITE = Path("/tmp/site")  # where the carried wheels are installed on the device
DEFAULT_BUDGET_S = 540  # 9 minutes of device time
DRY_BUDGET_S = 3600  # a dry run on 2 shared CPU cores: 10 minutes, several times that under load (limits: hangs)
MIN_STEP_S = 15  # a step is not started with less time than this left
KILL_GRACE_S = 10  # after SIGTERM, seconds before SIGKILL
# Python packages the steps import that the device image may lack (the report names the missing ones).
CHECKED_MODULES = ("transformers", "safetensors", "tokenizers", "soundfile", "soxr", "deepspeed", "httpx")
# The device's Python, for checking carried wheels in a dry run (see scripts/gpu_wheels.sh).
DEVICE_PYTHON = "3.12"
DEVICE_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


@dataclass(frozen=True)
class Sizes:
    """What the benchmarks run at: the released sizes on CUDA, or tiny ones on the CPU (--dry-run)."""

    model: tuple[str, ...]  # model options of generate / engine / profile
    device: str
    codec: tuple[str, ...]
    generate: tuple[str, ...]
    compiled: tuple[str, ...]
    engine: tuple[str, ...]
    profile: tuple[str, ...]
    train: tuple[str, ...]
    ttfa_preset: str


REAL = Sizes(
    model=("--released", "--device", "cuda"),
    device="cuda",
    codec=("--preset", "released", "--seconds", "4", "--batches", "1,16", "--repeats", "2"),
    generate=("--batches", "1,8,16,32,64", "--depths", "32,8,16", "--modes", "eager,graphs,default", "--frames", "16"),
    compiled=("--batches", "1", "--depths", "32,8", "--modes", "compiled", "--frames", "16"),
    engine=("--concurrency", "1,4,8,16,32,64", "--depths", "32", "--modes", "graphs", "--requests-per-client", "1"),
    profile=("--modes", "eager,graphs,default", "--batch", "1", "--depth", "32", "--frames", "8"),
    train=("--preset", "small", "--steps", "2", "--warmup", "1", "--tokens-per-batch", "2048", "--frames", "100"),
    ttfa_preset="small",
)
DRY = Sizes(
    model=("--quick", "--device", "cpu"),
    device="cpu",
    codec=("--preset", "tiny", "--seconds", "1", "--batches", "1,2", "--repeats", "1"),
    generate=("--batches", "1,2", "--depths", "4,2", "--modes", "eager,graphs,default", "--frames", "8"),
    compiled=("--batches", "1", "--depths", "4", "--modes", "compiled", "--frames", "6"),
    engine=(
        "--concurrency",
        "1,2",
        "--depths",
        "4",
        "--modes",
        "graphs",
        "--requests-per-client",
        "1",
        "--reference-seconds",
        "0.5-1",
        "--frames",
        "4-8",
    ),  # fmt: skip
    profile=("--modes", "eager,default", "--batch", "1", "--depth", "4", "--frames", "5", "--top", "8"),
    train=("--preset", "tiny", "--steps", "1", "--warmup", "1", "--tokens-per-batch", "256", "--frames", "20"),
    ttfa_preset="tiny",
)


@dataclass(frozen=True)
class Step:
    """One step of the check."""

    key: str  # short name: --only, and its result file WORK/KEY.json
    name: str  # as the report lists it
    limit_s: int  # seconds allowed on the device
    dry_limit_s: int  # seconds allowed in a dry run (2 CPU cores)
    command: Callable[[Sizes, Path], list[str] | None]  # its command line; None = nothing to do (skipped)


def _bench(key: str, *argv: str) -> Callable[[Sizes, Path], list[str]]:
    def command(sizes: Sizes, work: Path) -> list[str]:
        return [sys.executable, "-m", "cat_tts.tools.bench", "--json", str(work / f"{key}.json"), *argv]

    return command


def _wheels(sizes: Sizes, work: Path) -> list[str] | None:
    wheels = sorted(str(p) for p in WHEELS.glob("*.whl"))
    sdists = sorted(str(p) for p in WHEELS.glob("*.tar.gz"))
    if not wheels and not sdists:
        return None
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-cache-dir"]
    if sizes.device == "cpu":  # dry run: check that pip would take every wheel on the device's Python; install none
        platforms = [arg for p in DEVICE_PLATFORMS for arg in ("--platform", p)]
        check = [*pip, "--dry-run", "--only-binary=:all:", "--python-version", DEVICE_PYTHON, "--implementation",
                 "cp", *platforms, "--target", str(work / "site"), *wheels]  # fmt: skip
        return ["bash", "-c", " ".join(_quote(a) for a in check) + " && " + _sdist_check(sdists)]
    install = [*pip, "--no-compile", "--upgrade", "--target", str(SITE), *wheels]
    script = " ".join(_quote(a) for a in install)
    if sdists:  # DeepSpeed publishes no wheel: build its source archive without its compiled ops
        build = [*pip, "--no-build-isolation", "--target", str(SITE), *sdists]
        script += " && DS_BUILD_OPS=0 " + " ".join(_quote(a) for a in build)
    return ["bash", "-c", script]


def _sdist_check(sdists: list[str]) -> str:
    """A shell command that checks each source archive lists a setup.py (true when there are none)."""
    checks = [f"tar -tzf {_quote(s)} | grep -q setup.py" for s in sdists]
    return " && ".join(checks) if checks else "true"


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"


def _tests(sizes: Sizes, work: Path) -> list[str]:
    return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", "tests/generation",
            "tests/model", "tests/codec", "--junitxml", str(work / "pytest.xml")]  # fmt: skip


def _sized(key: str, subcommand: str, field: str, with_model: bool = True) -> Callable[[Sizes, Path], list[str]]:
    def command(sizes: Sizes, work: Path) -> list[str]:
        extra = sizes.model if with_model else ()
        return _bench(key, subcommand, *extra, *getattr(sizes, field))(sizes, work)

    return command


def _codec(sizes: Sizes, work: Path) -> list[str]:
    return _bench("codec", "codec", "--device", sizes.device, *sizes.codec)(sizes, work)


def _train(sizes: Sizes, work: Path) -> list[str]:
    return _bench("train", "train", "--p", "0,1", *sizes.train)(sizes, work)


def _ttfa(key: str, compile_mode: str, preset: str | None = None) -> Callable[[Sizes, Path], list[str]]:
    def command(sizes: Sizes, work: Path) -> list[str]:
        return _bench(key, "coldstart", "--preset", preset or sizes.ttfa_preset, "--device", sizes.device, "--dtypes",
                      "", "--codec-dtypes", "", "--ttfa", "--compile", compile_mode, "--ttfa-slots", "1",
                      "--ttfa-depth", "32")(sizes, work)  # fmt: skip

    return command


# In order of importance; device limits sum to the 540 s budget. From the H200 run of 2026-11-30
# (docs/notes/gpu/gpu_report_2026-11-30.md) and the notes: wheels 18 s, gpu tests 35 s, engine 68 s for 16 (K, N)
# pairs of 10 frames with CUDA graphs, eager vs graphs > 90 s for 12 configurations with an engine each, the per-unit
# torch.compile 54 s for batch 1, codec and DeepSpeed unfinished in 30 / 60 s (now fewer seconds of audio and steps),
# the compile cache never reached (a cold tiny compile: 55 s on the CPU); process start-up and imports are ~10 s of
# each. Since then compile="auto" (default) compiles the whole frame per batch bucket on CUDA (dynamic=False), so:
# the engine step runs the "graphs" mode (capture only: its 7 buckets would be minutes of cold compilation); the
# generate step runs batch-major (batch 1 of every mode first: a step stopped at its limit keeps whole batches), and
# its engines (max_rows rounded by bench.modes.slot_rows) match the profile step's, whose default-mode compile is then
# found in the compile cache; the first-audio steps start a one-slot engine (CatTTS's default of 8 slots compiles 4
# buckets before the first audio). Resize from each run's `seconds` (report.json).
STEPS: tuple[Step, ...] = (
    Step("wheels", "install carried wheels", 25, 60, _wheels),
    Step("tests", "gpu tests", 45, 240, _tests),
    Step(
        "engine",
        "engine: Seed-TTS-Eval-shaped requests, concurrency 1-64, CUDA graphs",
        70,
        240,
        _sized("engine", "engine", "engine"),
    ),  # fmt: skip
    Step(
        "generate",
        "frame step: eager vs graphs vs default (batch 1-64, K 8/16/32)",
        120,
        300,
        _sized("generate", "generate", "generate"),
    ),  # fmt: skip
    Step(
        "profile",
        "profiler: where a frame's time goes (batch 1, K 32)",
        40,
        300,
        _sized("profile", "profile", "profile"),
    ),  # fmt: skip
    Step(
        "compiled",
        "frame step: torch.compile everywhere + CUDA graphs (batch 1)",
        55,
        360,
        _sized("compiled", "generate", "compiled"),
    ),  # fmt: skip
    Step("codec", "codec: encode / decode, one-shot and streaming", 30, 240, _codec),
    Step(
        "ttfa", "time to first audio: first vs warm start (default settings, 1 slot)", 65, 360, _ttfa("ttfa", "auto")
    ),  # fmt: skip
    Step("train", "DeepSpeed training step, p = 0 vs 1", 35, 300, _train),
    Step(
        "compile_cache",
        "compile cache: first vs warm start with torch.compile (1 slot)",
        55,
        600,
        _ttfa("compile_cache", "on", "tiny"),
    ),  # fmt: skip
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bash scripts/gpu_check.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="every step on the CPU at tiny sizes")
    parser.add_argument("--out", default=None, help="report directory (default: docs/notes/gpu/DATE, dry: a temp dir)")
    parser.add_argument("--budget", type=int, default=None, help=f"total seconds (default {DEFAULT_BUDGET_S}; dry "
                        f"run {DRY_BUDGET_S})")  # fmt: skip
    parser.add_argument("--only", default=None, help="comma-separated step keys to run (the others are skipped)")
    parser.add_argument("--list", action="store_true", help="print the steps (key, limits, name) and exit")
    args = parser.parse_args(argv)
    if args.list:
        for step in STEPS:
            print(f"{step.key:<14} {step.limit_s:>4} s {step.dry_limit_s:>4} s (dry)  {step.name}")
        return 0
    keys = {s.key for s in STEPS}
    only = set(args.only.split(",")) if args.only else keys
    if only - keys:
        print(f"error: --only: unknown step(s) {sorted(only - keys)}; steps: {', '.join(s.key for s in STEPS)}",
              file=sys.stderr)  # fmt: skip
        return 2
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    if args.out:
        out = Path(args.out)
    elif args.dry_run:
        out = Path(tempfile.mkdtemp(prefix=f"cat-tts-gpu-check-dry-run-{date}-"))
    else:
        out = _fresh_dir(ROOT / "docs" / "notes" / "gpu" / date)
    out.mkdir(parents=True, exist_ok=True)
    budget = args.budget or (DRY_BUDGET_S if args.dry_run else DEFAULT_BUDGET_S)
    sizes = DRY if args.dry_run else REAL
    return Check(out, budget, sizes, args.dry_run, only, date).run()


def _fresh_dir(path: Path) -> Path:
    """`path`, or `path-2`, `path-3`, ... when a report is already there."""
    candidate, n = path, 1
    while (candidate / "report.json").exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


class Check:
    """One run: the steps in order within the budget, then the report (also when interrupted)."""

    def __init__(self, out: Path, budget: int, sizes: Sizes, dry_run: bool, only: set[str], date: str) -> None:
        self.out, self.budget, self.sizes, self.dry_run, self.only, self.date = out, budget, sizes, dry_run, only, date
        self.work = Path(tempfile.mkdtemp(prefix="cat-tts-gpu-check-"))
        self.log_path = out / "gpu_check.log"
        self.start = time.monotonic()
        self.steps: list[dict] = []
        self.env = dict(os.environ)
        self.env.update(PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
        self.env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([self.env["PYTHONPATH"]] if "PYTHONPATH" in self.env
                                                                 else []))  # fmt: skip
        if dry_run:
            self.env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU, also on a machine with a GPU

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.start)

    def log(self, text: str) -> None:
        print(text, flush=True)
        with open(self.log_path, "a") as f:
            f.write(text + "\n")

    def run(self) -> int:
        self.log_path.write_text("")
        self.log(f"gpu check{' (dry run: CPU, tiny sizes)' if self.dry_run else ''}: budget {self.budget} s, "
                 f"report in {self.out}")  # fmt: skip
        machine: dict = {}
        interrupted = False
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            stop = None  # why the remaining steps do not run
            for step in STEPS:
                self.run_step(step, stop)
                if step.key == "wheels":
                    if SITE.is_dir() and not self.dry_run:
                        self.env["PYTHONPATH"] += os.pathsep + str(SITE)
                    machine = self.probe()
                    if not self.dry_run and machine.get("device_type") != "cuda":
                        self.log("error: no CUDA device (torch.cuda.is_available() is False): use --dry-run")
                        stop = "no CUDA device"
        except KeyboardInterrupt:
            interrupted = True
            self.log("interrupted: writing the report of what ran")
            done = {s["key"] for s in self.steps}
            self.steps += [{"key": s.key, "name": s.name, "status": "skipped", "seconds": 0.0, "detail": "interrupted"}
                           for s in STEPS if s.key not in done]  # fmt: skip
        finally:
            signal.signal(signal.SIGTERM, previous)
            self.write_report(machine)
        report = self.out / "report.md"
        if report.is_file():  # also on stdout: the device returns the output even when its files do not come back
            print(report.read_text(), flush=True)
        failed = [s for s in self.steps if s["status"] in ("failed", "timed out")]
        self.log(f"total {time.monotonic() - self.start:.0f} s; {len(failed)} step(s) failed or timed out; "
                 f"report: {self.out / 'report.md'}")  # fmt: skip
        return 1 if failed or interrupted or (not self.dry_run and machine.get("device_type") != "cuda") else 0

    def run_step(self, step: Step, stop: str | None = None) -> None:
        record = {"key": step.key, "name": step.name, "status": "skipped", "seconds": 0.0}
        self.steps.append(record)
        limit = step.dry_limit_s if self.dry_run else step.limit_s
        record["limit_s"] = limit
        if stop:
            record["detail"] = stop
            return
        if step.key not in self.only:
            record["detail"] = "not selected (--only)"
            return
        command = step.command(self.sizes, self.work)
        if command is None:
            record["detail"] = "nothing to do"
            self.log(f"--- {step.name}: skipped (nothing to do)")
            return
        left = self.left()
        if left < MIN_STEP_S:
            record["detail"] = "budget spent"
            self.log(f"--- {step.name}: skipped ({left:.0f} s of budget left)")
            return
        limit = min(limit, int(left))
        record["limit_s"] = limit
        self.log(f"--- {step.name} (limit {limit} s, {left:.0f} s of budget left)")
        self.log("$ " + " ".join(command))
        start = time.monotonic()
        with open(self.log_path, "a") as log:
            proc = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # fmt: skip
            try:
                code = proc.wait(timeout=limit)
                record["status"] = "ok" if code == 0 else "failed"
                if code:
                    record["detail"] = f"exit code {code}"
                _kill_group(proc, grace_s=0)  # anything the step left running in its group
            except subprocess.TimeoutExpired:
                record["status"] = "timed out"
                _kill_group(proc)
            except BaseException:
                record["status"] = "failed"
                record["detail"] = "interrupted"
                _kill_group(proc)
                raise
            finally:
                record["seconds"] = round(time.monotonic() - start, 1)
        self.log(f"--- {step.name}: {record['status']} ({record['seconds']:.0f} s)")

    def probe(self) -> dict:
        """The machine as the steps see it (their environment): versions, device, missing packages."""
        code = f"""
import importlib.util, json, os, platform, sys
info = {{"python": platform.python_version(), "cpu_count": os.cpu_count()}}
info["missing"] = [m for m in {list(CHECKED_MODULES)!r} if importlib.util.find_spec(m) is None]
try:
    import torch
    info["torch"] = torch.__version__
    info["cuda"] = torch.version.cuda
    info["threads"] = torch.get_num_threads()
    if torch.cuda.is_available():
        info["device_type"] = "cuda"
        info["device"] = torch.cuda.get_device_name(0)
    else:
        info["device_type"] = "cpu"
        info["device"] = (platform.processor() or platform.machine()) + f" ({{torch.get_num_threads()}} threads)"
    import transformers
    info["transformers"] = transformers.__version__
except Exception as err:
    info["error"] = repr(err)
print(json.dumps(info))
"""
        try:
            proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=self.env, capture_output=True,
                                  text=True, timeout=120)  # fmt: skip
            info = json.loads(proc.stdout.strip().splitlines()[-1])
        except (subprocess.TimeoutExpired, ValueError, IndexError) as err:
            info = {"error": f"probe failed: {err!r}"}
        self.log("machine: " + json.dumps(info))
        return info

    def write_report(self, machine: dict) -> None:
        report = _load_report_module()
        results = {}
        for step in STEPS:
            path = self.work / f"{step.key}.json"
            if path.is_file():
                try:
                    results[step.key] = json.loads(path.read_text())
                except ValueError as err:
                    self.log(f"could not read {path.name}: {err}")
        data = report.build(
            date=self.date,
            machine=machine,
            dry_run=self.dry_run,
            budget_s=self.budget,
            total_s=round(time.monotonic() - self.start, 1),
            steps=self.steps,
            results=results,
            junit=self.work / "pytest.xml",
        )
        report.write(data, self.out)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _kill_group(proc: subprocess.Popen, grace_s: float = KILL_GRACE_S) -> None:
    """Ends the step's process group (it and its children): SIGTERM, then SIGKILL after `grace_s` seconds."""
    signals = [signal.SIGTERM, signal.SIGKILL] if grace_s > 0 else [signal.SIGKILL]
    for sig in signals:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return  # the group is gone
        if sig == signal.SIGTERM:
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.2)
    proc.wait()


def _load_report_module():
    spec = importlib.util.spec_from_file_location("gpu_report", Path(__file__).with_name("gpu_report.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_report"] = module
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    sys.exit(main())
