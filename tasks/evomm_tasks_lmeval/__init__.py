"""lm-evaluation-harness bridge: the ``lmeval`` task (optional extra ``lmeval``).

``lm_eval`` is imported only when an ``lmeval`` task runs; without it the task raises a
:class:`~evomm.errors.TaskError` saying ``pip install 'evomm[lmeval]'``.
"""

from __future__ import annotations

from typing import Any

from evomm import hookimpl


@hookimpl
def evomm_register_tasks(registry: Any) -> None:
    from evomm_tasks_lmeval.task import LmEvalTask

    registry.add(LmEvalTask)
