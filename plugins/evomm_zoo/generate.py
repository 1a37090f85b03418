"""Batched greedy generation for the zoo's own evaluations (build scores, experiments).

The framework's tasks query models through a :class:`~evomm.handle.ModelHandle` from an adapter
plugin; the zoo build cannot import plugins (the core never does), so it scores its models with
this small function. :class:`LocalHandle` wraps it in the ``ModelHandle`` protocol (generation only)
for scripts and tests.
"""

from __future__ import annotations

from collections.abc import Sequence


def greedy_generate(
    model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int = 8, batch_size: int = 256
) -> list[str]:
    """Greedy continuations of ``prompts`` (``<s>`` prepended, prompt excluded, cut at ``</s>``).

    Prompts are sorted by length so that left padding stays small.

    Example::

        outs = greedy_generate(model, tok, ["5+4="], max_new_tokens=2)
    """
    import torch

    from evomm_zoo.tokenizer import encode_plain

    ids = encode_plain(tokenizer, list(prompts))
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    outs: list[str] = [""] * len(ids)
    bos, pad, eos = tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id
    model.eval()
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        seqs = [[bos, *ids[i]] for i in chunk]
        width = max(map(len, seqs))
        inp = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros_like(inp)
        for j, s in enumerate(seqs):
            inp[j, width - len(s) :] = torch.tensor(s)
            mask[j, width - len(s) :] = 1
        with torch.no_grad():
            gen = model.generate(
                input_ids=inp,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
                eos_token_id=eos,
            )
        for j, i in enumerate(chunk):
            outs[i] = tokenizer.decode(gen[j, width:], skip_special_tokens=True)
    return outs


class LocalHandle:
    """A minimal :class:`~evomm.handle.ModelHandle` (``generate`` only) over a loaded model.

    Args:
        model: a causal LM.
        tokenizer: its tokenizer.
    """

    capabilities = frozenset({"generate"})

    def __init__(self, model, tokenizer) -> None:
        self.model = model
        self.tokenizer = tokenizer

    def generate(self, prompts, *, images=None, max_new_tokens=64, stop=(), num_beams=1, batch_size=256):
        outs = greedy_generate(
            self.model, self.tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size
        )
        for s in stop:
            outs = [o.split(s, 1)[0] for o in outs]
        return outs

    def loglikelihood(self, requests, *, images=None, batch_size=16):
        from evomm.errors import TaskError

        raise TaskError("LocalHandle only generates; use the evomm_hf adapter's handle for loglikelihood")

    def classify(self, images, class_prompts):
        from evomm.errors import TaskError

        raise TaskError("LocalHandle is a text model handle; it cannot classify images")
