"""``lmeval``: any lm-evaluation-harness task as an evomm fitness task, scored in memory.

The lm-eval task (a registered name, or a local YAML file/directory found through lm-eval's
``TaskManager(include_path=...)``) is built once; each :meth:`LmEvalTask.score` runs
``lm_eval.evaluator.evaluate`` with a :class:`~evomm_tasks_lmeval.lm.HandleLM` around the
candidate's handle, so the merged model is never saved and reloaded.

Examples are the lm-eval task's evaluation documents, identified by their index (``doc_id``);
evomm's ``limit``/``seed``/``subset`` pick indices and lm-eval's ``samples`` scores exactly those.

Recipe example::

    tasks:
      lmeval: {task: path/to/my_task.yaml, num_fewshot: 0, metric: acc, limit: 200, seed: 0}
    objectives:
      - {name: mc, task: lmeval}
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from evomm.errors import TaskError
from evomm.tasks import MetricSpec, Task, TaskResult

if TYPE_CHECKING:
    import datasets

    from evomm.handle import ModelHandle

INSTALL_HINT = "pip install 'evomm[lmeval]'"
#: lm-eval's default few-shot sampler seed (``simple_evaluate(fewshot_random_seed=1234)``).
FEWSHOT_SEED = 1234
_CLASS_METRICS = (
    MetricSpec("metric", True, "the lm-eval task's metrics (from its YAML); `metric` picks the objective"),
)


def import_lm_eval() -> Any:
    """Import ``lm_eval`` (and its evaluator), or raise a :class:`TaskError` naming the extra.

    Returns:
        The ``lm_eval`` module.

    Example:
        >>> lm_eval = import_lm_eval()   # doctest: +SKIP
    """
    try:
        lm_eval = importlib.import_module("lm_eval")
        importlib.import_module("lm_eval.evaluator")
        importlib.import_module("lm_eval.tasks")
    except ImportError as exc:
        raise TaskError(
            f"task 'lmeval' needs the lm-evaluation-harness, which is not installed ({exc}); "
            f"install it with: {INSTALL_HINT}"
        ) from None
    return lm_eval


class _ByInstance:
    """Class access: a static description (``evomm tasks``); instance access: resolved from the
    lm-eval task (which imports lm_eval and builds the task)."""

    def __init__(self, static: Any, method: str) -> None:
        self.static, self.method = static, method

    def __get__(self, obj: Any, owner: type) -> Any:
        return self.static if obj is None else getattr(obj, self.method)()


def _yaml_task_name(path: Path) -> str:
    """The ``task:`` name in an lm-eval YAML file (custom tags such as ``!function`` ignored)."""

    class _Loader(yaml.SafeLoader):
        pass

    _Loader.add_multi_constructor("", lambda loader, suffix, node: None)
    try:
        cfg = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise TaskError(f"lmeval: cannot read task file {path}: {exc}") from None
    name = cfg.get("task") if isinstance(cfg, dict) else None
    if not isinstance(name, str):
        name = cfg.get("group") if isinstance(cfg, dict) else None
    if not isinstance(name, str):
        raise TaskError(f"lmeval: {path} has no `task:` name; an lm-eval YAML task starts with `task: my_task`")
    return name


def metric_key(result_key: str) -> str:
    """evomm's name for an lm-eval result key: ``acc,none`` -> ``acc``,
    ``exact_match,strict-match`` -> ``exact_match__strict-match`` (suite names allow no comma).

    Example:
        >>> metric_key("exact_match,flexible-extract")
        'exact_match__flexible-extract'
    """
    metric, _, filt = result_key.partition(",")
    return metric if filt in ("", "none") else f"{metric}__{filt}"


def _per_item(task_obj: Any, samples: Sequence[dict[str, Any]], examples: Sequence[dict[str, Any]]) -> dict[str, list[float]]:
    """Per-example values of the metrics lm-eval aggregates by ``mean`` (unfiltered), in the order
    of ``examples``; corpus-level metrics (BLEU, F1 over the corpus) and filtered ones give none."""
    from lm_eval.api.metrics import mean

    by_doc = {int(s["doc_id"]): s for s in samples if s.get("filter", "none") == "none"}
    aggregation = task_obj.aggregation()
    items: dict[str, list[float]] = {}
    for m in task_obj.higher_is_better():
        if aggregation.get(m) is not mean:
            continue
        try:
            items[m] = [float(by_doc[int(e["doc_id"])][m]) for e in examples]
        except (KeyError, TypeError, ValueError):
            continue  # no per-sample number for this metric: aggregate only
    return items


def _unwrap(resps: Any) -> Any:
    """A single response (``generate_until``) rather than lm-eval's one-element list."""
    return resps[0] if isinstance(resps, list) and len(resps) == 1 else resps


