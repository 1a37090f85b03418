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


def test_no_message_or_doc_names_a_command_that_does_not_exist() -> None:
    """Every `evomm COMMAND` quoted in the sources, templates and docs is a real subcommand, and
    the offline-data error points at the recipe key that exists (not an `evomm tasks run`)."""
    from evomm.cli import build_parser
    from evomm.data import load_hub
    from evomm.errors import OfflineError

    root = DOCS.parent
    commands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    files = [*root.glob("*.md"), *DOCS.glob("*.md"), *(root / "evomm").rglob("*.py"),
             *(root / "evomm").rglob("*.tmpl"), *(root / "plugins").rglob("*.py"), *(root / "tasks").rglob("*.py")]
    for f in files:
        for cmd, rest in re.findall(r"`evomm ([a-z][a-z-]*)( [a-z]+)?", f.read_text(encoding="utf-8")):
            assert cmd in commands, f"{f} quotes `evomm {cmd}`, which is not a command"
            assert (cmd, rest.strip()) != ("tasks", "run"), f"{f} quotes `evomm tasks run`"
    with pytest.raises(OfflineError) as info:
        load_hub("org/some-dataset")
    assert "tasks run" not in str(info.value) and "`tasks: {TASK: {data: path/to/file.jsonl}}`" in str(info.value)


def _blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of each fenced code block, in order."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)


def test_writing_a_task_walkthrough_runs(micro_zoo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Sections 2-4 of docs/writing-a-task.md, done as a newcomer would: the shell commands, the
    plugin file, `evomm tasks`, the stand-in handle and the evolve run with the page's recipe."""
    import contextlib
    import io
    import shlex
    import subprocess

    from evomm.cli import main

    text = (DOCS / "writing-a-task.md").read_text(encoding="utf-8")
    blocks = _blocks(text[text.index("## 2. A one-file plugin"):text.index("## 5. Package it")])
    langs = [lang for lang, _ in blocks]
    assert langs[:4] == ["bash", "python", "console", "python"], langs
    monkeypatch.chdir(tmp_path)
    subprocess.run(["bash", "-e", "-c", blocks[0][1]], check=True)                  # mkdir + data
    (tmp_path / "my_plugins" / "keyword_qa.py").write_text(blocks[1][1], encoding="utf-8")
    prompt, *expected = blocks[2][1].strip().splitlines()                           # `evomm tasks`
    assert main(shlex.split(prompt.removeprefix("$ "))[1:]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[:-1] == expected[:-1] and out[-1].endswith("my_plugins/keyword_qa.jsonl [test]"), out
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):                                       # the stand-in handle
        exec(compile(blocks[3][1], "writing-a-task.md", "exec"), {})
    assert printed.getvalue().strip() == blocks[3][1].split("# ")[-1].strip()
    recipe = next(body for lang, body in blocks if lang == "yaml")                  # section 4
    (tmp_path / "recipe.yaml").write_text(recipe, encoding="utf-8")
    (tmp_path / "zoo").symlink_to(micro_zoo)
    command = next(body for lang, body in blocks[4:] if lang == "bash" and "evolve" in body).strip()
    assert main([*shlex.split(command)[1:], "--no-progress"]) == 0
    assert (tmp_path / "runs" / "keywords" / "archive.jsonl").is_file()
