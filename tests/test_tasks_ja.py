"""Built-in Japanese tasks and clip_zeroshot, each on a small local fixture in its hub schema."""

from __future__ import annotations

import json

import pytest
import torch

from evomm.errors import OfflineError, TaskError
from evomm.metrics.textutils import mecab_tokens
from evomm.plugins import load_plugins


@pytest.fixture(scope="module")
def registry():
    import evomm_tasks_ja

    return load_plugins(extra=[evomm_tasks_ja], autoload=False).tasks


def _image(color: str):
    from PIL import Image

    return Image.new("RGB", (8, 8), color)


# -------------------------------------------------------------------------------------------------
# ja_math (juletxara/mgsm, config ja: question, answer, answer_number, equation_solution)
# -------------------------------------------------------------------------------------------------

MGSM = [
    {"question": "りんごが3個、みかんが5個あります。果物は全部で何個ですか？", "answer": None,
     "answer_number": 8, "equation_solution": None},
    {"question": "1個120円のパンを10個買うといくらですか？", "answer": None,
     "answer_number": 1200, "equation_solution": None},
    {"question": "12人を3つのグループに分けると1グループ何人ですか？", "answer": None,
     "answer_number": 4, "equation_solution": None},
    {"question": "気温は5度で、8度下がりました。何度ですか？", "answer": None,
     "answer_number": -3, "equation_solution": None},
]
OUTPUTS = {  # real-style chain-of-thought outputs
    8: "りんご3個とみかん5個を足すと、3 + 5 = 8。答えは８個です。",
    1200: "120 × 10 = 1,200。したがって、答えは１，２００円です。",
    4: "12 / 3 = 4. The answer is 4.",  # right number, but English
    -3: "5 - 8 = -3 なので、答えは -2 度です。",  # last number wrong
}


class ScriptedLM:
    capabilities = frozenset({"generate", "loglikelihood"})

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def generate(self, prompts, *, images=None, max_new_tokens=64, stop=(), num_beams=1, batch_size=16):
        self.prompts += list(prompts)
        return [OUTPUTS[next(r["answer_number"] for r in MGSM if r["question"] in p)] for p in prompts]


def test_ja_math_on_mgsm_fixture(tmp_path, registry) -> None:
    path = tmp_path / "mgsm_ja.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in MGSM))
    lm = ScriptedLM()
    result = registry.get("ja_math")(str(path)).evaluate(lm)
    assert result.metrics == {"accuracy": 2 / 4, "japanese": 3 / 4}  # the English answer does not count
    assert "一歩一歩考えましょう" in lm.prompts[0] and MGSM[0]["question"] in lm.prompts[0]
    lenient = registry.get("ja_math")(str(path), require_japanese=False).evaluate(lm)
    assert lenient.metrics["accuracy"] == 3 / 4
    assert [d["extracted"] for d in result.details] == ["8", "1200", "4", "-2"]


def test_ja_math_default_data_is_the_hub_and_fails_offline(registry) -> None:
    task = registry.get("ja_math")()
    assert task.describe_data() == "hub juletxara/mgsm (ja) [test]"
    with pytest.raises(OfflineError, match="data: path/to/file.jsonl"):
        task.evaluate(ScriptedLM())


# -------------------------------------------------------------------------------------------------
# ja_mc (JCommonsenseQA: q_id, question, choice0..choice4, label) with a tiny Llama
# -------------------------------------------------------------------------------------------------

JCQA = [
    {"q_id": 0, "question": "日本の首都はどこ？", "choice0": "大阪", "choice1": "東京", "choice2": "京都",
     "choice3": "名古屋", "choice4": "福岡", "label": 1},
    {"q_id": 1, "question": "猫は何と鳴く？", "choice0": "ワン", "choice1": "モー", "choice2": "ニャー",
     "choice3": "コケコッコー", "choice4": "ブー", "label": 2},
    {"q_id": 2, "question": "3の次の数は？", "choice0": "4", "choice1": "5", "choice2": "6",
     "choice3": "7", "choice4": "8", "label": 0},
]