class LmEvalTask(Task):
    """An lm-evaluation-harness task scored on the in-memory model.

    Options:
        task: an lm-eval task name (``arc_easy``), or a local YAML file or directory (one task)
            holding an lm-eval task; a local dataset is named in the YAML (``dataset_path: json``,
            ``dataset_kwargs: {data_files: {test: data.jsonl}}``).
        include_path: extra directory of lm-eval YAML tasks searched for a task *name*.
        num_fewshot: few-shot examples (default: the YAML's, else 0; a YAML's 0 is kept, as
            ``lm_eval`` does).
        metric: the lm-eval metric that is the objective (default: the task's first); other
            metrics are reported too. Filtered metrics are ``<metric>__<filter>``.
        batch_size: requests per handle call (16).
        fewshot_seed: seed of lm-eval's few-shot sampler (1234, lm-eval's default), fixed so
            that every candidate sees the same prompts.
        greedy_check: compute ``is_greedy`` (lm-eval ``acc`` of ``output_type: loglikelihood``
            tasks) by greedy generation; default on for such tasks only.
        system_instruction: passed to lm-eval.
        limit, seed: as for every task (a seeded shuffle, then the first ``limit`` documents);
            the selection is given to lm-eval as ``samples``.

    Example:
        >>> task = LmEvalTask(task="tests/my_mc.yaml", limit=50)   # doctest: +SKIP
        >>> task.evaluate(handle).metrics                            # doctest: +SKIP
        {'acc': 0.42, 'acc_norm': 0.44}
    """

    name = "lmeval"
    description = "any lm-evaluation-harness task (name or local YAML), scored in memory (extra: lmeval)"
    modality = "text"
    default_data = None
    metrics = _ByInstance(_CLASS_METRICS, "_metrics")  # type: ignore[assignment]
    requires = _ByInstance(frozenset(), "_requires")  # type: ignore[assignment]

    def __init__(
        self,
        data: str | None = None,
        *,
        split: str | None = None,
        limit: int | None = None,
        seed: int | None = None,
        task: str | None = None,
        include_path: str | None = None,
        num_fewshot: int | None = None,
        metric: str | None = None,
        batch_size: int = 16,
        fewshot_seed: int | None = FEWSHOT_SEED,
        greedy_check: bool | None = None,
        system_instruction: str | None = None,
    ) -> None:
        super().__init__(data, split=split, limit=limit, seed=seed)
        if not task:
            raise TaskError("task 'lmeval': set the `task` option to an lm-eval task name or a local YAML file")
        for key, value in (("data", data), ("split", split)):
            if value is not None:
                raise TaskError(
                    f"task 'lmeval': {key}={value!r} is not used; the lm-eval YAML names the dataset "
                    "(dataset_path, dataset_kwargs.data_files) and the split (test_split); set it there"
                )
        if num_fewshot is not None and (not isinstance(num_fewshot, int) or num_fewshot < 0):
            raise TaskError(f"task 'lmeval': num_fewshot={num_fewshot!r}; use an integer >= 0")
        self.lm_task, self.include_path, self.num_fewshot = str(task), include_path, num_fewshot
        self.metric, self.batch_size, self.fewshot_seed = metric, int(batch_size), fewshot_seed
        self.greedy_check, self.system_instruction = greedy_check, system_instruction
        self._built: tuple[Any, str, Any] | None = None

    # ------------------------------------------------------------------------------------------
    def describe_data(self) -> str:
        return f"lm-eval task {self.lm_task}"

    def _task_manager(self) -> tuple[Any, str | None]:
        from lm_eval.tasks import TaskManager

        spec = Path(self.lm_task).expanduser()
        include, name, local = self.include_path, self.lm_task, False
        if spec.suffix in (".yaml", ".yml"):
            if not spec.is_file():
                raise TaskError(f"task 'lmeval': task file {spec} does not exist; give a YAML file, a directory or a task name")
            include, name, local = str(spec.parent), _yaml_task_name(spec), True
        elif spec.is_dir():
            include, name, local = str(spec), None, True
        kwargs: dict[str, Any] = {"include_path": include}
        if local and "include_defaults" in inspect.signature(TaskManager).parameters:
            kwargs["include_defaults"] = False  # indexing lm-eval's ~15k built-in tasks takes seconds
        return TaskManager(**kwargs), name

    def _build(self) -> tuple[Any, str, Any]:
        """Build the lm-eval task once: ``(task_dict for evaluate, task name, Task object)``."""
        if self._built is not None:
            return self._built
        lm_eval = import_lm_eval()
        tm, name = self._task_manager()
        if name is None:
            found = list(getattr(tm, "all_subtasks", tm.all_tasks))
            if len(found) != 1:
                raise TaskError(
                    f"task 'lmeval': directory {self.lm_task} holds {len(found)} lm-eval tasks {found[:8]}; "
                    "name one YAML file, or set `task: <name>` with `include_path: <dir>`"
                )
            name = found[0]
        if name not in tm.all_tasks:
            close = difflib.get_close_matches(name, tm.all_tasks, n=3)
            raise TaskError(
                f"task 'lmeval': lm-eval has no task {name!r}" + (f"; did you mean {close}?" if close else "")
                + " (a local YAML: give its path as `task`, or its directory as `include_path`)"
            )
        task_dict = tm.load([name]) if hasattr(tm, "load") else lm_eval.tasks.get_task_dict([name], tm)
        leaves = task_dict["tasks"] if "tasks" in task_dict else task_dict
        if len(leaves) != 1 or not hasattr(next(iter(leaves.values())), "eval_docs"):
            raise TaskError(
                f"task 'lmeval': {name!r} is a group of {len(leaves)} lm-eval tasks; use one lmeval task "
                "per sub-task (subclass LmEvalTask with another name) and combine them in a suite"
            )
        (leaf_name, task_obj), = leaves.items()
        self._configure(task_obj)
        self._built = (task_dict, leaf_name, task_obj)
        return self._built

    def _configure(self, task_obj: Any) -> None:
        # The same few-shot rules as lm_eval.evaluator.simple_evaluate.
        default = task_obj.get_config("num_fewshot")
        if self.num_fewshot is not None and default != 0:
            task_obj.set_config(key="num_fewshot", value=self.num_fewshot)
        elif default is None:
            task_obj.set_config(key="num_fewshot", value=0)
        task_obj.set_fewshot_seed(seed=self.fewshot_seed)

    def _metric_names(self) -> list[str]:
        _, _, task_obj = self._build()
        filters = [getattr(f, "name", "none") for f in getattr(task_obj, "_filters", [])] or ["none"]
        return [metric_key(f"{m},{f}") for f in filters for m in task_obj.higher_is_better()]

    def _metrics(self) -> tuple[MetricSpec, ...]:
        _, _, task_obj = self._build()
        hib = task_obj.higher_is_better()
        specs = [MetricSpec(n, bool(hib.get(n.split("__")[0], True)), "lm-eval metric") for n in self._metric_names()]
        if self.metric is not None:
            chosen = [s for s in specs if s.name == self.metric]
            if not chosen:
                raise TaskError(
                    f"task 'lmeval': metric={self.metric!r} is not reported by lm-eval task "
                    f"{self.lm_task!r}; it reports {[s.name for s in specs]}"
                )
            specs = chosen + [s for s in specs if s.name != self.metric]
        return tuple(specs)

    def _requires(self) -> frozenset[str]:
        _, _, task_obj = self._build()
        return frozenset({"generate"} if task_obj.OUTPUT_TYPE == "generate_until" else {"loglikelihood"})

    # ------------------------------------------------------------------------------------------
    def load(self) -> datasets.Dataset:
        """One row per evaluation document of the lm-eval task: ``{"doc_id": i}``."""
        import datasets

        _, _, task_obj = self._build()
        return datasets.Dataset.from_dict({"doc_id": list(range(len(task_obj.eval_docs)))})

    def score(self, handle: ModelHandle, examples: Sequence[dict[str, Any]]) -> TaskResult:
        """Run ``lm_eval.evaluator.evaluate`` on the chosen documents with ``handle`` as the LM."""
        from lm_eval.evaluator import evaluate

        from evomm_tasks_lmeval.lm import HandleLM

        task_dict, name, task_obj = self._build()
        greedy = self.greedy_check if self.greedy_check is not None else task_obj.OUTPUT_TYPE == "loglikelihood"
        lm = HandleLM(handle, batch_size=self.batch_size, greedy_check=greedy)
        ids = sorted({int(e["doc_id"]) for e in examples})  # lm-eval scores samples in document order
        out = evaluate(
            lm=lm,
            task_dict=task_dict,
            samples={name: ids},
            bootstrap_iters=0,
            log_samples=True,
            system_instruction=self.system_instruction,
        )
        raw = out["results"][name]
        metrics = {
            metric_key(k): float(v)
            for k, v in raw.items()
            if "," in k and "_stderr" not in k and isinstance(v, (int, float))
        }
        samples = out.get("samples", {}).get(name, [])
        details = [
            {"doc_id": s.get("doc_id"), "target": s.get("target"), "response": _unwrap(s.get("filtered_resps")),
             **{m: s[m] for m in task_obj.higher_is_better() if m in s}}
            for s in samples
        ]
        return TaskResult(metrics, len(ids), details, items=_per_item(task_obj, samples, examples))
