"""Generation throughput: HFCausalLMHandle (batched, KV cache) vs a one-prompt-at-a-time loop.

Both sides decode greedily exactly ``--new-tokens`` tokens per prompt (EOS disabled) with the same
random Llama, measured side by side in one run; prints tokens/s of each and the ratio.

    .venv/bin/python bench/generation_throughput.py --prompts 32 --new-tokens 32 --batch-size 16

``--demo`` instead times a whole candidate's evaluation on the demo's three tasks (the `evomm demo`
recipe on the built demo zoo, `evomm zoo build`), candidates merged in place as in a run, in
rounds that interleave the settings (medians printed): the code before issue 19.5 (each task's rows
converted from Arrow a second time, only to count them) and now; one generate call per 64 prompts
(the toy tasks' batch_size) or per task; 1 torch thread (`evomm demo`'s setting) or all cores
(torch's default, `evomm evolve`'s). Then the `evomm evolve --profile` breakdown of the current code.

    .venv/bin/python bench/generation_throughput.py --demo --rounds 5

Measured for issue 19.5 on the project's 2-core VM while seven other jobs ran (load average 18-24),
5 rounds, medians: before 3.69 s, now 3.49 s (x1.05), one generate call per task 3.70 s (x0.99),
2 torch threads 55.0 s (x0.07). The model's generate is ~92% of a candidate, the merge 2.5%.
Already in place, so not measured as changes: a batch stops once every row produced its stop
string (the toy tasks' answers are 5-7 of max 8 new tokens), prompts are sorted by length before
batching, log-likelihoods are one forward per batch, the model stays resident and is merged in
place (0.05 s). Nothing reached the 1.5x bar except torch's thread count, a setting: `evomm demo`
already uses 1 thread; on a loaded machine intra-op threads of a tiny model contend and the default
is 15-20x slower.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evomm_hf.handle import HFCausalLMHandle  # noqa: E402

from tests.tiny_models import tiny_config, train_tokenizer  # noqa: E402

PROMPTS = ["The quick brown fox", "東京は日本の", "Question: what is 2 + 3? Answer:", "吾輩は猫である。",
           "One plus two is three. Three plus four", "Merging models combines"]


def _demo_setup() -> tuple[object, object, object]:
    """The demo recipe on the cached demo zoo: (recipe, objectives, search space)."""
    import yaml
    from evomm_zoo import default_zoo_dir, rebase_zoo_paths

    from evomm.evolve_recipe import parse_recipe
    from evomm.objectives import ObjectiveSet
    from evomm.plugins import get_plugins
    from evomm.runner import build_space

    zoo = default_zoo_dir("demo")
    if not (zoo / "zoo.json").is_file():
        sys.exit(f"no demo zoo at {zoo}: build it first with `evomm zoo build`")
    data = yaml.safe_load((ROOT / "plugins/evomm_zoo/demo.yaml").read_text())
    recipe = parse_recipe(rebase_zoo_paths(data, zoo))
    plugins = get_plugins()
    return recipe, ObjectiveSet(recipe.objectives, recipe.tasks, plugins), build_space(recipe, 0, ROOT, plugins, [])


def _as_before(task: object) -> object:
    """``task`` behaving as before issue 19.5: counting its examples converts them all again."""

    class Before(type(task)):  # type: ignore[misc]
        def size(self):  # noqa: ANN202
            return len(self.examples())

    return Before(task.data, split=task.split, limit=task.limit, seed=task.seed, **task.options)


def demo(rounds: int) -> None:
    """Per-candidate evaluation time of the demo's tasks under each setting, side by side."""
    import os
    import statistics

    from evomm.evaluation import evaluate_tasks
    from evomm.plugins import get_plugins
    from evomm.profiling import format_profile, profile_candidate

    recipe, objs, space = _demo_setup()
    after = dict(objs.tasks)
    before = {k: _as_before(t) for k, t in after.items()}
    per_task = {k: type(t)(t.data, split=t.split, limit=t.limit, seed=t.seed, **{**t.options, "batch_size": 10**6})
                for k, t in after.items()}
    cores = os.cpu_count() or 1
    settings = {"before 19.5 (rows converted twice), 1 thread": (before, 1),
                "now (rows converted once), 1 thread": (after, 1),
                "now, one generate call per task, 1 thread": (per_task, 1),
                f"now, {cores} torch threads (torch's default)": (after, cores)}
    rng = np.random.default_rng(0)
    torch.set_num_threads(1)
    handle = space.materialize(space.decode(rng.random(space.dim)))
    for tasks, _ in settings.values():  # warm-up: load every data set, run the model once
        evaluate_tasks(handle, tasks, subset=8)
    times: dict[str, list[float]] = {k: [] for k in settings}
    for r in range(rounds):
        names = list(settings)
        for name in names[r % len(names):] + names[: r % len(names)]:  # rotate the order each round
            tasks, threads = settings[name]
            torch.set_num_threads(threads)
            handle = space.materialize(space.decode(rng.random(space.dim)))
            t0 = time.perf_counter()
            evaluate_tasks(handle, tasks)
            times[name].append(time.perf_counter() - t0)
            print(f"round {r}: {name}: {times[name][-1]:.2f} s", file=sys.stderr, flush=True)
    space.close()
    base = statistics.median(times[next(iter(settings))])
    items = sum(t.size() for t in after.values())
    print(f"a demo candidate's evaluation ({items} items over {len(after)} tasks), median of {rounds} rounds:")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:<46} {med:7.2f} s  (x{base / med:.2f} vs before; {min(ts):.2f}-{max(ts):.2f})")
    torch.set_num_threads(1)
    print(format_profile(profile_candidate(recipe, get_plugins())))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--demo", action="store_true", help="time a demo candidate's evaluation (see above)")
    p.add_argument("--rounds", type=int, default=5, help="with --demo: rounds of every setting")
    args = p.parse_args()
    if args.demo:
        demo(args.rounds)
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from transformers import AutoModelForCausalLM

    tok = train_tokenizer()
    cfg = tiny_config("llama", hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                      num_layers=args.layers, num_heads=8, num_kv_heads=4, max_position_embeddings=512)
    model = AutoModelForCausalLM.from_config(cfg).to(args.device).eval()
    model.generation_config.eos_token_id = None  # every prompt decodes exactly --new-tokens tokens
    prompts = [PROMPTS[i % len(PROMPTS)] + f" {i}" for i in range(args.prompts)]
    handle = HFCausalLMHandle(model, tok, device=args.device)
    total = args.prompts * args.new_tokens

    handle.generate(prompts[:2], max_new_tokens=2)  # warm-up
    t0 = time.perf_counter()
    handle.generate(prompts, max_new_tokens=args.new_tokens, batch_size=args.batch_size)
    batched = time.perf_counter() - t0

    t0 = time.perf_counter()
    with torch.inference_mode():
        for prompt in prompts:
            ids = tok(prompt, return_tensors="pt").to(args.device)
            model.generate(**ids, max_new_tokens=args.new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    single = time.perf_counter() - t0

    print(f"model: llama hidden={args.hidden} layers={args.layers} vocab={cfg.vocab_size} on {args.device} "
          f"({torch.get_num_threads()} threads); {args.prompts} prompts x {args.new_tokens} new tokens")
    print(f"batched (batch_size={args.batch_size}): {total / batched:9.1f} tokens/s  ({batched:.2f} s)")
    print(f"one prompt at a time:        {total / single:9.1f} tokens/s  ({single:.2f} s)")
    print(f"ratio batched / single: {single / batched:.2f}x")


if __name__ == "__main__":
    main()
