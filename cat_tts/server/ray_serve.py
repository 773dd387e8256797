"""The speech server as a Ray Serve deployment: the same FastAPI app in every replica (one engine per replica, one
GPU each), behind Ray's HTTP proxy, across GPUs and machines, with autoscaling.

    pip install 'cat-tts[ray]'
    ray start --head                                  # on every machine: ray start --address HEAD:6379
    serve run cat_tts.server.ray_serve:build_app model=OpenMOSS-Team/MOSS-TTS-Local-Transformer \\
        num_replicas=auto min_replicas=1 max_replicas=8 voices_dir=/shared/cat-tts/voices
    # CPU only (what the tests do): num_replicas=2 num_gpus=0 device=cpu

Every option is `key=value` (see `RayServeOptions`). Voices: every replica reads and writes `voices_dir`; with
replicas on several machines it must be shared storage (NFS or similar), or each machine keeps its own voices.
Requests beyond a replica's slots and queue wait in Ray's proxy queue (`max_queued_requests`) before a 429.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import Any

try:
    from ray import serve
except ImportError as err:  # pragma: no cover - depends on the installation
    raise ImportError("the Ray Serve deployment needs the ray extra: pip install 'cat-tts[ray]'") from err

from cat_tts.cli import COMPILE_MODES
from cat_tts.errors import UserError
from cat_tts.generation import EngineConfig
from cat_tts.inference import SynthesisConfig
from cat_tts.server.app import create_app
from cat_tts.server.backend import load_backend
from cat_tts.server.config import ServerConfig
from cat_tts.server.voices import check_writable
from cat_tts.weights import DEFAULT_CODEC, DEFAULT_MODEL

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayServeOptions:
    """`serve run ... key=value` options. Validation raises `UserError` naming the option."""

    model: str = DEFAULT_MODEL  # TTS model: hub id or directory (visible to every replica)
    codec: str = DEFAULT_CODEC  # CAT codec: hub id or directory
    device: str = "cuda"  # device inside a replica ("cuda" = the GPU Ray gave it; "cpu" with num_gpus=0)
    dtype: str = "auto"
    compile: str = "auto"  # auto | on | off
    num_replicas: str = "1"  # an integer, or "auto" for autoscaling between min_replicas and max_replicas
    min_replicas: int = 1
    max_replicas: int = 4
    num_gpus: float = 1.0  # GPUs per replica (0 on CPU)
    num_cpus: float = 1.0  # CPUs per replica
    max_slots: int = 8  # engine slots per replica
    max_queue: int = 32  # engine queue per replica
    max_queued_requests: int = 256  # requests Ray holds before any replica takes them (-1: unbounded)
    voices_dir: str = ""  # shared voices directory ("" = the default, per machine)
    api_key: str = ""  # "" = no key (CAT_TTS_API_KEY is not read here: pass it explicitly)
    public_metrics: int = 0  # 1: /metrics without the key
    model_id: str = ""  # id reported by /v1/models ("" = the model value)
    max_input_chars: int = 4096
    max_new_frames: int = 0  # 0 = no cap
    min_new_frames: int = 0
    max_upload_mb: float = 16.0
    request_timeout: float = 300.0
    name: str = "cat-tts"  # deployment name

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> RayServeOptions:
        """Options from `serve run` arguments (strings) or a dict; unknown keys are an error."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(args) - set(known))
        if unknown:
            raise UserError(f"unknown options {unknown}; allowed: {sorted(known)}")
        values = {}
        for key, value in args.items():
            kind = known[key].type
            try:
                values[key] = int(value) if kind == "int" else float(value) if kind == "float" else str(value)
            except ValueError:
                raise UserError(
                    f"{key} must be {'an integer' if kind == 'int' else 'a number'}, got {value!r}"
                ) from None
        return cls(**values)

    def server_config(self) -> ServerConfig:
        """The server's settings (errors name the `key=value` option: the fields have the same names)."""
        kwargs: dict[str, Any] = dict(
            model_id=self.model_id or self.model,
            api_key=self.api_key or None,
            public_metrics=bool(self.public_metrics),
            max_input_chars=self.max_input_chars,
            max_upload_mb=self.max_upload_mb,
            max_new_frames=self.max_new_frames or None,
            min_new_frames=self.min_new_frames,
            request_timeout=self.request_timeout,
        )
        if self.voices_dir:
            kwargs["voices_dir"] = self.voices_dir
        return ServerConfig(**kwargs)

    def engine_config(self) -> EngineConfig:
        return EngineConfig(max_slots=self.max_slots, max_queue=self.max_queue, compile=COMPILE_MODES[self.compile])

    def deployment_options(self) -> dict[str, Any]:
        """Arguments of `serve.deployment` (replicas, resources, autoscaling)."""
        if self.compile not in ("auto", "on", "off"):
            raise UserError(f"compile must be auto, on or off, got {self.compile!r}")
        options: dict[str, Any] = {
            "name": self.name,
            "ray_actor_options": {"num_gpus": self.num_gpus, "num_cpus": self.num_cpus},
            "max_ongoing_requests": self.max_slots + self.max_queue,
            "max_queued_requests": self.max_queued_requests,
            "graceful_shutdown_timeout_s": self.request_timeout,
        }
        if self.num_replicas == "auto":
            if not 1 <= self.min_replicas <= self.max_replicas:
                raise UserError(f"need 1 <= min_replicas <= max_replicas, got {self.min_replicas}, {self.max_replicas}")
            options["autoscaling_config"] = {
                "min_replicas": self.min_replicas,
                "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.max_slots,  # scale out when the slots are full
            }
        else:
            try:
                options["num_replicas"] = int(self.num_replicas)
            except ValueError:
                raise UserError(f"num_replicas must be an integer or 'auto', got {self.num_replicas!r}") from None
        return options


@serve.ingress()
class SpeechServer:
    """One replica: loads the pipeline on its device, then serves the same app as serve.py."""

    def __init__(self, options: RayServeOptions) -> None:
        config = options.server_config()
        check_writable(config.voices_dir, "voices_dir")
        synthesis = SynthesisConfig(
            max_segment_frames=config.max_new_frames
        )  # the cap, also for requests that set none
        backend = load_backend(options.model, options.codec, [options.device], options.dtype, options.engine_config(),
                               synthesis)  # fmt: skip
        self._app = create_app(config, backend)
        state = self._app.state.cat
        state.startup()  # here, not in the app's lifespan: Ray does not run it for ingress deployments
        if state.startup_error is not None:
            raise state.startup_error

    def __serve_build_asgi_app__(self):
        return self._app

    def __del__(self) -> None:
        state = getattr(getattr(self, "_app", None), "state", None)
        if state is not None and hasattr(state, "cat") and state.cat.backend is not None:
            state.cat.backend.close(0.0)


def build_app(args: dict[str, Any]) -> Any:
    """The application for `serve run cat_tts.server.ray_serve:build_app key=value ...` (or `serve.run`)."""
    options = RayServeOptions.from_args(args)
    options.server_config()  # checked here too (FieldError, a UserError), so `serve run` says it before any replica
    deployment = serve.deployment(SpeechServer, **options.deployment_options())
    return deployment.bind(options)
