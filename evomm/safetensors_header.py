"""Reading and checking the header of one safetensors file, without reading any tensor.

A safetensors file is 8 bytes of little-endian header length ``N``, ``N`` bytes of UTF-8 JSON
(an object: tensor name -> ``{"dtype", "shape", "data_offsets": [begin, end]}``, plus an
optional ``"__metadata__"``), then the tensors' bytes, offsets counted from the end of the
header (the format's specification, https://github.com/huggingface/safetensors#format).
:func:`read_header` checks everything evomm relies on before a single tensor is read, so a
corrupt or truncated file is one :class:`~evomm.errors.CheckpointError` naming the file, the
tensor and what was found, never a ``KeyError`` or ``TypeError`` deep in a merge.

Written by hand because ``safetensors.safe_open`` exposes shapes only through ``get_slice`` per
tensor, and its errors say nothing of which file failed.

Example:
    >>> header = read_header("model.safetensors")                     # doctest: +SKIP
    >>> header.entries["model.norm.weight"]                            # doctest: +SKIP
    HeaderEntry(shape=(4096,), dtype='bfloat16', begin=..., size=8192)
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evomm.errors import CheckpointError

#: safetensors dtype codes -> torch dtype names (the header stores the codes).
ST_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
    "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}

#: Bytes per entry of each dtype name (torch-free, so that planning and the CPU engine never
#: load torch).
ITEMSIZE = {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "int16": 2,
    "int8": 1, "uint8": 1, "bool": 1, "float8_e4m3fn": 1, "float8_e5m2": 1,
}

#: The largest header evomm reads (the safetensors library's own limit is 100 MB as well).
MAX_HEADER_BYTES = 100 * 2**20

#: The end of every message about a damaged file: what to do about it.
FIX = "the file is corrupt or truncated; re-download or re-save it"


@dataclass(frozen=True)
class HeaderEntry:
    """One tensor of a safetensors header: its shape, torch dtype name and byte span in the
    file (``begin`` counted from the start of the file, ``size`` bytes)."""

    shape: tuple[int, ...]
    dtype: str
    begin: int
    size: int


@dataclass(frozen=True)
class Header:
    """A checked safetensors header: the tensors in file order and where their data starts."""

    entries: dict[str, HeaderEntry]
    data_start: int


def _bad(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"safetensors file {path}: {what}; {FIX}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _entry(path: Path, name: str, raw: Any, data_start: int) -> HeaderEntry:
    """One header entry, checked (shape, dtype, offsets agree with each other)."""
    where = f"tensor {name!r}"
    if not isinstance(raw, dict):
        raise _bad(path, f"{where} is described by {raw!r}, not an object with dtype, shape and data_offsets")
    missing = [k for k in ("dtype", "shape", "data_offsets") if k not in raw]
    if missing:
        raise _bad(path, f"{where} has no {' or '.join(missing)} (its entry is {raw!r})")
    code, shape, offsets = raw["dtype"], raw["shape"], raw["data_offsets"]
    if code not in ST_DTYPES:
        raise _bad(
            path, f"{where} has dtype {code!r}, which evomm does not know (it reads {', '.join(ST_DTYPES)})"
        )
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise _bad(path, f"{where} has shape {shape!r}; a shape is a list of non-negative integers")
    if (
        not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets)
        or offsets[0] < 0 or offsets[1] < offsets[0]
    ):
        raise _bad(
            path, f"{where} has data_offsets {offsets!r}; they must be [begin, end] with 0 <= begin <= end "
            "(counted from the end of the header)"
        )
    dtype = ST_DTYPES[code]
    need = math.prod(shape) * ITEMSIZE[dtype]
    size = offsets[1] - offsets[0]
    if size != need:
        raise _bad(
            path, f"{where} of shape {tuple(shape)} and dtype {code} needs {need} bytes but its data_offsets "
            f"{offsets} span {size}"
        )
    return HeaderEntry(tuple(shape), dtype, data_start + offsets[0], size)


def read_header(path: str | Path) -> Header:
    """Read and check the header of the safetensors file ``path`` (no tensor data is read).

    Checks: the file holds at least the 8-byte length and the header it announces; the header
    is UTF-8 JSON and an object; every tensor has a known dtype, a shape of non-negative
    integers and ``data_offsets`` ``[begin, end]`` whose span is exactly shape x dtype size,
    within the file, not overlapping another tensor's.

    Args:
        path: a ``.safetensors`` file.

    Returns:
        The :class:`Header` (``__metadata__`` left out).

    Raises:
        CheckpointError: naming the file, the tensor, what was found and the fix.

    Example:
        >>> read_header("model.safetensors").data_start                # doctest: +SKIP
        1024
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            file_size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if len(head) < 8:
                raise _bad(path, f"it is {file_size} bytes long, shorter than the 8-byte header length")
            n = int.from_bytes(head, "little")
            if n > MAX_HEADER_BYTES:
                raise _bad(path, f"it announces a header of {n} bytes (more than {MAX_HEADER_BYTES})")
            if 8 + n > file_size:
                raise _bad(path, f"it announces a {n}-byte header but holds only {file_size - 8} bytes after the length")
            blob = f.read(n)
    except OSError as exc:
        raise CheckpointError(f"cannot read safetensors file {path}: {exc}") from exc
    try:
        header = json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _bad(path, f"its header is not UTF-8 JSON ({exc})") from None
    if not isinstance(header, dict):
        raise _bad(path, f"its header is a JSON {type(header).__name__}, not an object of tensors")
    header.pop("__metadata__", None)
    data_start = 8 + n
    entries = {name: _entry(path, name, raw, data_start) for name, raw in header.items()}
    end = data_start
    for name, e in sorted(entries.items(), key=lambda kv: (kv[1].begin, kv[1].size)):
        if e.begin < end:
            raise _bad(path, f"tensor {name!r} overlaps the bytes of another tensor (it starts at offset {e.begin - data_start})")
        end = e.begin + e.size
    if end > file_size:
        last = max(entries, key=lambda k: entries[k].begin + entries[k].size)
        raise _bad(path, f"tensor {last!r} ends at byte {end} but the file has {file_size} bytes")
    return Header(entries, data_start)
