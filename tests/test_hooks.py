"""Every hook has a ``test_hook_<name>`` here; a test fails when one is missing.

Registration hooks are exercised with one-file plugins loaded through ``--plugins-dir``;
lifecycle hooks are called through ``plugins.pm.hook`` with a recording plugin (the evolution loop
fires them in a run).
"""

from __future__ import annotations

import inspect
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from evomm import hookimpl, hookspecs
from evomm.errors import RegistryError
from evomm.plugins import load_plugins
from evomm.records import CandidateRecord, RunInfo


def _one_file_plugin(tmp_path: Path, name: str, source: str) -> Path:
    d = tmp_path / "plugins"
    d.mkdir(exist_ok=True)
    (d / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    return d


def test_every_hook_has_a_test() -> None:
    hooks = {n for n, f in vars(hookspecs).items() if n.startswith("evomm_") and inspect.isfunction(f)}
    tests = {n[len("test_hook_"):] for n in vars(sys.modules[__name__]) if n.startswith("test_hook_")}
    assert hooks - tests == set(), f"hooks without a test_hook_<name>: {sorted(hooks - tests)}"
    assert tests - hooks == set(), f"tests for hooks that do not exist: {sorted(tests - hooks)}"


def test_hook_evomm_register_model_adapters(tmp_path) -> None:
    d = _one_file_plugin(tmp_path, "myadapter", """
        from evomm import hookimpl
        from evomm.adapters import ModelAdapter

        class MyAdapter(ModelAdapter):
            name = "my-format"
            description = "test adapter"
            def open(self, ref):
                raise NotImplementedError

        @hookimpl
        def evomm_register_model_adapters(registry):
            registry.add(MyAdapter)
    """)
    plugins = load_plugins([d], autoload=False)
    assert plugins.adapters.get("my-format").description == "test adapter"
    assert plugins.adapters.owner("my-format") == "myadapter"


def test_hook_evomm_register_merge_operators(tmp_path) -> None:
    d = _one_file_plugin(tmp_path, "meanop", """
        import torch
        from evomm import hookimpl
        from evomm.operators import MergeOperator

        class Mean(MergeOperator):
            name = "hook-test-mean"
            def merge(self, tensors, base, global_params, model_params, ctx):
                return torch.stack(list(tensors)).mean(0)

        @hookimpl
        def evomm_register_merge_operators(registry):
            registry.add(Mean)
            registry.add(Mean)  # a duplicate: must be refused
    """)
    with pytest.raises(RegistryError, match="hook-test-mean.*registered twice"):
        load_plugins([d], autoload=False)
    src = (d / "meanop.py").read_text()
    (d / "meanop.py").write_text(src.replace("    registry.add(Mean)  # a duplicate", "    # a duplicate"))
    op = load_plugins([d], autoload=False).operators.get("hook-test-mean")
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 6.0])
    assert torch.equal(op().merge([a, b], None, {}, [], None), torch.tensor([2.0, 4.0]))


def test_hook_evomm_register_tasks(tmp_path) -> None:
    d = _one_file_plugin(tmp_path, "echo", """
        import datasets
        from evomm import hookimpl
        from evomm.tasks import MetricSpec, Task, TaskResult

        class Echo(Task):
            name = "echo"
            metrics = (MetricSpec("accuracy"),)
            def load(self):
                return datasets.Dataset.from_list([{"p": "a", "y": "A"}, {"p": "b", "y": "X"}])
            def score(self, handle, examples):
                outs = handle.generate([e["p"] for e in examples])
                return TaskResult({"accuracy": sum(o == e["y"] for o, e in zip(outs, examples)) / len(examples)},
                                  n=len(examples))

        @hookimpl
        def evomm_register_tasks(registry):
            registry.add(Echo)
    """)

    class Upper:
        capabilities = frozenset({"generate"})

        def generate(self, prompts, **kw):
            return [p.upper() for p in prompts]

    task = load_plugins([d], autoload=False).tasks.get("echo")()
    assert task.evaluate(Upper()).metrics == {"accuracy": 0.5}


