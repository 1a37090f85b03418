"""The DFS child's config, kept apart from :mod:`evomm_dfs.model` so that registering it is cheap.

Importing this module registers :class:`DFSConfig` with ``AutoConfig`` (transformers'
configuration code, not its modelling code: torch._dynamo and friends cost seconds and every
``evomm`` command loads the plugins). :func:`evomm_dfs.register` imports it. The
first time a :class:`DFSConfig` is created, which ``AutoModelForCausalLM.from_pretrained`` /
``from_config`` do before they look the model class up, :mod:`evomm_dfs.model` is imported and
registers :class:`~evomm_dfs.model.DFSForCausalLM` with ``AutoModelForCausalLM``.
"""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

MODEL_TYPE = "evomm_dfs"


class DFSConfig(PreTrainedConfig):
    """Config of a DFS child.

    Attributes:
        base_config: A's config, with ``num_hidden_layers`` = the number of *stored* (distinct)
            layers.
        path_layers: for each path step, the index of the stored layer it runs.
        path_scales: for each path step, the factor on the hidden state entering it.
        path_sources: for each stored layer, where it came from (``"a:3"``, ``"b:0"``); provenance.
        num_hidden_layers: the path length (what KV caches are sized by).
    """

    model_type = MODEL_TYPE
    sub_configs_defaults = {"base_config": SubConfigSpec(config_class=AutoConfig, model_type="llama")}

    base_config: dict | PreTrainedConfig | None = None
    path_layers: list[int] | None = None
    path_scales: list[float] | None = None
    path_sources: list[str] | None = None
    num_hidden_layers: int = 0
    vocab_size: int = 0
    hidden_size: int = 0
    max_position_embeddings: int = 0
    tie_word_embeddings: bool = False
    use_cache: bool = True

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        _register_model_class()
        base = self.base_config
        self.path_layers = list(self.path_layers or [])
        self.path_scales = [float(s) for s in (self.path_scales or [1.0] * len(self.path_layers))]
        self.num_hidden_layers = len(self.path_layers)
        self.vocab_size = base.vocab_size
        self.hidden_size = base.hidden_size
        self.max_position_embeddings = int(getattr(base, "max_position_embeddings", 0) or 0)
        self.tie_word_embeddings = bool(getattr(base, "tie_word_embeddings", False))
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if getattr(self, key, None) is None and getattr(base, key, None) is not None:
                setattr(self, key, getattr(base, key))


def _register_model_class() -> None:
    """Import :mod:`evomm_dfs.model`, which registers the model class with the Auto classes."""
    from evomm_dfs import model  # noqa: F401  (registers at import; cached after the first call)


def register_config() -> None:
    """Make ``AutoConfig`` know ``model_type = "evomm_dfs"`` (idempotent, cheap)."""
    AutoConfig.register(MODEL_TYPE, DFSConfig, exist_ok=True)


register_config()
