"""A CLIP BPE tokenizer trained on SceneWorld captions with the ``tokenizers`` library.

The normaliser and pre-tokeniser are exactly those of ``transformers.CLIPTokenizer`` (NFC,
whitespace folding, lower case; CLIP's split regex; byte-level alphabet; ``</w>`` word ends), so
the saved ``vocab.json`` + ``merges.txt`` load with ``CLIPTokenizer.from_pretrained(dir)``.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def _pretokenizer() -> Tokenizer:
    """CLIP's normaliser and pre-tokeniser (the ``tokenizers`` implementation; deterministic)."""
    tok = Tokenizer(models.BPE(unk_token=EOS, end_of_word_suffix="</w>", continuing_subword_prefix=""))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    return tok


def train_bpe(texts: Iterable[str], vocab_size: int = 2048) -> tuple[dict[str, int], list[str]]:
    """Train CLIP-style BPE on ``texts``; returns (vocab, merges).

    The merges are learnt here, deterministically (the most frequent adjacent pair first, ties to
    the lexicographically smallest pair), so the same captions always give the same tokenizer —
    the ``tokenizers`` trainer breaks ties by hash order, which differs between processes. Every
    byte-level symbol is in the vocabulary both inside and at the end of a word, so no input ever
    maps to the unknown token.
    """
    if vocab_size < 600:
        raise ValueError(f"vocab_size must be >= 600 (256 byte symbols twice, specials, merges), got {vocab_size}")
    tok = _pretokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        norm = tok.normalizer.normalize_str(text)
        counts.update(w for w, _ in tok.pre_tokenizer.pre_tokenize_str(norm))
    words = {tuple([*w[:-1], w[-1] + "</w>"]): c for w, c in counts.items() if w}
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab: dict[str, int] = {BOS: 0, EOS: 1}
    for sym in [*alphabet, *(a + "</w>" for a in alphabet)]:
        vocab.setdefault(sym, len(vocab))
    merges: list[str] = []
    while len(vocab) < vocab_size:
        pairs: Counter[tuple[str, str]] = Counter()
        for w, c in words.items():
            for pair in itertools.pairwise(w):
                pairs[pair] += c
        if not pairs:
            break
        a, b = min(pairs, key=lambda p: (-pairs[p], p))
        merged: dict[tuple[str, ...], int] = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + c
        words = merged
        merges.append(f"{a} {b}")
        vocab.setdefault(a + b, len(vocab))
    return vocab, merges


def save_bpe(vocab: dict[str, int], merges: list[str], out_dir: str | Path, *, configs: bool = True) -> Path:
    """Write ``vocab.json``, ``merges.txt`` and (with ``configs``) a CLIPTokenizer config into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    if not configs:
        return out
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "bos_token": BOS, "eos_token": EOS,
        "unk_token": EOS, "pad_token": EOS, "do_lower_case": True,
    }, indent=1))  # fmt: skip
    (out / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS})
    )
    return out
