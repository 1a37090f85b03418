"""The planner's worker-memory estimate against a worker's measured peak RSS (issue 21.5).

Runs, in a fresh child process, what an evolution worker does for its first candidate: load the
plugins, open the parents, merge a TIES candidate into the working model
(:class:`evomm.execute.InMemoryMerger`, parents cached in the recipe's dtype) and run one forward
pass of ``--tokens`` tokens; the child reports its peak RSS (``VmHWM``) at the end and right after
its imports (the runtime the planner assumes, :data:`evomm.planner.RUNTIME_BYTES`). Prints the
planner's estimate (:func:`evomm.planner.plan_worker`) beside it and their ratio.

Usage::

    .venv/bin/python bench/plan_memory.py --models /tmp/m350-rand --dtype bfloat16

``--models`` holds ``base``, ``a`` and ``b`` (``bench/merge_throughput.py --models DIR`` makes
them). Nothing is asserted; numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

_CHILD = r"""
import json, sys
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
import torch, transformers
from evomm.plugins import get_plugins
from evomm.execute import InMemoryMerger, open_models
from evomm.plan import build_plan
from evomm.recipe import load_recipe
plugins = get_plugins([])
runtime = hwm()
recipe = load_recipe(sys.argv[1], plugins)
cks = open_models(recipe, plugins)
plan = build_plan(recipe, cks, plugins)
merger = InMemoryMerger(cks, recipe.donor(), plugins, getattr(torch, sys.argv[2]))
model = merger.apply(plan)
with torch.inference_mode():
    model(torch.randint(0, 1000, (1, int(sys.argv[3]))))
print(json.dumps({"runtime": runtime, "peak": hwm()}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=Path, required=True)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--tokens", type=int, default=256)
    args = ap.parse_args()
    from evomm.planner import human, plan_worker

    names = ("base", "a", "b")
    recipe = {"merge_method": "ties", "base_model": str(args.models / "base"), "dtype": args.dtype,
              "models": [{"model": str(args.models / n), "parameters": {"weight": 0.5, "density": 0.5}}
                         for n in names[1:]]}
    path = Path("/tmp/plan_memory_recipe.yaml")
    path.write_text(json.dumps(recipe))
    plan = plan_worker([(n, str(args.models / n)) for n in names], args.dtype, positions=args.tokens)
    print("\n".join(plan.lines()))
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path), args.dtype, str(args.tokens)],
                         capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"measured: runtime {human(got['runtime'])}, peak RSS {human(got['peak'])}")
    print(f"estimate / measured peak: {plan.total / got['peak']:.3f}")


if __name__ == "__main__":
    main()
