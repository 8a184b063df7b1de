#!/usr/bin/python3
"""Plain-PyTorch prefill and decode speed on a Loom benchmark checkpoint, for comparison.

    /usr/bin/python3 benchmarks/bench_pytorch.py --model DIR --ids "1,2,3" --new-tokens N [--threads N] [--repetitions N]
    /usr/bin/python3 benchmarks/bench_pytorch.py --probe [--threads N]

Run by `loom_bench_generate --pytorch` with the same checkpoint folder, prompt ids and
new-token count as Loom's own run; it can be run by hand too.

The model is apps/trace_layers/llama_reference.py (imported by path; no `transformers`,
no `safetensors` package needed), whose forward has no KV cache. This script adds one on
top of the reference's building blocks, so decode works as Hugging Face's generate does:
one token's forward per step against cached keys and values. Arithmetic is
float32 throughout (bf16 and f16 weights are upcast when read), under
torch.inference_mode, with greedy decoding (argmax) and no end-of-sequence stop.

Every matrix product is the reference's torch.nn.functional.linear, as in Hugging Face's
modeling code. For a one-row input (each decode step) torch calls BLAS sgemm with m=1, which
Debian's OpenBLAS 0.3.21 runs at roughly half of what sgemv (torch.mv) reaches; that is what
Hugging Face code gets on this stack, so it is measured as is.

Timings follow Loom's definitions: prefill is the prompt's forward pass (logits for the
last position only); decode is the tokens after the first over the time spent producing
them; TTFT is prefill plus choosing the first token.

Threads: OPENBLAS_NUM_THREADS is set to --threads before torch loads, and torch's own
intra-op (OpenMP) and inter-op pools are kept at 1 thread. Debian's torch does its matrix
products through the system BLAS, and on a 2-core machine letting both OpenBLAS's
pthreads and torch's OpenMP threads spin on the same cores made a 2048x2048 matmul about
25% slower than OpenBLAS alone; the element-wise work left on one thread is small next
to the matrix products.

Debian's default libblas3 is the unoptimised reference BLAS (a few GFLOP/s); install
OpenBLAS (`apt-get install libopenblas0-pthread`) for meaningful figures. A matmul probe
at start-up warns on stderr below 20 GFLOP/s.

Output: one JSON line on stdout,
    {"torch_version", "blas_threads", "matmul_gflops", "prompt_tokens", "new_tokens",
     "prefill_tokens_per_second", "decode_tokens_per_second", "time_to_first_token_ms",
     "ids"}    (--probe: only the first three)
Errors: one line "bench_pytorch: error: ..." on stderr; exit 2 on bad input, 3 when
torch cannot be imported.
"""

import argparse
import importlib.util
import json
import os
import sys
import time

PROG = "bench_pytorch"
REFERENCE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir,
                              "apps", "trace_layers", "llama_reference.py")
SLOW_BLAS_GFLOPS = 20.0
EXIT_NO_TORCH = 3


