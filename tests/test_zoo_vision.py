"""The vision half of the toy zoo: drawn images, VQA/classification data, the tiny LLaVA and CLIPs,
and the toy vision tasks (scored through fake handles)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from evomm_zoo.images import RGB, ImageSpec, all_specs, draw


def test_images_draw_deterministically_and_show_their_colour():
    spec = ImageSpec("green", "triangle", count=2, seed=5)
    a, b = np.asarray(draw(spec)), np.asarray(draw(spec))
    assert a.shape == (32, 32, 3) and (a == b).all()
    assert not (a == np.asarray(draw(ImageSpec("green", "triangle", count=2, seed=6)))).all()
    for s in all_specs(counts=(1, 2, 3), seeds=range(2)):
        px = np.asarray(draw(s)).reshape(-1, 3).astype(int)
        hit = (np.abs(px - np.array(RGB[s.color])).sum(1) < 10).mean()
        assert hit > 0.05, s  # the shape's colour covers a visible part of the image
    # A square fills more of its box than a triangle (area 1 vs 1/2), independent of colour.
    sq = np.abs(np.asarray(draw(ImageSpec("red", "square", seed=1))).astype(int) - RGB["red"]).sum(2) < 10
    tr = np.abs(np.asarray(draw(ImageSpec("red", "triangle", seed=1))).astype(int) - RGB["red"]).sum(2) < 10
    assert sq.sum() > tr.sum()


def _rows(zoo, task, split):
    with open(zoo / "data" / task / f"{split}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("task", ["en_vqa", "ja_vqa", "shape_cls", "color_cls"])
def test_splits_do_not_share_images(micro_zoo, task):
    images = {s: {r["image"] for r in _rows(micro_zoo, task, s)} for s in ("train", "dev", "test")}
    assert images["train"] and images["dev"] and images["test"]
    assert images["train"].isdisjoint(images["dev"]) and images["train"].isdisjoint(images["test"])
    assert images["dev"].isdisjoint(images["test"])
    for s in images.values():
        assert all((micro_zoo / "data" / task / p).is_file() for p in s)


def test_vlm_reloads_and_processor_matches_training_inputs(micro_zoo):
    from evomm_zoo.vlm import IMAGE_TOKENS, encode_prompts, pixels, vqa_prompt
    from safetensors.torch import load_file
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    path = micro_zoo / "models" / "vlm"
    model = LlavaForConditionalGeneration.from_pretrained(str(path)).eval()
    proc = AutoProcessor.from_pretrained(str(path))
    saved = load_file(str(path / "model.safetensors"))
    state = model.state_dict()

    def runtime_name(k: str) -> str:  # transformers 5 saves LLaVA under the hub's legacy names
        if k.startswith("language_model.lm_head."):
            return k[len("language_model.") :]
        if k.startswith("language_model.model."):
            return "model.language_model." + k[len("language_model.model.") :]
        return "model." + k

    assert {runtime_name(k) for k in saved} == set(state)
    for k, v in saved.items():
        assert torch.equal(state[runtime_name(k)], v), k
    base = load_file(str(micro_zoo / "models" / "base" / "model.safetensors"))
    assert saved["language_model.model.embed_tokens.weight"].shape == base["model.embed_tokens.weight"].shape
    img = draw(ImageSpec("blue", "star", seed=3))
    prompt = vqa_prompt("ja_vqa", "なにいろ？")
    enc = proc(text=[prompt], images=[img], return_tensors="pt")
    ids = enc["input_ids"][0].tolist()
    assert ids == encode_prompts(proc, [prompt])[0]
    assert ids.count(model.config.image_token_index) == IMAGE_TOKENS
    assert torch.allclose(enc["pixel_values"], pixels([img]), atol=1e-5)
    with torch.no_grad():
        out = model(**enc)
    assert out.logits.shape[:2] == enc["input_ids"].shape


@pytest.mark.parametrize("name", ["clip_base", "clip_shape", "clip_color"])
def test_clip_checkpoints_reload(micro_zoo, name):
    import open_clip
    from evomm_zoo.clip import load_clip
    from safetensors.torch import load_file

    path = micro_zoo / "models" / name
    model, preprocess, tokenizer = load_clip(path)
    saved = load_file(str(path / "open_clip_model.safetensors"))
    state = model.state_dict()
    assert set(saved) == set(state)
    for k, v in saved.items():
        assert torch.equal(state[k], v), k
    again, _, _ = open_clip.create_model_and_transforms(f"local-dir:{path}")
    x = preprocess(draw(ImageSpec("red", "circle")))[None]
    assert x.shape == (1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.encode_image(x), again.eval().encode_image(x))
        assert model.encode_text(tokenizer(["a circle."])).shape == (1, 32)


def test_clip_finetunes_change_only_the_image_tower(micro_zoo):
    from safetensors.torch import load_file

    base = load_file(str(micro_zoo / "models" / "clip_base" / "open_clip_model.safetensors"))
    ft = load_file(str(micro_zoo / "models" / "clip_shape" / "open_clip_model.safetensors"))
    changed = {k for k in base if not torch.equal(base[k], ft[k])}
    assert changed and all(k.startswith("visual.") for k in changed)


def test_zoo_json_has_vision_scores_and_table(micro_zoo, capsys):
    from evomm_zoo.cli import run_info
    from evomm_zoo.vision_search import TABLE_ROWS

    info = json.loads((micro_zoo / "zoo.json").read_text())
    assert "vision" in info["parts"]
    assert set(info["scores"]["clip_shape"]) == {"shape_cls", "color_cls"}
    assert info["curves"]["vlm"] and info["wall_s"]["vision_vlm"] >= 0
    table = info["vision_table"]
    assert tuple(table["rows"]) == TABLE_ROWS and table["split"] == "test"
    for row in table["rows"].values():
        for task in ("ja_vqa", "en_vqa"):
            c = row[task]
            assert c["n"] == 8 and 0 <= c["right"] <= 8 and 0 <= c["shuffled"] <= 8 and 0 <= c["rouge"] <= 8
    # the run the table came from is an ordinary run directory, its best child the evolved row
    archive = [json.loads(line) for line in (micro_zoo / table["run"] / "archive.jsonl").read_text().splitlines()]
    assert table["evolved_id"] in {r["id"] for r in archive} and table["evaluations"] == 5
    assert len(table["examples"]["evolved"]) == len(table["examples"]["items"]) == 8
    run_info(argparse.Namespace(out=str(micro_zoo), scale="micro", seed=0))
    out = capsys.readouterr().out
    assert "Japanese VQA" in out and "evolved_vlm_zeroed" in out and "issue 22's bar" in out


def _table(**right):
    """A vision table whose Japanese VQA strict counts are ``right`` (400 items, shuffled 30)."""
    from evomm_zoo.vision_search import TABLE_ROWS

    def cell(r):
        return {"n": 400, "right": r, "shuffled": min(r, 30), "rouge": float(r)}

    return {k: {"ja_vqa": cell(right.get(k, 10)), "en_vqa": cell(0)} for k in TABLE_ROWS}


def test_check_bar_holds_each_condition_to_its_threshold():
    from evomm_zoo.vision_search import check_bar

    good = dict(vlm=0, ja_grafted=41, evolved=124, **{"linear_0.5": 53, "task_arithmetic_1": 111})
    assert all(check_bar(_table(**good)).values())
    # 3x the better parent: 124 < 3 x 42
    assert not check_bar(_table(**{**good, "ja_grafted": 42}))["three_x_parent"]
    # chance (1/6 + 1/4) / 2 of 400 = 83.3, + 10 points = 123.3
    assert not check_bar(_table(**{**good, "evolved": 123}))["above_chance"]
    assert not check_bar(_table(**{**good, "task_arithmetic_1": 124}))["beats_untuned"]
    assert not check_bar(_table(**{**good, "evolved_vlm_zeroed": 84}))["ablations_collapse"]
    assert check_bar(_table(**{**good, "evolved_vlm_zeroed": 83}))["ablations_collapse"]
    rows = _table(**good)
    rows["evolved"]["ja_vqa"]["shuffled"] = 100  # gain 24 < 2 sqrt(224) = 29.9
    assert not check_bar(rows)["image_gain"]
    rows["evolved"]["ja_vqa"]["shuffled"] = 90  # gain 34 > 2 sqrt(214) = 29.3
    assert check_bar(rows)["image_gain"]
    assert not check_bar(_table(vlm=0, ja_grafted=0, evolved=0))["three_x_parent"]


def test_text_parent_of_a_vlm_merge_is_scored_grafted_on_the_donor(micro_zoo, tmp_path):
    """A text LM parent cannot see: as a reference it runs with the VLM donor's tower and
    projector, and equals the merge that gives it weight 1 and the VLM weight 0."""
    from evomm_zoo.vision_search import table_points, vision_recipe
    from safetensors.torch import load_file

    from evomm.evolve_recipe import parse_recipe
    from evomm.plugins import get_plugins
    from evomm.runner import build_space

    recipe = parse_recipe(vision_recipe(micro_zoo, "micro", 0), "test")
    space = build_space(recipe, 0, tmp_path, get_plugins(), [])
    try:
        handle = space.materialize_reference("ja")
        assert "image" in handle.capabilities
        model = handle.model
        ja = load_file(str(micro_zoo / "models" / "ja_vision" / "model.safetensors"))
        vlm = load_file(str(micro_zoo / "models" / "vlm" / "model.safetensors"))
        sd = model.state_dict()
        assert torch.equal(sd["model.language_model.layers.1.mlp.up_proj.weight"], ja["model.layers.1.mlp.up_proj.weight"])
        assert torch.equal(sd["lm_head.weight"], ja["lm_head.weight"])
        tower = [k for k in vlm if "vision_tower" in k or "multi_modal_projector" in k]
        assert tower and all(torch.equal(sd["model." + k], vlm[k]) for k in tower)
        grafted = {k: v.clone() for k, v in sd.items()}
        merged = space.materialize(space.decode(table_points(space, None)["ja_grafted"])).model.state_dict()
        assert all(torch.allclose(grafted[k], merged[k], atol=1e-6) for k in grafted)
    finally:
        space.close()


class _OracleVQA:
    """Answers from the image alone (a lookup by pixels), like a perfect VLM; or a fixed word."""

    capabilities = frozenset({"generate", "image"})

    def __init__(self, table: dict[bytes, str] | None = None, fixed: str | None = None):
        self.table, self.fixed, self.calls = table, fixed, 0

    def generate(self, prompts, *, images=None, max_new_tokens=64, stop=(), num_beams=1, batch_size=16):
        self.calls += 1
        assert images is not None and len(images) == len(prompts)
        assert all("<image>" in p for p in prompts)
        if self.fixed is not None:
            return [f" {self.fixed}" for _ in prompts]
        return [self.table.get((im.tobytes(), p), "?") for im, p in zip(images, prompts)]


@pytest.mark.parametrize("cls_name, task", [("ToyEnVQA", "en_vqa"), ("ToyJaVQA", "ja_vqa")])
def test_vqa_tasks_score_fake_handles(micro_zoo, cls_name, task):
    import evomm_tasks_toy.vision as V
    from PIL import Image

    t = getattr(V, cls_name)(str(micro_zoo), split="test")
    rows = _rows(micro_zoo, task, "test")
    prompt = V.ToyJaVQA.template if task == "ja_vqa" else V.ToyEnVQA.template
    table = {}
    for r in rows:
        with Image.open(micro_zoo / "data" / task / r["image"]) as im:
            table[(im.convert("RGB").tobytes(), prompt.format(question=r["question"]))] = r["answer"]
    res = t.evaluate(_OracleVQA(table))
    assert res.n == len(rows) and res.metrics["accuracy"] == 1.0
    # Shuffled control: row i sees row i+1's image, so it is right iff that image answers the same.
    expect = sum(
        table.get((Image.open(micro_zoo / "data" / task / rows[(i + 1) % len(rows)]["image"]).convert("RGB").tobytes(),
                   prompt.format(question=r["question"]))) == r["answer"]
        for i, r in enumerate(rows)
    ) / len(rows)  # fmt: skip
    assert res.metrics["shuffled"] == pytest.approx(expect)
    assert res.metrics["image_gain"] == pytest.approx(1.0 - expect)
    word = rows[0]["answer"]
    res = t.evaluate(_OracleVQA(fixed=word))
    frac = sum(r["answer"] == word for r in rows) / len(rows)
    assert res.metrics["accuracy"] == pytest.approx(frac) and res.metrics["image_gain"] == 0
    t2 = getattr(V, cls_name)(str(micro_zoo), split="test", limit=5, shuffled=False)
    h = _OracleVQA(fixed=word)
    res = t2.evaluate(h)
    assert res.n == 5 and "shuffled" not in res.metrics and h.calls == 1


#: Character ROUGE-L F1 of the output "しろ" against each Japanese answer, by hand: LCS length l,
#: precision l/2, recall l/len(answer), F1 = 2PR/(P+R).
_SHIRO_F1 = {"しろ": 1.0, "くろ": 0.5, "ほし": 0.5, "きいろ": 0.4, "しかく": 0.4, "あか": 0.0,
             "あお": 0.0, "みどり": 0.0, "まる": 0.0, "さんかく": 0.0}  # fmt: skip


def test_ja_vqa_graded_metric_is_char_rouge_l_by_hand(micro_zoo):
    import evomm_tasks_toy.vision as V
    from evomm_zoo.scoring import char_rouge_l

    assert char_rouge_l("", "あか") == 0.0 and char_rouge_l("あかい", "あか") == pytest.approx(0.8)
    rows = _rows(micro_zoo, "ja_vqa", "test")
    res = V.ToyJaVQA(str(micro_zoo), split="test", shuffled=False).evaluate(_OracleVQA(fixed="しろ"))
    assert res.metrics["rouge"] == pytest.approx(sum(_SHIRO_F1[r["answer"]] for r in rows) / len(rows))
    assert res.metrics["accuracy"] == pytest.approx(sum(r["answer"] == "しろ" for r in rows) / len(rows))


class _FakeCLIP:
    capabilities = frozenset({"classify"})

    def __init__(self, labels):
        self.labels = labels
        self.prompts = None

    def classify(self, images, class_prompts):
        self.prompts = class_prompts
        return [self.labels.get(im.tobytes(), 0) for im in images]


@pytest.mark.parametrize("cls_name, task", [("ToyShapeCls", "shape_cls"), ("ToyColorCls", "color_cls")])
def test_classification_tasks_score_fake_handles(micro_zoo, cls_name, task):
    import evomm_tasks_toy.vision as V
    from evomm_zoo.clip import class_prompts
    from PIL import Image

    rows = _rows(micro_zoo, task, "dev")
    labels = {}
    for r in rows:
        with Image.open(micro_zoo / "data" / task / r["image"]) as im:
            labels[im.convert("RGB").tobytes()] = r["label"]
    t = getattr(V, cls_name)(str(micro_zoo), split="dev")
    fake = _FakeCLIP(labels)
    assert t.evaluate(fake).metrics["accuracy"] == 1.0
    assert fake.prompts == class_prompts(task)
    frac0 = sum(r["label"] == 0 for r in rows) / len(rows)
    assert t.evaluate(_FakeCLIP({})).metrics["accuracy"] == pytest.approx(frac0)


def test_vision_tasks_are_registered():
    from evomm.plugins import load_plugins

    tasks = load_plugins([]).tasks
    for name in ("toy_en_vqa", "toy_ja_vqa", "toy_shape_cls", "toy_color_cls"):
        assert name in tasks


def test_vision_tasks_through_the_real_adapters_match_direct_scoring(micro_zoo):
    """The zoo's checkpoints opened by the llava / open-clip adapters and scored by the toy tasks
    give the same answers as calling the models directly (evomm_zoo.vlm / evomm_zoo.clip)."""
    import evomm_tasks_toy.vision as V
    from evomm_zoo import clip as zclip
    from evomm_zoo import vlm as zvlm
    from PIL import Image

    from evomm.adapters import ModelRef
    from evomm.execute import open_models
    from evomm.plugins import get_plugins

    plugins = get_plugins(())
    ck = open_models([ModelRef("vlm", str(micro_zoo / "models" / "vlm"))], plugins)["vlm"]
    handle = ck.handle(ck.load_model())
    task = V.ToyJaVQA(str(micro_zoo), split="test", limit=6)
    res = task.evaluate(handle)
    rows = task.examples()
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    path = micro_zoo / "models" / "vlm"
    direct = zvlm.generate_answers(
        LlavaForConditionalGeneration.from_pretrained(str(path)).eval(),
        AutoProcessor.from_pretrained(str(path)),
        [task.prompt(r["question"]) for r in rows],
        [Image.open(micro_zoo / "data" / "ja_vqa" / r["image"]).convert("RGB") for r in rows],
    )
    assert [d["output"] for d in res.details] == [o.split("\n")[0].strip() for o in direct]

    cks = open_models([ModelRef("clip", str(micro_zoo / "models" / "clip_shape"))], plugins)
    chandle = cks["clip"].handle(cks["clip"].load_model())
    ctask = V.ToyShapeCls(str(micro_zoo), split="test")
    model, _, tok = zclip.load_clip(micro_zoo / "models" / "clip_shape")
    specs = []
    for r in ctask.examples():
        color, shape, count, seed = Path(r["image"]).stem.split("-")
        specs.append({"spec": ImageSpec(color, shape, int(count), int(seed)), "label": r["label"]})
    assert ctask.evaluate(chandle).metrics["accuracy"] == pytest.approx(
        zclip.accuracy(model, tok, "shape_cls", specs)
    )


def _torch_merge(zoo: Path, wv: list[float], wj: list[float]):
    """Independent reference: base + wv[g] (vlm LM - base) + wj[g] (ja - base) in plain torch,
    g = decoder layer, or the last entry for every other tensor; vision tower/projector from the VLM."""
    from transformers import LlamaForCausalLM, LlavaForConditionalGeneration

    vlm = LlavaForConditionalGeneration.from_pretrained(str(zoo / "models" / "vlm")).eval()
    base = LlamaForCausalLM.from_pretrained(str(zoo / "models" / "base")).state_dict()
    ja = LlamaForCausalLM.from_pretrained(str(zoo / "models" / "ja")).state_dict()
    lm = {"model." + k: v for k, v in vlm.model.language_model.state_dict().items()}
    lm["lm_head.weight"] = vlm.lm_head.weight.detach()
    merged = {}
    for k, b in base.items():
        g = int(k.split(".")[2]) if k.startswith("model.layers.") else -1
        merged[k] = b + wv[g] * (lm[k] - b) + wj[g] * (ja[k] - b)
    vlm.model.language_model.load_state_dict(
        {k[len("model.") :]: v for k, v in merged.items() if k != "lm_head.weight"}
    )
    vlm.lm_head.load_state_dict({"weight": merged["lm_head.weight"]})
    return vlm


def test_vision_merge_pipeline_end_to_end(micro_zoo, tmp_path):
    """evomm merge (per-layer task arithmetic of the VLM's LM and the ja LM) -> the llava adapter's
    LlavaHandle -> toy_ja_vqa -> strict and graded metrics, against a plain-torch merge scored
    directly and the graded metric computed by hand on its outputs."""
    import evomm_tasks_toy.vision as V
    import yaml
    from evomm_zoo import vlm as zvlm
    from evomm_zoo.scoring import char_rouge_l
    from PIL import Image
    from transformers import AutoProcessor

    from evomm.adapters import ModelRef
    from evomm.cli import main
    from evomm.execute import open_models
    from evomm.plugins import get_plugins

    wv, wj = [0.9, 0.4, 1.2, 0.7], [0.6, 1.1, 0.3, 0.5]  # layers 0-2, then everything else

    def per_layer(w):
        return [{"filter": f"layers.{i}.", "value": v} for i, v in enumerate(w[:-1])] + [{"value": w[-1]}]

    models = micro_zoo / "models"
    recipe = {
        "merge_method": "task_arithmetic", "base_model": "base", "tokenizer_source": "vlm", "dtype": "float32",
        "models": [{"model": str(models / "base"), "name": "base"},
                   {"model": str(models / "vlm"), "name": "vlm", "adapter": "llava", "parameters": {"weight": per_layer(wv)}},
                   {"model": str(models / "ja"), "name": "ja", "parameters": {"weight": per_layer(wj)}}],
    }  # fmt: skip
    (tmp_path / "merge.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    assert (
        main(["merge", str(tmp_path / "merge.yaml"), "--out", str(tmp_path / "child"), "--no-progress"]) == 0
    )
    ck = open_models([ModelRef("child", str(tmp_path / "child"))], get_plugins(()))["child"]
    task = V.ToyJaVQA(str(micro_zoo), split="test", limit=8)
    res = task.evaluate(ck.handle(ck.load_model()))
    rows = task.examples()
    direct = zvlm.generate_answers(
        _torch_merge(micro_zoo, wv, wj), AutoProcessor.from_pretrained(str(models / "vlm")),
        [task.prompt(r["question"]) for r in rows],
        [Image.open(micro_zoo / "data" / "ja_vqa" / r["image"]).convert("RGB") for r in rows],
    )  # fmt: skip
    outs = [o.split("\n")[0].strip() for o in direct]
    assert [d["output"] for d in res.details] == outs
    hand = [char_rouge_l(o, r["answer"]) for o, r in zip(outs, rows)]
    assert res.metrics["rouge"] == pytest.approx(sum(hand) / len(rows))
    assert res.metrics["accuracy"] == pytest.approx(
        sum(o == r["answer"] for o, r in zip(outs, rows)) / len(rows)
    )


def test_prompt_align_loss_is_the_normalised_mse_over_each_rows_span():
    from evomm_zoo.images import ImageSpec
    from evomm_zoo.reader import prompt_align_loss

    g = torch.Generator().manual_seed(0)
    t1, t2 = torch.randn(5, 3, generator=g), torch.randn(7, 3, generator=g)
    targets = {("red", "circle", "colour"): t1, ("blue", "star", "shape"): t2}
    rows = [{"spec": ImageSpec("red", "circle"), "kind": "colour"}, {"spec": ImageSpec("blue", "star"), "kind": "shape"}]
    h = torch.randn(2, 12, 3, generator=g)
    diff = torch.cat([h[0, 4:9] - t1, h[1, 4:11] - t2])
    ref = (diff**2).sum() / diff.numel() / (torch.cat([t1, t2]) ** 2).mean()
    assert torch.allclose(prompt_align_loss(h, rows, targets), ref)


def test_train_reader_changes_only_layer_0_of_the_language_model(micro_zoo):
    from evomm_zoo import reader
    from evomm_zoo import vlm as zvlm
    from evomm_zoo.textdata import VBASE_MIX
    from transformers import AutoProcessor, AutoTokenizer, LlamaForCausalLM, LlavaForConditionalGeneration

    vbase = LlamaForCausalLM.from_pretrained(str(micro_zoo / "models" / "vbase")).eval()
    tok = AutoTokenizer.from_pretrained(str(micro_zoo / "models" / "vbase"))
    en, ja = reader.prompt_targets(vbase, tok), reader.prompt_targets(vbase, tok, lang=1)
    assert len(en) == len(ja) == 48
    # target spans: caption (16) + question + " A: " / " 答: " (one token a character)
    assert en[("red", "circle", "colour")].shape[0] == 16 + len("What colour is it?") + 4
    assert ja[("red", "circle", "colour")].shape[0] == 16 + len("なにいろ？") + 4
    model = LlavaForConditionalGeneration.from_pretrained(str(micro_zoo / "models" / "vlm"))
    processor = AutoProcessor.from_pretrained(str(micro_zoo / "models" / "vlm"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    log = reader.train_reader(model, processor, zvlm.vqa_rows("en_vqa", "train", 16, 0), en, steps=2, seed=0,
                              rehearse_mix=dict(VBASE_MIX), ja_rows=zvlm.vqa_rows("ja_vqa", "train", 16, 0),
                              ja_targets=ja, align_ja=1.0)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("model.language_model.layers.0.") for k in changed)
    assert log["align"] is not None and len(log["curve"]) == 2


def test_a_text_only_zoo_is_extended_and_a_missing_table_resumed(tmp_path):
    """Asking a text-only zoo for its vision half copies the text half (not rebuilt: same bytes,
    same recorded times) and adds the vision half; a zoo whose search never wrote its table
    gets the table from the (resumed) run, equal to the first."""
    import hashlib

    from evomm_zoo import build_zoo

    out = tmp_path / "zoo"
    build_zoo("micro", out=out, seed=0, parts=("text",), progress=False)

    def digest(path):
        return hashlib.sha256((out / path).read_bytes()).hexdigest()

    before = {m: digest(f"models/{m}/model.safetensors") for m in ("base", "ja", "math")}
    text_times = json.loads((out / "zoo.json").read_text())["wall_s"]
    build_zoo("micro", out=out, seed=0, progress=False)
    info = json.loads((out / "zoo.json").read_text())
    assert info["parts"] == ["text", "vision"] and "vision_table" in info
    assert {m: digest(f"models/{m}/model.safetensors") for m in before} == before
    assert info["wall_s"]["text_base"] == text_times["text_base"]
    table = info.pop("vision_table")
    (out / "zoo.json").write_text(json.dumps(info))
    build_zoo("micro", out=out, seed=0, progress=False)
    again = json.loads((out / "zoo.json").read_text())["vision_table"]
    assert again["rows"] == table["rows"] and again["evolved_id"] == table["evolved_id"]
