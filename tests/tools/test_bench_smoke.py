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


FRAME_ROW = ("bench", "batch", "depth", "mode", "ms_per_frame")
ENGINE_ROW = ("bench", "concurrency", "depth", "frames_per_request", "aggregate_realtime", "stream_rtf_p50",
              "stream_rtf_p95", "ttfa_ms_p50", "ttfa_ms_p95", "stall_s_p50", "stall_s_p95")  # fmt: skip


def test_bench_generate_reports_each_mode_batch_and_depth(tmp_path):
    result = _run(tmp_path, "generate", "--quick", "--device", "cpu", "--batches", "1,2", "--depths", "2",
                  "--modes", "eager,default", "--frames", "8")  # fmt: skip
    rows = result["rows"]
    assert result["complete"] and result["baseline"] == "eager"
    assert [(r["batch"], r["mode"]) for r in rows] == [(1, "eager"), (1, "default"), (2, "eager"), (2, "default")]
    assert all(set(FRAME_ROW) <= set(r) and r["bench"] == "frame" and r["depth"] == 2 for r in rows)
    assert _all_finite_positive(r[k] for r in rows for k in ("ms_per_frame", "frames_per_s", "rtf", "speedup"))
    assert all(r["speedup"] == 1.0 for r in rows if r["mode"] == "eager")  # the first mode is the baseline
    assert all(r["timed_frames"] >= 2 for r in rows)


def test_bench_engine_serves_seed_tts_shaped_requests_at_each_concurrency(tmp_path):
    result = _run(tmp_path, "engine", "--quick", "--device", "cpu", "--concurrency", "1,3", "--depths", "2",
                  "--frames", "3-5", "--reference-seconds", "0.5-1", "--requests-per-client", "2")  # fmt: skip
    rows = result["rows"]
    assert [(r["depth"], r["concurrency"], r["requests"]) for r in rows] == [(2, 1, 2), (2, 3, 6)]
    for r in rows:
        assert set(ENGINE_ROW) <= set(r) and r["bench"] == "engine" and r["mode"] == "default"
        assert 3 <= r["frames_per_request"] <= 5
        assert _all_finite_positive(r[k] for k in ENGINE_ROW[4:9]) and r["stall_s_p95"] >= r["stall_s_p50"] >= 0
    assert rows[0]["speedup"] == 1.0  # the first concurrency is the baseline


def test_bench_profile_lists_where_a_frame_goes(tmp_path):
    result = _run(tmp_path, "profile", "--quick", "--device", "cpu", "--modes", "eager", "--depth", "2",
                  "--frames", "5", "--top", "4")  # fmt: skip
    (p,) = result["modes"]
    assert p["mode"] == "eager" and p["frames"] >= 1 and len(p["top_ops"]) == 4 and p["top_kernels"] == []
    numbers = [p["wall_ms_per_frame"], p["cpu_ops_ms_per_frame"]] + [r["ms_per_frame"] for r in p["top_ops"]]
    assert _all_finite_positive(numbers)
    assert sum(r["share"] for r in p["top_ops"]) <= 1.0 + 1e-9


def test_bench_codec_reports_real_time_factors(tmp_path):
    result = _run(tmp_path, "codec", "--preset", "tiny", "--seconds", "1", "--repeats", "1", "--device", "cpu",
                  "--batches", "1,2")  # fmt: skip
    assert result["preset"] == "tiny" and result["audio_seconds"] > 0
    assert [r["batch"] for r in result["rows"]] == [1, 2]
    keys = ("encode_rtf", "decode_rtf", "decode_x_realtime", "stream_decode_first_chunk_ms", "stream_encode_rtf")
    assert _all_finite_positive(r[key] for r in result["rows"] for key in keys)


def test_a_bad_option_value_is_one_line_and_exit_2(capsys):
    assert main(["engine", "--quick", "--device", "cpu", "--frames", "9-3"]) == 2
    assert capsys.readouterr().err.strip() == "error: --frames takes LO-HI with 0 < LO <= HI (or one number), got '9-3'"


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


@pytest.mark.slow  # ~40 s: two server processes start (the fast suite covers the pieces: tests/tools/test_bench_load)
def test_bench_serve_streams_seed_tts_shaped_requests_from_a_real_server(tmp_path):
    for module in ("fastapi", "uvicorn", "python_multipart", "prometheus_client", "httpx"):
        pytest.importorskip(module, reason="bench serve needs the serve extra")
    result = _run(tmp_path, "serve", "--tiny", "--concurrency", "1,2", "--requests-per-client", "1", "--frames", "2-3",
                  "--depth", "2", "--reference-seconds", "1-2", "--voices", "2", "--baseline")  # fmt: skip
    rows = {(r["server"], r["concurrency"]): r for r in result["rows"]}
    assert set(rows) == {("engine", 1), ("engine", 2), ("baseline", 1), ("baseline", 2)}
    for (server, n), r in rows.items():
        assert r["requests"] == n and r["slots"] == (2 if server == "engine" else 1)
        assert 2 <= r["frames_per_request"] <= 3 and r["audio_s"] > 0
        assert _all_finite_positive(r[k] for k in ENGINE_ROW[4:9])
    assert all(math.isfinite(r["vs_one_slot_server"]) for r in result["rows"] if r["server"] == "engine")