class Recorder:
    """A lifecycle plugin that records what it is called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    @hookimpl
    def evomm_candidate_evaluated(self, run, record):
        self.calls.append(("candidate", {"run": run, "record": record}))

    @hookimpl
    def evomm_generation_end(self, run, generation, front):
        self.calls.append(("generation", {"run": run, "generation": generation, "front": front}))

    @hookimpl
    def evomm_run_end(self, run, front, reason):
        self.calls.append(("end", {"run": run, "front": front, "reason": reason}))


def test_hook_evomm_register_executors(tmp_path) -> None:
    """The docs/hooks.md example (a thread executor) as a one-file plugin: registered, picked by
    the recipe's ``executor:``, and the run's archive is the local executor's."""
    import re

    sys.path.insert(0, str(Path(__file__).parent))
    import evo_cli as C
    import evo_synthetic as S

    from evomm.evolve_recipe import parse_recipe
    from evomm.runner import evolve

    docs = (Path(__file__).resolve().parent.parent / "docs" / "hooks.md").read_text(encoding="utf-8")
    section = docs.split("### evomm_register_executors(")[1].split("\n### ")[0]
    example = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    d = _one_file_plugin(tmp_path, "threadexec", example)
    plugins = load_plugins([d], extra=[S.PLUGIN], autoload=False)
    assert plugins.executors.get("threads").description == "a thread per worker"
    assert plugins.executors.owner("threads") == "threadexec"
    assert {"local", "processes", "ray"} <= set(plugins.executors.names())
    runs = {}
    for name in ("local", "threads"):
        recipe = parse_recipe(S.recipe_dict(generations=2, pop=4) | {"executor": {"name": name, "workers": 2}})
        evolve(recipe, tmp_path / name, plugins=plugins, progress=False, report=False)
        runs[name] = C.essence(tmp_path / name)
    assert runs["threads"] == runs["local"] and len(runs["local"]) == 2 + 2 * 4


def test_hook_evomm_register_commands(tmp_path, capsys) -> None:
    from evomm.cli import main

    d = _one_file_plugin(tmp_path, "hellocmd", """
        from evomm import hookimpl
        from evomm.cli.command import Command

        def run(args):
            print(f"hello, {args.name} ({len(args.plugins_dir)} dir)")
            return 3

        def add_parser(subparsers):
            p = subparsers.add_parser("hello", help="say hello")
            p.add_argument("name")
            p.set_defaults(func=run)

        @hookimpl
        def evomm_register_commands(registry):
            registry.add(Command("hello", add_parser))
    """)
    assert main(["--plugins-dir", str(d), "hello", "world"]) == 3
    assert capsys.readouterr().out == "hello, world (1 dir)\n"
    assert main(["--plugins-dir", str(d), "plugins"]) == 0
    assert "  hello                  [hellocmd]" in capsys.readouterr().out.splitlines()
    # the built-in zoo plugin adds its commands the same way
    assert {"demo", "zoo"} <= set(load_plugins().commands.names())

    for stem, source, error in [
        ("clash", 'registry.add(Command("merge", lambda sub: sub.add_parser("merge")))',
         "plugin 'clash' registers the command 'merge', which evomm already has"),
        ("noparser", 'registry.add(Command("quiet", lambda sub: None))',
         "plugin 'noparser' registers the command 'quiet', but its add_parser added no parser"),
    ]:
        (tmp_path / stem).mkdir()
        bad = _one_file_plugin(tmp_path / stem, stem, f"""
            from evomm import hookimpl
            from evomm.cli.command import Command

            @hookimpl
            def evomm_register_commands(registry):
                {source}
        """)
        assert main(["--plugins-dir", str(bad), "plugins"]) == 2
        assert error in capsys.readouterr().err


def _run_and_record(tmp_path):
    rec = Recorder()
    plugins = load_plugins(extra=[rec], autoload=False)
    run = RunInfo(run_dir=tmp_path, objectives=["ja", "math"], directions=["maximize", "maximize"], seed=7)
    cand = CandidateRecord(id="c000001", generation=0, genome=[0.5, 0.25], plan_hash="abc",
                           metrics={"ja_mc": {"accuracy": 0.5}}, objectives={"ja": 0.5, "math": 0.1})
    return rec, plugins, run, cand


