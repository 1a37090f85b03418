"""Run artefacts: front.csv / front.json, front.png, progress.png and a self-contained report.html.

report.html is the dashboard of ``evomm serve`` (:mod:`evomm.dashboard`) with its data embedded.
Everything is computed from the run directory alone (``recipe.yaml``, ``run.json``,
``archive.jsonl``, and the held-out re-scores ``rescore-<split>.json`` of ``evomm rescore``), so
``evomm front RUN_DIR`` can regenerate it at any time. Hypervolume
(:func:`evomm.dashboard.series.progress_series`) is pymoo's :class:`~pymoo.indicators.hv.HV`, in
normalised objective space (each objective scaled to [0, 1] over every scored model, parents
included; reference point 1.1).
"""

from __future__ import annotations

import base64
import csv
import difflib
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evomm.archive import Archive
from evomm.dashboard.page import write_static
from evomm.dashboard.series import progress_series
from evomm.dashboard.state import RunState
from evomm.errors import ConfigError, SearchError
from evomm.front import ObjectiveInfo, dominates_parents, pareto_front, pick
from evomm.records import CandidateRecord
from evomm.rundir import ARCHIVE_NAME, objective_infos, read_rescores, read_run

KEY_GENES = 6


def _last_stage(archive: Archive) -> str:
    return archive.records[-1].stage if archive.records else ""


