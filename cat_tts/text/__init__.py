"""Text side of the prompt: clean-up, sentence chunks, the prompt grid, the tiny test tokenizer."""

from cat_tts.text.normalize import clean_text, join_text, split_sentences
from cat_tts.text.prompt import PromptBuilder, join_transcript, user_content

__all__ = ["PromptBuilder", "clean_text", "join_text", "join_transcript", "split_sentences", "user_content"]
