"""GGUF parents: llama.cpp's quantised files, dequantised once into an ordinary checkpoint.

A recipe's ``path:`` may name a ``.gguf`` file, or a directory that holds one ``.gguf`` file and
no ``config.json``. :func:`evomm.hub.resolve_model_dir` then hands adapters the directory
:func:`dequantized_dir` returns: a Hugging Face checkpoint (``config.json``, safetensors,
tokenizer with its chat template, generation config) that transformers' own GGUF loader wrote
from the file, so names, config and tokenizer come from the file exactly as transformers reads
them (the loader undoes llama.cpp's renames and permutations, e.g. Llama's q/k rotary order and
Gemma's ``1 + w`` norms).

The cache. Dequantising takes seconds to minutes, so it happens once per file, not per run or
candidate: the checkpoint is kept in ``$EVOMM_CACHE/gguf/<sha256 of the file, 16 hex>-float32/``
(``$EVOMM_CACHE`` defaults to ``~/.cache/evomm``, the toy zoo's cache too). It is stored in
float32 because transformers dequantises to float32 and only then casts: a float32 copy cast to
the recipe's ``dtype`` at merge time is bit for bit what ``from_pretrained(gguf_file=...,
dtype=recipe dtype)`` gives, whatever the recipe's dtype. The price is disk: 4 bytes a
parameter (0.5 GB for a 135M model, 28 GB for a 7B one); evomm prints the cache directory and
its size on stderr when it writes one, and deleting the directory is always safe. For a smaller
copy, run ``evomm convert FILE.gguf --out DIR --dtype bfloat16`` and name ``DIR`` as the parent.

Example::

    from evomm.gguf import convert_gguf
    convert_gguf(Path("SmolLM2-135M-Instruct.Q4_1.gguf"), Path("smollm2"), dtype="bfloat16")
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from evomm.errors import CheckpointError

#: File suffix of llama.cpp's format.
SUFFIX = ".gguf"
#: Written last into a cache directory: a directory without it is incomplete and ignored.
COMPLETE = "evomm-gguf.json"
#: dtype of the cached checkpoints (see the module docstring).
CACHE_DTYPE = "float32"

_digests: dict[tuple[str, int, int], str] = {}


def cache_root() -> Path:
    """Where dequantised GGUF files are kept: ``$EVOMM_CACHE/gguf`` (``~/.cache/evomm/gguf``).

    Example:
        >>> cache_root().name
        'gguf'
    """
    return Path(os.environ.get("EVOMM_CACHE") or Path.home() / ".cache" / "evomm") / "gguf"


def find_gguf(path: Path) -> Path | None:
    """The GGUF file ``path`` names: ``path`` itself when it ends in ``.gguf``, the one ``.gguf``
    file of a directory without ``config.json``, else ``None`` (an ordinary checkpoint).

    Raises:
        CheckpointError: a directory without ``config.json`` holds several ``.gguf`` files.

    Example:
        >>> find_gguf(Path("model.safetensors")) is None
        True
    """
    if path.suffix.lower() == SUFFIX and not path.is_dir():
        return path
    if not path.is_dir() or (path / "config.json").exists():
        return None
    found = sorted(p for p in path.iterdir() if p.suffix.lower() == SUFFIX and p.is_file())
    if len(found) > 1:
        raise CheckpointError(
            f"{path} holds {len(found)} GGUF files ({', '.join(p.name for p in found)}); "
            "name the one to use as the model's path (e.g. `path: "
            f"{path / found[0].name}`)"
        )
    return found[0] if found else None


def file_digest(path: Path) -> str:
    """SHA-256 of ``path`` in hex, computed once per process for a given size and mtime.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "x.gguf"; _ = p.write_bytes(b"abc")
        >>> file_digest(p)[:12]
        'ba7816bf8f01'
    """
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _digests:
        with path.open("rb") as f:
            _digests[key] = hashlib.file_digest(f, "sha256").hexdigest()
    return _digests[key]


def dequantized_dir(path: Path, *, model: str = "") -> Path:
    """The cached float32 checkpoint of the GGUF file ``path``, written on first use.

    Args:
        path: the ``.gguf`` file.
        model: the recipe's alias of the model, for messages.

    Returns:
        ``cache_root() / "<digest[:16]>-float32"``, complete (see the module docstring).

    Raises:
        CheckpointError: transformers or gguf cannot read the file.
    """
    if not path.is_file():
        raise CheckpointError(f"model {model!r}: GGUF file {path} does not exist; check the recipe's `path:`")
    target = cache_root() / f"{file_digest(path)[:16]}-{CACHE_DTYPE}"
    if (target / COMPLETE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        write_hf_checkpoint(path, tmp, CACHE_DTYPE, model=model)
        (tmp / COMPLETE).write_text(f'{{"source": "{path.name}", "dtype": "{CACHE_DTYPE}"}}\n')
        try:
            tmp.rename(target)
        except OSError:  # another process finished first (or an incomplete leftover is there)
            if not (target / COMPLETE).is_file():
                shutil.rmtree(target, ignore_errors=True)
                tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    size = sum(f.stat().st_size for f in target.iterdir())
    print(f"evomm: dequantised {path.name} to {CACHE_DTYPE} safetensors in {target} ({size / 1e6:.0f} MB; "
          "kept for later runs; delete it to free the space; $EVOMM_CACHE moves the cache)",
          file=sys.stderr)
    return target


def write_hf_checkpoint(path: Path, out_dir: Path, dtype: str, *, model: str = "") -> None:
    """Load the GGUF file ``path`` with transformers (dequantised to ``dtype``) and save model,
    tokenizer and generation config into the existing directory ``out_dir``.

    Raises:
        CheckpointError: ``gguf`` is not installed, or transformers cannot read the file (an
            architecture its GGUF loader does not know, a damaged file).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    who = f"model {model!r}: " if model else ""
    try:
        import gguf  # noqa: F401 - transformers needs it; a clear message beats its ImportError
    except ImportError:
        raise CheckpointError(
            f"{who}reading {path} needs the `gguf` package: pip install gguf accelerate"
        ) from None
    kwargs: dict[str, Any] = {"gguf_file": path.name}
    try:
        # transformers >= 5.25 may keep GGUF blocks packed (with `kernels`): ask for plain tensors
        from transformers import GgufConfig

        model_kwargs = {"quantization_config": GgufConfig(gguf_file=path.name, dequantize=True)}
    except ImportError:  # older transformers always dequantise
        model_kwargs = {}
    try:
        hf_model = AutoModelForCausalLM.from_pretrained(
            path.parent, dtype=getattr(torch, dtype), **kwargs, **model_kwargs
        )
        tokenizer = AutoTokenizer.from_pretrained(path.parent, **kwargs)
    except Exception as exc:  # transformers raises ValueError/OSError/KeyError/RuntimeError variously
        raise CheckpointError(
            f"{who}transformers cannot load the GGUF file {path}: {type(exc).__name__}: {exc}; "
            "evomm reads the architectures transformers' GGUF loader knows (Llama, Mistral, Qwen2/3, "
            "Gemma 2/3, Phi-3, ...); convert other files with llama.cpp's convert scripts"
        ) from exc
    # a GGUF-loaded model remembers its source quantisation; the saved weights are plain tensors
    if hasattr(hf_model.config, "quantization_config"):
        del hf_model.config.quantization_config
    hf_model.hf_quantizer = None
    hf_model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def convert_gguf(path: Path, out: Path, *, dtype: str = "float32", overwrite: bool = False) -> Path:
    """``evomm convert``: write the GGUF file ``path`` as a Hugging Face checkpoint into ``out``
    (the output rule of :mod:`evomm.outputs`: new or empty, ``overwrite`` replaces only evomm's
    own output).

    Returns:
        ``out``.

    Example:
        >>> convert_gguf(Path("m.Q4_1.gguf"), Path("m-hf"), dtype="bfloat16")   # doctest: +SKIP
    """
    from evomm.outputs import staged_output

    gguf_path = find_gguf(path)
    if gguf_path is None or not gguf_path.is_file():
        raise CheckpointError(f"{path} is not a .gguf file (nor a directory holding one); give the GGUF file")
    with staged_output(out, overwrite=overwrite, reads=[gguf_path], command="convert") as tmp:
        write_hf_checkpoint(gguf_path, tmp, dtype)
    return out
