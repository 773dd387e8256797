"""The benchmark harnesses run end to end at tiny sizes and report the numbers they promise.

No timing is asserted (speed is measured by `python -m cat_tts.tools.bench`, never by tests); these only keep
the harnesses from rotting: every subcommand parses, runs, and returns its result with the ratios it prints.
"""

from __future__ import annotations

import json
import math

import pytest

from cat_tts.tools.bench.__main__ import main


def _run(tmp_path, *argv: str) -> dict:
    out = tmp_path / "bench.json"
    assert main(["--json", str(out), *argv]) == 0
    return json.loads(out.read_text())


def _all_finite_positive(values) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values)


def test_bench_generate_reports_engine_and_naive_rates(tmp_path):
    result = _run(tmp_path, "generate", "--quick", "--depths", "1,2", "--batches", "1", "--frames", "2",
                  "--warmup-frames", "1", "--naive-frames", "1", "--device", "cpu")  # fmt: skip
    rows = result["rows"]
    assert result["columns"] == ["eager", "naive"]
    assert [(r["batch"], r["depth"]) for r in rows] == [(1, 1), (1, 2)]
    keys = ("eager_ms_per_frame", "naive_ms_per_frame", "speedup", "rtf_per_stream", "best_frames_per_s")
    assert _all_finite_positive(r[key] for r in rows for key in keys)


def test_bench_engine_compares_concurrent_with_sequential(tmp_path):
    result = _run(tmp_path, "engine", "--quick", "--concurrency", "1,3", "--depths", "2", "--frames", "3",
                  "--device", "cpu", "--compile", "off")  # fmt: skip
    rows = result["rows"]
    assert [(r["depth"], r["concurrency"]) for r in rows] == [(2, 1), (2, 3)]
    for r in rows:
        assert r["concurrent"]["frames"] == r["sequential"]["frames"] == 3 * r["concurrency"]
        keys = ("frames_per_s", "rtf", "ttfa_p50_ms", "ttfa_p95_ms")
        assert _all_finite_positive(r[run][key] for run in ("concurrent", "sequential") for key in keys)
    assert rows[1]["concurrent"]["steps"] < rows[1]["sequential"]["steps"]  # the batch shared its frame steps


def test_bench_codec_reports_real_time_factors(tmp_path):
    result = _run(tmp_path, "codec", "--preset", "tiny", "--seconds", "1", "--repeats", "1", "--device", "cpu")
    assert result["preset"] == "tiny" and result["audio_seconds"] > 0
    keys = ("encode_rtf", "decode_rtf", "stream_decode_first_chunk_ms", "stream_encode_first_chunk_ms")
    assert _all_finite_positive(result[key] for key in keys)


@pytest.mark.slow  # ~35 s
def test_bench_train_step_compares_p0_and_p1(tmp_path):
    result = _run(tmp_path, "train-step", "--preset", "tiny", "--batch", "2", "--frames", "8", "--steps", "1",
                  "--device", "cpu")  # fmt: skip
    by_p = {r["p"]: r for r in result["results"]}
    assert set(by_p) == {0.0, 1.0}
    assert by_p[0.0]["mean_depth"] == 32 and by_p[1.0]["mean_depth"] < 32  # p = 1 keeps at most 31 layers
    assert by_p[1.0]["flops"] < by_p[0.0]["flops"]  # truncation is real compute truncation (counted, not timed)
    assert _all_finite_positive(result["ratios"].values())


@pytest.mark.slow  # ~50 s of DeepSpeed steps
def test_bench_train_runs_deepspeed_steps_for_each_p(tmp_path):
    result = _run(tmp_path, "train", "--preset", "tiny", "--steps", "1", "--warmup", "1", "--tokens-per-batch", "256",
                  "--frames", "20")  # fmt: skip
    by_p = {r["p"]: r for r in result["results"]}
    assert set(by_p) == {0.0, 1.0}
    assert by_p[0.0]["mean_depth"] == 32 and by_p[1.0]["mean_depth"] < 32
    assert by_p[0.0]["speedup_vs_baseline"] == 1.0 and by_p[0.0]["memory_vs_baseline"] == 1.0  # p = 0 is the baseline
    keys = ("tokens_per_s", "step_s", "peak_memory_gb", "speedup_vs_baseline", "memory_vs_baseline")
    assert _all_finite_positive(r[key] for r in by_p.values() for key in keys)


def test_bench_coldstart_loads_each_part_in_a_fresh_process(tmp_path):
    from cat_tts.tools.make_tiny import make_tiny

    dirs = make_tiny(tmp_path / "tiny")  # given checkpoints: no writer process (the slow test covers it)
    result = _run(tmp_path, "coldstart", "--model", str(dirs["model"]), "--codec", str(dirs["codec"]),
                  "--dtypes", "bfloat16,float32", "--codec-dtypes", "float32", "--device", "cpu")  # fmt: skip
    loads = {(r["part"], r["dtype"]): r for r in result["loads"]}
    assert set(loads) == {("model", "bfloat16"), ("model", "float32"), ("codec", "float32")}
    keys = ("load_s", "process_s", "weights_gb", "on_disk_gb", "baseline_rss_gb", "peak_rss_gb", "peak_rss_vs_weights")
    assert _all_finite_positive(r[key] for r in loads.values() for key in keys)
    bf16, fp32 = loads[("model", "bfloat16")], loads[("model", "float32")]
    assert fp32["weights_gb"] == 2 * bf16["weights_gb"] and fp32["on_disk_gb"] == bf16["on_disk_gb"]
    assert result["model_peak_within_1_2x"] is not None
    assert dirs["model"].is_dir() and dirs["codec"].is_dir()  # given checkpoints are never deleted


@pytest.mark.slow
def test_bench_coldstart_times_first_audio_with_a_cold_then_warm_cache(tmp_path):
    cache = tmp_path / "cache"
    result = _run(tmp_path, "coldstart", "--preset", "tiny", "--dtypes", "", "--codec-dtypes", "", "--ttfa",
                  "--ttfa-frames", "1", "--compile", "off", "--compile-cache", str(cache))  # fmt: skip
    assert "write" in result  # random tiny weights written by a worker process
    runs = result["ttfa"]["runs"]
    assert set(runs) == {"cold", "warm"} and result["loads"] == []
    assert _all_finite_positive(r[k] for r in runs.values() for k in ("imports_s", "loaded_s", "first_audio_s"))
    assert all(r["imports_s"] < r["loaded_s"] < r["first_audio_s"] and r["samples"] > 0 for r in runs.values())
    assert cache.is_dir()  # a given cache directory is the user's: kept


def test_bench_serve_compares_the_engine_server_with_a_one_slot_server(tmp_path):
    for module in ("fastapi", "uvicorn", "python_multipart", "prometheus_client"):
        pytest.importorskip(module, reason="bench serve needs the serve extra")
    result = _run(tmp_path, "serve", "--tiny", "--concurrency", "1,2", "--requests-per-client", "1", "--frames", "2",
                  "--depth", "2")  # fmt: skip
    rows = {r["concurrency"]: r for r in result["rows"]}
    assert set(rows) == {1, 2} and result["frames_per_request"] == 2
    for row in rows.values():
        for server in ("engine", "baseline"):
            numbers = row[server]
            assert numbers["requests"] == row["concurrency"] and numbers["bytes"] == numbers["requests"] * 2 * 1920 * 2
            assert _all_finite_positive(numbers[k] for k in ("requests_per_s", "audio_s_per_s", "ttfa_p50_ms"))
        assert math.isfinite(row["ratio"]) and row["ratio"] > 0
