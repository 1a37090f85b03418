"""A :class:`~evomm.handle.ModelHandle` for LLaVA-style VLMs: (image, prompt) -> text.

Tasks hand over plain questions and PIL images; the handle formats each prompt, runs the model's
processor (which expands the image token into the image's patch tokens and makes pixel values)
and decodes greedy or beam-search continuations, in left-padded batches.

How a prompt becomes the model's input text (first rule that applies):

1. the prompt already contains the processor's image token (``<image>``): it is used verbatim
   (the toy zoo's VLM is queried this way: ``"Q: <image>What colour is it? A: "``);
2. ``use_chat_template`` is on and the processor has a chat template: one user message holding
   the image and the prompt, with the generation prompt appended (real LLaVA checkpoints);
3. otherwise ``prompt_template`` (default :data:`DEFAULT_PROMPT_TEMPLATE`, LLaVA-1.5's
   ``"USER: <image>\\n{prompt} ASSISTANT:"``), with ``{image}`` replaced by the image token, or by
   nothing for a text-only request.

Example::

    from evomm_llava.handle import LlavaHandle
    handle = LlavaHandle(model, processor)
    handle.generate(["What colour is it?"], images=[img], max_new_tokens=8, stop=["\\n"])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from evomm_hf.handle_utils import (
    batches,
    check_generate_args,
    common_prefix,
    cut_at_stop,
    progress,
    stop_kwargs,
)

from evomm.errors import TaskError

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

#: The fallback prompt format when the processor has no chat template (LLaVA-1.5 style).
DEFAULT_PROMPT_TEMPLATE = "USER: {image}\n{prompt} ASSISTANT:"

class LlavaHandle:
    """Lets tasks query a LLaVA-family VLM with images and prompts.

    Args:
        model: a ``LlavaForConditionalGeneration`` / ``LlavaNextForConditionalGeneration``.
        processor: its processor (``AutoProcessor``: image processor + tokenizer).
        device: where inputs go; ``None``: the device of the model's parameters.
        prompt_template: the fallback prompt format (rule 3 of the module docstring); must
            contain ``{prompt}`` and may contain ``{image}``.
        use_chat_template: use the processor's chat template when it has one (rule 2).

    Example:
        >>> handle = LlavaHandle(model, processor)                                   # doctest: +SKIP
        >>> handle.generate(["What shape is it?"], images=[img], max_new_tokens=4)   # doctest: +SKIP
        [' circle']
    """

    capabilities: frozenset[str] = frozenset({"generate", "loglikelihood", "image"})

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        device: str | torch.device | None = None,
        prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
        use_chat_template: bool = True,
    ) -> None:
        import torch
        if "{prompt}" not in prompt_template:
            raise TaskError(f"LlavaHandle: prompt_template {prompt_template!r} has no '{{prompt}}' field")
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.prompt_template = prompt_template
        self.use_chat_template = use_chat_template
        self.image_token = str(getattr(processor, "image_token", None) or "<image>")
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.tokenizer.eos_token_id
        if self.pad_id is None:
            raise TaskError("LlavaHandle: the processor's tokenizer has neither a pad nor an EOS token")

    # ------------------------------------------------------------------ prompt formatting
    def format_prompt(self, prompt: str, with_image: bool) -> str:
        """The model's input text for ``prompt`` (see the module docstring for the rules).

        Example:
            >>> handle.format_prompt("What colour is it?", True)       # doctest: +SKIP
            'USER: <image>\\nWhat colour is it? ASSISTANT:'
        """
        if self.image_token in prompt:
            if not with_image:
                raise TaskError(
                    f"prompt {prompt[:60]!r} contains {self.image_token!r} but no image was given"
                )
            return prompt
        if self.use_chat_template and getattr(self.processor, "chat_template", None):
            content: list[dict[str, str]] = [{"type": "image"}] if with_image else []
            content.append({"type": "text", "text": prompt})
            messages = [{"role": "user", "content": content}]
            return str(
                self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            )
        return self.prompt_template.format(prompt=prompt, image=self.image_token if with_image else "")

    def _encode(
        self, texts: list[str], images: list[Image] | None, padding_side: str
    ) -> dict[str, torch.Tensor]:
        import torch
        old = self.tokenizer.padding_side
        self.tokenizer.padding_side = padding_side
        try:
            if images is None:
                enc = self.tokenizer(texts, padding=True, return_tensors="pt")
            else:
                enc = self.processor(text=texts, images=images, padding=True, return_tensors="pt")
        finally:
            self.tokenizer.padding_side = old
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in enc.items()}

    @staticmethod
    def _check_images(n: int, images: Sequence[Image] | None, what: str) -> None:
        if images is not None and len(images) != n:
            raise TaskError(f"{what}: got {n} requests but {len(images)} images; give one image per request")

    # ------------------------------------------------------------------ generation
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
        """Greedy (or beam) answers to ``prompts``, one image per prompt (or none: text only).

        Args:
            prompts: questions or instructions (formatted as the module docstring says).
            images: one PIL image per prompt, or ``None`` for text-only prompts.
            max_new_tokens: at most this many new tokens per answer.
            stop: each answer is cut before the first of these strings.
            num_beams: 1 for greedy decoding.
            batch_size: prompts per forward pass.

        Returns:
            One answer per prompt, in order (prompt excluded, special tokens removed).
        """
        import torch
        self._check_images(len(prompts), images, "generate()")
        check_generate_args(batch_size, max_new_tokens, num_beams)
        texts = [self.format_prompt(p, images is not None) for p in prompts]
        out = [""] * len(texts)
        if max_new_tokens == 0 or not texts:
            return out
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        stop_args = stop_kwargs(stop, self.tokenizer)
        bar = progress(len(order), "vlm generate")
        self.model.eval()
        for idx in batches(order, batch_size):
            enc = self._encode(
                [texts[i] for i in idx], [images[i] for i in idx] if images is not None else None, "left"
            )
            with torch.inference_mode():
                gen = self.model.generate(
                    **enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=num_beams,
                    pad_token_id=self.pad_id, **stop_args,
                )  # fmt: skip
            width = enc["input_ids"].shape[1]
            for i, text in zip(idx, self.tokenizer.batch_decode(gen[:, width:], skip_special_tokens=True)):
                out[i] = cut_at_stop(text, stop)
            bar.update(len(idx))
        bar.close()
        return out

    # ------------------------------------------------------------------ log-likelihood
    def loglikelihood(
        self,
        requests: Sequence[tuple[str, str]],
        *,
        images: Sequence[Image] | None = None,
        batch_size: int = 16,
    ) -> list[float]:
        """Sum of log-probabilities of each continuation given its (formatted) context and image.

        The context is formatted like a generation prompt; the continuation follows it directly.
        Continuation tokens are those after the longest common prefix of the tokenized context
        and the tokenized whole.

        Args:
            requests: ``(context, continuation)`` pairs.
            images: one image per request, or ``None`` (text only).
            batch_size: requests per forward pass.

        Returns:
            One natural-log probability sum per request.
        """
        import torch
        self._check_images(len(requests), images, "loglikelihood()")
        if batch_size < 1:
            raise TaskError(f"loglikelihood(): batch_size={batch_size}; use batch_size >= 1")
        out = [0.0] * len(requests)
        bar = progress(len(requests), "vlm loglikelihood")
        self.model.eval()
        for idx in batches(list(range(len(requests))), batch_size):
            ctxs = [self.format_prompt(requests[i][0], images is not None) for i in idx]
            wholes = [c + requests[i][1] for c, i in zip(ctxs, idx)]
            imgs = [images[i] for i in idx] if images is not None else None
            enc = self._encode(wholes, imgs, "right")
            ctx_ids = self._encode(ctxs, imgs, "right")
            with torch.inference_mode():
                logits = self.model(**enc).logits.float()
            logprobs = torch.log_softmax(logits, dim=-1)
            for j, i in enumerate(idx):
                n = int(enc["attention_mask"][j].sum())
                whole = enc["input_ids"][j, :n].tolist()
                m = int(ctx_ids["attention_mask"][j].sum())
                n_ctx = common_prefix(ctx_ids["input_ids"][j, :m].tolist(), whole)
                if n_ctx == n:
                    raise TaskError(
                        f"loglikelihood(): continuation {requests[i][1]!r} adds no token to its context"
                    )
                n_ctx = max(n_ctx, 1)
                pos = torch.arange(n_ctx - 1, n - 1, device=logprobs.device)
                targets = torch.tensor(whole[n_ctx:], dtype=torch.long, device=logprobs.device)
                out[i] = float(logprobs[j, pos, targets].sum())
            bar.update(len(idx))
        bar.close()
        return out

    def classify(self, images: Sequence[Image], class_prompts: Sequence[Sequence[str]]) -> list[int]:
        """Not supported: use a CLIP model (``open-clip`` adapter) for zero-shot classification."""
        raise TaskError("LlavaHandle cannot classify images zero-shot; use the open-clip adapter's handle")
