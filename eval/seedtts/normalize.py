"""Text normalisation of the Seed-TTS-Eval scorer.

The published numbers were computed with a deliberately small normalisation (see
`docs/notes/eval.md` and the protocol notes in `eval/README.md`):

* delete every ASCII punctuation character and every Chinese punctuation character of the `zhon`
  package's `hanzi.punctuation` set, except the ASCII apostrophe `'` (so "don't" stays one word, while
  the typographic `’` is deleted: "It’s" becomes "Its"). Deleting (not replacing by a space) joins the
  neighbours: "twenty-one" becomes "twentyone";
* English: lower-case; Chinese: split into single characters (every character becomes one token);
* no number, spelling or abbreviation normalisation ("50" and "fifty" are different words).

Whitespace runs are collapsed later by the word splitter (`metrics.utterance_wer`), exactly as jiwer's
default transform does in the official scorer, so a single non-space whitespace character (tab,
no-break space) between two words does not separate them in English.
"""

from __future__ import annotations

import string

LANGUAGES = ("en", "zh")
"""Languages the scorer knows; `zh` is also used for the Mandarin hard-case list."""

# Chinese punctuation as defined by `zhon.hanzi.punctuation` (zhon 2.1.1), written as code points so
# that scoring does not need the zhon package. tests/eval/test_metrics.py checks this set against the
# one recorded from zhon in tests/assets/eval/utterance_wer_golden.json.
_ZHON_CODEPOINTS: tuple[int, ...] = (
    # fullwidth ASCII-like punctuation: ＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～ and ！．？
    *range(0xFF01, 0xFF10),  # ！..／ (the fullwidth digits start at FF10)
    0xFF1A, 0xFF1B, 0xFF1C, 0xFF1D, 0xFF1E, 0xFF1F, 0xFF20,
    *range(0xFF3B, 0xFF41),  # ［＼］＾＿｀
    *range(0xFF5B, 0xFF61),  # ｛｜｝～｟｠
    0xFF61, 0xFF62, 0xFF63, 0xFF64,  # halfwidth 。「」、
    # CJK symbols and punctuation: ideographic space, 、。〃, brackets 〈〉《》「」『』【】〔〕〖〗〘〙〚〛,
    # the wave dash and the prime quotation marks
    0x3000, 0x3001, 0x3002, 0x3003,
    *range(0x3008, 0x3012),
    *range(0x3014, 0x3020),
    0x3030, 0x303E, 0x303F,
    # general punctuation: – — ‘ ’ ‛ “ ” „ ‟ … ‧
    0x2013, 0x2014, 0x2018, 0x2019, 0x201B, 0x201C, 0x201D, 0x201E, 0x201F, 0x2026, 0x2027,
    # small form variants ﹏ ﹑ ﹔ and the middle dot ·
    0xFE4F, 0xFE51, 0xFE54, 0x00B7,
)  # fmt: skip

PUNCTUATION: frozenset[str] = frozenset(chr(c) for c in _ZHON_CODEPOINTS) | frozenset(string.punctuation)
"""Every character deleted by the normaliser (the apostrophe is listed but kept, see `KEPT`)."""

KEPT = "'"
"""The one punctuation character the official scorer keeps (ASCII apostrophe)."""

_DELETE_TABLE = {ord(ch): None for ch in PUNCTUATION if ch != KEPT}


def check_language(lang: str) -> str:
    """Return `lang` if it is a supported scoring language.

    Raises:
        ValueError: for anything other than "en" or "zh".
    """
    if lang not in LANGUAGES:
        raise ValueError(f"lang must be one of {LANGUAGES} (use 'zh' for the hard-case list), got {lang!r}")
    return lang


def strip_punctuation(text: str) -> str:
    """Delete every character of `PUNCTUATION` except the ASCII apostrophe."""
    return text.translate(_DELETE_TABLE)


def to_simplified(text: str) -> str:
    """Convert Chinese text to simplified characters (mainland usage), as the ZH scorer does to ASR output.

    Raises:
        ImportError: when the `zhconv` package (extra `eval`) is missing.
    """
    try:
        import zhconv
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("Chinese scoring needs zhconv: pip install 'cat-tts[eval]'") from err
    return zhconv.convert(text, "zh-cn")


def normalize_text(text: str, lang: str) -> str:
    """Normalise a reference or a hypothesis the way the official scorer does.

    The result is a string of space-separated tokens (words for English, characters for Chinese);
    whitespace runs may remain and are collapsed by the word splitter.

    Args:
        text: raw transcript.
        lang: "en" or "zh".

    Returns:
        The normalised string.

    Raises:
        ValueError: for an unknown language.
    """
    check_language(lang)
    text = strip_punctuation(text)
    if lang == "en":
        return text.lower()
    # Chinese: every remaining character (Latin letters and digits included, case kept) is one token.
    return " ".join(text)
