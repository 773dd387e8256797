"""Files in and out, the same way everywhere: atomic outputs, JSON-lines and YAML inputs.

* `atomic_write(path)`: a temporary path next to `path` that becomes `path` (by `os.replace`) only when the
  `with` block finishes; a killed or failing writer leaves no file under the final name (a 0-byte wav from a
  killed run would otherwise count as done on a re-run).
* `read_jsonl(path)`: the one JSON-lines reader (manifests, `infer.py --jsonl` jobs, the evaluator's records):
  yields `(line number, value)` for every non-blank line, accepts a UTF-8 byte-order mark, and names
  `file:line` for text that is not UTF-8 or not JSON.
* `read_yaml(path)`: a YAML file (training configs), with syntax and encoding errors as one line naming
  `file:line`.

Every problem is a `cat_tts.errors.InputError` (a `UserError`): CLIs print it as one line and exit 2.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import yaml

from cat_tts.errors import InputError

BOM = b"\xef\xbb\xbf"  # the UTF-8 byte-order mark some editors (Notepad, Excel exports) put first


class JsonlError(InputError):
    """A JSON-lines file, or one of its lines, cannot be read (the message names `file:line`).

    Attributes:
        path: the file.
        line: 1-based line number, or None when the file itself cannot be read.
    """

    def __init__(self, message: str, path: str | Path, line: int | None = None) -> None:
        super().__init__(message)
        self.path = Path(path)
        self.line = line


@contextmanager
def atomic_write(path: str | Path, durable: bool = True) -> Iterator[Path]:
    """A temporary path to write instead of `path`; it replaces `path` when the block ends without an error.

    The temporary is a hidden name in the same directory (so the rename stays on one filesystem and is atomic)
    and ends in `.tmp`, so no `*.wav` / `*.jsonl` pattern picks it up. Pass the file format explicitly to writers
    that infer it from the name (`soundfile.write(..., format="WAV")`). The temporary may also be made a
    directory; it replaces a directory `path` by two renames (the old one is moved aside, then deleted), so for
    an instant `path` does not exist, but it is never partial. On an error, the temporary is removed and `path`
    is left as it was.

        with atomic_write(out / "summary.json") as tmp:
            tmp.write_text(json.dumps(summary), encoding="utf-8")

    Args:
        path: the final file name (its parent directory must exist).
        durable: flush a file's data to disk before the rename, so a power loss right after leaves the old file
            or the complete new one (not an empty one).

    Yields:
        The temporary path (not created: the writer creates it).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        if durable and tmp.is_file():
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if tmp.is_dir() and path.is_dir() and not path.is_symlink():
            _replace_directory(tmp, path)
        else:
            os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def _replace_directory(new: Path, path: Path) -> None:
    """Puts directory `new` in the place of directory `path` (two renames), then deletes the old one."""
    old = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.old")
    os.replace(path, old)
    try:
        os.replace(new, path)
    except BaseException:
        os.replace(old, path)  # put the old one back: `path` is never left missing by a failed rename
        raise
    shutil.rmtree(old, ignore_errors=True)


def _check_file(path: Path, what: str) -> None:
    if path.is_dir():
        raise JsonlError(f"{what} {path} is a directory; give the JSON-lines file (one JSON value per line)", path)
    if not path.is_file():
        raise JsonlError(f"{what} not found: {path}", path)


def _decode(raw: bytes, path: Path, number: int) -> str:
    """One line's bytes as text, or a `JsonlError` naming the line and the first byte that is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise JsonlError(
            f"{path}:{number}: not UTF-8 text (byte 0x{raw[err.start]:02x} at column {err.start + 1}); "
            "save the file as UTF-8",
            path,
            number,
        ) from None


def read_jsonl(
    path: str | Path, errors: Literal["raise", "return"] = "raise", what: str = "JSON-lines file"
) -> Iterator[tuple[int, Any]]:
    """The values of a JSON-lines file, line by line (streamed: the file is never read whole).

    Blank lines are skipped; a UTF-8 byte-order mark before the first line is ignored.

    Args:
        path: the file.
        errors: "raise" stops at the first line that is not UTF-8 or not JSON (a `JsonlError`); "return" yields
            `(line, JsonlError)` for such a line and goes on, for callers where a bad line fails alone.
        what: what the file is, for the file-level messages ("manifest", "--jsonl file").

    Yields:
        `(line number (1-based), decoded JSON value)`; with errors="return" the value may be a `JsonlError`.

    Raises:
        JsonlError: the file does not exist, is a directory or cannot be read; with errors="raise" also a line
            that is not UTF-8 or not valid JSON (the message names `file:line`).
    """
    path = Path(path)
    _check_file(path, what)
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed in the finally below, also when the caller stops early
    except OSError as err:
        raise JsonlError(f"cannot read {what} {path}: {err.strerror or err}", path) from err
    try:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(BOM):
                raw = raw[len(BOM) :]
            try:
                text = _decode(raw, path, number).rstrip("\r\n")
                if not text.strip():
                    continue
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as err:
                    raise JsonlError(
                        f"{path}:{number}: not valid JSON ({err.msg} at column {err.colno})", path, number
                    ) from None
            except JsonlError as err:
                if errors == "raise":
                    raise
                value = err
            yield number, value
    finally:
        handle.close()


def read_yaml(path: str | Path, what: str = "YAML file") -> Any:
    """The parsed content of a YAML file (`yaml.safe_load`: plain data only, never objects).

    Args:
        path: the file.
        what: what the file is, for the messages ("config").

    Returns:
        The parsed value (None for an empty file).

    Raises:
        InputError: the file is missing, a directory, not UTF-8 (naming the line) or not valid YAML (naming the
            line and column and what the parser expected), as one line.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"the {what} {path} is a directory; give a YAML file")
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise InputError(f"cannot read the {what} {path}: {err.strerror or err}") from err
    body = data[len(BOM) :] if data.startswith(BOM) else data
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        line = body.count(b"\n", 0, err.start) + 1
        raise InputError(
            f"{path}:{line}: not UTF-8 text (byte 0x{body[err.start]:02x}); save the {what} as UTF-8"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        reason = " ".join(part for part in (err.problem, err.context) if part) or "syntax error"
        raise InputError(f"{where}: not valid YAML ({' '.join(reason.split())})") from None
    except yaml.reader.ReaderError as err:  # a character YAML does not allow (e.g. a control character)
        line = text.count("\n", 0, err.position) + 1
        raise InputError(f"{path}:{line}: not valid YAML ({' '.join(err.reason.split())} {err.character!r})") from None
    except yaml.YAMLError as err:  # anything else the parser raises
        raise InputError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
