"""`evomm demo --fast --vision` on the micro zoo: it runs end to end and says where its outputs are."""

from __future__ import annotations

import json

import torch

from evomm.cli import main


def test_demo_fast_on_micro_zoo(micro_zoo, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--fast", "--vision", "--zoo", str(micro_zoo), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for name in ("archive.jsonl", "front.csv", "front.png", "progress.png", "report.html"):
        assert (out / "run" / name).is_file(), name
    assert (out / "knee-child" / "README.md").is_file() and (out / "knee-child" / "merge.yaml").is_file()
    assert "parent:ja" in text and "parent:math" in text and str(out / "run" / "report.html") in text
    # the vision stage: the zoo's table, the evolved VLM exported as a LLaVA checkpoint, the grid
    from PIL import Image
    from safetensors.torch import load_file
    from transformers import LlavaForConditionalGeneration

    table = json.loads((micro_zoo / "zoo.json").read_text())["vision_table"]
    assert "evolved_vlm_zeroed" in text and str(out / "vision-grid.png") in text
    child = LlavaForConditionalGeneration.from_pretrained(str(out / "vision-child"))
    card = (out / "vision-child" / "README.md").read_text()
    assert table["evolved_id"] in card and "ja_vision" in card
    vlm = load_file(str(micro_zoo / "models" / "vlm" / "model.safetensors"))
    sd = child.state_dict()
    tower = [k for k in vlm if k.startswith("vision_tower.")]
    assert tower and all(torch.equal(sd["model." + k], vlm[k]) for k in tower)
    with Image.open(out / "vision-grid.png") as im:
        assert im.format == "PNG" and im.width > im.height > 100
