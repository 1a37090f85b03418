"""The ``llava`` adapter: a tiny LLaVA merged with a plain tiny Llama through the real pipeline.

Models are built here (random weights): a tiny Llama base LLM, a "fine-tune" of it (base plus
noise) and a tiny LLaVA whose language model starts as a copy of the base, saved in three stored
layouts (current transformers names, the pre-4.52 layout, and what ``save_pretrained`` writes).
References are independent of the adapter: the VLM parent's own ``from_pretrained`` state dict,
a merge of the same recipe done on plain LLMs through the ``hf-causal-lm`` adapter, and direct
``model.generate`` calls.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file, save_file

from evomm.errors import IncompatibleModelsError
from evomm.execute import InMemoryMerger, merge_to_dir, open_models
from evomm.layout import ModuleKind
from evomm.plan import build_plan
from evomm.plugins import get_plugins
from evomm.recipe import MergeRecipe
from tests.tiny_models import make_tiny_model, perturb_model, read_all, tiny_config, train_tokenizer

transformers = pytest.importorskip("transformers")
from transformers import (  # noqa: E402
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)

LAYOUTS = ("current", "legacy", "save_pretrained")
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def vlm_tokenizer():
    tok = copy.deepcopy(train_tokenizer())
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return tok


def _legacy_key(key: str) -> str:
    """transformers < 4.52 names (with CLIP's vision_model level)."""
    if key.startswith("lm_head."):
        return "language_model." + key
    if key.startswith("model.language_model."):
        return "language_model.model." + key[len("model.language_model.") :]
    if key.startswith("model.vision_tower."):
        return "vision_tower.vision_model." + key[len("model.vision_tower.") :]
    return key[len("model.") :]


def make_vlm(out: Path, base_dir: Path, layout: str, *, chat_template: bool = False) -> Path:
    """A tiny LLaVA whose language model is the LLM at ``base_dir``, saved in ``layout``."""
    tok = vlm_tokenizer()
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=32, patch_size=8, projection_dim=32,
    )  # fmt: skip
    text = tiny_config("llama", vocab_size=len(tok))
    cfg = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_seq_length=16, vision_feature_select_strategy="default", vision_feature_layer=-1,
    )  # fmt: skip
    torch.manual_seed(7)
    model = LlavaForConditionalGeneration(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.05)
    base = LlamaForCausalLM.from_pretrained(base_dir)
    model.model.language_model.load_state_dict(base.model.state_dict())
    model.lm_head.load_state_dict(base.lm_head.state_dict())
    out.mkdir(parents=True)
    if layout == "save_pretrained":
        model.save_pretrained(out)
    else:
        cfg.save_pretrained(out)
        sd = {k: v.contiguous() for k, v in model.state_dict().items()}
        if layout == "legacy":
            sd = {_legacy_key(k): v for k, v in sd.items()}
        save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    ip = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    proc = LlavaProcessor(
        image_processor=ip, tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
        image_token="<image>", num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE if chat_template else None,
    )  # fmt: skip
    proc.save_pretrained(out)
    return out


def drawn(colour: str, shape: str = "square") -> Image.Image:
    img = Image.new("RGB", (32, 32), (128, 128, 128))
    d = ImageDraw.Draw(img)
    (d.rectangle if shape == "square" else d.ellipse)([6, 6, 26, 26], fill=colour)
    return img


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("llava")
    vocab = len(vlm_tokenizer())
    base = make_tiny_model(root / "base", "llama", seed=0, vocab_size=vocab)
    out = {"base": base, "llm": perturb_model(base, root / "llm", seed=1, scale=0.02)}
    for layout in LAYOUTS:
        out[layout] = make_vlm(root / f"vlm-{layout}", base, layout, chat_template=layout == "current")
    out["small_vocab"] = make_tiny_model(root / "small", "llama", seed=3, vocab_size=vocab - 1)
    return out


@pytest.fixture(scope="module")
def plugins():
    return get_plugins()


def recipe(method: str, vlm_dir: Path, llm_dir: Path, base: Path | None = None, **params) -> MergeRecipe:
    models = [
        {"model": str(vlm_dir), "name": "vlm", "parameters": params.get("vlm", {})},
        {"model": str(llm_dir), "name": "llm", "parameters": params.get("llm", {})},
    ]
    data = {"merge_method": method, "models": models, "tokenizer_source": "vlm", "dtype": "float32"}
    if base is not None:
        data["base_model"] = str(base)
    if "global" in params:
        data["parameters"] = params["global"]
    return MergeRecipe.from_dict(data)


def merge(rec: MergeRecipe, plugins, out: Path) -> Path:
    cks = open_models(rec, plugins)
    try:
        return merge_to_dir(build_plan(rec, cks, plugins), cks, out, plugins, progress=False)
    finally:
        for ck in cks.values():
            ck.close()


def hf_state(path: Path) -> dict[str, torch.Tensor]:
    return LlavaForConditionalGeneration.from_pretrained(path).state_dict()


# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layout_uses_causal_lm_names(zoo, plugins, layout):
    cks = open_models([_ref("vlm", zoo[layout]), _ref("llm", zoo["llm"]), _ref("base", zoo["base"])], plugins)
    vlm, llm = cks["vlm"], cks["llm"]
    assert type(vlm).__name__ == "LlavaCheckpoint"
    lm_names = {n for n, i in vlm.layout.items() if i.kind not in (ModuleKind.VISION, ModuleKind.PROJECTOR)}
    assert lm_names == set(llm.layout)  # the language model lines up with the plain LLM
    for name in lm_names:
        assert torch.equal(vlm.read(name), cks["base"].read(name))  # the VLM's LM is a copy of base
        assert vlm.layout[name].kind == llm.layout[name].kind
        assert vlm.layout[name].layer == llm.layout[name].layer
    stored = {i.stored_name for i in vlm.layout.values()}
    assert stored == set(read_all(zoo[layout]))
    kinds = {i.kind for n, i in vlm.layout.items() if n.startswith("vision_tower.")}
    assert kinds == {ModuleKind.VISION}
    assert vlm.layout["multi_modal_projector.linear_1.weight"].kind is ModuleKind.PROJECTOR
    assert vlm.layout["vision_tower.encoder.layers.1.mlp.fc1.weight"].layer == 1
    assert vlm.num_layers == llm.num_layers == 4
    assert vlm.vocab_size == llm.vocab_size


