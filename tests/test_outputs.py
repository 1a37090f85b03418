"""Output directories (evomm.outputs): no command deletes a file it was not asked to replace, and
no failure (a refused target, a full or read-only disk, an error mid-write) leaves output behind.

CI runs as root, whom file modes do not stop: read-only and full disks are injected as
``OSError(EROFS)`` / ``OSError(ENOSPC)`` at the call that would meet them.
"""

from __future__ import annotations

import errno
import io
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from evomm.cli import main
from evomm.errors import OutputError
from evomm.outputs import MARKER, check_output_target, read_marker, staged_output, write_marker
from tests.tiny_models import make_tiny_model


def leftovers(parent: Path) -> list[str]:
    """Temporary directories of evomm.outputs left in ``parent``."""
    return [p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]


def user_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "notes.txt").write_text("mine")
    return path


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


# ------------------------------------------------------------------------------------ the rule


def test_new_and_empty_targets_are_accepted(tmp_path: Path) -> None:
    check_output_target(tmp_path / "a" / "b")
    (tmp_path / "empty").mkdir()
    check_output_target(tmp_path / "empty")


def test_a_file_and_a_path_under_a_file_are_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        check_output_target(tmp_path / "f", overwrite=True)
    with pytest.raises(OutputError, match=r"lies under .*f, which is a file"):
        check_output_target(tmp_path / "f" / "child" / "deeper")


def test_a_directory_evomm_did_not_write_is_never_replaced(tmp_path: Path) -> None:
    mine = user_dir(tmp_path / "mine")
    for overwrite in (False, True):
        with pytest.raises(OutputError, match="not written by evomm"), \
                staged_output(mine, overwrite=overwrite, command="merge"):
            pytest.fail("the block must not run")
    assert (mine / "notes.txt").read_text() == "mine" and not leftovers(tmp_path)


def test_an_evomm_output_is_replaced_only_with_overwrite(tmp_path: Path) -> None:
    with staged_output(tmp_path / "out", command="merge") as tmp:
        (tmp / "one").write_text("1")
    assert read_marker(tmp_path / "out")["command"] == "merge"
    with pytest.raises(OutputError, match="pass --overwrite"):
        check_output_target(tmp_path / "out")
    with staged_output(tmp_path / "out", overwrite=True, command="export") as tmp:
        (tmp / "two").write_text("2")
    assert sorted(os.listdir(tmp_path / "out")) == [MARKER, "two"]
    assert read_marker(tmp_path / "out")["command"] == "export" and not leftovers(tmp_path)


def test_outputs_of_earlier_versions_are_recognised_by_their_files(tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.mkdir()
    (old / "evomm_merge.json").write_text("{}")
    check_output_target(old, overwrite=True)


def test_a_run_directory_is_never_replaced(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    write_marker(run, "evolve")
    (run / "archive.jsonl").write_text("{}\n")
    with pytest.raises(OutputError, match="a run is never replaced"):
        check_output_target(run, overwrite=True)


def test_a_target_that_holds_an_input_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "models" / "a"
    model.mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "models")
    for out in (tmp_path / "models", model, link, tmp_path):
        with pytest.raises(OutputError, match="which this command reads"):
            check_output_target(out, overwrite=True, reads=[model])
    check_output_target(model / "child", reads=[model])  # writing *inside* an input deletes nothing


def test_a_read_only_parent_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def read_only(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(OutputError, match="read-only file system"):
        check_output_target(tmp_path / "out")


# ------------------------------------------------------------------------------------ staging


def test_a_failed_write_leaves_nothing_and_keeps_the_old_output(tmp_path: Path) -> None:
    with staged_output(tmp_path / "out", command="merge") as tmp:
        (tmp / "old").write_text("old")
    with pytest.raises(RuntimeError, match="boom"), \
            staged_output(tmp_path / "out", overwrite=True, command="merge") as tmp:
        (tmp / "new").write_text("new")
        raise RuntimeError("boom")
    assert (tmp_path / "out" / "old").read_text() == "old" and not (tmp_path / "out" / "new").exists()
    with pytest.raises(KeyboardInterrupt), staged_output(tmp_path / "a" / "b" / "c", command="merge"):
        raise KeyboardInterrupt
    assert not (tmp_path / "a").exists() and not leftovers(tmp_path)


def test_an_empty_directory_is_kept_and_filled(tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    os.chmod(out, 0o750)
    inode = out.stat().st_ino
    with pytest.raises(RuntimeError), staged_output(out, command="merge") as tmp:
        (tmp / "x").write_text("1")
        raise RuntimeError
    assert os.listdir(out) == []
    with staged_output(out, command="merge") as tmp:
        (tmp / "x").write_text("1")
        (tmp / "sub").mkdir()
    assert sorted(os.listdir(out)) == [MARKER, "sub", "x"]
    assert out.stat().st_ino == inode and stat.S_IMODE(out.stat().st_mode) == 0o750


def test_a_failed_rename_into_place_is_an_output_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with staged_output(tmp_path / "out", command="merge") as tmp:
        (tmp / "old").write_text("old")

    def busy(*args: object) -> None:
        raise OSError(errno.EBUSY, "Device or resource busy")

    monkeypatch.setattr(os, "replace", busy)
    with pytest.raises(OutputError, match="cannot move the finished output into place"), \
            staged_output(tmp_path / "out", overwrite=True, command="merge") as tmp:
        (tmp / "new").write_text("new")
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path / "out")) == [MARKER, "old"] and not leftovers(tmp_path)


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, "No space left on device"),
    OSError(errno.EDQUOT, "Disk quota exceeded"),
    # how safetensors (Rust) reports it
    RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"),
])
def test_a_full_disk_becomes_one_output_error(tmp_path: Path, error: Exception) -> None:
    with pytest.raises(OutputError) as info, \
            staged_output(tmp_path / "new" / "out", command="merge", need_bytes=5_000_000) as tmp:
        (tmp / "part").write_bytes(b"x" * 3000)
        raise error
    msg = str(info.value)
    assert "disk full" in msg and "wrote 3.0 KB" in msg and "needs 5.0 MB" in msg and "free now" in msg
    assert not (tmp_path / "new").exists() and not leftovers(tmp_path)