def test_hook_evomm_register_search_spaces(tmp_path) -> None:
    # a one-file plugin adds a stage kind; an evolve run searches it (the optimum is x = 0.25)
    d = _one_file_plugin(tmp_path, "quadspace", """
        import datasets
        from evomm import hookimpl
        from evomm.space import DictCandidate, Gene, SearchSpace, SpaceKind
        from evomm.tasks import MetricSpec, Task, TaskResult

        class Handle:
            capabilities = frozenset()
            def __init__(self, x):
                self.x = x

        class Quadratic(SearchSpace):
            kind = "quadratic"
            def __init__(self, stage, ctx):
                self.genes = (Gene("x", -1.0, 1.0, "a number"),)
            def decode(self, x):
                v = round(self.genes[0].value(x[0]), 3)
                return DictCandidate.from_recipe({"x": v}, {"x": v})
            def materialize(self, candidate):
                return Handle(candidate.to_recipe()["x"])

        class Closeness(Task):
            name = "closeness"
            metrics = (MetricSpec("score"),)
            def load(self):
                return datasets.Dataset.from_list([{"i": 0}])
            def score(self, handle, examples):
                return TaskResult({"score": 1 - (handle.x - 0.25) ** 2}, n=len(examples))

        @hookimpl
        def evomm_register_search_spaces(registry):
            registry.add(SpaceKind("quadratic", Quadratic, "one gene"))

        @hookimpl
        def evomm_register_tasks(registry):
            registry.add(Closeness)
    """)
    plugins = load_plugins([d], autoload=False)
    assert plugins.spaces.names() == ["params", "quadratic"]
    assert plugins.spaces.owner("quadratic") == "quadspace" and plugins.spaces.owner("params") == "evomm"
    from evomm.evolve_recipe import parse_recipe
    from evomm.runner import evolve

    recipe = parse_recipe({
        "parents": [{"name": "p", "path": "none"}], "score_parents": False,
        "objectives": [{"name": "c", "task": "closeness"}],
        "stages": [{"name": "q", "kind": "quadratic", "algorithm": {"name": "random", "pop_size": 6},
                    "budget": {"generations": 2}}],
    })
    result = evolve(recipe, tmp_path / "run", plugins=plugins, progress=False, report=False)
    assert result.final.evaluations == 12
    best = max(result.final.front, key=lambda r: r.objectives["c"])
    assert best.objectives["c"] == pytest.approx(1 - (best.genes["x"] - 0.25) ** 2, abs=1e-5)
    with pytest.raises(RegistryError, match="unknown search-space kind 'quadratik'.*did you mean 'quadratic'"):
        plugins.spaces.get("quadratik")


def test_hook_evomm_candidate_evaluated(tmp_path) -> None:
    rec, plugins, run, cand = _run_and_record(tmp_path)
    assert plugins.pm.hook.evomm_candidate_evaluated(run=run, record=cand) == []
    assert rec.calls == [("candidate", {"run": run, "record": cand})]


def test_hook_evomm_generation_end(tmp_path) -> None:
    rec, plugins, run, cand = _run_and_record(tmp_path)
    plugins.pm.hook.evomm_generation_end(run=run, generation=3, front=[cand])
    assert rec.calls == [("generation", {"run": run, "generation": 3, "front": [cand]})]


def test_hook_evomm_run_end(tmp_path) -> None:
    rec, plugins, run, cand = _run_and_record(tmp_path)
    plugins.pm.hook.evomm_run_end(run=run, front=[cand], reason="budget")
    assert rec.calls == [("end", {"run": run, "front": [cand], "reason": "budget"})]


def test_a_registration_hook_receives_a_whole_registry(tmp_path) -> None:
    # A plugin may inspect what earlier plugins registered (len, iteration, items, names, in, get).
    d = _one_file_plugin(tmp_path, "inspector", """
        from evomm import hookimpl
        from evomm.operators import MergeOperator

        SEEN = {}

        class Probe(MergeOperator):
            name = "probe-op"
            def merge(self, tensors, base, global_params, model_params, ctx):
                return tensors[0]

        @hookimpl(trylast=True)
        def evomm_register_merge_operators(registry):
            SEEN["len"] = len(registry)
            SEEN["list"] = list(registry)
            SEEN["items"] = [n for n, _ in registry.items()]
            SEEN["has_linear"] = "linear" in registry
            SEEN["linear"] = registry.get("linear").name
            registry.add(Probe)
            SEEN["len_after"] = len(registry)
    """)
    plugins = load_plugins([d])
    seen = sys.modules["evomm_local_plugin_inspector"].SEEN
    builtin = [n for n in plugins.operators.names() if n != "probe-op"]
    assert seen["len"] == len(builtin) and seen["list"] == builtin and seen["items"] == builtin
    assert seen["has_linear"] and seen["linear"] == "linear"
    assert seen["len_after"] == len(builtin) + 1
    assert plugins.operators.owner("probe-op") == "inspector"
