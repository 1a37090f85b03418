"""Inputs and mergekit 0.1.5 goldens for ``tokenizer_source: union`` and the ``tokenizer:`` block.

    .venv/bin/python tests/golden/mergekit_tokenizer/make_golden.py --mergekit-python /tmp/mkvenv/bin/python

:func:`make_inputs` writes three tiny float32 Llamas whose word-level tokenizers share some
tokens (at different ids) and differ in others (one has an added special token); weights come
from fixed seeds, so tests/test_tokenizer_merge.py regenerates the same inputs (it checks their
digest against ``mergekit/inputs.sha256``). Only mergekit's outputs are committed:
``mergekit/<name>.safetensors`` (tensors) and ``mergekit/<name>.vocab.json`` (its output
tokenizer's token -> id), per recipe of :data:`RECIPES`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
SPECIALS = ["<unk>", "<s>", "</s>"]
#: model -> (plain words after the specials, added special tokens, weight seed)
VOCABS: dict[str, tuple[list[str], list[str], int]] = {
    "base": (["the", "cat", "dog", "sat", "on", "mat"], [], 200),
    "a": (["dog", "the", "cat", "ran", "fast", "sun"], ["<|im|>"], 201),
    "b": (["the", "sat", "bird", "dog", "flew", "mat", "sky", "sun"], [], 202),
}

RECIPES: dict[str, dict[str, Any]] = {
    # the case: two models, no base; shared tokens mix, a token only one has keeps its row
    "union_two": {"merge_method": "linear", "dtype": "float32", "tokenizer_source": "union",
                  "models": [{"model": "a", "parameters": {"weight": 0.4}},
                             {"model": "b", "parameters": {"weight": 0.6}}]},
    # every rule of mergekit's union: tokens in all three, in base + one (base's row fills), in
    # a + b only (their mean fills base), in one model only (its row fills the others)
    "union_linear": {"merge_method": "linear", "base_model": "base", "dtype": "float32",
                     "tokenizer_source": "union",
                     "models": [{"model": "base", "parameters": {"weight": 0.2}},
                                {"model": "a", "parameters": {"weight": 0.3}},
                                {"model": "b", "parameters": {"weight": 0.5}}]},
    # the tokenizer block: overrides (zero, another model's token, a forced source), a new token,
    # padding to a multiple
    "tokenizer_block": {"merge_method": "task_arithmetic", "base_model": "base", "dtype": "float32",
                        "tokenizer": {"source": "union", "pad_to_multiple_of": 8, "tokens": {
                            "sky": {"source": {"kind": "zero"}},
                            "<new>": {"source": {"kind": "model_token", "model": "a", "token": "cat"}},
                            "the": {"source": "b", "force": True}}},
                        "models": [{"model": "a", "parameters": {"weight": 0.6}},
                                   {"model": "b", "parameters": {"weight": 0.4}}]},
}


def _tokenizer(words: list[str], added: list[str]) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    if added:
        fast.add_special_tokens({"additional_special_tokens": added})
    return fast


def make_inputs(root: Path) -> Path:
    """Write the three models under ``root`` (deterministic); return ``root``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    for name, (words, added, seed) in VOCABS.items():
        tok = _tokenizer(words, added)
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                          tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.02)
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    return root


def inputs_digest(root: Path) -> str:
    """SHA-256 over the inputs' weights (what the goldens depend on)."""
    h = hashlib.sha256()
    for name in sorted(VOCABS):
        h.update((root / name / "model.safetensors").read_bytes())
    return h.hexdigest()


def absolute(recipe: dict[str, Any], inputs: Path) -> dict[str, Any]:
    """``recipe`` with every model name (tokens' sources too) made a path under ``inputs``."""
    r = yaml.safe_load(yaml.safe_dump(recipe))
    for m in r["models"]:
        m["model"] = str(inputs / m["model"])
    if "base_model" in r:
        r["base_model"] = str(inputs / r["base_model"])
    for cfg in ((r.get("tokenizer") or {}).get("tokens") or {}).values():
        src = cfg["source"]
        if isinstance(src, str):
            cfg["source"] = str(inputs / src)
        elif "model" in src:
            src["model"] = str(inputs / src["model"])
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mergekit-python", required=True, help="a python with mergekit 0.1.5")
    ap.add_argument("--only", nargs="*", default=None, help="recipes to (re)generate (default: all)")
    args = ap.parse_args()
    from safetensors.torch import load_file, save_file

    out_dir = HERE / "mergekit"
    out_dir.mkdir(exist_ok=True)
    mk = Path(args.mergekit_python).parent / "mergekit-yaml"
    with tempfile.TemporaryDirectory() as inputs:
        make_inputs(Path(inputs))
        (out_dir / "inputs.sha256").write_text(inputs_digest(Path(inputs)) + "\n")
        for name, recipe in RECIPES.items():
            if args.only and name not in args.only:
                continue
            with tempfile.TemporaryDirectory() as tmp:
                cfg = Path(tmp) / "r.yaml"
                cfg.write_text(yaml.safe_dump(absolute(recipe, Path(inputs)), sort_keys=False))
                subprocess.run([str(mk), str(cfg), str(Path(tmp) / "out")], check=True)
                tensors = {}
                for f in sorted((Path(tmp) / "out").glob("*.safetensors")):
                    tensors.update(load_file(str(f)))
                save_file(tensors, str(out_dir / f"{name}.safetensors"))
                code = ("import json,sys; from transformers import AutoTokenizer; "
                        "print(json.dumps(AutoTokenizer.from_pretrained(sys.argv[1]).get_vocab(), sort_keys=True))")
                vocab = subprocess.run([args.mergekit_python, "-c", code, str(Path(tmp) / "out")], check=True,
                                       capture_output=True, text=True).stdout
                (out_dir / f"{name}.vocab.json").write_text(json.dumps(json.loads(vocab), indent=0) + "\n")
            print(f"{name}: {len(tensors)} tensors")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parents[2]))
    main()
