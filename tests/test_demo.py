"""`evomm demo --fast` on the micro zoo: it runs end to end and says where its outputs are."""

from __future__ import annotations

from evomm.cli import main


def test_demo_fast_on_micro_zoo(micro_zoo, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--fast", "--zoo", str(micro_zoo), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for name in ("archive.jsonl", "front.csv", "front.png", "progress.png", "report.html"):
        assert (out / "run" / name).is_file(), name
    assert (out / "knee-child" / "README.md").is_file() and (out / "knee-child" / "merge.yaml").is_file()
    assert "parent:ja" in text and "parent:math" in text and str(out / "run" / "report.html") in text
