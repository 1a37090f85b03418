"""The threads of a streaming merge (:func:`evomm.execute.merge_to_dir`): one reads ahead
(:func:`prefetched`), a few merge tensors side by side (:func:`in_order`), one writes
(:class:`BackgroundWriter`). Each keeps the steps' order, and the results never depend on how
many threads there are: file reads and torch kernels release the GIL, so they overlap.

Merging runs several tensors at once, each with torch's intra-op parallelism off
(:func:`single_threaded_torch`), rather than one tensor with every core: the operators' chunked
passes are many short parallel regions, and OpenMP threads that spin at each region's barrier
cost far more than they save when the cores are busy. Measured on the project's 2-core VM under
load (another job on each core), DARE-TIES on 23M entries: 40.5 s wall with 2 intra-op threads,
1.4 s with 1.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

_S = TypeVar("_S")
_R = TypeVar("_R")

#: Tensors merged side by side by :func:`in_order` (at most; never more than the CPUs).
MERGE_THREADS = 4


def merge_threads() -> int:
    """How many tensors :func:`evomm.execute.merged_tensors` merges at once: the CPUs this
    process may use, at most :data:`MERGE_THREADS`."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(MERGE_THREADS, cpus))


@contextmanager
def single_threaded_torch() -> Iterator[None]:
    """torch's intra-op threads set to 1 inside the block, restored after it."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _one_torch_thread() -> None:
    """A merge thread's torch (OpenMP / BLAS) runs one thread: the thread count is per thread,
    and a new thread starts at the library's default, whose reductions round differently from
    the caller's single thread (results must not depend on which thread merged a tensor)."""
    import torch
    torch.set_num_threads(1)


def in_order(items: Iterable[_S], fn: Callable[[_S], _R], workers: int) -> Iterator[_R]:
    """``fn(item)`` for each item, in order, computed by up to ``workers`` threads at once (at
    most ``workers`` results pending). An error is raised in the caller; work not started yet
    is then cancelled.

    Example:
        >>> list(in_order(range(5), lambda x: x * x, workers=2))
        [0, 1, 4, 9, 16]
    """
    if workers <= 1:
        for item in items:
            yield fn(item)
        return
    pending: deque[Future[_R]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="evomm-merge",
                            initializer=_one_torch_thread) as pool:
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:  # an error or an abandoned generator: start nothing more
                fut.cancel()


def prefetched(
    steps: Iterable[_S], read: Callable[[_S], _R], ahead: int
) -> Iterator[tuple[_S, _R]]:
    """``(step, read(step))`` for each step, reading up to ``ahead`` steps in advance in one
    background thread (one thread: a checkpoint is never read from two threads at once)."""
    if ahead <= 0:
        for step in steps:
            yield step, read(step)
        return
    it = iter(steps)
    pending: deque[tuple[_S, Future[_R]]] = deque()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="evomm-read") as pool:
        try:
            for step in itertools.islice(it, ahead + 1):
                pending.append((step, pool.submit(read, step)))
            while pending:
                step, fut = pending.popleft()
                inputs = fut.result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append((nxt, pool.submit(read, nxt)))
                yield step, inputs
                del inputs
        finally:
            for _, fut in pending:  # an error or an abandoned generator: read no further
                fut.cancel()


class BackgroundWriter:
    """Calls ``write(name, tensor)`` in one background thread, in order, with at most ``depth``
    tensors waiting. The first error is re-raised in the caller by
    :meth:`put` or :meth:`close`."""

    def __init__(self, write: Callable[[str, Any], None], depth: int = 2) -> None:
        self._write = write
        self._queue: queue.Queue[tuple[str, Any] | None] = queue.Queue(maxsize=max(1, depth))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="evomm-write", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is None:  # after an error, keep draining so that put never blocks
                try:
                    self._write(*item)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                    self._error = exc
            del item

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, name: str, tensor: Any) -> None:
        self._raise()
        self._queue.put((name, tensor))

    def close(self, reraise: bool = True) -> None:
        """Wait until everything queued is handled; raise the writer's error (if ``reraise``)."""
        self._queue.put(None)
        self._thread.join()
        if reraise:
            self._raise()
