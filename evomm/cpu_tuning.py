"""Process settings that make streaming merges on CPU fast.

A streaming merge (:func:`evomm.execute.merge_to_dir`) allocates and frees tensors of a few to a
few hundred MB for every step while a reader and a writer thread copy data beside the merging
thread. glibc gives freed blocks above its mmap threshold back to the kernel and maps fresh ones
on the next allocation, so every step's buffers fault in and zero their pages again; in a VM a
page fault costs several microseconds. :func:`keep_freed_memory` raises the threshold to glibc's
maximum (32 MiB) and stops trimming the heap, so freed blocks are reused: peak memory is
unchanged, but memory stays with the process until it exits. Measured with
``bench/merge_throughput.py --size 350m`` on 2 cores: TIES 5.9-6.7 s without, 5.3-5.6 s with.

(Tensors above 1 MiB are memory-mapped from the checkpoint by
:meth:`evomm.safetensors_io.SafetensorsIndex.read`, and the operators work in reused chunk
buffers, for the same reason.)

We tried and rejected ``OMP_WAIT_POLICY=PASSIVE``: it helps a linear merge by ~0.2 s, but the
chunked operators run many short parallel regions and sleeping OpenMP workers then cost ~100,000
context switches per merge (TIES 7.7 s instead of 5.5 s).

``evomm merge`` and ``evomm export`` call :func:`tune_for_streaming`; a library user streaming
merges in their own process can call it too. Nothing here changes any result.

Written by hand: ``mallopt`` has no Python-level equivalent in the libraries we use; it is
reached through :mod:`ctypes`.

Example:
    >>> from evomm.cpu_tuning import tune_for_streaming
    >>> tune_for_streaming()   # doctest: +SKIP
    {'keep_freed_memory': True}
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc's largest accepted mmap threshold on 64-bit systems (HEAP_MAX_SIZE / 2).
_MMAP_THRESHOLD_MAX = 32 * 2**20
#: Trim the heap only when 2 GiB lie free at its top (mallopt takes a C int: its largest value).
_TRIM_THRESHOLD = 2**31 - 1


def keep_freed_memory() -> bool:
    """Make glibc keep freed blocks of up to 32 MiB for reuse instead of unmapping them.

    Returns:
        True when applied (a glibc system), False elsewhere (nothing changes there).

    Example:
        >>> import platform
        >>> keep_freed_memory() == (platform.libc_ver()[0] == "glibc")
        True
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1
    return ok and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1


def tune_for_streaming() -> dict[str, bool]:
    """Apply the settings of this module; say which took effect (False: not supported here)."""
    return {"keep_freed_memory": keep_freed_memory()}