def test_more_than_the_free_space_is_refused_up_front(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="not enough space"), \
            staged_output(tmp_path / "out", command="merge", need_bytes=2**62):
        pytest.fail("the block must not run")
    assert not leftovers(tmp_path)


def test_read_only_at_directory_creation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def read_only(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(os, "mkdir", read_only)
    with pytest.raises(OutputError, match="read-only file system"), \
            staged_output(tmp_path / "x" / "out", command="merge"):
        pytest.fail("the block must not run")
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == []


# ------------------------------------------------------------------------------------ evomm merge


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"a": make_tiny_model(root / "a", seed=0), "b": make_tiny_model(root / "b", seed=1)}


class FillingFile(io.FileIO):
    """A shard file whose disk fills up: writes after the first ``after`` fail with ENOSPC."""

    def __init__(self, path: Path, calls: list[int], after: int) -> None:
        super().__init__(path, "wb")
        self.calls, self.after = calls, after

    def write(self, data: Any) -> int:  # type: ignore[override]
        self.calls.append(len(data))
        if len(self.calls) > self.after:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)


def linear_recipe(path: Path, a: Path, b: Path) -> Path:
    path.write_text(yaml.safe_dump({"merge_method": "linear", "models": [
        {"model": str(a), "parameters": {"weight": 0.5}}, {"model": str(b), "parameters": {"weight": 0.5}}]}))
    return path


