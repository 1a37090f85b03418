"""An lm-evaluation-harness ``LM`` that answers through an evomm :class:`~evomm.handle.ModelHandle`.

lm-eval hands the model batches of ``Instance`` requests; :class:`HandleLM` turns each batch
into one call of the handle's batched methods, so the merged model is scored in memory (no
save/reload, no second copy of the weights). This module imports ``lm_eval`` at the top: only
:mod:`evomm_tasks_lmeval.task` imports it, and only when an ``lmeval`` task runs.

Example::

    from lm_eval.evaluator import simple_evaluate
    from evomm_tasks_lmeval.lm import HandleLM

    results = simple_evaluate(model=HandleLM(handle), tasks=["my_task"], bootstrap_iters=0)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from lm_eval.api.model import LM

from evomm.errors import TaskError
from evomm.handle import ModelHandle

log = logging.getLogger(__name__)

#: lm-eval's own default for ``max_gen_toks`` (``HFLM``).
DEFAULT_MAX_GEN_TOKS = 256


class HandleLM(LM):
    """lm-eval's ``LM`` interface over an evomm ``ModelHandle``.

    Args:
        handle: the model (``loglikelihood`` and/or ``generate`` capabilities).
        batch_size: requests per forward pass, passed to the handle.
        greedy_check: compute ``is_greedy`` of ``loglikelihood`` requests by greedy generation
            (the handle protocol returns only log-probabilities). Only tasks with
            ``output_type: loglikelihood`` use it (their ``acc``); ``False`` reports ``False``.

    Example:
        >>> lm = HandleLM(HFCausalLMHandle(model, tokenizer), batch_size=8)   # doctest: +SKIP
        >>> lm.loglikelihood(instances)                                        # doctest: +SKIP
    """

    def __init__(self, handle: ModelHandle, *, batch_size: int = 16, greedy_check: bool = False) -> None:
        super().__init__()
        self.handle = handle
        self.batch_size = int(batch_size)
        self.greedy_check = greedy_check
        self._warned: set[str] = set()

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)

    def loglikelihood(self, requests: Sequence[Any]) -> list[tuple[float, bool]]:
        """``(log p(continuation | context), is_greedy)`` per request, from one handle call."""
        pairs = [(str(r.args[0]), str(r.args[1])) for r in requests]
        if not pairs:
            return []
        lls = self.handle.loglikelihood(pairs, batch_size=self.batch_size)
        greedy = self._is_greedy(pairs) if self.greedy_check else [False] * len(pairs)
        return [(float(ll), bool(g)) for ll, g in zip(lls, greedy)]

    def _is_greedy(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        # Greedy decoding from the context must reproduce the continuation. The handle does not
        # expose tokens, so generate enough tokens for any tokenization (a character is at most
        # 4 byte-level tokens) and compare the text.
        by_len: dict[int, list[int]] = {}
        for i, (_, cont) in enumerate(pairs):
            by_len.setdefault(4 * len(cont) + 1, []).append(i)
        result = [False] * len(pairs)
        for n, idx in by_len.items():
            gens = self.handle.generate([pairs[i][0] for i in idx], max_new_tokens=n, batch_size=self.batch_size)
            for i, g in zip(idx, gens):
                result[i] = g.startswith(pairs[i][1])
        return result

    def loglikelihood_rolling(self, requests: Sequence[Any]) -> list[float]:
        """Log-likelihood of each whole string (perplexity tasks), conditioned on BOS/EOS.

        The string is scored in one window: one longer than the handle's ``max_length`` raises
        the handle's error (lm-eval's token-level windowing needs tokens the protocol hides).
        """
        texts = [str(r.args[0]) for r in requests]
        if not texts:
            return []
        return [float(x) for x in self.handle.loglikelihood([("", t) for t in texts], batch_size=self.batch_size)]

    def generate_until(self, requests: Sequence[Any]) -> list[str]:
        """Greedy (or beam) continuations cut at ``until``; requests sharing generation settings
        go to the handle in one call."""
        groups: dict[tuple[tuple[str, ...], int, int], list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(self._gen_settings(r.args[1] if len(r.args) > 1 else {}), []).append(i)
        out = [""] * len(requests)
        for (until, max_new, beams), idx in groups.items():
            gens = self.handle.generate(
                [str(requests[i].args[0]) for i in idx],
                max_new_tokens=max_new,
                stop=list(until),
                num_beams=beams,
                batch_size=self.batch_size,
            )
            for i, g in zip(idx, gens):
                out[i] = g
        return out

    def _gen_settings(self, kwargs: Any) -> tuple[tuple[str, ...], int, int]:
        if not isinstance(kwargs, dict):
            raise TaskError(f"lmeval: generation settings {kwargs!r} are not a mapping; check generation_kwargs in the YAML")
        kwargs = dict(kwargs)
        until = kwargs.pop("until", None) or ()
        until = (until,) if isinstance(until, str) else tuple(str(u) for u in until)
        max_new = int(kwargs.pop("max_gen_toks", kwargs.pop("max_new_tokens", DEFAULT_MAX_GEN_TOKS)))
        beams = int(kwargs.pop("num_beams", 1))
        if kwargs.pop("do_sample", False):
            self._warn_once(
                "do_sample",
                "lmeval: the task asks for sampling (do_sample: true); the evomm handle decodes "
                "greedily (or with beams), so the score is that of greedy decoding",
            )
        ignored = sorted(k for k in kwargs if k not in ("temperature", "top_p", "top_k"))
        if ignored:
            self._warn_once("ignored", f"lmeval: generation settings {ignored} are not supported by the handle; ignored")
        return until, max_new, beams
