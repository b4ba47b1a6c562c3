"""A CLIP BPE tokenizer trained on SceneWorld captions with the ``tokenizers`` library.

The normaliser and pre-tokeniser are exactly those of ``transformers.CLIPTokenizer`` (NFC,
whitespace folding, lower case; CLIP's split regex; byte-level alphabet; ``</w>`` word ends), so
the saved ``vocab.json`` + ``merges.txt`` load with ``CLIPTokenizer.from_pretrained(dir)``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def train_bpe(texts: Iterable[str], vocab_size: int = 2048) -> tuple[dict[str, int], list[str]]:
    """Train CLIP-style BPE on ``texts``; returns (vocab, merges).

    Every byte-level symbol is in the vocabulary both inside and at the end of a word, so no
    input ever maps to the unknown token.
    """
    if vocab_size < 600:
        raise ValueError(f"vocab_size must be >= 600 (256 byte symbols twice, specials, merges), got {vocab_size}")
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
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 256,  # room for the word-final symbols added below
        special_tokens=[BOS, EOS],
        initial_alphabet=alphabet,
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    data = json.loads(tok.to_str())["model"]
    vocab: dict[str, int] = dict(sorted(data["vocab"].items(), key=lambda kv: kv[1]))
    for ch in sorted(alphabet):
        for sym in (ch, ch + "</w>"):
            if sym not in vocab:
                vocab[sym] = len(vocab)
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["merges"]]
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