def test_ja_mc_on_jcommonsenseqa_fixture_with_tiny_llama(tmp_path, registry) -> None:
    import datasets
    from evomm_hf.handle import HFCausalLMHandle
    from transformers import AutoModelForCausalLM

    from tests.tiny_models import tiny_config, train_tokenizer

    datasets.Dataset.from_list(JCQA).to_parquet(str(tmp_path / "validation.parquet"))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("llama", num_layers=2)).eval()
    handle = HFCausalLMHandle(model, train_tokenizer())
    task = registry.get("ja_mc")(str(tmp_path / "validation.parquet"))
    result = task.evaluate(handle)

    # reference: score each choice alone (batch of one), then argmax by hand
    correct = correct_norm = 0
    for row, detail in zip(JCQA, result.details):
        choices = [row[f"choice{i}"] for i in range(5)]
        ctx = f"質問：{row['question']}\n選択肢：{'、'.join(choices)}\n答え："
        lls = [handle.loglikelihood([(ctx, c)], batch_size=1)[0] for c in choices]
        assert detail["loglikelihoods"] == pytest.approx(lls, abs=1e-4)
        correct += max(range(5), key=lambda i, lls=lls: lls[i]) == row["label"]
        correct_norm += max(range(5), key=lambda i, lls=lls, ch=choices: lls[i] / len(ch[i])) == row["label"]
    assert result.metrics == pytest.approx({"accuracy": correct / 3, "accuracy_norm": correct_norm / 3})
    assert task.split == "validation"


# -------------------------------------------------------------------------------------------------
# ja_vqa (SakanaAI/JA-VG-VQA-500: image_id, image, qas[{qa_id, question, answer}])
# -------------------------------------------------------------------------------------------------


class ScriptedVLM:
    capabilities = frozenset({"generate", "image"})
    answers = {"何色ですか？": "赤いです", "何がありますか？": "a red square", "形は？": "四角"}

    def generate(self, prompts, *, images=None, max_new_tokens=64, stop=(), num_beams=1, batch_size=16):
        assert images is not None and len(images) == len(prompts)
        assert all(hasattr(im, "size") for im in images)  # decoded PIL images
        return [self.answers[p] for p in prompts]


def test_ja_vqa_on_ja_vg_vqa_fixture(tmp_path, registry) -> None:
    import datasets

    features = datasets.Features({
        "image_id": datasets.Value("int64"),
        "image": datasets.Image(),
        "qas": [{"qa_id": datasets.Value("int64"), "question": datasets.Value("string"),
                 "answer": datasets.Value("string")}],
    })
    rows = {
        "image_id": [1, 2],
        "image": [_image("red"), _image("blue")],
        "qas": [
            [{"qa_id": 10, "question": "何色ですか？", "answer": "赤"},
             {"qa_id": 11, "question": "何がありますか？", "answer": "赤い四角"}],
            [{"qa_id": 12, "question": "形は？", "answer": "四角です"}],
        ],
    }
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "test.parquet"))
    result = registry.get("ja_vqa")(str(tmp_path / "test.parquet")).evaluate(ScriptedVLM())
    assert result.n == 3
    # hand-computed: 赤い|です vs 赤 -> LCS 0 (赤い != 赤); English answer -> 0; 四角 vs 四角|です -> F = 2/3
    assert mecab_tokens("赤いです") == ["赤い", "です"] and mecab_tokens("四角です") == ["四角", "です"]
    assert [d["rougeL"] for d in result.details] == pytest.approx([0.0, 0.0, 2 / 3])
    assert result.metrics["rougeL"] == pytest.approx((2 / 3) / 3)


# -------------------------------------------------------------------------------------------------
# clip_zeroshot (image folder: class sub-directories -> ClassLabel)
# -------------------------------------------------------------------------------------------------


class ColourCLIP:
    """Picks the class whose prompts name the image's colour (a stand-in for CLIP similarity)."""

    capabilities = frozenset({"classify"})
    names = {(255, 0, 0): "red", (0, 0, 255): "blue", (0, 128, 0): "green"}

    def classify(self, images, class_prompts):
        out = []
        for im in images:
            colour = self.names[im.convert("RGB").getpixel((0, 0))]
            out.append(next(i for i, ps in enumerate(class_prompts) if any(colour in p for p in ps)))
        return out


def test_clip_zeroshot_on_an_image_folder(tmp_path, registry) -> None:
    layout = {"blue": ["blue", "blue"], "green": ["green"], "red": ["red", "blue"]}  # one mislabelled
    for cls, colours in layout.items():
        (tmp_path / "shapes" / cls).mkdir(parents=True)
        for i, c in enumerate(colours):
            _image(c).save(tmp_path / "shapes" / cls / f"{i}.png")
    task = registry.get("clip_zeroshot")(str(tmp_path / "shapes"), templates=["a {} shape"])
    assert task.class_names() == ["blue", "green", "red"]
    result = task.evaluate(ColourCLIP())
    assert result.metrics["accuracy"] == pytest.approx(4 / 5)
    from evomm.evaluation import evaluate_tasks

    with pytest.raises(TaskError, match=r"task 'clip_zeroshot' needs \['classify'\]"):
        evaluate_tasks(ScriptedLM(), {"clip": task})
