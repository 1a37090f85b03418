"""Damaged checkpoints are one clear ``CheckpointError`` line (file, tensor, what was found, the
fix), never a traceback: safetensors files built byte by byte (8-byte length + JSON + data) and
merged through ``evomm merge``; pickle parents load when allowed and stay refused otherwise."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from evomm.cli import main
from evomm.errors import CheckpointError
from tests.tiny_models import make_tiny_model

FIX = "the file is corrupt or truncated; re-download or re-save it"
NORM = "model.norm.weight"
LN0, LN1 = "model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight"


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ck")
    return {"a": make_tiny_model(d / "a", "llama", seed=0), "b": make_tiny_model(d / "b", "llama", seed=1)}


def split(raw: bytes) -> tuple[dict[str, Any], bytes]:
    """(header object, data bytes) of a safetensors file."""
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def join(header: dict[str, Any] | bytes, data: bytes, length: int | None = None) -> bytes:
    """A safetensors file from its parts: 8-byte little-endian length, JSON header, data."""
    blob = header if isinstance(header, bytes) else json.dumps(header).encode()
    return (len(blob) if length is None else length).to_bytes(8, "little") + blob + data


def edit(name: str, **changes: Any) -> Callable[[dict[str, Any], bytes], bytes]:
    """A corruption that changes (or, with value None, removes) keys of one tensor's entry."""

    def corrupt(h: dict[str, Any], data: bytes) -> bytes:
        for key, value in changes.items():
            if value is None:
                del h[name][key]
            else:
                h[name][key] = value(h[name][key]) if callable(value) else value
        return join(h, data)

    return corrupt


def overlap(h: dict[str, Any], data: bytes) -> bytes:
    h[LN0]["data_offsets"] = list(h[LN1]["data_offsets"])  # same shape, same bytes
    return join(h, data)


# case -> (corruption of (header, data), what the message must say besides the file and the fix)
CASES: dict[str, tuple[Callable[[dict[str, Any], bytes], bytes], str]] = {
    "header is a list": (lambda h, d: join(b"[1, 2, 3]", d), r"header is a JSON list, not an object"),
    "header is a number": (lambda h, d: join(b"42", d), r"header is a JSON int"),
    "header not utf-8": (lambda h, d: join(b"\xff\xfe{}", d), r"header is not UTF-8 JSON"),
    "header not json": (lambda h, d: join(b"{\"a\": ", d), r"header is not UTF-8 JSON"),
    "entry not an object": (lambda h, d: join({**h, NORM: [1]}, d), rf"tensor '{NORM}' is described by \[1\]"),
    "no shape": (edit(NORM, shape=None), rf"tensor '{NORM}' has no shape"),
    "no dtype": (edit(NORM, dtype=None), rf"tensor '{NORM}' has no dtype"),
    "no data_offsets": (edit(NORM, data_offsets=None), rf"tensor '{NORM}' has no data_offsets"),
    "unknown dtype": (edit(NORM, dtype="F17"), rf"tensor '{NORM}' has dtype 'F17', which evomm does not know"),
    "shape not integers": (edit(NORM, shape=["32"]), rf"tensor '{NORM}' has shape \['32'\]"),
    "negative offsets": (edit(NORM, data_offsets=lambda o: [-8, o[1] - o[0] - 8]), rf"'{NORM}' has data_offsets \[-8,"),
    "reversed offsets": (edit(NORM, data_offsets=lambda o: [o[1], o[0]]), rf"'{NORM}' has data_offsets"),
    "span too short": (edit(NORM, shape=lambda s: [s[0] * 2]), rf"'{NORM}' of shape \(64,\) and dtype F32 needs 256 bytes but .* span 128"),
    "overlapping tensors": (overlap, rf"tensor '({LN0}|{LN1})' overlaps the bytes of another tensor"),
    "data truncated": (lambda h, d: join(h, d[:-100]), r"tensor '.*' ends at byte \d+ but the file has \d+ bytes"),
    "header truncated": (lambda h, d: join(h, b"")[:200], r"announces a \d+-byte header but holds only 192 bytes"),
    "huge header length": (lambda h, d: join(h, d, length=2**62), r"announces a header of \d+ bytes"),
    "shorter than 8 bytes": (lambda h, d: b"\x01\x02\x03", r"it is 3 bytes long, shorter than the 8-byte header length"),
    "empty file": (lambda h, d: b"", r"it is 0 bytes long"),
}


def corrupt_copy(src: Path, dst: Path, corrupt: Callable[[dict[str, Any], bytes], bytes]) -> Path:
    shutil.copytree(src, dst)
    f = dst / "model.safetensors"
    header, data = split(f.read_bytes())
    f.write_bytes(corrupt(header, data))
    return f


def merge_cli(tmp_path: Path, models: list[dict[str, Any]], *extra: str) -> int:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"merge_method": "linear", "models": models}))
    return main(["merge", str(recipe), "--out", str(tmp_path / "out"), "--no-progress", *extra])


