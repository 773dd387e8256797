"""One writer per run directory: a lock held while a training run lives.

Two runs on the same `--out` would interleave `metrics.jsonl` and overwrite each other's checkpoints. The process
that owns the run directory (rank 0, or the only process) holds an exclusive `flock` on `RUN_DIR/train.lock` from
start to end; the file records who holds it (pid, host, start time, command). A second run that finds the lock
held exits naming the holder. The operating system drops the lock when its process dies, however it dies, so a
lock is never left behind by a killed run; what can be left is the record, which the next run reports (the run
that wrote it ended without releasing: killed, or its machine went down) and replaces.

Why `fcntl.flock` and not the `filelock` package: `filelock` truncates the lock file when it opens it, before it
knows whether it got the lock, so it would erase the running holder's record and could not say who holds it. On
Linux, `flock` on NFS is carried out with NFS byte-range locks, so runs on two machines sharing a run directory
exclude each other too. POSIX only (training needs Linux for DeepSpeed anyway).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cat_tts.errors import InputError

logger = logging.getLogger(__name__)

LOCK_FILE = "train.lock"


class RunDirectoryBusyError(InputError):
    """Another training run holds the run directory (the message names its pid, host and start time)."""


@dataclass(frozen=True)
class LockRecord:
    """Who holds (or last held) a run directory's lock; the content of `train.lock`."""

    pid: int  # process id of the holder
    host: str  # the holder's machine (socket.gethostname())
    started: str  # when it took the lock, local time, ISO 8601 with the UTC offset
    command: str  # the holder's command line, for humans

    @classmethod
    def of_this_process(cls) -> LockRecord:
        return cls(
            pid=os.getpid(),
            host=socket.gethostname(),
            started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            command=" ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:500] if sys.argv else "",
        )

    @classmethod
    def parse(cls, text: str) -> LockRecord | None:
        """The record in a lock file's text, or None when it is empty or not one (a holder still writing it)."""
        try:
            fields = json.loads(text)
            return cls(int(fields["pid"]), str(fields["host"]), str(fields["started"]), str(fields.get("command", "")))
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        """'pid 1234 on host gpu-7, started 2025-01-31T10:00:00+0000'."""
        return f"pid {self.pid} on host {self.host}, started {self.started}"


class RunLock:
    """The lock of one run directory (use as a context manager, or call `acquire` and `release`).

    Args:
        run_dir: the run directory (must exist).
        option: how the user names the directory, for messages ("--out").

    Attributes:
        stale: after `acquire`, the record left by an earlier run that ended without releasing the lock (killed),
            else None. It is reported as a warning when the lock is taken over.
    """

    def __init__(self, run_dir: str | Path, option: str = "--out") -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.option = option
        self.stale: LockRecord | None = None
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Takes the lock, or raises at once (never waits).

        Raises:
            RunDirectoryBusyError: another process holds it (naming that process).
            InputError: the lock file cannot be created or locked (a read-only or lock-less filesystem).
        """
        import fcntl  # POSIX only: imported here so that cat_tts.training still imports elsewhere

        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this RunLock")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # no O_TRUNC: the holder's record must survive
        except OSError as err:
            raise InputError(f"{self.option}: cannot create the lock file {self.path} ({err.strerror or err})") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = LockRecord.parse(_read(fd))
            os.close(fd)
            who = holder.describe() if holder is not None else "a process that is starting"
            command = f" ({holder.command})" if holder is not None and holder.command else ""
            raise RunDirectoryBusyError(
                f"{self.option} {self.path.parent} is in use by another training run: {who}{command}; wait for it "
                f"to finish or stop it, or choose another {self.option}"
            ) from None
        except OSError as err:  # ENOLCK / EOPNOTSUPP: a filesystem without locks
            os.close(fd)
            raise InputError(
                f"{self.option}: cannot lock {self.path} ({err.strerror or err}); put the run directory on a "
                "filesystem with file locks (local disk or NFS)"
            ) from err
        self.stale = LockRecord.parse(_read(fd))
        record = LockRecord.of_this_process()
        if self.stale is not None:
            logger.warning(
                "%s: taking over the lock of an earlier run that ended without releasing it (%s: killed, or its "
                "machine went down); its checkpoints are kept (--resume continues from the newest intact one)",
                self.path,
                self.stale.describe(),
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(asdict(record)) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        """Clears the record and drops the lock (a no-op when not held)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # an empty file: the next run finds no stale record
        finally:
            os.close(fd)  # closing the only descriptor drops the flock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read(fd: int) -> str:
    try:
        return os.pread(fd, 4096, 0).decode("utf-8", errors="replace")
    except OSError:
        return ""


def owns_run_dir() -> bool:
    """True in the process that owns the run directory: rank 0 of a launched job, or a process that was not
    launched by a distributed launcher (RANK unset: `cat_tts.training.distributed.setup_distributed` then makes a
    one-process group)."""
    return os.environ.get("RANK", "0") == "0"
