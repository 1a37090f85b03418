"""A :class:`~evomm.handle.ModelHandle` for Hugging Face causal language models.

Generation goes through ``transformers``' own ``generate`` (batched, KV cache, greedy or beam
search) with left padding and attention masks; log-likelihoods are computed in right-padded
batches from one forward pass per batch. Prompts are sorted by length before batching so that
batches hold similar lengths (little padding), and answers are returned in the caller's order.

Example::

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from evomm_hf.handle import HFCausalLMHandle

    model = AutoModelForCausalLM.from_pretrained("path/to/model")
    tok = AutoTokenizer.from_pretrained("path/to/model")
    handle = HFCausalLMHandle(model, tok)
    handle.generate(["2 + 2 = "], max_new_tokens=4, stop=["\\n"])
    handle.loglikelihood([("The sky is", " blue")])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from evomm.errors import TaskError
from evomm_hf.handle_utils import (
    batches,
    check_generate_args,
    common_prefix,
    cut_at_stop,
    progress,
    stop_kwargs,
)

if TYPE_CHECKING:
    from PIL.Image import Image

class HFCausalLMHandle:
    """Lets tasks query a ``transformers`` causal LM (text only).

    Args:
        model: a ``PreTrainedModel`` with a causal-LM head (e.g. ``LlamaForCausalLM``).
        tokenizer: its tokenizer (a ``PreTrainedTokenizerBase``). Without a pad token, the EOS
            token pads.
        device: where inputs are placed; ``None`` uses the device of the model's parameters.
            The model itself is not moved.
        max_length: the longest input (prompt, or context+continuation) fed to the model; longer
            inputs keep their last tokens. Default: the model config's
            ``max_position_embeddings`` (or 2048).

    Example:
        >>> handle = HFCausalLMHandle(model, tokenizer)          # doctest: +SKIP
        >>> handle.generate(["Q: 1+1=? A:"], max_new_tokens=3)   # doctest: +SKIP
        [' 2']
    """

    capabilities: frozenset[str] = frozenset({"generate", "loglikelihood"})

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        device: str | torch.device | None = "cpu",
        max_length: int | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        if device is None:
            device = next(model.parameters()).device
        self.device = torch.device(device)
        cfg_len = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        self.max_length = int(max_length or cfg_len or 2048)
        self.pad_id = tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = tokenizer.eos_token_id
        if self.pad_id is None:
            raise TaskError(
                f"tokenizer {type(tokenizer).__name__} has neither a pad nor an EOS token; "
                "set tokenizer.pad_token before building an HFCausalLMHandle"
            )

    # ------------------------------------------------------------------------------------------
    # generation
    # ------------------------------------------------------------------------------------------

    def _encode_prompts(self, prompts: Sequence[str], room: int) -> list[list[int]]:
        keep = max(1, self.max_length - room)
        return [self.tokenizer(p)["input_ids"][-keep:] for p in prompts]

    def _left_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def generate(
        self,
        prompts: Sequence[str],
        *,
        images: Sequence[Image] | None = None,
        max_new_tokens: int = 64,
        stop: Sequence[str] = (),
        num_beams: int = 1,
        batch_size: int = 16,
    ) -> list[str]:
        """Greedy (``num_beams=1``) or beam-search continuations of ``prompts``.

        Args:
            prompts: the prompts (the continuation excludes them).
            images: not supported by a text-only model; must be ``None``.
            max_new_tokens: generate at most this many tokens per prompt.
            stop: each continuation is cut before the first of these strings (generation of a
                batch stops early once every row has produced one).
            num_beams: 1 for greedy decoding, more for beam search.
            batch_size: prompts per forward pass.

        Returns:
            One continuation per prompt, in order.

        Example:
            >>> handle.generate(["1+1="], max_new_tokens=2, stop=["\\n"])   # doctest: +SKIP
        """
        if images is not None:
            raise TaskError("HFCausalLMHandle is text-only: generate() got images; use a VLM adapter")
        check_generate_args(batch_size, max_new_tokens, num_beams)
        encoded = self._encode_prompts(prompts, max_new_tokens)
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        out: list[str] = [""] * len(encoded)
        if max_new_tokens == 0:
            return out
        bar = progress(len(order), "generate")
        self.model.eval()
        for idx in batches(order, batch_size):
            ids, mask = self._left_pad([encoded[i] for i in idx])
            with torch.inference_mode():
                gen = self.model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    num_beams=num_beams,
                    pad_token_id=self.pad_id,
                    **stop_kwargs(stop, self.tokenizer),
                )
            texts = self.tokenizer.batch_decode(gen[:, ids.shape[1] :], skip_special_tokens=True)
            for i, text in zip(idx, texts):
                out[i] = cut_at_stop(text, stop)
            bar.update(len(idx))
        bar.close()
        return out

    # ------------------------------------------------------------------------------------------
    # log-likelihood
    # ------------------------------------------------------------------------------------------

    def _split_request(self, context: str, continuation: str) -> tuple[list[int], int]:
        """Token ids of context+continuation and how many of them are context.

        The pair is tokenized as a whole (so the continuation's tokens are those the model would
        see) and the context alone; the context is the longest common prefix of the two, so a
        token that merges across the boundary counts as continuation.
        """
        whole = self.tokenizer(context + continuation)["input_ids"]
        ctx = self.tokenizer(context)["input_ids"]
        n_ctx = common_prefix(ctx, whole)
        if n_ctx == 0:  # nothing to condition on (no BOS, empty context): start from EOS
            start = self.tokenizer.bos_token_id
            start = self.tokenizer.eos_token_id if start is None else start
            whole, n_ctx = [start, *whole], 1
        if n_ctx == len(whole):
            raise TaskError(
                f"loglikelihood(): continuation {continuation!r} adds no token to context "
                f"{context[-40:]!r}; give a non-empty continuation"
            )
        excess = len(whole) - self.max_length
        if excess > 0:
            if excess >= n_ctx:
                raise TaskError(
                    f"loglikelihood(): continuation {continuation[:40]!r}... is longer than "
                    f"max_length={self.max_length} tokens; raise max_length or shorten it"
                )
            whole, n_ctx = whole[excess:], n_ctx - excess
        return whole, n_ctx

    def loglikelihood(
        self,
        requests: Sequence[tuple[str, str]],
        *,
        images: Sequence[Image] | None = None,
        batch_size: int = 16,
    ) -> list[float]:
        """Sum of log-probabilities of each continuation given its context.

        Args:
            requests: ``(context, continuation)`` pairs; put the separating space at the start
                of the continuation (``("Q: ... A:", " yes")``).
            images: not supported by a text-only model; must be ``None``.
            batch_size: requests per forward pass.

        Returns:
            One float (natural log) per request, in order.

        Example:
            >>> handle.loglikelihood([("The sky is", " blue"), ("The sky is", " green")])  # doctest: +SKIP
        """
        if images is not None:
            raise TaskError("HFCausalLMHandle is text-only: loglikelihood() got images")
        if batch_size < 1:
            raise TaskError(f"loglikelihood(): batch_size={batch_size}; use batch_size >= 1")
        split = [self._split_request(c, x) for c, x in requests]
        order = sorted(range(len(split)), key=lambda i: -len(split[i][0]))
        out = [0.0] * len(split)
        bar = progress(len(order), "loglikelihood")
        self.model.eval()
        for idx in batches(order, batch_size):
            rows = [split[i][0][:-1] for i in idx]  # the last token is only a target
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for j, r in enumerate(rows):
                ids[j, : len(r)] = torch.tensor(r, dtype=torch.long)
                mask[j, : len(r)] = 1
            with torch.inference_mode():
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
                if logits.dtype.itemsize < 4:  # fp16/bf16: sum log-probs in float32
                    logits = logits.float()
                logprobs = torch.log_softmax(logits, dim=-1).cpu()
            for j, i in enumerate(idx):
                whole, n_ctx = split[i]
                targets = torch.tensor(whole[n_ctx:], dtype=torch.long)
                # position p predicts token p+1: continuation token k sits at position n_ctx-1+k
                pos = torch.arange(n_ctx - 1, len(whole) - 1)
                out[i] = float(logprobs[j, pos, targets].sum())
            bar.update(len(idx))
        bar.close()
        return out

    def classify(self, images: Sequence[Image], class_prompts: Sequence[Sequence[str]]) -> list[int]:
        """Not supported: a causal LM is not a CLIP model."""
        raise TaskError("HFCausalLMHandle cannot classify images; use a CLIP model (open-clip adapter)")
