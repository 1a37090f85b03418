"""Progress bars: one switch for every bar a command shows.

``--no-progress`` (``evomm evolve``) runs the command inside :func:`disabled`, which sets
``EVOMM_NO_PROGRESS=1`` (so child processes are quiet too; setting the variable yourself does the
same) and switches off the bars of the Hugging Face libraries (``huggingface_hub``,
``transformers``, ``datasets``) until the command returns. evomm's bars, and plugins' bars, are made with :func:`bar`, which shows nothing
while progress is disabled; a plugin that builds its own ``tqdm`` passes
``disable=not evomm.progress.enabled()``.

Example:
    >>> from evomm.progress import bar
    >>> for _ in bar(range(3), desc="work", disable=True):
    ...     pass
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tqdm.auto import tqdm

#: Set to ``1`` to silence every bar (what ``--no-progress`` does).
ENV_NO_PROGRESS = "EVOMM_NO_PROGRESS"
#: Variables the Hugging Face libraries read when they are imported.
_HF_ENV = ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS")


def enabled() -> bool:
    """Whether bars may be shown (``False`` after :func:`disable` or with ``EVOMM_NO_PROGRESS=1``)."""
    return os.environ.get(ENV_NO_PROGRESS, "").strip().lower() in ("", "0", "false", "no")


@contextmanager
def disabled() -> Iterator[None]:
    """Inside, every bar of this process and its children is silenced (evomm's, plugins', the
    Hugging Face libraries'); on exit the environment and the libraries' switches are restored,
    so a caller of :func:`evomm.cli.main` in the same process is not left silenced."""
    names = (ENV_NO_PROGRESS, *_HF_ENV)
    saved = {v: os.environ.get(v) for v in names}
    before = {lib: is_on() for lib, (is_on, _, _) in _hf_switches().items()}
    for v in names:  # libraries imported later read these
        os.environ[v] = "1"
    for _, off, _ in _hf_switches().values():  # libraries already imported read them no more
        off()
    try:
        yield
    finally:
        for v, old in saved.items():
            if old is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = old
        default_on = not any(saved[v] for v in _HF_ENV)  # a library imported inside started off
        for lib, (_, _, on) in _hf_switches().items():
            if before.get(lib, default_on):
                on()


def _hf_switches() -> dict[str, tuple[Callable[[], bool], Callable[[], None], Callable[[], None]]]:
    """Library -> (are its bars on, switch them off, switch them on), for each Hugging Face
    library already imported."""
    out = {}
    if "huggingface_hub" in sys.modules:
        from huggingface_hub import utils as hub

        out["huggingface_hub"] = (lambda: not hub.are_progress_bars_disabled(), hub.disable_progress_bars,
                                  hub.enable_progress_bars)
    if "datasets" in sys.modules:
        from datasets.utils import logging as ds

        out["datasets"] = (ds.is_progress_bar_enabled, ds.disable_progress_bar, ds.enable_progress_bar)
    if "transformers" in sys.modules:
        from transformers.utils import logging as tf

        out["transformers"] = (tf.is_progress_bar_enabled, tf.disable_progress_bar, tf.enable_progress_bar)
    return out


def bar(*args: Any, disable: bool = False, **kwargs: Any) -> tqdm:
    """A ``tqdm`` bar (same arguments) that is disabled while progress is off."""
    return tqdm(*args, disable=disable or not enabled(), **kwargs)
