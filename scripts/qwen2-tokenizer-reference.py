#!/usr/bin/env python3
"""Reference token ids of Qwen2's tokenizer for tests/qwen_tokenizer.rs.

An independent implementation: OpenAI's `tiktoken` with Qwen's own BPE ranks
(`qwen.tiktoken`, shipped in the `dashscope` wheel; Qwen2's vocabulary keeps
those ranks as ids) and Qwen's pre-tokenizer regex. The texts are our own.

    python3 -m venv target/tok-venv && target/tok-venv/bin/pip install tiktoken
    python3 -m pip download --no-deps dashscope==2.0.2 -d target/tok
    unzip -o target/tok/dashscope-2.0.2-py3-none-any.whl dashscope/resources/qwen.tiktoken -d target/tok
    target/tok-venv/bin/python scripts/qwen2-tokenizer-reference.py \
        target/tok/dashscope/resources/qwen.tiktoken > tests/fixtures/qwen2_tokens.json
"""
import base64
import json
import sys

import tiktoken

PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

TEXTS = [
    "The quick brown fox doesn't jump; it's tired, and we'll see why.",
    "I'M SURE THEY'RE HERE, YOU'VE SEEN IT, HE'D SAY SO.",
    "Prices rose 12.5% in 2024: from $1,299.99 to $1,462.49 (≈ +163).",
    "def add(a, b):\n    return a + b\n\n\nprint(add(40, 2))  # 42\n",
    "if (x >= 10 && y != -3) { z += x * y; } else { z--; }",
    "Tabs\tand  double  spaces   and trailing spaces   \n\n  indented line\r\nwindows line",
    "Ünïcödé wörds: naïve café, Straße, smørrebrød, Ελληνικά, русский, 日本語のテキスト, 中文分词测试.",
    "Emoji 🙂🚀 and symbols ← → ∑ ∫ √2 — plus ‘curly’ “quotes”.",
    "<|im_start|>user\nWhat is 7 × 6?<|im_end|>\n<|im_start|>assistant\n",
    "URLs like https://example.org/a/b?c=1&d=two#frag and e-mail a.b@example.com",
    "   leading spaces, then words...and dots!!! ??? ---",
    "1234567890 0.001 1e-9 0x1F 3/4 10:45",
]


def main():
    ranks = {}
    with open(sys.argv[1], "rb") as f:
        for line in f:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    n = len(ranks)
    enc = tiktoken.Encoding(
        "qwen",
        pat_str=PATTERN,
        mergeable_ranks=ranks,
        special_tokens={s: n + i for i, s in enumerate(SPECIAL)},
    )
    cases = [{"text": t, "ids": enc.encode(t, allowed_special="all")} for t in TEXTS]
    lines = [json.dumps(c, ensure_ascii=False) for c in cases]
    print('{"reference": "tiktoken + qwen.tiktoken (dashscope 2.0.2)", "cases": [')
    print(",\n".join(lines))
    print("]}")


if __name__ == "__main__":
    main()
