"""The toy zoo: tiny, locally built parents in which the EvoLLM-JP / EvoVLM-JP effect happens.

A built-in plugin (entry point ``evomm_zoo``): it adds the ``evomm zoo`` (:mod:`evomm_zoo.cli`)
and ``evomm demo`` (:mod:`evomm_zoo.demo`) commands through ``evomm_register_commands``; its
tasks are the ``evomm_tasks_toy`` plugin's.

No weights can be downloaded here and CI has no GPU, so evomm builds its own zoo, deterministically,
from nothing (see ``docs/toy-zoo.md`` for the design, recipes and numbers):

* a character-level tokenizer (``<zoo>/tokenizer``),
* ``base``: a 3-layer, 64-wide Llama pretrained on templated English/Japanese text and equations,
* ``ja``: base fine-tuned to turn Japanese word problems into their equation ("答: 5+4"),
* ``math``: base fine-tuned to finish English problems and bare equations ("5+4=9"),
* the vision half (VLM, CLIP models; :mod:`evomm_zoo.vlm`, :mod:`evomm_zoo.clip`),
* task data ``<zoo>/data/<task>/{train,dev,test}.jsonl`` (``ja_skill``, ``en_math``, ``ja_math``...).

Public API:
    :func:`default_zoo_dir` ``(scale="demo", seed=0) -> Path``: the cache directory.
    :func:`build_zoo` ``(scale="demo", out=None, seed=0, force=False, parts=("text", "vision"),
    progress=True) -> Path``: build (or reuse) a zoo.
    :func:`ensure_zoo` ``(scale="demo", seed=0) -> Path``: the cached zoo, built when missing.
    :func:`rebase_zoo_paths` ``(recipe_data, zoo) -> recipe_data``: point a recipe that names the
    zoo as ``zoo/...`` (configs/*.yaml) at another zoo directory.
    :func:`evomm_zoo.text.train_base` ``(tokenizer, out, cfg, arch=None, progress=True)
    -> (model, log)``: pretrain a base LM (the vision half builds its VLM's language model from
    ``<zoo>/models/base``, or trains its own with :func:`evomm_zoo.text.train_lm`).
    :func:`evomm_zoo.tokenizer.build_tokenizer` ``() -> PreTrainedTokenizerFast``: the
    character-level tokenizer (has ``<image>``).
    :mod:`evomm_zoo.scoring`: strict / loose scoring of the text tasks.
    :mod:`evomm_zoo.lexicon`: the bilingual words (colours, shapes, names) of the zoo's world.

The vision builder is looked up at ``evomm_zoo.build.VISION_BUILDER``
(``"evomm_zoo.vision:build_vision"``), called as ``build_vision(zoo_dir, scale, seed, progress)``
after the text half is written, and returns a fragment merged into ``zoo.json``.

Example:
    >>> from evomm_zoo import default_zoo_dir
    >>> default_zoo_dir("micro", seed=1).name
    'micro-v3-s1'
"""

from evomm import hookimpl
from evomm_zoo.build import build_zoo, default_zoo_dir, ensure_zoo, read_zoo_json
from evomm_zoo.paths import rebase_zoo_paths
from evomm_zoo.recipe import RECIPE_VERSION

__all__ = ["RECIPE_VERSION", "build_zoo", "default_zoo_dir", "ensure_zoo", "read_zoo_json", "rebase_zoo_paths"]


@hookimpl
def evomm_register_commands(registry):  # type: ignore[no-untyped-def]
    from evomm.cli.command import Command
    from evomm_zoo import cli, demo

    registry.add(Command("demo", demo.add_parser))
    registry.add(Command("zoo", cli.add_parser))
