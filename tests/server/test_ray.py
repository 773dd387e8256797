"""The server as a Ray Serve deployment: 2 local CPU replicas on the tiny checkpoints serve the same API, and
requests reach both (slow tier: importing Ray alone takes seconds, the cluster a minute)."""

from __future__ import annotations

import concurrent.futures
import socket

import httpx
import pytest

from cat_tts.errors import UserError

pytestmark = pytest.mark.slow


def test_options_are_validated():
    pytest.importorskip("ray.serve")
    from cat_tts.server.ray_serve import RayServeOptions

    options = RayServeOptions.from_args({"num_replicas": "auto", "max_replicas": "3", "num_gpus": "0.5"})
    deployment = options.deployment_options()
    assert deployment["autoscaling_config"]["max_replicas"] == 3
    assert deployment["ray_actor_options"]["num_gpus"] == 0.5
    assert RayServeOptions.from_args({"num_replicas": "2"}).deployment_options()["num_replicas"] == 2
    for bad in ({"colour": "red"}, {"max_slots": "many"}, {"num_replicas": "two"}, {"compile": "maybe"}):
        with pytest.raises(UserError):
            RayServeOptions.from_args(bad).deployment_options()


def test_two_cpu_replicas_serve_the_api(tiny_dirs, tmp_path):
    ray = pytest.importorskip("ray")
    serve = pytest.importorskip("ray.serve")
    from cat_tts.server.ray_serve import build_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = build_app({
            "model": str(tiny_dirs["model"]), "codec": str(tiny_dirs["codec"]), "device": "cpu", "num_gpus": "0",
            "num_cpus": "1", "num_replicas": "2", "voices_dir": str(tmp_path / "voices"), "min_new_frames": "5",
            "max_slots": "4",
        })  # fmt: skip
        serve.run(app, name="cat-tts", route_prefix="/", blocking=False)
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/v1/models", timeout=60).json()["data"][0]["n_vq"] == 32

        def speak(i: int) -> tuple[int, int, str]:
            r = httpx.post(f"{url}/v1/audio/speech", timeout=120, json={
                "input": f"Replica test {i}.", "response_format": "pcm", "max_new_frames": 6, "min_new_frames": 6,
                "depth": 4,
            })  # fmt: skip
            return r.status_code, len(r.content), r.headers.get("x-cat-tts-instance", "")

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(speak, range(16)))
        assert all(status == 200 and size == 6 * 1920 * 2 for status, size, _ in results), results
        instances = {instance for _, _, instance in results}
        assert len(instances) == 2, instances  # both replicas served requests
        stream = httpx.post(f"{url}/v1/audio/speech", timeout=120, json={
            "input": "SSE through Ray.", "response_format": "pcm", "stream_format": "sse", "max_new_frames": 4,
        })  # fmt: skip
        assert stream.status_code == 200 and "speech.audio.done" in stream.text
        bad = httpx.post(f"{url}/v1/audio/speech", json={"input": "", "response_format": "pcm"}, timeout=60)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "input"
    finally:
        serve.shutdown()
        ray.shutdown()
