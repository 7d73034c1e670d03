"""A character-level tokenizer for the testbed: one token per printable-ASCII character or newline.

It is a `tokenizers` BPE model with an empty merge list, so every character is its own token and
`decode(encode(s)) == s` for any printable-ASCII text with newlines (spaces included). Nothing is
added on encoding: no BOS, no EOS; the policy learns to emit `<eos>` after its boxed answer.
Padding is on the left, as batched generation needs.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders
from tokenizers.models import BPE
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", "<unk>")  # ids 0..3
CHARACTERS: str = "\n" + "".join(chr(c) for c in range(32, 127))  # newline + printable ASCII


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The testbed tokenizer: 4 special tokens then 96 characters (vocabulary of 100)."""
    symbols = list(SPECIAL_TOKENS) + list(CHARACTERS)
    vocab = {symbol: i for i, symbol in enumerate(symbols)}
    # No pre-tokenizer: the whole text is one "word" that BPE splits into characters and never merges.
    backend = Tokenizer(BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.decoder = decoders.Fuse()  # join tokens with nothing in between (the default joins with spaces)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        padding_side="left",
        clean_up_tokenization_spaces=False,  # " ." must stay " ." for the round trip
        model_max_length=512,
    )
    return tokenizer
