"""The zoo's character-level tokenizer, built with ``tokenizers`` and saved for ``AutoTokenizer``.

One id per character of :func:`evomm_zoo.lexicon.charset` plus ``<pad> <s> </s> <unk> <image>``.
Encoding a text with ``add_special_tokens=True`` (the default of ``tokenizer(text)``) prepends
``<s>``, which is how every zoo model was trained, so any Hugging Face handle queries the models
the way they were trained.
"""

from __future__ import annotations

from pathlib import Path

from evomm_zoo.lexicon import SPECIAL_TOKENS, charset

PAD, BOS, EOS, UNK, IMAGE = SPECIAL_TOKENS


def build_tokenizer():  # -> transformers.PreTrainedTokenizerFast
    """Build the character-level tokenizer.

    Returns:
        A ``transformers`` fast tokenizer (``<pad>``=0, ``<s>``=1, ``</s>``=2, ``<unk>``=3,
        ``<image>``=4, then one id per character).

    Example:
        >>> tok = build_tokenizer()
        >>> tok.decode(tok("5+4=9").input_ids, skip_special_tokens=True)
        '5+4=9'
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in charset():
        vocab.setdefault(ch, len(vocab))
    core = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    # Every character (newlines included) is its own pre-token; Fuse joins them back on decode.
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    core.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        extra_special_tokens={"image_token": IMAGE},
        model_max_length=512,
    )


def save_tokenizer(path: Path) -> None:
    """Build the tokenizer and save it to ``path`` (loadable with ``AutoTokenizer``)."""
    build_tokenizer().save_pretrained(str(path))


def encode_plain(tokenizer, texts: list[str]) -> list[list[int]]:
    """Ids of ``texts`` without special tokens (fast path for training)."""
    return [e.ids for e in tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)]
