"""The printed front table: parents first, children with identical scores shown once."""

from __future__ import annotations

from evomm.front import ObjectiveInfo, pareto_front
from evomm.records import CandidateRecord
from evomm.report import front_table


def _rec(cid: str, a: float, b: float, parent: bool = False) -> CandidateRecord:
    return CandidateRecord(
        id=f"parent:{cid}" if parent else cid, generation=-1 if parent else 0, genome=[],
        plan_hash=cid, metrics={}, objectives={"ja": a, "math": b}, genes={"w": a},
    )


def test_ties_on_the_front_are_grouped_and_the_pick_is_the_row_shown() -> None:
    infos = [ObjectiveInfo("ja", "maximize"), ObjectiveInfo("math", "maximize")]
    parents = [_rec("ja", 1.0, 0.0, parent=True), _rec("math", 0.0, 1.0, parent=True)]
    children = [_rec("c1", 0.5, 0.5), _rec("c2", 0.5, 0.5), _rec("c3", 0.5, 0.5),
                _rec("c4", 0.9, 0.2), _rec("c5", 0.1, 0.1)]
    front = pareto_front(children, infos)
    assert [r.id for r in front] == ["c1", "c2", "c3", "c4"]  # c5 is dominated

    table = front_table(infos, front, parents, {"c2": "knee"})
    rows = [line.split()[0] for line in table.splitlines()[3:] if not line.startswith(" ")]
    assert rows == ["parent:ja", "parent:math", "c2", "c4"]
    c2_line = next(line for line in table.splitlines() if line.startswith("c2"))
    assert "<- knee" in c2_line and "+2 more with these scores" in c2_line
