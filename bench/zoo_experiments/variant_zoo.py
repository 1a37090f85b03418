"""Copy a zoo and replace one parent by a variant fine-tune (same base), for merge_search.py.

Usage::

    python bench/zoo_experiments/variant_zoo.py ZOO OUT VARIANT   # VARIANT from ja_variants.VARIANTS
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import replace
from pathlib import Path

import torch
from evomm_zoo.build import read_zoo_json, score_text_models
from evomm_zoo.recipe import text_recipe
from evomm_zoo.text import finetune

torch.set_num_threads(1)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from ja_variants import VARIANTS

    zoo, out, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    seed = read_zoo_json(zoo)["seed"]
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(zoo, out)
    which = "math" if name.startswith("math:") else "ja"
    cfg = replace(getattr(text_recipe("demo", seed), which), **VARIANTS[name])
    shutil.rmtree(out / "models" / which)
    finetune(zoo / "models" / "base", out / "models" / which, cfg, progress=False)
    print(name, seed, score_text_models(out, models=(which,))[which])


if __name__ == "__main__":
    main()
