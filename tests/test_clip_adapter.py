"""The ``open-clip`` adapter: tiny open_clip models (custom config registered locally), merged
through the real pipeline, reloaded through open_clip, and classifying Pillow-drawn images.

References are independent of the adapter: open_clip's own loader (``local-dir:``), task
arithmetic written out on the state dicts, and zero-shot classification written out with
``encode_image`` / ``encode_text``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from safetensors.torch import save_file

from evomm.adapters import ModelRef
from evomm.errors import CheckpointError, IncompatibleModelsError
from evomm.execute import InMemoryMerger, merge_to_dir, open_models
from evomm.layout import ModuleKind
from evomm.plan import build_plan
from evomm.plugins import get_plugins
from evomm.recipe import MergeRecipe
from tests.tiny_models import make_tiny_model

open_clip = pytest.importorskip("open_clip")

TINY_NAME = "evomm-test-tiny-clip"
TINY_CFG = {
    "embed_dim": 16,
    "vision_cfg": {
        "image_size": 32,
        "layers": 2,
        "width": 32,
        "head_width": 16,
        "patch_size": 8,
        "mlp_ratio": 2.0,
    },
    "text_cfg": {
        "context_length": 12,
        "vocab_size": 49408,
        "width": 16,
        "heads": 2,
        "layers": 1,
        "mlp_ratio": 2.0,
    },
}
PREPROCESS = {
    "size": 32,
    "mean": [0.5] * 3,
    "std": [0.5] * 3,
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}


def save_local(model: torch.nn.Module, out: Path) -> Path:
    out.mkdir(parents=True)
    (out / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": TINY_CFG, "preprocess_cfg": PREPROCESS})
    )
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "open_clip_model.safetensors")
    )
    return out


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clip")
    cfg_file = root / "configs" / f"{TINY_NAME}.json"
    cfg_file.parent.mkdir()
    cfg_file.write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(cfg_file)  # register the custom architecture locally
    torch.manual_seed(0)
    base = open_clip.CLIP(**TINY_CFG)
    out = {"base": save_local(base, root / "base")}
    for i, task in enumerate(("shape", "colour")):
        ft = open_clip.CLIP(**TINY_CFG)
        ft.load_state_dict(base.state_dict())
        gen = torch.Generator().manual_seed(10 + i)
        with torch.no_grad():  # a "fine-tune" of the image tower only, as in task-arithmetic papers
            for name, p in ft.named_parameters():
                if name.startswith("visual."):
                    p.add_(torch.randn(p.shape, generator=gen) * 0.02)
        out[task] = save_local(ft, root / task)
    out["weights_file"] = out["shape"] / "open_clip_model.safetensors"
    out["llm"] = make_tiny_model(root / "llm", "llama", seed=0)
    return out


@pytest.fixture(scope="module")
def plugins():
    return get_plugins()


def oc_state(path: Path) -> dict[str, torch.Tensor]:
    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{path}")
    return model.state_dict()


def drawn(colour: str, shape: str) -> Image.Image:
    img = Image.new("RGB", (32, 32), (128, 128, 128))
    d = ImageDraw.Draw(img)
    box = [6, 6, 26, 26]
    if shape == "circle":
        d.ellipse(box, fill=colour)
    elif shape == "square":
        d.rectangle(box, fill=colour)
    else:
        d.polygon([(16, 5), (27, 27), (5, 27)], fill=colour)
    return img


def run_merge(data: dict, plugins, out: Path) -> Path:
    rec = MergeRecipe.from_dict(data)
    cks = open_models(rec, plugins)
    try:
        return merge_to_dir(build_plan(rec, cks, plugins), cks, out, plugins, progress=False)
    finally:
        for ck in cks.values():
            ck.close()


# ------------------------------------------------------------------------------------------------


def test_layout_kinds_and_layers(clips, plugins):
    ck = open_models([ModelRef("a", str(clips["base"]))], plugins)["a"]
    assert type(ck).__name__ == "OpenClipCheckpoint"
    assert set(ck.layout) == set(oc_state(clips["base"]))
    info = ck.layout["visual.transformer.resblocks.1.mlp.c_fc.weight"]
    assert (info.kind, info.layer) == (ModuleKind.VISION, 1)
    assert all(i.kind is ModuleKind.VISION for n, i in ck.layout.items() if n.startswith("visual."))
    assert ck.layout["transformer.resblocks.0.attn.in_proj_weight"].kind is ModuleKind.ATTENTION
    assert ck.layout["transformer.resblocks.0.mlp.c_proj.weight"].kind is ModuleKind.MLP
    assert ck.layout["token_embedding.weight"].kind is ModuleKind.EMBEDDING
    assert ck.layout["text_projection"].kind is ModuleKind.HEAD
    assert ck.layout["logit_scale"].kind is ModuleKind.OTHER
    assert ck.num_layers == 2  # the deeper tower (vision: 2 resblocks, text: 1)


def test_linear_one_zero_returns_model_a_and_reloads_through_open_clip(clips, plugins, tmp_path):
    data = {
        "merge_method": "linear",
        "models": [{"model": str(clips["shape"]), "name": "a", "parameters": {"weight": 1.0}},
                   {"model": str(clips["colour"]), "name": "b", "parameters": {"weight": 0.0}}],
    }  # fmt: skip
    out = run_merge(data, plugins, tmp_path / "out")
    assert {p.name for p in out.iterdir()} >= {"open_clip_config.json", "open_clip_model.safetensors"}
    want, got, other = oc_state(clips["shape"]), oc_state(out), oc_state(clips["colour"])
    assert set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert not torch.equal(got["visual.conv1.weight"], other["visual.conv1.weight"])


def test_task_arithmetic_against_the_formula(clips, plugins, tmp_path):
    lam = {"shape": 0.7, "colour": 0.4}
    data = {
        "merge_method": "task_arithmetic",
        "base_model": str(clips["base"]),
        "models": [{"model": str(clips[t]), "name": t, "parameters": {"weight": w}} for t, w in lam.items()],
    }
    got = oc_state(run_merge(data, plugins, tmp_path / "ta"))
    base = oc_state(clips["base"])
    fts = {t: oc_state(clips[t]) for t in lam}
    for k, b in base.items():
        expected = b + sum(w * (fts[t][k] - b) for t, w in lam.items())
        assert torch.allclose(got[k], expected, atol=1e-6), k
    assert torch.equal(got["token_embedding.weight"], base["token_embedding.weight"])  # text tower untouched


def test_zero_shot_classification_of_drawn_images(clips, plugins):
    ck = open_models([ModelRef("a", str(clips["base"]))], plugins)["a"]
    model = ck.load_model()
    handle = ck.handle(model, batch_size=3)
    images = [drawn(c, s) for c in ("red", "blue") for s in ("circle", "square", "triangle")]
    prompts = [[f"a {s}.", f"a drawing of a {s}."] for s in ("circle", "square", "triangle")]
    got = handle.classify(images, prompts)
    # reference written out with open_clip's own model, transforms and tokenizer
    ref_model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{clips['base']}")
    tok = open_clip.get_tokenizer(f"local-dir:{clips['base']}")
    with torch.no_grad():
        img = F.normalize(ref_model.encode_image(torch.stack([preprocess(i) for i in images])), dim=-1)
        cls = []
        for ps in prompts:
            t = F.normalize(ref_model.encode_text(tok(ps)), dim=-1).mean(0)
            cls.append(F.normalize(t, dim=-1))
        want = (img @ torch.stack(cls).T).argmax(-1).tolist()
    assert got == want
    assert handle.capabilities == frozenset({"classify"})


def test_model_name_plus_weights_file(clips, plugins):
    ref = ModelRef("named", f"{TINY_NAME}@{clips['weights_file']}", adapter="open-clip")
    cks = open_models([ModelRef("dir", str(clips["shape"])), ref], plugins)
    named, by_dir = cks["named"], cks["dir"]
    assert named.layout == by_dir.layout
    sd = named.load_model().state_dict()
    want = oc_state(clips["shape"])
    assert all(torch.equal(sd[k], want[k]) for k in want)
    with pytest.raises(CheckpointError, match="no-such-arch"):
        open_models([ModelRef("x", f"no-such-arch@{clips['weights_file']}", adapter="open-clip")], plugins)


def test_in_memory_merger(clips, plugins):
    data = {
        "merge_method": "task_arithmetic",
        "base_model": str(clips["base"]),
        "models": [{"model": str(clips["shape"]), "name": "shape", "parameters": {"weight": 1.0}},
                   {"model": str(clips["colour"]), "name": "colour", "parameters": {"weight": 0.0}}],
    }  # fmt: skip
    rec = MergeRecipe.from_dict(data)
    cks = open_models(rec, plugins)
    merger = InMemoryMerger(cks, donor=rec.donor(), plugins=plugins)
    model = merger.apply(build_plan(rec, cks, plugins))
    want = oc_state(clips["shape"])
    sd = model.state_dict()
    assert all(torch.allclose(sd[k], want[k], atol=1e-6) for k in want)
    handle = cks[rec.donor()].handle(model)
    assert len(handle.classify([drawn("red", "circle")], [["a circle."], ["a square."]])) == 1


def test_clip_does_not_merge_with_a_language_model(clips, plugins):
    with pytest.raises(IncompatibleModelsError, match="CLIP models merge only with CLIP models"):
        open_models([ModelRef("clip", str(clips["base"])), ModelRef("llm", str(clips["llm"]))], plugins)


def test_toy_zoo_clip_format_opens(tmp_path, plugins):
    zoo_clip = pytest.importorskip("evomm_zoo.clip")
    model, _ = zoo_clip.init_clip(0)
    zoo_clip.save_clip(model, tmp_path / "zoo_clip")
    ck = open_models([ModelRef("z", str(tmp_path / "zoo_clip"))], plugins)["z"]
    rebuilt = ck.load_model().state_dict()
    assert all(torch.equal(rebuilt[k], v) for k, v in model.state_dict().items())
