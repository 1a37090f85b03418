"""Generation throughput: HFCausalLMHandle (batched, KV cache) vs a one-prompt-at-a-time loop.

Both sides decode greedily exactly ``--new-tokens`` tokens per prompt (EOS disabled) with the same
random Llama, measured side by side in one run; prints tokens/s of each and the ratio.

    .venv/bin/python bench/generation_throughput.py --prompts 32 --new-tokens 32 --batch-size 16
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evomm_hf.handle import HFCausalLMHandle  # noqa: E402

from tests.tiny_models import tiny_config, train_tokenizer  # noqa: E402

PROMPTS = ["The quick brown fox", "東京は日本の", "Question: what is 2 + 3? Answer:", "吾輩は猫である。",
           "One plus two is three. Three plus four", "Merging models combines"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
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
