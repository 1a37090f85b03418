"""Documentation stays in step with the code: every hook has a docs/hooks.md section headed by its
exact signature, with an example; docs/writing-a-task.md keeps its walkthrough sections."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from evomm import hookspecs

DOCS = Path(__file__).resolve().parent.parent / "docs"


def hook_names() -> list[str]:
    return sorted(n for n, f in vars(hookspecs).items() if n.startswith("evomm_") and inspect.isfunction(f))


def signature(name: str) -> str:
    """``name(arg: Type, ...) -> Ret`` from the hookspec's (string) annotations."""
    fn = getattr(hookspecs, name)
    ann = fn.__annotations__
    params = ", ".join(f"{p}: {ann[p]}" for p in inspect.signature(fn).parameters)
    return f"{name}({params}) -> {ann.get('return', 'None')}"


def sections(text: str) -> dict[str, str]:
    """Markdown ``###`` headings -> the text up to the next heading of level <= 3."""
    parts = re.split(r"^(#{1,3} .*)$", text, flags=re.M)
    return {parts[i].lstrip("#").strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2) if parts[i].startswith("### ")}


def test_there_are_hooks() -> None:
    assert "evomm_register_tasks" in hook_names() and len(hook_names()) >= 6


@pytest.mark.parametrize("name", hook_names())
def test_hook_is_documented_with_its_exact_signature_and_an_example(name: str) -> None:
    docs = sections((DOCS / "hooks.md").read_text(encoding="utf-8"))
    assert signature(name) in docs, f"docs/hooks.md has no '### {signature(name)}' section"
    body = docs[signature(name)]
    assert "```python" in body and f"def {name}(" in body, f"the {name} section has no example"


def test_documented_hooks_exist() -> None:
    documented = {h.split("(")[0] for h in sections((DOCS / "hooks.md").read_text(encoding="utf-8"))}
    assert documented == set(hook_names())


def test_writing_a_task_walkthrough_is_complete() -> None:
    text = (DOCS / "writing-a-task.md").read_text(encoding="utf-8")
    for needle in ["--plugins-dir", "[project.entry-points.evomm]", "evomm new-task", "evomm tasks",
                   "def score(", "@hookimpl", "limit", "subset", "loglikelihood"]:
        assert needle in text, f"docs/writing-a-task.md lost {needle!r}"
    example = (Path(__file__).resolve().parent.parent / "examples" / "task_plugin" / "keyword_qa.py").read_text(
        encoding="utf-8"
    )
    assert "class KeywordQA(Task):" in example and "keyword_qa.py" in text
