"""The vision half's image grid: test images with the Japanese answers of parents and children.

:func:`write_grid` draws, from a ``zoo.json``'s ``vision_table`` (its ``examples``), one column
per test image (the image, the question, the right answer) and one row per model, each answer
green when right and red when wrong; matplotlib with the IPAex Gothic font of
``matplotlib-fontja`` (so the kana render on machines without Japanese fonts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Rows of the grid: table row -> label.
GRID_ROWS = {
    "vlm": "VLM (parent)",
    "ja_grafted": "ja (parent, grafted)",
    "task_arithmetic_1": "task arithmetic 1/1",
    "evolved": "evolved child",
    "evolved_vlm_zeroed": "child, VLM genes 0",
}


def write_grid(table: dict[str, Any], task_dir: Path, out: Path, columns: int = 12) -> Path:
    """Draw the grid of ``table["examples"]`` (images under ``task_dir``) into ``out`` (PNG).

    Example::

        info = read_zoo_json(zoo)
        write_grid(info["vision_table"], zoo / "data" / "ja_vqa", Path("vision-grid.png"))
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib_fontja  # noqa: F401 - registers the Japanese font
    from PIL import Image

    ex = table["examples"]
    items = ex["items"][:columns]
    rows = [r for r in GRID_ROWS if r in ex]
    fig, axes = plt.subplots(1, len(items), figsize=(1.45 * len(items) + 1.9, 1.6 + 0.3 * len(rows)), squeeze=False)
    for j, (ax, item) in enumerate(zip(axes[0], items)):
        with Image.open(task_dir / item["image"]) as im:
            ax.imshow(im.convert("RGB"), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{item['question']}\n答: {item['answer']}", fontsize=8)
        for i, r in enumerate(rows):
            answer = ex[r][j] or "(nothing)"
            right = answer.strip() == item["answer"]
            ax.text(0.5, -0.14 - 0.2 * i, answer[:8], transform=ax.transAxes, ha="center", va="top", fontsize=8,
                    color="#1a7f37" if right else "#cf222e")
            if j == 0:
                ax.text(-0.12, -0.14 - 0.2 * i, GRID_ROWS[r], transform=ax.transAxes, ha="right", va="top", fontsize=8)
    n = table["rows"]["evolved"]["ja_vqa"]["n"]
    counts = ", ".join(f"{GRID_ROWS[r]} {table['rows'][r]['ja_vqa']['right']}" for r in rows)
    fig.suptitle(f"Japanese VQA, held-out test items (right of {n}: {counts})", fontsize=8)
    fig.subplots_adjust(left=0.13, right=0.99, top=0.78, bottom=0.04 + 0.075 * len(rows), wspace=0.25)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")  # written whole, then renamed: no half-drawn PNG
    fig.savefig(tmp, dpi=130, format="png")
    plt.close(fig)
    tmp.replace(out)
    return out
