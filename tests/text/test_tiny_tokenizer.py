"""The tiny tokenizer: loadable offline by AutoTokenizer, special tokens at the tiny ids, ChatML."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoTokenizer

from cat_tts.text.tiny_tokenizer import SPECIAL_TOKENS, write_tiny_tokenizer

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "generation"


def test_tiny_tokenizer_loads_offline_with_special_ids(tmp_path):
    write_tiny_tokenizer(tmp_path)
    tok = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    assert len(tok) <= 512
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == list(range(500, 508))
    assert tok.convert_ids_to_tokens(503) == "<|audio_start|>"
    # no BOS/EOS added by encode; special strings are single tokens
    assert tok.encode("<|audio_start|>") == [503]
    text = "Hello there, zero-shot 123 ü 你好!"
    assert tok.decode(tok.encode(text)) == text
    rendered = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False)
    assert rendered == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_tiny_tokenizer_is_deterministic_and_matches_the_golden_asset(tmp_path):
    write_tiny_tokenizer(tmp_path)
    ours = json.loads((tmp_path / "tokenizer.json").read_text())
    golden = json.loads((ASSETS / "tokenizer" / "tokenizer.json").read_text())
    assert ours["model"] == golden["model"]
    assert ours["added_tokens"] == golden["added_tokens"]
