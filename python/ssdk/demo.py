"""``python -m ssdk.demo``: the newcomer's first run.

Builds the engine on an embedded synthetic model (the real config with seeded random weights, drawn in
memory): a tiny Llama-3 on the CPU, a Llama-3.2-1B-shaped model on a GPU. Generates for a small batch of
prompts, prints the generations (noise: the weights are random) and the speed, and says which backend
(CUDA extension, Triton, PyTorch) each kernel the engine uses runs on.
"""

from __future__ import annotations

import time

import torch

import ssdk
from ssdk.ops import resolve

ENGINE_OPS = ("rmsnorm", "fused_add_rmsnorm", "rope", "qk_norm_rope", "silu_and_mul", "store_kv_cache",
              "tree_attention", "sample_tokens")
PROMPTS = ["The capital of France is", "def fibonacci(n):", "Speculative decoding works by",
           "Once upon a time, in a land far away,"]


def main() -> None:
    gpu = torch.cuda.is_available()
    device = "cuda" if gpu else "cpu"
    model = "synthetic:llama-3.2-1b" if gpu else "synthetic:tiny-llama"
    max_tokens = 128 if gpu else 32
    print(f"ssdk {ssdk.__version__} on {torch.cuda.get_device_name() if gpu else 'CPU'}; "
          f"extension: {ssdk.EXTENSION_STATUS}")
    print("kernel backends: " + ", ".join(f"{op}={resolve(op, device)}" for op in ENGINE_OPS))
    start = time.perf_counter()
    llm = ssdk.LLM(model, max_num_seqs=16, max_model_len=512)
    st = llm.stats
    print(f"{model}: {llm.config.model_config.num_parameters() / 1e9:.2f}B parameters, {llm.runner.dtype}; "
          f"load {st['load_s']:.1f} s, warm-up {st['warmup_s']:.1f} s, CUDA-graph capture "
          f"{st['graph_capture_s']:.1f} s (ready in {time.perf_counter() - start:.1f} s)")
    params = ssdk.SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    outputs = llm.generate(PROMPTS, params)
    for out in outputs:
        print(f"  {out.prompt!r} -> {out.text[:80]!r}")
    s = llm.last_stats
    print(f"batch {len(PROMPTS)}: TTFT {1e3 * sum(o.metrics['ttft_s'] for o in outputs) / len(outputs):.0f} ms, "
          f"decode {s['decode_tokens'] / s['decode_s']:.0f} tok/s ({1e3 * s['decode_s'] / s['decode_steps']:.1f} "
          f"ms/step), {sum(len(o.token_ids) for o in outputs)} tokens in {s['wall_s']:.1f} s")
    one = llm.generate(PROMPTS[:1], params, use_tqdm=False)[0]
    print(f"batch 1: decode {one.metrics['decode_tok_s']:.0f} tok/s")
    print("(random weights: the text is noise; e2e/bench.py measures real-size models)")
    llm.close()


if __name__ == "__main__":
    main()
