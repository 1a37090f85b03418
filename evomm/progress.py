"""Progress bars: one switch for every bar a command shows.

``--no-progress`` (``evomm evolve``) calls :func:`disable`, which sets ``EVOMM_NO_PROGRESS=1``
(so child processes are quiet too; setting the variable yourself does the same) and switches
off the bars of the Hugging Face libraries (``huggingface_hub``, ``transformers``,
``datasets``). evomm's bars, and plugins' bars, are made with :func:`bar`, which shows nothing
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
from typing import Any

from tqdm.auto import tqdm

#: Set to ``1`` to silence every bar (what ``--no-progress`` does).
ENV_NO_PROGRESS = "EVOMM_NO_PROGRESS"
#: Variables the Hugging Face libraries read when they are imported.
_HF_ENV = ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS")


def enabled() -> bool:
    """Whether bars may be shown (``False`` after :func:`disable` or with ``EVOMM_NO_PROGRESS=1``)."""
    return os.environ.get(ENV_NO_PROGRESS, "").strip().lower() in ("", "0", "false", "no")


def disable() -> None:
    """Silence every bar of this process and its children (evomm's, plugins', HF libraries')."""
    os.environ[ENV_NO_PROGRESS] = "1"
    for var in _HF_ENV:  # libraries imported later read these
        os.environ[var] = "1"
    # libraries already imported read them no more: use their switches
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "datasets" in sys.modules:
        from datasets.utils import disable_progress_bars as disable_datasets_bars

        disable_datasets_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as tf_logging

        tf_logging.disable_progress_bar()


def bar(*args: Any, disable: bool = False, **kwargs: Any) -> tqdm:
    """A ``tqdm`` bar (same arguments) that is disabled while progress is off."""
    return tqdm(*args, disable=disable or not enabled(), **kwargs)
