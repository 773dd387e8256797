"""Training manifests: one JSON object per line describing an utterance.

Our fields:
    {"audio": path, "text": str, "speaker"?: str, "ref_audio"?: path, "language"?: str, "id"?: str}

The official MOSS-TTS fine-tuning names are accepted too: `reference_audio` (a list of paths) and
`reference` (a list of paths or nulls) give the reference clip (the first non-null entry), and the
optional prompt fields `instruction`, `tokens`, `quality`, `sound_event`, `ambient_sound` are kept.
Relative audio paths are resolved against the manifest's directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cat_tts.errors import InputError
from cat_tts.files import JsonlError, read_jsonl

# Optional user-message fields of the official chat format, kept verbatim for the chat prompt layout.
PROMPT_FIELDS = ("instruction", "tokens", "quality", "sound_event", "ambient_sound")
_KNOWN = {"id", "audio", "text", "speaker", "ref_audio", "reference_audio", "reference", "language", *PROMPT_FIELDS}


class ManifestError(InputError):
    """A manifest line that cannot be used (names the file and line)."""


@dataclass
class ManifestRow:
    """One utterance of a manifest."""

    index: int  # 0-based line index among the manifest's non-empty lines
    id: str  # utterance id ("id" field, else the audio file stem + index)
    audio: str  # absolute path of the target audio
    text: str  # its transcript
    speaker: str | None = None  # speaker label (chat layout: references come from the same speaker)
    ref_audio: str | None = None  # explicit reference clip for the chat layout
    language: str | None = None  # language tag, kept for the chat prompt
    fields: dict[str, Any] = field(default_factory=dict)  # other official prompt fields (PROMPT_FIELDS)


def _resolve(path: Any, base: Path, where: str, name: str) -> str:
    if not isinstance(path, str) or not path.strip():
        raise ManifestError(f"{where}: {name!r} must be a non-empty path string, got {path!r}")
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def parse_row(obj: Any, index: int, base: Path, where: str) -> ManifestRow:
    """Validates one decoded JSON object of a manifest line."""
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if "audio" not in obj:
        raise ManifestError(f"{where}: missing the required field 'audio' (path of the utterance's audio)")
    text = obj.get("text")
    if not isinstance(text, str):
        raise ManifestError(f"{where}: 'text' must be a string (the transcript), got {text!r}")
    audio = _resolve(obj["audio"], base, where, "audio")
    ref = obj.get("ref_audio")
    if ref is None:
        for key in ("reference_audio", "reference"):
            value = obj.get(key)
            if value is None:
                continue
            if not isinstance(value, list):
                raise ManifestError(f"{where}: {key!r} must be a list of paths (or nulls), got {value!r}")
            ref = next((v for v in value if v is not None), None)
            if ref is not None:
                break
    ref_audio = _resolve(ref, base, where, "ref_audio") if ref is not None else None
    speaker = obj.get("speaker")
    language = obj.get("language")
    uid = obj.get("id")
    if uid is None:
        uid = f"{Path(audio).stem}-{index}"
    return ManifestRow(
        index=index,
        id=str(uid),
        audio=audio,
        text=text,
        speaker=None if speaker is None else str(speaker),
        ref_audio=ref_audio,
        language=None if language is None else str(language),
        fields={k: obj[k] for k in PROMPT_FIELDS if obj.get(k) is not None},
    )


def read_manifest(path: str | Path) -> list[ManifestRow]:
    """Reads a JSONL manifest.

    Args:
        path: the manifest file (one JSON object per line, UTF-8, a byte-order mark allowed; blank lines are
            ignored).

    Returns:
        The rows in file order.

    Raises:
        ManifestError: if the file does not exist, or for a line that is not valid JSON or lacks `audio` / `text`
            (names the file and line).
    """
    path = Path(path)
    base = path.resolve().parent
    rows: list[ManifestRow] = []
    try:
        for number, obj in read_jsonl(path, what="manifest"):
            rows.append(parse_row(obj, len(rows), base, f"{path}:{number}"))
    except JsonlError as err:
        raise ManifestError(str(err)) from None
    return rows