@pytest.mark.parametrize("case", sorted(CASES))
def test_corrupt_safetensors_is_one_clear_error(
    good: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    corrupt, says = CASES[case]
    bad = corrupt_copy(good["b"], tmp_path / "bad", corrupt)
    models = [{"model": str(good["a"]), "parameters": {"weight": 0.5}},
              {"model": str(bad.parent), "parameters": {"weight": 0.5}}]
    assert merge_cli(tmp_path, models) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("evomm: error: ") and "Traceback" not in err, err
    assert f"safetensors file {bad}: " in err and FIX in err and re.search(says, err), err
    assert not (tmp_path / "out").exists()


def test_corrupt_shard_index_is_one_clear_error(good: dict[str, Path], tmp_path: Path) -> None:
    from evomm.safetensors_io import SafetensorsIndex

    d = tmp_path / "idx"
    shutil.copytree(good["b"], d)
    for text, says in (("[]", "needs a `weight_map` object"), ("{\"weight_map\": {\"x\": \"../a\"}}", "needs a"),
                       ("{oops", "is not a valid safetensors index")):
        (d / "model.safetensors.index.json").write_text(text)
        with pytest.raises(CheckpointError, match=re.escape(says)) as info:
            SafetensorsIndex(d)
        assert FIX in str(info.value)


# --------------------------------------------------------------------------------------------
# pickle parents
# --------------------------------------------------------------------------------------------


def pickle_copy(src: Path, dst: Path, *, legacy: bool) -> Path:
    """``src`` with its weights in ``pytorch_model.bin`` (torch's zip format, or the legacy
    format older transformers and torch versions wrote), and no safetensors file."""
    from safetensors.torch import load_file

    shutil.copytree(src, dst)
    sd = load_file(str(dst / "model.safetensors"))
    (dst / "model.safetensors").unlink()
    torch.save(sd, dst / "pytorch_model.bin", _use_new_zipfile_serialization=not legacy)
    return dst


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_pickle_parent_loads_with_flag_and_is_refused_without(
    good: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], legacy: bool
) -> None:
    from safetensors.torch import load_file

    pk = pickle_copy(good["b"], tmp_path / "pk", legacy=legacy)
    models = [{"model": str(good["a"]), "parameters": {"weight": 0.0}},
              {"model": str(pk), "parameters": {"weight": 1.0}}]
    assert merge_cli(tmp_path, models) == 2
    err = capsys.readouterr().err
    assert "only pickle weights" in err and "--allow-pickle" in err and not (tmp_path / "out").exists()
    assert merge_cli(tmp_path, models, "--allow-pickle") == 0, capsys.readouterr().err
    want = load_file(str(good["b"] / "model.safetensors"))
    got = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert all(torch.equal(got[k], want[k]) for k in want)
    shutil.rmtree(tmp_path / "out")
    models[1]["allow_pickle"] = True  # the recipe key instead of the flag
    assert merge_cli(tmp_path, models) == 0, capsys.readouterr().err


def test_pickle_base_model_with_allow_pickle(good: dict[str, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A base model given only as ``base_model: PATH`` is covered by --allow-pickle and by the
    recipe's top-level ``allow_pickle``."""
    pk = pickle_copy(good["b"], tmp_path / "pk", legacy=False)
    recipe = {"merge_method": "task_arithmetic", "base_model": str(pk),
              "models": [{"model": str(good["a"]), "parameters": {"weight": 0.5}}]}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out"
    assert main(["merge", str(path), "--out", str(out), "--no-progress"]) == 2
    assert "'base'" in capsys.readouterr().err
    assert main(["merge", str(path), "--out", str(out), "--no-progress", "--allow-pickle"]) == 0
    path.write_text(yaml.safe_dump({**recipe, "allow_pickle": True}))
    assert main(["merge", str(path), "--out", str(tmp_path / "out2"), "--no-progress"]) == 0


def test_corrupt_pickle_is_a_checkpoint_error(good: dict[str, Path], tmp_path: Path) -> None:
    from evomm_hf.adapter import HFCausalLMAdapter

    from evomm.adapters import ModelRef

    pk = pickle_copy(good["b"], tmp_path / "pk", legacy=False)
    f = pk / "pytorch_model.bin"
    f.write_bytes(f.read_bytes()[:500])
    with pytest.raises(CheckpointError, match=rf"cannot load the pickle weights {re.escape(str(f))}: .*re-download"):
        HFCausalLMAdapter().open(ModelRef("p", str(pk), allow_pickle=True))


def test_pickle_parent_and_base_of_an_evolve_run(good: dict[str, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """``allow_pickle: true`` on an evolve recipe's parent and base model loads them; without it
    the run stops with the CheckpointError line."""
    from evomm.archive import Archive
    from tests.test_nonfinite import OP_PLUGIN  # a one-file plugin with the `norm_mean` task

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "norm_task.py").write_text(OP_PLUGIN)
    pk = pickle_copy(good["b"], tmp_path / "pk", legacy=True)
    base = pickle_copy(good["a"], tmp_path / "base", legacy=False)
    recipe: dict[str, Any] = {
        "seed": 0, "score_parents": False,
        "parents": [{"name": "a", "path": str(good["a"])}, {"name": "pk", "path": str(pk)}],
        "base_model": {"name": "base", "path": str(base)},
        "merge": {"method": "task_arithmetic", "parameters": {"weight": {"evolve": {"low": 0.0, "high": 1.0}}}},
        "objectives": [{"name": "score", "task": "norm_mean"}],
        "algorithm": {"name": "random", "pop_size": 2}, "budget": {"generations": 1},
    }
    path = tmp_path / "evolve.yaml"

    def evolve(out: str) -> int:
        path.write_text(yaml.safe_dump(recipe))
        return main(["--plugins-dir", str(plugins), "evolve", str(path), "--out", str(tmp_path / out), "--no-progress"])

    assert evolve("run0") == 2
    assert "has only pickle weights" in capsys.readouterr().err
    recipe["parents"][1]["allow_pickle"] = True
    recipe["base_model"]["allow_pickle"] = True
    assert evolve("run1") == 0, capsys.readouterr().err
    records = Archive(tmp_path / "run1" / "archive.jsonl").records
    assert len(records) == 2 and all(r.evaluation == "full" for r in records)
