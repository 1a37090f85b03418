"""A :class:`~evomm.handle.ModelHandle` for open_clip models: zero-shot image classification.

:meth:`OpenClipHandle.classify` follows CLIP's zero-shot recipe (Radford et al. 2021, and
open_clip's ``zero_shot_classifier.py``): each class is described by one or more prompts
("a photo of a {}."), whose L2-normalised text embeddings are averaged and normalised again;
each image's normalised embedding picks the class with the highest cosine similarity.

Example::

    handle = OpenClipHandle(model, preprocess, tokenizer)
    handle.classify([img], [["a circle.", "a drawn circle."], ["a square."]])   # -> [0]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from evomm.errors import TaskError

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image


class OpenClipHandle:
    """Lets tasks classify images zero-shot with an open_clip model.

    Args:
        model: an open_clip ``CLIP`` / ``CustomTextCLIP``.
        preprocess: its evaluation image transform (PIL image -> tensor).
        tokenizer: its tokenizer (``open_clip.get_tokenizer``), list of str -> token ids.
        device: where inputs go; ``None``: the device of the model's parameters.
        batch_size: images (and prompts) per forward pass.
    """

    capabilities: frozenset[str] = frozenset({"classify"})

    def __init__(
        self,
        model: Any,
        preprocess: Any,
        tokenizer: Any,
        *,
        device: str | torch.device | None = None,
        batch_size: int = 64,
    ) -> None:
        import torch
        if batch_size < 1:
            raise TaskError(f"OpenClipHandle: batch_size={batch_size}; use batch_size >= 1")
        self.model = model
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.batch_size = batch_size

    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def encode_images(self, images: Sequence[Image]) -> torch.Tensor:
        """L2-normalised image embeddings, shape ``(len(images), embed_dim)``, float32."""
        import torch
        out = []
        self.model.eval()
        for i in range(0, len(images), self.batch_size):
            pix = torch.stack([self.preprocess(im) for im in images[i : i + self.batch_size]])
            with torch.inference_mode():
                feats = self.model.encode_image(pix.to(self.device, self._dtype()))
            out.append(torch.nn.functional.normalize(feats.float(), dim=-1))
        return torch.cat(out) if out else torch.empty(0)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings, shape ``(len(texts), embed_dim)``, float32."""
        import torch
        out = []
        self.model.eval()
        for i in range(0, len(texts), self.batch_size):
            ids = self.tokenizer(list(texts[i : i + self.batch_size]))
            with torch.inference_mode():
                feats = self.model.encode_text(ids.to(self.device))
            out.append(torch.nn.functional.normalize(feats.float(), dim=-1))
        return torch.cat(out) if out else torch.empty(0)

    def class_embeddings(self, class_prompts: Sequence[Sequence[str]]) -> torch.Tensor:
        """One normalised embedding per class: the mean of its prompts' normalised embeddings."""
        import torch
        if not class_prompts or any(len(p) == 0 for p in class_prompts):
            raise TaskError("classify(): every class needs at least one prompt, and there must be a class")
        flat = [p for prompts in class_prompts for p in prompts]
        emb = self.encode_texts(flat)
        sizes = [len(p) for p in class_prompts]
        means = torch.stack([chunk.mean(0) for chunk in torch.split(emb, sizes)])
        return torch.nn.functional.normalize(means, dim=-1)

    def classify(self, images: Sequence[Image], class_prompts: Sequence[Sequence[str]]) -> list[int]:
        """Index of the best class for each image (cosine similarity to the class embeddings).

        Args:
            images: PIL images.
            class_prompts: for each class, one or more prompts describing it.

        Returns:
            One class index per image.

        Example:
            >>> handle.classify([img], [["a red thing."], ["a blue thing."]])   # doctest: +SKIP
            [0]
        """
        classes = self.class_embeddings(class_prompts)
        if not images:
            return []
        scores = self.encode_images(images) @ classes.T
        return [int(i) for i in scores.argmax(dim=-1)]

    def generate(self, prompts: Sequence[str], **_: Any) -> list[str]:
        """Not supported: CLIP does not generate text."""
        raise TaskError("OpenClipHandle cannot generate text; CLIP models only classify (classify())")

    def loglikelihood(self, requests: Sequence[tuple[str, str]], **_: Any) -> list[float]:
        """Not supported: CLIP has no language-model likelihood."""
        raise TaskError("OpenClipHandle has no log-likelihoods; CLIP models only classify (classify())")
