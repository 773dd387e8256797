"""Evaluation harnesses for cat-tts (`eval.seedtts`: Seed-TTS-Eval with a bitrate sweep)."""