def _ref(name: str, path: Path):
    from evomm.adapters import ModelRef

    return ModelRef(name, str(path))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_linear_one_zero_returns_the_vlm_bit_for_bit(zoo, plugins, layout, tmp_path):
    rec = recipe("linear", zoo[layout], zoo["llm"], vlm={"weight": 1.0}, llm={"weight": 0.0})
    out = merge(rec, plugins, tmp_path / "out")
    want, got = hf_state(zoo[layout]), hf_state(out)
    assert set(got) == set(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k
    # written under current transformers names, with the VLM's processor and config
    keys = set(read_all(out))
    assert any(k.startswith("model.language_model.layers.") for k in keys)
    assert not any(k.startswith("language_model.") for k in keys)
    assert json.loads((out / "config.json").read_text())["model_type"] == "llava"
    assert (out / "processor_config.json").is_file() and (out / "tokenizer.json").is_file()


def test_out_dtype_is_recorded_in_the_vlm_config(zoo, plugins, tmp_path):
    layout = LAYOUTS[0]
    rec = recipe("linear", zoo[layout], zoo["llm"], vlm={"weight": 1.0}, llm={"weight": 0.0})
    rec = MergeRecipe.from_dict({**rec.model_dump(exclude_none=True), "out_dtype": "bfloat16"})
    out = merge(rec, plugins, tmp_path / "out")
    config = json.loads((out / "config.json").read_text())

    def dtypes(node):  # every dtype field, nested sub-configs included
        for key, value in node.items():
            if key in ("dtype", "torch_dtype"):
                yield value
            elif isinstance(value, dict):
                yield from dtypes(value)

    assert set(dtypes(config)) == {"bfloat16"}
    model = LlavaForConditionalGeneration.from_pretrained(out, dtype="auto")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def _plain_lm_of(vlm_dir: Path, out: Path) -> Path:
    """The VLM's language model saved as a plain LlamaForCausalLM (an independent extraction)."""
    vlm = LlavaForConditionalGeneration.from_pretrained(vlm_dir)
    lm = LlamaForCausalLM(vlm.config.text_config)
    lm.model.load_state_dict(vlm.model.language_model.state_dict())
    lm.lm_head.load_state_dict(vlm.lm_head.state_dict())
    lm.save_pretrained(out)
    train_tokenizer().save_pretrained(out)
    return out


@pytest.mark.parametrize("layout", ["current", "legacy"])
def test_ties_merges_the_language_model_and_keeps_the_vision_tower(zoo, plugins, layout, tmp_path):
    params = {"vlm": {"weight": 0.7, "density": 0.5}, "llm": {"weight": 0.6, "density": 0.5}}
    out = merge(recipe("ties", zoo[layout], zoo["llm"], zoo["base"], **params), plugins, tmp_path / "vlm")
    # reference: the same TIES merge of plain LLMs (the VLM's language model extracted by hand)
    plain = _plain_lm_of(zoo[layout], tmp_path / "plain")
    ref_dir = merge(recipe("ties", plain, zoo["llm"], zoo["base"], **params), plugins, tmp_path / "ref")
    ref = LlamaForCausalLM.from_pretrained(ref_dir).state_dict()
    parent, got = hf_state(zoo[layout]), hf_state(out)
    n_changed = 0
    for k, v in got.items():
        if k.startswith(("model.vision_tower.", "model.multi_modal_projector.")):
            assert torch.equal(v, parent[k]), k  # donor-only: copied exactly
        else:
            plain_key = k.replace("model.language_model.", "model.")
            assert torch.equal(v, ref[plain_key]), k
            n_changed += not torch.equal(v, parent[k])
    assert n_changed > 10  # the language model really was merged


def test_merged_vlm_answers_an_image_question(zoo, plugins, tmp_path):
    rec = recipe("linear", zoo["current"], zoo["llm"], vlm={"weight": 0.5}, llm={"weight": 0.5})
    out = merge(rec, plugins, tmp_path / "out")
    cks = open_models([_ref("merged", out)], plugins)
    handle = cks["merged"].handle(cks["merged"].load_model())
    images = [drawn("red"), drawn("blue", "circle"), drawn("green")]
    prompts = ["What colour is it?", "What shape?", "Describe the picture please."]
    answers = handle.generate(prompts, images=images, max_new_tokens=6, batch_size=2)
    # reference: LlavaForConditionalGeneration + processor + chat template, one prompt at a time
    model = LlavaForConditionalGeneration.from_pretrained(out).eval()
    proc = transformers.AutoProcessor.from_pretrained(out)
    for prompt, img, answer in zip(prompts, images, answers):
        text = f"user: <image>{prompt}\nassistant:"
        assert handle.format_prompt(prompt, True) == text
        enc = proc(text=[text], images=[img], return_tensors="pt")
        gen = model.generate(
            **enc, max_new_tokens=6, do_sample=False, pad_token_id=proc.tokenizer.pad_token_id
        )
        want = proc.tokenizer.decode(gen[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        assert answer == want
    longest = max(answers, key=len)
    assert len(longest) >= 4, answers
    stop = longest[2:4]  # a stop string inside the answer: the answer is cut before it
    i = answers.index(longest)
    cut = handle.generate([prompts[i]], images=[images[i]], max_new_tokens=6, stop=[stop])[0]
    assert cut == longest[: longest.find(stop)]
    ll = handle.loglikelihood(
        [("What colour is it?", " red"), ("What colour is it?", " blue")], images=images[:2]
    )
    assert all(v < 0 for v in ll)


def test_fallback_prompt_without_chat_template(zoo, plugins):
    ck = open_models([_ref("vlm", zoo["legacy"])], plugins)["vlm"]
    handle = ck.handle(ck.load_model())
    assert handle.format_prompt("What colour?", True) == "USER: <image>\nWhat colour? ASSISTANT:"
    assert handle.format_prompt("Q: <image>What colour? A: ", True) == "Q: <image>What colour? A: "
    assert len(handle.generate(["Q: <image>What colour? A: "], images=[drawn("red")], max_new_tokens=3)) == 1


def test_in_memory_merger_rebuilds_the_vlm(zoo, plugins):
    rec = recipe("linear", zoo["legacy"], zoo["llm"], vlm={"weight": 1.0}, llm={"weight": 0.0})
    cks = open_models(rec, plugins)
    merger = InMemoryMerger(cks, donor="vlm", plugins=plugins)
    model = merger.apply(build_plan(rec, cks, plugins))
    want = hf_state(zoo["legacy"])
    assert all(torch.equal(model.state_dict()[k], want[k]) for k in want)
    half = recipe("linear", zoo["legacy"], zoo["llm"], vlm={"weight": 0.5}, llm={"weight": 0.5})
    model = merger.apply(build_plan(half, cks, plugins))
    sd, llm = model.state_dict(), load_file(str(zoo["llm"] / "model.safetensors"))
    key = "model.language_model.layers.2.mlp.up_proj.weight"
    expected = (want[key] * 0.5 + llm["model.layers.2.mlp.up_proj.weight"] * 0.5) / 1.0
    assert torch.allclose(sd[key], expected, atol=1e-7)
    assert torch.equal(
        sd["model.multi_modal_projector.linear_2.weight"], want["model.multi_modal_projector.linear_2.weight"]
    )


def test_vocabulary_mismatch_names_both_sizes(zoo, plugins):
    rec = recipe("linear", zoo["current"], zoo["small_vocab"], vlm={"weight": 0.5}, llm={"weight": 0.5})
    with pytest.raises(IncompatibleModelsError) as err:
        open_models(rec, plugins)
    n = len(vlm_tokenizer())
    assert f"vocabulary size {n} " in str(err.value) and f"vocabulary size {n - 1} " in str(err.value)


def test_llava_next_layout_and_roundtrip(tmp_path, plugins):
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration

    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=32)  # fmt: skip
    cfg = LlavaNextConfig(vision_config=vision, text_config=tiny_config("mistral", num_layers=2),
                          image_token_index=5, image_grid_pinpoints=[[32, 32], [32, 64]])  # fmt: skip
    torch.manual_seed(0)
    model = LlavaNextForConditionalGeneration(cfg)
    model.save_pretrained(tmp_path / "next")
    ck = open_models([_ref("next", tmp_path / "next")], plugins)["next"]
    assert ck.architecture == "LlavaNextForConditionalGeneration"
    assert ck.layout["image_newline"].kind is ModuleKind.PROJECTOR
    assert ck.layout["model.layers.1.self_attn.q_proj.weight"].stored_name.startswith("language_model.model.")
    rebuilt = ck.load_model().state_dict()
    assert all(torch.equal(rebuilt[k], v) for k, v in model.state_dict().items())
