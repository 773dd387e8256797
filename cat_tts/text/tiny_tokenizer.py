"""A tiny byte-level BPE tokenizer for tests and `make_tiny` checkpoints.

It mirrors the layout the released checkpoint relies on, at toy size: byte-level BPE text tokens
below id 500, then the special tokens at the ids of `CatTTSConfig.tiny()` (`<|endoftext|>` = 500 ...
`<|audio_assistant_delay_slot|>` = 507), and a ChatML chat template without a system prompt. The
files it writes load with `transformers.AutoTokenizer.from_pretrained(dir)` offline.
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

# First special-token id; text tokens (256 bytes + learned merges) fill ids 0..TEXT_VOCAB-1.
TEXT_VOCAB = 500

# Special tokens in id order, starting at TEXT_VOCAB (must agree with CatTTSConfig.tiny().token_ids).
SPECIAL_TOKENS = (
    "<|endoftext|>",  # 500 pad
    "<|im_start|>",  # 501
    "<|im_end|>",  # 502
    "<|audio_start|>",  # 503
    "<|audio_end|>",  # 504
    "<|audio_user_slot|>",  # 505
    "<|audio_assistant_gen_slot|>",  # 506
    "<|audio_assistant_delay_slot|>",  # 507
)

# Plain ChatML, one turn per message, no default system prompt, no thinking blocks.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Training text for the merges: the words the prompt format and the tests use most.
_CORPUS = """<user_inst>
- Reference(s):
[S1]:
- Instruction:
None
- Tokens:
- Quality:
- Sound Event:
- Ambient Sound:
- Language:
- Text:
</user_inst>
user assistant
The quick brown fox jumps over the lazy dog. Hello from cat-tts, a text to speech system.
She sells sea shells by the sea shore. It was the best of times, it was the worst of times.
A reference clip and its transcript, then the text to speak at the chosen depth and bitrate.
Zero-shot voice cloning of a short reference clip. One, two, three, four, five, six, seven.
"""


def build_tiny_tokenizer():
    """Builds the tiny tokenizer in memory.

    Returns:
        A `transformers.PreTrainedTokenizerFast` with the special tokens at ids 500..507.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TEXT_VOCAB,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
        special_tokens=[],
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    # Fill the text range exactly so the special tokens land on their fixed ids.
    filler = 0
    while tok.get_vocab_size() < TEXT_VOCAB:
        tok.add_tokens([f"<|reserved_{filler}|>"])
        filler += 1
    if tok.get_vocab_size() != TEXT_VOCAB:
        raise RuntimeError(f"tiny tokenizer text vocab is {tok.get_vocab_size()}, expected {TEXT_VOCAB}")
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    for offset, token in enumerate(SPECIAL_TOKENS):
        got = fast.convert_tokens_to_ids(token)
        if got != TEXT_VOCAB + offset:
            raise RuntimeError(f"tiny tokenizer: {token} got id {got}, expected {TEXT_VOCAB + offset}")
    return fast


def write_tiny_tokenizer(out_dir: str | Path) -> Path:
    """Writes the tiny tokenizer files (tokenizer.json, tokenizer_config.json, chat template) to `out_dir`.

    Args:
        out_dir: directory to write into (created); usually a tiny model directory.

    Returns:
        The directory path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    build_tiny_tokenizer().save_pretrained(out)
    logger.info("wrote tiny tokenizer to %s", out)
    return out
