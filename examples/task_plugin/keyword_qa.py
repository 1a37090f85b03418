"""A one-file evomm task plugin: does the model's answer contain the expected keyword?

Try it:  evomm --plugins-dir examples/task_plugin tasks keyword_qa
"""

from pathlib import Path

from evomm import hookimpl
from evomm.tasks import MetricSpec, Task, TaskResult

HERE = Path(__file__).resolve().parent


class KeywordQA(Task):
    """Short Japanese questions; an answer is right when it contains the row's ``keyword``.

    Data: JSONL rows ``{"question": ..., "keyword": ...}`` (``keyword_qa.jsonl`` next to this file
    by default; point ``data:`` elsewhere in a recipe). Options: ``prompt``, ``max_new_tokens``.
    """

    name = "keyword_qa"
    description = "Japanese short answers; hit if the answer contains the keyword"
    modality = "text"
    requires = frozenset({"generate"})
    metrics = (MetricSpec("hit_rate", higher_is_better=True, description="answers with the keyword"),)
    default_data = str(HERE / "keyword_qa.jsonl")

    def score(self, handle, examples):
        template = self.options.get("prompt", "質問：{question}\n答え：")
        outputs = handle.generate(
            [template.format(question=e["question"]) for e in examples],
            max_new_tokens=int(self.options.get("max_new_tokens", 16)),
            stop=["\n"],
        )
        hits = [e["keyword"] in out for e, out in zip(examples, outputs)]
        details = [{"output": o, "keyword": e["keyword"], "hit": h} for o, e, h in zip(outputs, examples, hits)]
        return TaskResult.from_items({"hit_rate": hits}, details)


@hookimpl
def evomm_register_tasks(registry):
    registry.add(KeywordQA)
