"""``evomm convert FILE.gguf --out DIR``: a GGUF file as an ordinary Hugging Face checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

DTYPES = ("float32", "bfloat16", "float16")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a GGUF file (llama.cpp) into a Hugging Face checkpoint",
        description="Dequantise FILE.gguf with transformers' GGUF loader and write config, safetensors, "
        "tokenizer (with its chat template) and generation config to --out. A recipe may also name the "
        ".gguf file directly as a parent: evomm then keeps a float32 copy in $EVOMM_CACHE/gguf "
        "(see docs/merging.md).",
    )
    p.add_argument("gguf", metavar="FILE.gguf", help="the GGUF file (or a directory holding one)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (must be new or empty)")
    p.add_argument("--dtype", default="float32", choices=DTYPES,
                   help="dtype of the written weights (default float32: the exact dequantised values)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier evomm output in --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from evomm.gguf import convert_gguf

    out = convert_gguf(Path(args.gguf), Path(args.out), dtype=args.dtype, overwrite=args.overwrite)
    print(f"converted {args.gguf} ({args.dtype}) into {out}")
    return 0
