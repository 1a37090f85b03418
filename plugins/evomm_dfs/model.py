"""The DFS child as a transformers causal LM: a path of decoder layers run in order, with scalings.

:class:`DFSForCausalLM` holds an ordinary base model of A's architecture (``self.model``: the
embeddings, the *distinct* decoder layers the path uses, the final norm and the rotary embedding)
and A's head (``self.lm_head``), so its weights keep evomm's canonical names. Its forward runs
``self.model.layers[config.path_layers[k]]`` for ``k = 0 .. len(path)-1``, multiplying the hidden
state entering step ``k`` by ``config.path_scales[k]``.

* In memory (:meth:`DFSForCausalLM.from_parents`) the layers *are* the parents' own modules: a
  layer used twice on the path is one module, and no parameter is copied.
* Each path position has its own KV-cache slot: the layer's attention module indexes the cache by
  its own ``layer_idx``, which is the same for both uses of a repeated layer, so every call goes
  through a :class:`_CacheSlot` view that redirects ``update`` to the path position.
* Saved with ``save_pretrained``, it is a small checkpoint (only the distinct layers) that
  ``AutoModelForCausalLM.from_pretrained`` loads after ``import evomm_dfs`` (which registers
  ``model_type = "evomm_dfs"``); no ``trust_remote_code`` is involved.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    GenerationMixin,
    PreTrainedModel,
)
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import CausalLMOutputWithPast

from evomm.errors import IncompatibleModelsError

from .config import MODEL_TYPE, DFSConfig
from .path import DFSPath

#: The keyword transformers' decoder layers, ``create_causal_mask`` and model outputs use for the
#: KV cache: ``cache`` since transformers 5.2x (``past_key_values`` deprecated), before that
#: ``past_key_values``. Read from ``create_causal_mask``'s signature so both generations work.
CACHE_KW = "cache" if "cache" in inspect.signature(create_causal_mask).parameters else "past_key_values"


class _CacheSlot:
    """A view of a Cache that stores every ``update`` under one path position.

    The decoder layer's attention calls ``cache.update(k, v, self.layer_idx)``; a layer that
    appears twice on the path has one ``layer_idx``, so we redirect by path position instead.
    Everything else is read from the underlying cache.
    """

    def __init__(self, cache: Cache, slot: int) -> None:
        self._cache = cache
        self._slot = slot

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return self._cache.update(key_states, value_states, self._slot, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cache, name)


class DFSForCausalLM(PreTrainedModel, GenerationMixin):
    """A causal LM that runs a layer path (see the module docstring).

    Example:
        >>> import evomm_dfs; evomm_dfs.register()  # the Auto classes learn evomm_dfs  # doctest: +SKIP
        >>> model = AutoModelForCausalLM.from_pretrained("out/dfs-child")  # doctest: +SKIP
    """

    config_class = DFSConfig
    base_model_prefix = "model"
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    _skip_keys_device_placement = ["past_key_values", "cache"]

    def __init__(self, config: DFSConfig) -> None:
        super().__init__(config)
        self.model = AutoModel.from_config(config.base_config)
        self.lm_head = nn.Linear(config.base_config.hidden_size, config.base_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    # ---------------------------------------------------------------------------------------------
    @classmethod
    def from_parents(cls, model_a: nn.Module, model_b: nn.Module, path: DFSPath) -> DFSForCausalLM:
        """Build the child *around* the parents' modules: nothing is copied.

        Args:
            model_a: A (a transformers causal LM with ``.model.{embed_tokens,layers,norm,rotary_emb}``
                and ``.lm_head``): supplies embeddings, norm, head and rotary embedding.
            model_b: B, same hidden size.
            path: the layer path.

        Returns:
            A :class:`DFSForCausalLM` whose parameters are the parents' tensors.

        Raises:
            IncompatibleModelsError: hidden sizes differ or a path step names a missing layer.
        """
        parents = (model_a, model_b)
        check_parents(model_a, model_b, path)
        stored = path.unique_layers()
        index = {pl: k for k, pl in enumerate(stored)}
        base = copy.deepcopy(model_a.config)
        base.num_hidden_layers = len(stored)
        if getattr(base, "layer_types", None) is not None:
            base.layer_types = [base.layer_types[0]] * len(stored)
        config = DFSConfig(
            base_config=base,
            path_layers=[index[(s.parent, s.layer)] for s in path.steps],
            path_scales=[s.scale for s in path.steps],
            path_sources=[f"{path.parents[p]}:{layer}" for p, layer in stored],
        )
        config._attn_implementation = model_a.config._attn_implementation
        with torch.device("meta"):
            child = cls(config)
        inner_a = model_a.model
        child.model.embed_tokens = inner_a.embed_tokens
        child.model.norm = inner_a.norm
        child.model.rotary_emb = inner_a.rotary_emb
        child.model.layers = nn.ModuleList(parents[p].model.layers[layer] for p, layer in stored)
        child.lm_head = model_a.lm_head
        first = next(model_a.parameters())
        child.to(dtype=first.dtype)  # a no-op on the parents' tensors (same dtype); sets child.dtype
        return child

    # ---------------------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        cache: Cache | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Run the path. Same arguments and outputs as a transformers causal LM; the KV cache may
        come as ``cache`` (transformers >= 5.2x) or ``past_key_values`` (earlier releases)."""
        inner = self.model
        if cache is not None and past_key_values is not None and cache is not past_key_values:
            raise ValueError("give the KV cache as `cache` or as `past_key_values`, not both")
        past_key_values = cache if cache is not None else past_key_values
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = inner.embed_tokens(input_ids)
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.config)
        if position_ids is None:
            seen = past_key_values.get_seq_length() if past_key_values is not None else 0
            position_ids = (torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device) + seen).unsqueeze(0)
        mask = create_causal_mask(
            config=self.config.base_config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            **{CACHE_KW: past_key_values},
        )
        hidden = inputs_embeds
        position_embeddings = inner.rotary_emb(hidden, position_ids=position_ids)
        kwargs = {k: v for k, v in kwargs.items() if k not in ("return_dict", "output_attentions",
                                                                 "output_hidden_states", "cache_position")}
        for k, (idx, scale) in enumerate(zip(self.config.path_layers, self.config.path_scales)):
            if scale != 1.0:
                hidden = hidden * scale
            hidden = inner.layers[idx](
                hidden,
                attention_mask=mask,
                position_embeddings=position_embeddings,
                position_ids=position_ids,
                use_cache=use_cache,
                **{CACHE_KW: None if past_key_values is None else _CacheSlot(past_key_values, k)},
                **kwargs,
            )
        hidden = inner.norm(hidden)
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden[:, keep, :])
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{CACHE_KW: past_key_values})

    def _init_weights(self, module: nn.Module) -> None:
        # Weights always come from the parents or a checkpoint; delegate to the base family's init
        # so a fresh model (tests, from_config) is still initialised the usual way.
        init = getattr(self.model, "_init_weights", None)
        if init is not None and not isinstance(module, DFSForCausalLM):
            init(module)