def _check_stage(stage: str, archive: Archive, meta: dict[str, Any], run_dir: Path) -> None:
    """Raise unless ``stage`` has records (did-you-mean over the run's stages)."""
    have = archive.stages()
    if stage in have:
        return
    known = list(dict.fromkeys([*meta.get("stages", []), *have]))
    if stage in known:
        raise SearchError(f"--stage {stage!r}: the stage has no scored model yet in {run_dir}; "
                          f"stages with results: {', '.join(have)}")
    close = difflib.get_close_matches(stage, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(f"--stage {stage!r} is not a stage of {run_dir}; {hint}its stages: {', '.join(known)}")


def load_front(run_dir: Path, stage: str | None = None) -> tuple[list[ObjectiveInfo], list[CandidateRecord],
                                                                 list[CandidateRecord], list[CandidateRecord]]:
    """(objectives, all children, front, parents) of a run's stage (default: the last one).

    Raises:
        SearchError: not a run, a damaged ``recipe.yaml``/``run.json``, nothing archived yet.
        ConfigError: ``stage`` is not a stage of the run (did-you-mean in the message).
    """
    _, meta = read_run(run_dir)
    infos = objective_infos(meta)
    archive = Archive(Path(run_dir) / ARCHIVE_NAME)
    if not archive.records:
        raise SearchError(f"{Path(run_dir) / ARCHIVE_NAME} holds no scored model yet: wait until `evomm evolve` "
                          f"has archived some, or continue the run with `evomm evolve --resume {run_dir}`")
    if stage is not None:
        _check_stage(stage, archive, meta, run_dir)
    stage = stage or _last_stage(archive)
    children = archive.stage_records(stage)
    parents = [r for r in archive.stage_records(stage, parents=True) if r.is_parent]
    return infos, children, pareto_front(children, infos), parents


def key_genes(rec: CandidateRecord, n: int = KEY_GENES) -> str:
    """The first ``n`` genes as ``name=value`` (for tables)."""
    items = list(rec.genes.items())
    text = ", ".join(f"{k}={v:.3g}" for k, v in items[:n])
    return text + (f", ... (+{len(items) - n})" if len(items) > n else "")


def front_table(infos: Sequence[ObjectiveInfo], front: Sequence[CandidateRecord],
                parents: Sequence[CandidateRecord], picked: dict[str, str] | None = None) -> str:
    """A plain-text table: parents first, then the front (id, objectives, key genes)."""
    picked = picked or {}
    names = [o.name for o in infos]
    head = f"{'candidate':<16}" + "".join(f"{n[:14]:>15}" for n in names) + "  notes"
    arrows = f"{'':<16}" + "".join(f"{('(max)' if o.maximize else '(min)'):>15}" for o in infos)
    lines = [head, arrows, "-" * len(head)]
    for r in parents:
        lines.append(f"{r.id:<16}" + "".join(f"{r.objectives[n]:>15.4f}" for n in names) + "  parent")
    # Children with identical scores are shown once (the picked one, else the first), so that a
    # front crowded by ties stays readable; front.csv keeps every one of them.
    groups: dict[tuple[float, ...], list[CandidateRecord]] = {}
    for r in front:
        groups.setdefault(tuple(r.objectives[n] for n in names), []).append(r)
    for same in groups.values():
        r = next((c for c in same if c.id in picked), same[0])
        notes = []
        if r.id in picked:
            notes.append(f"<- {picked[r.id]}")
        dom = dominates_parents(r, parents, infos)
        if dom:
            notes.append("dominates " + "+".join(dom))
        if len(same) > 1:
            notes.append(f"+{len(same) - 1} more with these scores")
        lines.append(f"{r.id:<16}" + "".join(f"{r.objectives[n]:>15.4f}" for n in names) + "  " + "; ".join(notes))
        lines.append(f"{'':<16}  genes: {key_genes(r)}")
    return "\n".join(lines)


def write_front_files(run_dir: Path, infos: Sequence[ObjectiveInfo], front: Sequence[CandidateRecord],
                      parents: Sequence[CandidateRecord]) -> None:
    """front.csv (one row per model, parents included) and front.json."""
    names = [o.name for o in infos]
    gene_names = list(front[0].genes) if front else []
    with (run_dir / "front.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "role", "generation", *names, *gene_names, "plan_hash"])
        for r in parents:
            w.writerow([r.id, "parent", r.generation, *[r.objectives[n] for n in names],
                        *[""] * len(gene_names), r.plan_hash])
        for r in front:
            w.writerow([r.id, "front", r.generation, *[r.objectives[n] for n in names],
                        *[r.genes.get(g, "") for g in gene_names], r.plan_hash])
    (run_dir / "front.json").write_text(json.dumps(
        {"objectives": [o.__dict__ for o in infos],
         "parents": [r.to_json() for r in parents], "front": [r.to_json() for r in front]},
        indent=1, default=float) + "\n")


# -------------------------------------------------------------------------------------------------
# plots
# -------------------------------------------------------------------------------------------------


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_front(path: Path, infos: Sequence[ObjectiveInfo], children: Sequence[CandidateRecord],
               front: Sequence[CandidateRecord], parents: Sequence[CandidateRecord],
               picked: CandidateRecord | None = None) -> None:
    """Scatter of objective pairs: every candidate (grey), the front (blue), parents (red stars)."""
    plt = _plt()
    names = [o.name for o in infos]
    pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))] or [(0, 0)]
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.2 * len(pairs), 4.6), squeeze=False)
    for ax, (i, j) in zip(axes[0], pairs):
        def xy(recs: Sequence[CandidateRecord], i: int = i, j: int = j) -> tuple[list[float], list[float]]:
            if i == j:  # one objective: value against candidate order
                return list(range(len(recs))), [r.objectives[names[i]] for r in recs]
            return [r.objectives[names[i]] for r in recs], [r.objectives[names[j]] for r in recs]

        full = [r for r in children if r.evaluation == "full"]
        sub = [r for r in children if r.evaluation == "subset"]  # failed ones have no scores
        if sub:
            ax.scatter(*xy(sub), s=12, c="#cccccc", marker="x", label="subset only (cheap-first)")
        ax.scatter(*xy(full), s=16, c="#999999", alpha=0.7, label="candidates")
        ax.scatter(*xy(front), s=40, c="#1f77b4", edgecolors="k", linewidths=0.5, label="Pareto front", zorder=3)
        if picked is not None:
            ax.scatter(*xy([picked]), s=160, facecolors="none", edgecolors="#2ca02c", linewidths=2,
                       label=f"knee ({picked.id})", zorder=4)
        if i != j:
            for p in parents:
                ax.scatter(p.objectives[names[i]], p.objectives[names[j]], s=180, marker="*", c="#d62728",
                           edgecolors="k", zorder=5)
                ax.annotate(p.id.split(":", 1)[-1], (p.objectives[names[i]], p.objectives[names[j]]),
                            textcoords="offset points", xytext=(6, 6), fontsize=9, color="#d62728")
        ax.set_xlabel(f"{names[i]} ({infos[i].direction})" if i != j else "candidate")
        ax.set_ylabel(f"{names[j]} ({infos[j].direction})")
        ax.grid(alpha=0.3)
    axes[0][0].scatter([], [], s=180, marker="*", c="#d62728", edgecolors="k", label="parents")
    axes[0][0].legend(fontsize=8, loc="best")
    fig.suptitle("Objective space: all candidates, the Pareto front and the parents")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_progress(path: Path, infos: Sequence[ObjectiveInfo], children: Sequence[CandidateRecord],
                  parents: Sequence[CandidateRecord]) -> None:
    """Hypervolume and the best value of each objective per generation (parents dashed)."""
    plt = _plt()
    gens, hvs, best = progress_series(infos, children, parents)
    fig, axes = plt.subplots(1, 1 + len(infos), figsize=(4.2 * (1 + len(infos)), 3.6), squeeze=False)
    ax = axes[0][0]
    ax.plot(gens, hvs, "o-", color="#1f77b4")
    ax.set_title("hypervolume (normalised)")
    ax.set_xlabel("generation")
    ax.grid(alpha=0.3)
    for k, o in enumerate(infos, start=1):
        ax = axes[0][k]
        ax.plot(gens, best.get(o.name, []), "o-", color="#2ca02c", label="best child")
        for p in parents:
            ax.axhline(p.objectives[o.name], ls="--", lw=1, color="#d62728", alpha=0.7)
            ax.annotate(p.id.split(":", 1)[-1], (gens[0] if gens else 0, p.objectives[o.name]),
                        fontsize=8, color="#d62728", xytext=(2, 2), textcoords="offset points")
        ax.set_title(f"best {o.name} ({o.direction})")
        ax.set_xlabel("generation")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -------------------------------------------------------------------------------------------------
