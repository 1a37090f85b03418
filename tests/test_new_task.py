"""The example plugin and a freshly scaffolded package load and run end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evomm.cli import main
from evomm.cli.new_task import scaffold
from evomm.errors import ConfigError
from evomm.plugins import load_plugins

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "task_plugin"


class Scripted:
    capabilities = frozenset({"generate"})

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers

    def generate(self, prompts, **kwargs):
        return [next((a for q, a in self.answers.items() if q in p), "わかりません") for p in prompts]


def test_example_plugin_is_small_and_scores_by_hand() -> None:
    lines = (EXAMPLE / "keyword_qa.py").read_text(encoding="utf-8").splitlines()
    assert len(lines) < 60
    task = load_plugins([EXAMPLE], autoload=False).tasks.get("keyword_qa")()
    handle = Scripted({"首都": "東京です", "一週間": "7日", "空は": "赤"})
    result = task.evaluate(handle)
    assert result.n == 4
    assert result.metrics == {"hit_rate": 2 / 4}  # 東京 and 7 hit; 赤 misses 青; 富士山 unanswered


def test_example_plugin_runs_on_a_tiny_model() -> None:
    from evomm_hf.handle import HFCausalLMHandle
    from transformers import AutoModelForCausalLM

    from tests.tiny_models import tiny_config, train_tokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("llama", num_layers=2)).eval()
    task = load_plugins([EXAMPLE], autoload=False).tasks.get("keyword_qa")(max_new_tokens=4)
    result = task.evaluate(HFCausalLMHandle(model, train_tokenizer()), subset=[0, 1])
    assert result.n == 2 and 0.0 <= result.metrics["hit_rate"] <= 1.0
    assert sum(d["hit"] for d in result.details) / 2 == result.metrics["hit_rate"]


def test_example_plugin_from_the_cli(capsys) -> None:
    assert main(["--plugins-dir", str(EXAMPLE), "tasks", "keyword_qa", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)[0]
    assert info["name"] == "keyword_qa" and info["plugin"] == "keyword_qa"
    assert info["metrics"][0]["name"] == "hit_rate" and info["data"].endswith("keyword_qa.jsonl [test]")


def test_scaffold_refuses_bad_names_and_existing_dirs(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not valid"):
        scaffold("My-Task", tmp_path)
    scaffold("ok", tmp_path)
    with pytest.raises(ConfigError, match="already exists"):
        scaffold("ok", tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["evomm-task-ok"]  # no temp dir left behind


def test_scaffolded_package_tests_pass_and_it_installs_as_an_entry_point(tmp_path) -> None:
    assert main(["new-task", "my_qa", "--out", str(tmp_path)]) == 0
    pkg = tmp_path / "evomm-task-my-qa"
    env = {**os.environ, "PYTHONPATH": str(pkg), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=pkg, env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 passed" in run.stdout

    # install it (no network: no deps, no build isolation) and find it through the entry point
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(site), str(pkg)],
        check=True, capture_output=True, timeout=300,
    )
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", "import sys; from evomm.cli import main; sys.exit(main(sys.argv[1:]))",
         "tasks", "my_qa", "--json"],
        env=env, capture_output=True, text=True, timeout=300, check=True,
    )
    info = json.loads(out.stdout)[0]
    assert info["plugin"] == "evomm_task_my_qa" and info["name"] == "my_qa"


def test_scaffold_readme_recipe_is_a_valid_evolve_recipe(tmp_path, monkeypatch) -> None:
    """The recipe the scaffold's README shows loads with evomm's recipe loader, its objective
    resolves to the scaffolded task and its data file is found; its command has --out."""
    import importlib
    import re
    import shlex

    from evomm.cli import build_parser
    from evomm.evolve_recipe import load_evolve_recipe
    from evomm.objectives import ObjectiveSet

    pkg = scaffold("my_qa", tmp_path)
    readme = (pkg / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", readme, flags=re.S)
    assert len(blocks) == 1, readme
    (pkg / "recipe.yaml").write_text(blocks[0], encoding="utf-8")
    recipe = load_evolve_recipe(pkg / "recipe.yaml")
    monkeypatch.syspath_prepend(str(pkg))
    module = importlib.import_module("evomm_task_my_qa")
    objectives = ObjectiveSet(recipe.objectives, recipe.tasks, load_plugins(extra=[module], autoload=False))
    assert objectives.names == ["my_qa"] and objectives.task_size("my_qa") > 0
    command = next(line.strip() for line in readme.splitlines() if line.strip().startswith("evomm evolve"))
    args = build_parser().parse_args(shlex.split(command)[1:])
    assert args.recipe == "recipe.yaml" and args.out
