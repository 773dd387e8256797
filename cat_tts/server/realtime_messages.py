"""What the client of a realtime session sends, checked: its messages (`parse_message`: bounded JSON objects with a
`type`) and its settings (`SessionSettings`: the `session` of `session.update`, validated into the request fields its
segments are generated with). What cannot be used is a `ClientError`, which the connection answers with an `error`
event, the session staying usable. The protocol and the connection: `cat_tts.server.realtime`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cat_tts.errors import FieldError, InputError
from cat_tts.inference.request import SpeechRequest
from cat_tts.server.fields import SPEECH_LABELS
from cat_tts.server.limits import loads_bounded
from cat_tts.server.voices import DEFAULT_VOICE, Voice, VoiceNotFoundError

if TYPE_CHECKING:  # pragma: no cover
    from cat_tts.server.app import ServerState

STREAM_FORMATS = ("pcm", "opus")  # response formats of a session (streamed without a container header to wait for)
SERVER_SETTINGS = ("model", "response_format")  # session settings that are the server's, not the request's
SESSION_LABELS = {label: name for name, label in SPEECH_LABELS.items() if name != "text"}  # JSON label -> field


class ClientError(Exception):
    """A message the session cannot use: answered with an `error` event; the session stays usable.

    Args:
        message: what was wrong and how to fix it.
        param: the JSON field at fault (a session setting's label, `text`, `type`), or None.
        code: a short machine-readable code.
    """

    def __init__(self, message: str, param: str | None = None, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code

    def event(self) -> dict[str, Any]:
        return {"type": "error", "error": {"message": self.message, "param": self.param, "code": self.code}}


class SessionSettings:
    """A session's settings as the client gave them (JSON labels), and the request fields they make.

    `check(update)` validates an update against everything given so far without changing anything; `commit` keeps it.
    """

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.values: dict[str, Any] = {}  # JSON label -> value, as given (null removes a setting)

    def check(self, update: Any) -> tuple[dict[str, Any], dict[str, Any], str]:
        """(merged values, the session's request fields, the response format) after `update`.

        Raises:
            ClientError: naming the JSON field at fault.
        """
        if not isinstance(update, dict):
            raise ClientError("session.update needs a `session` object of settings", "session")
        known = set(SESSION_LABELS) | set(SERVER_SETTINGS)
        for label in update:
            if label == "input":
                raise ClientError("the text is not a setting: send it with text.append", "input", "unknown_parameter")
            if label not in known:
                raise ClientError(f"unknown setting {str(label)[:80]!r}; known: {', '.join(sorted(known))}",
                                  str(label)[:80], "unknown_parameter")  # fmt: skip
        merged = {**self.values, **update}
        # One depth setting replaces the other, and a fixed depth drops the "auto" range (as GenerationConfig does).
        for given, other in (("depth", "bitrate_kbps"), ("bitrate_kbps", "depth")):
            if given in update and other not in update:
                merged.pop(other, None)
        chosen = update.get("depth", update.get("bitrate_kbps"))
        if chosen is not None and chosen != "auto":
            for name in ("min_depth", "max_depth"):
                if name not in update:
                    merged.pop(name, None)
        merged = {k: v for k, v in merged.items() if v is not None}
        fmt = self._server_settings(merged)
        return merged, self.fields(merged), fmt

    def commit(self, values: dict[str, Any]) -> None:
        self.values = values

    def fields(self, values: dict[str, Any] | None = None) -> dict[str, Any]:
        """The request fields (every field but the text) of `values` (default: the committed ones), validated.

        Raises:
            ClientError: naming the JSON field at fault.
        """
        values = self.values if values is None else values
        state = self.state
        voice = _voice(values.get("voice"), state)
        fields = {name: values.get(label) for label, name in SESSION_LABELS.items()}
        fields["reference_audio"] = voice.codes
        if fields["reference_text"] is None:
            fields["reference_text"] = voice.text
        if fields["min_new_frames"] is None:  # the server's default, never above a max_new_frames given
            minimum, asked = state.config.min_new_frames, fields["max_new_frames"]
            fields["min_new_frames"] = min(minimum, asked) if _is_int(asked) and asked >= 1 else minimum
        try:
            SpeechRequest.from_fields({**fields, "text": "."}, state.limits)
        except FieldError as err:
            raise client_error(err) from None
        return fields

    def _server_settings(self, values: dict[str, Any]) -> str:
        model = values.get("model")
        names = self.state.config.model_names
        if model is not None and model not in names:
            raise ClientError(f"unknown model {str(model)[:80]!r}; use one of {list(names)}", "model",
                              "model_not_found")  # fmt: skip
        fmt = values.get("response_format", "pcm")
        if fmt not in STREAM_FORMATS:
            raise ClientError(f"response_format must be one of {', '.join(STREAM_FORMATS)} on this socket, got "
                              f"{str(fmt)[:80]!r}", "response_format", "unsupported_format")  # fmt: skip
        return fmt


def _voice(given: Any, state: ServerState) -> Voice:
    """The stored voice a session names: a name, `{"id": name}`, or nothing (the default voice)."""
    if isinstance(given, dict):
        if set(given) != {"id"}:
            raise ClientError('the voice object must be {"id": NAME}', "voice")
        given = given["id"]
    name = DEFAULT_VOICE if given is None else given
    if not isinstance(name, str):
        raise ClientError(f'voice must be a voice name or {{"id": NAME}}, got {type(name).__name__}', "voice")
    try:
        return state.voices.get(name)
    except InputError as err:
        raise ClientError(str(err), "voice", "invalid_voice_name") from None
    except VoiceNotFoundError:
        raise ClientError(f"no voice named {name[:80]!r}; stored voices: {state.voices.names()[:20]} (add one with "
                          "POST /v1/audio/voices)", "voice", "voice_not_found") from None  # fmt: skip


def field_label(field: str | None) -> str | None:
    """The JSON name of a request field on this socket (the text is `text`, as text.append spells it)."""
    if field is None or field == "text":
        return field
    return SPEECH_LABELS.get(field, field)


def client_error(err: FieldError) -> ClientError:
    return ClientError(err.labelled({**SPEECH_LABELS, "text": "text"}), field_label(err.field))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_message(text: str) -> dict[str, Any]:
    """A client message: a JSON object with a string `type` (bounded like the HTTP bodies: no NaN, no huge ints).

    Raises:
        ClientError: not JSON (param None), not an object or no type (param `type`).
    """
    try:
        message = loads_bounded(text)
    except RecursionError:
        raise ClientError("the message is not usable JSON (nested too deep)", None, "invalid_json") from None
    except ValueError as err:
        raise ClientError(f"the message is not valid JSON ({err})", None, "invalid_json") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ClientError('a message must be a JSON object with a string "type"', "type", "invalid_message")
    return message