def test_merge_disk_full_mid_write(models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    from evomm import safetensors_io

    recipe = linear_recipe(tmp_path / "r.yaml", models["a"], models["b"])
    calls: list[int] = []
    monkeypatch.setattr(safetensors_io, "_open_shard", lambda path: FillingFile(path, calls, after=3))
    assert main(["merge", str(recipe), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    line = error_line(capsys)
    assert line.startswith("evomm: error: disk full while writing --out") and "needs" in line, line
    assert len(calls) > 3 and not (tmp_path / "out").exists() and not leftovers(tmp_path)


def test_merge_on_a_read_only_disk(models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    recipe = linear_recipe(tmp_path / "r.yaml", models["a"], models["b"])
    real = os.mkdir

    def read_only(path: object, *args: object, **kwargs: object) -> None:
        if str(tmp_path) in os.fspath(path):  # type: ignore[arg-type]
            raise OSError(errno.EROFS, "Read-only file system", path)
        real(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "mkdir", read_only)
    assert main(["merge", str(recipe), "--out", str(tmp_path / "new" / "out"), "--no-progress"]) == 2
    assert "read-only file system" in error_line(capsys)
    assert not (tmp_path / "new").exists() and not leftovers(tmp_path)


def test_merge_out_under_a_file_or_holding_a_parent(models: dict[str, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    recipe = linear_recipe(tmp_path / "r.yaml", models["a"], models["b"])
    assert main(["merge", str(recipe), "--out", str(recipe / "child"), "--no-progress"]) == 2
    assert "which is a file" in error_line(capsys)
    assert main(["merge", str(recipe), "--out", str(models["a"].parent), "--overwrite", "--no-progress"]) == 2
    assert "which this command reads" in error_line(capsys)
    assert (models["a"] / "config.json").is_file()


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, "No space left on device"),
    RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"),
])
def test_clip_merge_disk_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                              error: Exception) -> None:
    import safetensors.torch

    from tests.test_clip_adapter import TINY_CFG, save_local

    open_clip = pytest.importorskip("open_clip")
    import torch

    torch.manual_seed(0)
    a = save_local(open_clip.CLIP(**TINY_CFG), tmp_path / "m" / "a")
    b = save_local(open_clip.CLIP(**TINY_CFG), tmp_path / "m" / "b")
    recipe = linear_recipe(tmp_path / "r.yaml", a, b)

    def fill_up(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(safetensors.torch, "save_file", fill_up)
    assert main(["merge", str(recipe), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert error_line(capsys).startswith("evomm: error: disk full while writing --out")
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path)


# ------------------------------------------------------------------------------------ DFS merge


def test_dfs_merge_follows_the_rule(models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "dfs.yaml"
    recipe.write_text(yaml.safe_dump({
        "merge_method": "dfs", "models": [{"model": str(models["a"]), "name": "a"},
                                          {"model": str(models["b"]), "name": "b"}],
        "path": [{"model": "a", "layer": 0}, {"model": "b", "layer": 1}, {"model": "a", "layer": 1}]}))
    mine = user_dir(tmp_path / "mine")
    for extra in ([], ["--overwrite"]):
        assert main(["merge", str(recipe), "--out", str(mine), *extra]) == 2
        assert "not written by evomm" in error_line(capsys)
    assert (mine / "notes.txt").read_text() == "mine"
    assert main(["merge", str(recipe), "--out", str(tmp_path / "child")]) == 0
    assert main(["merge", str(recipe), "--out", str(tmp_path / "child")]) == 2
    assert "--overwrite" in error_line(capsys)
    assert main(["merge", str(recipe), "--out", str(tmp_path / "child"), "--overwrite"]) == 0
    assert (tmp_path / "child" / "dfs.yaml").is_file() and not leftovers(tmp_path)


# ------------------------------------------------------------------------------------ zoo, new-task


def test_zoo_build_replaces_only_its_own_zoo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from evomm_zoo import build as zoo_build

    built: list[Path] = []

    def fake_text(zoo: Path, scale: str, seed: int, progress: bool = True) -> dict:
        built.append(zoo)
        (zoo / "models").mkdir()
        return {"wall_s": {}}

    monkeypatch.setattr(zoo_build, "build_text", fake_text)
    mine = user_dir(tmp_path / "mine")
    for force in (False, True):
        with pytest.raises(OutputError, match="not written by evomm"):
            zoo_build.build_zoo("micro", out=mine, force=force, parts=("text",))
    assert (mine / "notes.txt").read_text() == "mine" and not built
    zoo = zoo_build.build_zoo("micro", out=tmp_path / "zoo", parts=("text",))
    assert read_marker(zoo)["command"] == "zoo build" and len(built) == 1
    zoo_build.build_zoo("micro", out=zoo, parts=("text",))  # complete: reused
    with pytest.raises(OutputError, match="--force"):
        zoo_build.build_zoo("micro", out=zoo, seed=1, parts=("text",))
    zoo_build.build_zoo("micro", out=zoo, force=True, parts=("text",))
    assert len(built) == 2 and json.loads((zoo / "zoo.json").read_text())["complete"] and not leftovers(tmp_path)


def test_new_task_out_under_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "f").write_text("x")
    assert main(["new-task", "my_qa", "--out", str(tmp_path / "f")]) == 2
    assert "which is a file" in error_line(capsys)


# ------------------------------------------------------------------------------------ demo


def test_demo_refuses_a_foreign_directory(micro_zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mine = user_dir(tmp_path / "mine")
    assert main(["demo", "--fast", "--zoo", str(micro_zoo), "--out", str(mine)]) == 2
    assert "not written by evomm" in error_line(capsys)
    assert sorted(os.listdir(mine)) == ["notes.txt"]
    other = tmp_path / "merged"
    other.mkdir()
    write_marker(other, "merge")
    (other / "model.safetensors").write_bytes(b"")
    assert main(["demo", "--fast", "--zoo", str(micro_zoo), "--out", str(other)]) == 2
    assert "not of the demo" in error_line(capsys)


def test_demo_takes_back_its_own_output(tmp_path: Path) -> None:
    from evomm_zoo.demo import claim_demo_dir

    fresh = tmp_path / "demo"
    claim_demo_dir(fresh, reads=[])
    assert read_marker(fresh)["command"] == "demo"
    (fresh / "run").mkdir()
    claim_demo_dir(fresh, reads=[])  # a previous demo's output: resumed
    old = tmp_path / "old-demo"  # written before outputs were marked
    (old / "run").mkdir(parents=True)
    (old / "run" / "run.json").write_text("{}")
    claim_demo_dir(old, reads=[])
    assert read_marker(old)["command"] == "demo"


# ------------------------------------------------------------------------------------ evomm export


@pytest.fixture(scope="module")
def run(micro_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run whose parents are named relative to the zoo's parent directory (its cwd)."""
    from evomm.evolve_recipe import parse_recipe
    from evomm.plugins import get_plugins
    from evomm.runner import evolve
    from tests.test_export import _recipe

    data = _recipe(micro_zoo)
    used = {o["task"] for o in data["objectives"]}
    data["tasks"] = {t: opts for t, opts in data["tasks"].items() if t in used}
    for m in [*data["parents"], data["base_model"]]:
        m["path"] = os.path.relpath(m["path"], micro_zoo.parent)
    data["budget"] = {"generations": 1}
    for opts in data["tasks"].values():
        opts["limit"] = 4
    run_dir = tmp_path_factory.mktemp("evo") / "run"
    cwd = os.getcwd()
    os.chdir(micro_zoo.parent)
    try:
        evolve(parse_recipe(data), run_dir, plugins=get_plugins(), progress=False)
    finally:
        os.chdir(cwd)
    return run_dir


@pytest.fixture
def in_run_cwd(micro_zoo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(micro_zoo.parent)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.usefixtures("in_run_cwd")
def test_export_into_a_user_directory_refuses(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mine = user_dir(tmp_path / "mine")
    for extra in ([], ["--overwrite"]):
        assert main(["export", str(run), "--pick", "knee", "--out", str(mine), *extra]) == 2
        assert "not written by evomm" in error_line(capsys)
    assert sorted(os.listdir(mine)) == ["notes.txt"] and (mine / "notes.txt").read_text() == "mine"
    assert not leftovers(tmp_path)


@pytest.mark.usefixtures("in_run_cwd")
def test_export_into_the_runs_parent_refuses_and_the_run_is_intact(run: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(run.parent)
    for out in (run.parent, run):
        assert main(["export", str(run), "--pick", "knee", "--out", str(out), "--overwrite"]) == 2
        assert "which this command reads" in error_line(capsys)
    assert snapshot(run.parent) == before and not leftovers(run.parent)


@pytest.mark.usefixtures("in_run_cwd")
def test_export_overwrite_replaces_a_previous_export(run: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "child"
    assert main(["export", str(run), "--pick", "knee", "--out", str(out)]) == 0
    assert main(["export", str(run), "--pick", "knee", "--out", str(out)]) == 2
    assert "pass --overwrite" in error_line(capsys)
    first = json.loads((out / "evomm_candidate.json").read_text())["id"]
    children = [json.loads(line)["id"] for line in (run / "archive.jsonl").read_text().splitlines()
                if not json.loads(line)["id"].startswith("parent:")]
    other = next(c for c in children if c != first)
    assert main(["export", str(run), "--candidate", other, "--out", str(out), "--overwrite"]) == 0
    assert json.loads((out / "evomm_candidate.json").read_text())["id"] == other
    assert read_marker(out)["command"] == "export" and not leftovers(tmp_path)
    for name in ("model.safetensors", "config.json", "merge.yaml", "mergekit.yaml", "README.md"):
        assert (out / name).is_file(), name


def test_export_disk_full_leaves_nothing(run: Path, micro_zoo: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from evomm import safetensors_io

    monkeypatch.chdir(micro_zoo.parent)
    monkeypatch.setattr(safetensors_io, "_open_shard", lambda path: FillingFile(path, [], after=0))
    assert main(["export", str(run), "--pick", "knee", "--out", str(tmp_path / "child")]) == 2
    assert error_line(capsys).startswith("evomm: error: disk full while writing --out")
    assert sorted(os.listdir(tmp_path)) == []


def test_exported_merge_yaml_works_from_any_directory(run: Path, micro_zoo: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(micro_zoo.parent)
    assert main(["export", str(run), "--pick", "knee", "--out", str(tmp_path / "child")]) == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["merge", str(tmp_path / "child" / "merge.yaml"), "--out", "again", "--no-progress"]) == 0
    weights = (tmp_path / "child" / "model.safetensors").read_bytes()
    assert (elsewhere / "again" / "model.safetensors").read_bytes() == weights
    merge = yaml.safe_load((tmp_path / "child" / "merge.yaml").read_text())
    assert all(Path(m["model"]).is_absolute() for m in merge["models"]) and Path(merge["base_model"]).is_absolute()
