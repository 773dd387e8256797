"""Fixtures of the Seed-TTS-Eval tests (the helpers live in seedtts_helpers.py, importable by name)."""

from seedtts_helpers import tiny_sim, tiny_sim_default, tiny_testset, tiny_whisper_dir  # noqa: F401 - pytest fixtures