# HTML
# -------------------------------------------------------------------------------------------------


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{path.name}" src="data:image/png;base64,{data}" style="max-width:100%">'


def rescore_html(rescores: dict[str, dict[str, Any]]) -> str:
    """The held-out re-scores (``evomm rescore``), one table per split: each model's fitness-split
    value beside its held-out value, per objective (``""`` when the run has none)."""
    parts = []
    for split, data in rescores.items():
        names = [o["name"] for o in data["objectives"]]
        head = "".join(f"<th>{html.escape(n)} (fitness)</th><th>{html.escape(n)} ({html.escape(split)})</th>"
                       for n in names)
        rows = "".join(
            f"<tr{' class=parent' if r['role'] == 'parent' else ''}><td>{html.escape(r['id'])}</td>"
            + "".join(f"<td>{r['fitness'][n]:.4f}</td><td>{r['rescored'][n]:.4f}</td>" for n in names) + "</tr>"
            for r in data["candidates"])
        parts.append(f"<h2>Held-out re-scoring: split {html.escape(split)}</h2>"
                     f"<table><tr><th>candidate</th>{head}</tr>{rows}</table>")
    return "".join(parts)


def write_html(run_dir: Path, infos: Sequence[ObjectiveInfo], front: Sequence[CandidateRecord],
               parents: Sequence[CandidateRecord], picks: dict[str, CandidateRecord],
               rescores: dict[str, dict[str, Any]] | None = None) -> Path:
    """report.html: the dashboard of ``evomm serve`` with every answer of its API embedded (one
    file, no server; :mod:`evomm.dashboard`), and, for readers that run no scripts, the front
    table, held-out re-scores, plots (base64), picked genes and recipe (:func:`fallback_html`)."""
    state = RunState(run_dir)
    title = f"evomm run {state.run_payload()['name']}"
    return write_static(run_dir / "report.html", title, state.static_answers(),
                        fallback_html(run_dir, infos, front, parents, picks, rescores))


def fallback_html(run_dir: Path, infos: Sequence[ObjectiveInfo], front: Sequence[CandidateRecord],
                  parents: Sequence[CandidateRecord], picks: dict[str, CandidateRecord],
                  rescores: dict[str, dict[str, Any]] | None = None) -> str:
    """The report without scripts: front table, held-out re-scores, plots, picked genes, recipe."""
    names = [o.name for o in infos]
    rows = "".join(
        f"<tr class='parent'><td>{html.escape(r.id)}</td>" + "".join(f"<td>{r.objectives[n]:.4f}</td>" for n in names)
        + "<td>parent</td></tr>" for r in parents)
    rows += "".join(
        f"<tr><td>{html.escape(r.id)}</td>" + "".join(f"<td>{r.objectives[n]:.4f}</td>" for n in names)
        + f"<td>{html.escape(key_genes(r))}</td></tr>" for r in front)
    picked = "".join(
        f"<h3>{html.escape(how)}: {html.escape(r.id)}</h3><pre>{html.escape(json.dumps(r.genes, indent=1))}</pre>"
        for how, r in picks.items())
    recipe = html.escape((run_dir / "recipe.yaml").read_text())
    return f"""<div class="fallback"><h2>Pareto front (parents shaded)</h2><table><tr><th>candidate</th>{''.join(f'<th>{html.escape(n)} ({o.direction})</th>' for n, o in zip(names, infos))}<th>genes</th></tr>{rows}</table>
{rescore_html(rescores or {})}
<h2>Objective space</h2>{_img(run_dir / 'front.png')}
<h2>Progress</h2>{_img(run_dir / 'progress.png')}
<h2>Picked models</h2>{picked or '<p>(none)</p>'}
<h2>Recipe</h2><pre>{recipe}</pre></div>"""


def write_artifacts(run_dir: str | Path, stage: str | None = None) -> dict[str, Path]:
    """Write every artefact of a run (front files, plots, report); returns their paths."""
    run_dir = Path(run_dir)
    infos, children, front, parents = load_front(run_dir, stage)
    write_front_files(run_dir, infos, front, parents)
    knee = pick(front, infos, "knee") if front else None
    plot_front(run_dir / "front.png", infos, children, front, parents, knee)
    plot_progress(run_dir / "progress.png", infos, children, parents)
    write_html(run_dir, infos, front, parents, {"knee": knee} if knee else {}, read_rescores(run_dir))
    return {n: run_dir / n for n in ("front.csv", "front.json", "front.png", "progress.png", "report.html")}
