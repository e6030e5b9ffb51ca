"""LLM.generate behaviour: text in/out, stop tokens, seeded sampling, logprobs, synthetic models."""

from __future__ import annotations

import math

import pytest

from ssdk import LLM, SamplingParams

pytestmark = pytest.mark.cpu


@pytest.fixture(scope="module")
def llm(tiny_qwen3):
    return LLM(str(tiny_qwen3), progress=False, max_model_len=128)


def test_text_prompts_and_stop_tokens(llm):
    greedy = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    out = llm.generate("The capital of France is", greedy, use_tqdm=False)[0]
    assert out.prompt == "The capital of France is" and out.prompt_token_ids == llm.tokenizer.encode(out.prompt)
    assert out.text == llm.tokenizer.decode(out.token_ids) and len(out.token_ids) == 8
    m = out.metrics
    assert m["num_output_tokens"] == 8 and m["ttft_s"] > 0 and m["decode_tok_s"] > 0 and m["latency_s"] >= m["ttft_s"]
    stop = out.token_ids[3]
    first = out.token_ids.index(stop)
    stopped = llm.generate(out.prompt, SamplingParams(temperature=0, max_tokens=8, stop_token_ids=[stop]),
                           use_tqdm=False)[0]
    assert stopped.token_ids == out.token_ids[:first + 1] and stopped.finish_reason == "stop"
    with pytest.raises(ValueError, match="token ids must be ints"):
        llm.generate([[1, 10 ** 9]], greedy, use_tqdm=False)
    with pytest.raises(ValueError, match="2 sampling params for 1 prompts"):
        llm.generate(["a"], [greedy, greedy], use_tqdm=False)


def test_seeded_sampling_does_not_depend_on_the_batch(llm):
    seeded = SamplingParams(temperature=0.8, top_k=50, top_p=0.9, max_tokens=3, ignore_eos=True, seed=1234)
    other = SamplingParams(temperature=1.0, max_tokens=2, ignore_eos=True)
    prompt = [9707, 1879, 11, 419]
    alone = llm.generate([prompt], seeded, use_tqdm=False)[0].token_ids
    batched = llm.generate([[5, 6, 7], prompt, [8] * 9], [other, seeded, other], use_tqdm=False)[1].token_ids
    assert alone == batched
    reseeded = SamplingParams(temperature=0.8, top_k=50, top_p=0.9, max_tokens=3, ignore_eos=True, seed=99)
    assert llm.generate([prompt], reseeded, use_tqdm=False)[0].token_ids != alone


def test_logprobs(llm):
    out = llm.generate([[1, 2, 3]], SamplingParams(temperature=0, max_tokens=3, logprobs=4), use_tqdm=False)[0]
    assert len(out.logprobs) == 3
    for token, step in zip(out.token_ids, out.logprobs):
        assert len(step) == 4 and token in step
        assert max(step, key=step.get) == token and all(v <= 0 for v in step.values())
        assert sum(math.exp(v) for v in step.values()) <= 1 + 1e-5


def test_synthetic_model_in_memory():
    llm = LLM("synthetic:tiny-llama", progress=False, max_model_len=64, seed=1)
    out = llm.generate("Hello", SamplingParams(temperature=0, max_tokens=4, ignore_eos=True), use_tqdm=False)[0]
    assert out.prompt_token_ids[0] == 128000 and len(out.token_ids) == 4 and isinstance(out.text, str)
    assert llm.stats["load_s"] > 0 and llm.stats["num_kv_pages"] >= 4


def test_graph_batches_padded_like_cuda_graphs(tiny_llama):
    """The CUDA-graph path (int32 static buffers, batch buckets, padding rows with slot -1 and no
    prefix), run eagerly on the CPU, generates what the plain eager path generates."""
    from ssdk.engine.cuda_graphs import GraphRunner

    from .test_vs_transformers import prompts_for

    prompts = prompts_for(tiny_llama, lengths=(5, 12, 7))  # 3 requests replay the bucket of 4
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    llm = LLM(str(tiny_llama), progress=False, max_model_len=64)
    eager = [o.token_ids for o in llm.generate(prompts, params, use_tqdm=False)]
    graphs = GraphRunner(llm.runner, max_batch=6, capture=False)
    assert graphs.buckets == [1, 2, 4, 6]
    calls = []
    run = graphs.run
    graphs.run = lambda spec: calls.append(spec.batch_size) or run(spec)
    llm.runner.graphs = graphs
    assert [o.token_ids for o in llm.generate(prompts, params, use_tqdm=False)] == eager
    assert calls == [3] * 5, "every decode step goes through the graph path"


def test_pipelined_greedy_decode(tiny_llama):
    """Greedy decode through the greedy graph path (argmax inside, run eagerly on the CPU): each step is
    launched before the previous step's tokens are read, with its input tokens taken from the device.
    Same tokens as the eager path with requests that stop early (stop token), end by length at different
    steps, cross pages while ahead (page_size 4), and wait for a free slot (max_num_seqs 2)."""
    from ssdk.engine.cuda_graphs import GraphRunner

    from .test_vs_transformers import prompts_for

    prompts = prompts_for(tiny_llama, lengths=(5, 12, 7))
    llm = LLM(str(tiny_llama), progress=False, max_model_len=64, page_size=4, max_num_seqs=2)
    params = [SamplingParams(temperature=0, max_tokens=n, ignore_eos=True) for n in (9, 4, 12)]
    eager = [o.token_ids for o in llm.generate(prompts, params, use_tqdm=False)]
    stop = eager[2][6]
    params[2] = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, stop_token_ids=[stop])
    eager[2] = eager[2][:eager[2].index(stop) + 1]
    graphs = GraphRunner(llm.runner, max_batch=2, capture=False, greedy=True)
    inputs = []
    launch = graphs.launch_greedy
    graphs.launch_greedy = lambda spec, ids=None: inputs.append(ids is not None) or launch(spec, ids)
    llm.runner.graphs = graphs
    out = llm.generate(prompts, params, use_tqdm=False)
    assert [o.token_ids for o in out] == eager
    assert [o.finish_reason for o in out] == ["length", "length", "stop"]
    assert 2 * sum(inputs) > len(inputs) and not all(inputs), "most steps are launched ahead from device tokens"
    assert llm.block_manager.num_free_pages == llm.block_manager.num_pages
    assert llm.last_stats["decode_tokens"] == sum(len(t) - 1 for t in eager)


def test_memory_profiling_pass(tiny_qwen3):
    """The GPU's KV sizing pass (a max_num_batched_tokens prefill over a scratch cache, no KV writes) runs,
    and the engine generates the same tokens once the real cache is back."""
    llm = LLM(str(tiny_qwen3), progress=False, max_model_len=48, max_num_batched_tokens=80, max_num_seqs=3)
    params = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    before = llm.generate([[5, 6, 7, 8]], params, use_tqdm=False)[0].token_ids
    runner = llm.runner
    runner._warmup()  # sequences of 48 + 32 tokens
    runner.kv_cache = runner._allocate_kv_cache(runner.num_kv_pages)
    assert llm.generate([[5, 6, 7, 8]], params, use_tqdm=False)[0].token_ids == before