def check_parents(model_a: nn.Module, model_b: nn.Module, path: DFSPath) -> None:
    """Raise :class:`IncompatibleModelsError` when A and B cannot share a path.

    Args:
        model_a, model_b: the parents (transformers causal LMs).
        path: the path to run.
    """
    ha, hb = model_a.config.hidden_size, model_b.config.hidden_size
    if ha != hb:
        raise IncompatibleModelsError(
            f"dfs: parents have different hidden sizes ({path.parents[0]}: {ha}, {path.parents[1]}: "
            f"{hb}); a layer path needs the same hidden size in both"
        )
    counts = (len(model_a.model.layers), len(model_b.model.layers))
    for k, s in enumerate(path.steps):
        if s.layer >= counts[s.parent]:
            raise IncompatibleModelsError(
                f"dfs: path step {k} uses layer {s.layer} of {path.parents[s.parent]!r}, which has only "
                f"{counts[s.parent]} layers"
            )


def register_auto_classes() -> None:
    """Make ``AutoConfig`` / ``AutoModelForCausalLM`` know ``model_type = "evomm_dfs"`` (idempotent)."""
    AutoConfig.register(MODEL_TYPE, DFSConfig, exist_ok=True)
    AutoModelForCausalLM.register(DFSConfig, DFSForCausalLM, exist_ok=True)


def unique_storage(modules: Sequence[nn.Module]) -> int:
    """Bytes of distinct parameter storage across ``modules`` (shared tensors counted once)."""
    seen: dict[int, int] = {}
    for m in modules:
        for p in m.parameters():
            seen[p.data_ptr()] = p.numel() * p.element_size()
    return sum(seen.values())


register_auto_classes()  # see evomm_dfs.config: creating a DFSConfig imports this module
