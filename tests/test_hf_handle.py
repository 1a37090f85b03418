"""HFCausalLMHandle against one-by-one references on a tiny random Llama."""

from __future__ import annotations

import pytest
import torch

from evomm.errors import TaskError
from evomm.handle import ModelHandle
from tests.tiny_models import tiny_config, train_tokenizer

PROMPTS = [
    "The quick brown fox",
    "東京は",
    "Question: what is 2 + 3? Answer:",
    "One plus two is three. Three plus",
    "吾輩は猫である。名前は",
]


@pytest.fixture(scope="module")
def tiny() -> tuple[object, object]:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    # float64 and wide weights: decisive logits, so batched and unbatched argmax cannot differ by
    # rounding noise alone (a real mismatch would be a padding/mask/position bug).
    model = AutoModelForCausalLM.from_config(tiny_config("llama", num_layers=2)).to(torch.float64)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    model.eval()
    return model, train_tokenizer()


@pytest.fixture(scope="module")
def handle(tiny):
    from evomm_hf.handle import HFCausalLMHandle

    model, tok = tiny
    return HFCausalLMHandle(model, tok)


def _manual_greedy(model, tok, prompt: str, n: int) -> str:
    """Greedy decoding without cache, batching or generate(): argmax of a full forward pass."""
    ids = tok(prompt)["input_ids"]
    new: list[int] = []
    for _ in range(n):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids + new])).logits[0, -1]
        nxt = int(logits.argmax())
        if nxt == tok.eos_token_id:
            break
        new.append(nxt)
    return tok.decode(new, skip_special_tokens=True)


def test_handle_satisfies_protocol(handle) -> None:
    assert isinstance(handle, ModelHandle)
    assert handle.capabilities == {"generate", "loglikelihood"}


def test_batched_greedy_equals_unbatched_and_manual(tiny, handle) -> None:
    model, tok = tiny
    batched = handle.generate(PROMPTS, max_new_tokens=6, batch_size=8)
    single = [handle.generate([p], max_new_tokens=6, batch_size=1)[0] for p in PROMPTS]
    manual = [_manual_greedy(model, tok, p, 6) for p in PROMPTS]
    assert batched == single == manual
    assert any(batched)  # something was generated


def test_beam_search_batched_equals_unbatched(handle) -> None:
    batched = handle.generate(PROMPTS[:3], max_new_tokens=4, num_beams=3, batch_size=3)
    single = [handle.generate([p], max_new_tokens=4, num_beams=3)[0] for p in PROMPTS[:3]]
    assert batched == single


def test_stop_strings_cut_the_continuation(handle) -> None:
    full = handle.generate(PROMPTS, max_new_tokens=8)
    # choose, per prompt, a stop string from the middle of its own unconstrained continuation
    for prompt, text in zip(PROMPTS, full):
        if len(text) < 3:
            continue
        stop = text[1:3]
        cut = handle.generate([prompt], max_new_tokens=8, stop=[stop])[0]
        assert cut == text[: text.find(stop)]


def test_loglikelihood_equals_manual_log_softmax_sum(tiny, handle) -> None:
    model, tok = tiny
    requests = [
        ("The quick brown", " fox jumps"),
        ("東京は日本の", "首都です。"),
        ("Question: what is 2 + 3? Answer:", " 5"),
        ("One plus two is", " three."),
    ]
    got = handle.loglikelihood(requests, batch_size=3)
    merged = 0
    for (ctx, cont), value in zip(requests, got):
        whole, ctx_ids = tok(ctx + cont)["input_ids"], tok(ctx)["input_ids"]
        # the documented boundary rule: context = longest common prefix of the two tokenizations
        n_ctx = next((i for i, (a, b) in enumerate(zip(ctx_ids, whole)) if a != b), len(ctx_ids))
        merged += n_ctx < len(ctx_ids)
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([whole])).logits[0], -1)
        ref = sum(float(logp[p - 1, whole[p]]) for p in range(n_ctx, len(whole)))
        assert value == pytest.approx(ref, abs=1e-9)
    assert 0 < merged < len(requests)  # both a clean and a merged boundary were exercised


def test_loglikelihood_ranks_choices_and_handles_empty_context(handle) -> None:
    scores = handle.loglikelihood([("", "東京"), ("東京は", "日本"), ("東京は", "日本の首都")])
    assert all(s < 0 for s in scores)
    with pytest.raises(TaskError, match="adds no token"):
        handle.loglikelihood([("abc", "")])


def test_text_handle_refuses_images(handle) -> None:
    with pytest.raises(TaskError, match="text-only"):
        handle.generate(["x"], images=[object()])
    with pytest.raises(TaskError, match="CLIP"):
        handle.classify([], [])
