"""Japanese text and vision fitness tasks (ja_math, ja_mc, ja_vqa) and clip_zeroshot."""

from __future__ import annotations

from typing import Any

from evomm import hookimpl


@hookimpl
def evomm_register_tasks(registry: Any) -> None:
    from evomm_tasks_ja.clip_zeroshot import ClipZeroShot
    from evomm_tasks_ja.ja_math import JaMath
    from evomm_tasks_ja.ja_mc import JaMC
    from evomm_tasks_ja.ja_vqa import JaVQA

    for task in (JaMath, JaMC, JaVQA, ClipZeroShot):
        registry.add(task)
