"""A byte-level tokenizer built in memory: every UTF-8 byte is one token, plus four specials.

It is a real ``PreTrainedTokenizerFast`` (so processors, ``generate`` and ``decode`` work as
with a checkpoint's tokenizer) but needs no vocabulary file and no download: the vocabulary is
the 256 byte symbols of byte-level BPE with no merges.
"""
from __future__ import annotations

from typing import Dict, Optional

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<image>")


def byte_tokenizer(extra_special_tokens: Optional[Dict[str, str]] = None) -> PreTrainedTokenizerFast:
    """Tokenizer with ids 0..3 = <pad>, <s>, </s>, <image> and ids 4..259 = the 256 bytes;
    ``extra_special_tokens`` ({name: token}, e.g. Gemma 3's ``boi_token``) are added after them."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens={"image_token": "<image>", **(extra_special_tokens or {})},
    )
