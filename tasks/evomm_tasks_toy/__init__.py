"""The toy zoo's fitness tasks (data built by ``evomm zoo build``; see docs/toy-zoo.md)."""

from __future__ import annotations

from evomm import hookimpl


@hookimpl
def evomm_register_tasks(registry):
    from evomm_tasks_toy.text import TEXT_TASKS
    from evomm_tasks_toy.vision import VISION_TASKS

    for task in (*TEXT_TASKS, *VISION_TASKS):
        registry.add(task)
