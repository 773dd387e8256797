"""Seed-TTS-Eval harness: generate a test list at several depths, score WER/CER + SIM, report versus kbps.

Run it as `python -m eval.seedtts {generate,score,report,convert-sim} ...` (see eval/README.md).
Heavy dependencies (transformers' Whisper/WavLM, FunASR, jiwer, zhconv, scipy, matplotlib) are imported
only where they are needed.
"""

from eval.seedtts.metrics import utterance_wer
from eval.seedtts.testset import BadLine, TestItem, TestSet, read_testset

__all__ = ["BadLine", "TestItem", "TestSet", "read_testset", "utterance_wer"]
