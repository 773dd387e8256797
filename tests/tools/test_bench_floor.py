"""`bench floor` runs end to end at tiny widths and reports the ratios the CPU goals are stated in."""

from __future__ import annotations

import json

from cat_tts.tools.bench.__main__ import main


def test_bench_floor_reports_the_floor_and_the_lone_request_ratios(tmp_path):
    out = tmp_path / "floor.json"
    assert main(["--json", str(out), "floor", "--quick", "--frames", "2", "--repeats", "1", "--depth", "4"]) == 0
    result = json.loads(out.read_text())
    assert result["complete"] and result["depth"] == 4
    for key in ("floor_ms_per_frame", "generate_b1_ms_per_frame", "service_lone_ms_per_frame"):
        assert result[key] > 0
    assert result["floor_over_generate"] == result["floor_ms_per_frame"] / result["generate_b1_ms_per_frame"]
    assert 1 not in result["prepacked_buckets"]  # a lone row always runs plain matrix-vector products


def test_the_floor_counts_every_weight_a_frame_reads():
    import argparse

    from cat_tts.tools.bench.floor import frame_weights
    from cat_tts.tools.bench.models import build_model

    args = argparse.Namespace(quick=True, released=False, temporal_blocks=1, text_vocab=512, threads=None,
                              device="cpu", dtype=None)  # fmt: skip
    model = build_model(args)
    per_position = 3 + 7 * len(model.depth.layers) + 3  # input adapter, blocks, output adapter
    temporal = 7 * len(model.temporal.layers)
    assert len(frame_weights(model, 4)) == 5 * per_position + 4 + temporal  # + one head per layer