class BenchError(Exception):
    """Bad input: reported as one line on stderr, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise BenchError(message)


def parse_ids(text):
    try:
        ids = [int(part) for part in text.split(",")]
    except ValueError:
        raise BenchError("--ids must be a comma-separated list of integers, got %r" % text)
    if any(i < 0 for i in ids):
        raise BenchError("--ids must be non-negative")
    return ids


def load_reference():
    spec = importlib.util.spec_from_file_location("llama_reference", REFERENCE_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def matmul_gflops(torch, size=1024, repeats=3):
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    a @ b  # the first call pays for OpenBLAS's thread start-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2.0 * size ** 3 / best / 1e9


class KVCache:
    """Keys and values of every layer, [1, kv_heads, capacity, head_dim], filled from the front."""

    def __init__(self, torch, cfg, capacity):
        shape = (1, cfg.num_key_value_heads, capacity, cfg.head_dim)
        self.keys = [torch.empty(shape) for _ in range(cfg.num_hidden_layers)]
        self.values = [torch.empty(shape) for _ in range(cfg.num_hidden_layers)]
        self.length = 0


def cached_mask(torch, start, count, sliding_window):
    """Additive mask [count, start+count] for queries at positions start.. against every cached key."""
    query = torch.arange(start, start + count)[:, None]
    key = torch.arange(start + count)[None, :]
    allowed = key <= query
    if sliding_window is not None:
        allowed = allowed & (query - key < sliding_window)
    return torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)


def forward_cached(ref, torch, model, ids, cache):
    """Logits [V] at the last of `ids`, which follow the cache's positions; appends their keys and values.

    The reference's Model.hidden with the attention keys and values taken from the cache.
    """
    c, w = model.cfg, model.w
    H, KV, D = c.num_attention_heads, c.num_key_value_heads, c.head_dim
    start, count = cache.length, len(ids)
    end = start + count
    h = torch.nn.functional.embedding(torch.tensor([ids]), w["model.embed_tokens.weight"])
    cos, sin = ref.rope_cos_sin(model.inv_freq, torch.arange(start, end))
    mask = cached_mask(torch, start, count, c.sliding_window)
    for i in range(c.num_hidden_layers):
        p = "model.layers.%d." % i
        a = "model.layers.%d.self_attn." % i
        x = ref.rms_norm(h, w[p + "input_layernorm.weight"], c.rms_norm_eps)
        q = ref.linear(x, w[a + "q_proj.weight"], model._b(a + "q_proj.bias")).view(1, count, H, D).transpose(1, 2)
        k = ref.linear(x, w[a + "k_proj.weight"], model._b(a + "k_proj.bias")).view(1, count, KV, D).transpose(1, 2)
        v = ref.linear(x, w[a + "v_proj.weight"], model._b(a + "v_proj.bias")).view(1, count, KV, D).transpose(1, 2)
        q = ref.apply_rope(q, cos, sin)
        cache.keys[i][:, :, start:end] = ref.apply_rope(k, cos, sin)
        cache.values[i][:, :, start:end] = v
        keys = ref.repeat_kv(cache.keys[i][:, :, :end], H // KV)
        values = ref.repeat_kv(cache.values[i][:, :, :end], H // KV)
        out = ref.attention(q, keys, values, mask, D ** -0.5).transpose(1, 2).reshape(1, count, H * D)
        h = h + ref.linear(out, w[a + "o_proj.weight"], model._b(a + "o_proj.bias"))
        h = h + model.mlp_block(i, ref.rms_norm(h, w[p + "post_attention_layernorm.weight"], c.rms_norm_eps))
    cache.length = end
    last = ref.rms_norm(h[:, -1:, :], w["model.norm.weight"], c.rms_norm_eps)
    return model.logits_from_hidden(last)[0, 0]


def run(ref, torch, model, prompt, new_tokens):
    """Greedy generation with timings as Loom measures them; returns the result fields."""
    cache = KVCache(torch, model.cfg, len(prompt) + new_tokens)
    generated = []
    with torch.inference_mode():
        start = time.perf_counter()
        logits = forward_cached(ref, torch, model, prompt, cache)
        prefill_seconds = time.perf_counter() - start
        generated.append(int(torch.argmax(logits)))
        first_token_seconds = time.perf_counter() - start
        decode_start = time.perf_counter()
        for _ in range(new_tokens - 1):
            logits = forward_cached(ref, torch, model, generated[-1:], cache)
            generated.append(int(torch.argmax(logits)))
        decode_seconds = time.perf_counter() - decode_start
    return {
        "prompt_tokens": len(prompt),
        "new_tokens": new_tokens,
        "prefill_tokens_per_second": len(prompt) / prefill_seconds,
        "decode_tokens_per_second": (new_tokens - 1) / decode_seconds if new_tokens > 1 else 0.0,
        "time_to_first_token_ms": first_token_seconds * 1000.0,
        "ids": generated,
    }


def main(argv=None):
    parser = _Parser(prog=PROG, description="Plain-PyTorch prefill/decode speed on a LLaMA/Qwen2 checkpoint")
    parser.add_argument("--model", help="model folder (config.json + model.safetensors)")
    parser.add_argument("--ids", help='prompt token ids, e.g. "1,2,3"')
    parser.add_argument("--new-tokens", type=int, default=128, help="greedy tokens to generate (default 128)")
    parser.add_argument("--threads", type=int, default=1, help="OpenBLAS threads (default 1)")
    parser.add_argument("--repetitions", type=int, default=3,
                        help="timed runs after one warm-up run; speeds and TTFT are their means (default 3)")
    parser.add_argument("--probe", action="store_true", help="only report torch's version and matmul speed")
    try:
        args = parser.parse_args(argv)
        if args.threads < 1:
            raise BenchError("--threads must be at least 1")
        if args.repetitions < 1:
            raise BenchError("--repetitions must be at least 1")
        if not args.probe:
            if not args.model or not args.ids:
                raise BenchError("--model and --ids are required (or --probe)")
            if args.new_tokens < 1:
                raise BenchError("--new-tokens must be at least 1")
            prompt = parse_ids(args.ids)
    except BenchError as failure:
        sys.stderr.write("%s: error: %s\n" % (PROG, failure))
        return 2

    # OpenBLAS reads its thread count once, when torch loads it.
    os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)
    try:
        import torch
    except ImportError as failure:
        sys.stderr.write("%s: error: torch is not importable by %s (%s)\n" % (PROG, sys.executable, failure))
        return EXIT_NO_TORCH
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)

    gflops = matmul_gflops(torch)
    if gflops < SLOW_BLAS_GFLOPS:
        sys.stderr.write("%s: warning: a 1024x1024 float32 matmul runs at %.1f GFLOP/s: torch is on a slow "
                         "(reference?) BLAS; apt-get install libopenblas0-pthread\n" % (PROG, gflops))
    result = {"torch_version": torch.__version__, "blas_threads": args.threads, "matmul_gflops": gflops}
    if not args.probe:
        ref = load_reference()
        try:
            cfg = ref.load_config(args.model)
            for token in prompt:
                if token >= cfg.vocab_size:
                    raise BenchError("prompt id %d out of range [0, %d)" % (token, cfg.vocab_size))
            model = ref.Model(cfg, ref.load_weights(args.model))
        except (ref.ReferenceError, BenchError, OSError) as failure:
            sys.stderr.write("%s: error: %s\n" % (PROG, str(failure).replace("\n", " ")))
            return 2
        run(ref, torch, model, prompt, 2)  # warm-up, as the Loom side and llama-bench do
        runs = [run(ref, torch, model, prompt, args.new_tokens) for _ in range(args.repetitions)]
        result.update(runs[-1])
        for key in ("prefill_tokens_per_second", "decode_tokens_per_second", "time_to_first_token_ms"):
            result[key] = sum(r[key] for r in runs) / len(runs)
        result["repetitions"] = len(runs)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
