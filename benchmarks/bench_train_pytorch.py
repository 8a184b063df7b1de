#!/usr/bin/python3
"""Plain-PyTorch training-step speed, the counterpart of Loom's training benchmark.

    /usr/bin/python3 benchmarks/bench_train_pytorch.py [--model DIR | --preset smollm2-135m]
        [--layers N] [--batch 4] [--seq-len 256] [--threads 1,2] [--steps 3]
        [--lr 1e-3] [--weight-decay 0.01] [--clip C] [--seed 0] [--torch-threads 1|same|N]
        [--malloc keep|default]

The model and the step are the training oracle's (tests/reference/training_reference.py):
apps/trace_layers/llama_reference.py's Model run with autograd on float32 leaf tensors,
cross-entropy over every position, torch.optim.AdamW with weight decay on matrices only.
One step = zero_grad, forward, loss, backward, optional clip_grad_norm_, optimizer.step;
no torch.no_grad anywhere in it. Each thread count runs in a fresh subprocess: one
warm-up step, then --steps timed steps on one fixed random batch.

Without --model the weights are random (normal, std 0.02; norm weights 1; seeded) in the
--preset shape: smollm2-135m is SmolLM2-135M's (hidden 576, intermediate 1536, 30 layers,
9 heads, 3 kv heads, head_dim 64, vocab 49152, tied embeddings, rope_theta 100000,
rms eps 1e-5); tiny is for trying the script. --layers overrides the layer count.
With --model DIR, that checkpoint is loaded (bf16/f16 widened to f32).

Threads: for --threads N the child sets OPENBLAS_NUM_THREADS=N before torch loads and
torch.set_num_threads(T), T = --torch-threads: 1 by default (as bench_pytorch.py does, and as
/work/shared/reference/toolchain-notes.md advises: OpenBLAS's pthreads and torch's OpenMP
threads both at 2 oversubscribe the 2 cores), "same" for T = N, or a number. Measured here
with 4 layers of this shape at N=2 (on a loaded machine): T=1 took 11.7 s a step, T=2 18.7 s.
Memory: torch allocates each step's large temporaries (logits, their gradient, AdamW's
sqrt(v), the dense embedding gradient) afresh; glibc serves blocks over 32 MB with mmap and
unmaps them when freed, so every step page-faults them in again. That made steps about 4x
slower here (2 layers of this shape, batch 2 x 64: 4.9 s vs 1.2 s). --malloc keep (the
default) starts each child with MALLOC_MMAP_MAX_=0 and MALLOC_TRIM_THRESHOLD_=2**40 so
glibc keeps freed memory for reuse, as PyTorch's CPU tuning advice gets with jemalloc or
tcmalloc (neither is installed here); Loom allocates its buffers once, too.
--malloc default measures glibc as it comes.
Debian's torch does its matrix products through the system BLAS (BLAS_INFO=generic): with
the reference libblas3 (about 5 GFLOP/s) figures are meaningless, so the header names the
BLAS library actually loaded and every line a 1024^3 matmul probe; install
libopenblas0-pthread. Unlike inference, a training step has much element-wise work
(log-softmax over the vocabulary and its backward, AdamW), which runs on torch's threads.

Output (stdout): "#" header lines (torch version, BLAS, shape, settings), then one line per
thread count:
    pytorch_train threads=N tokens_per_s=F step_ms=F peak_rss_mb=F step_ms_min=F
        blas_threads=N torch_threads=N matmul_gflops=F batch=B seq_len=T steps=S
        params=P loss_first=F loss_last=F setup_s=F wall_s=F loadavg=F malloc=keep|default
(one line; tokens_per_s = batch*seq_len / mean step time; peak_rss_mb = the child's
ru_maxrss; setup_s = building or loading the model; wall_s = the child's whole run;
loadavg = the machine's 1-minute load average at the end, since other work skews timings),
and a closing "# total_s=F".
Errors: one line "bench_train_pytorch: error: ..." on stderr; exit 2 on bad input,
3 when a child fails.
"""

import argparse
import os
import re
import resource
import subprocess
import sys
import time

PROG = "bench_train_pytorch"
HERE = os.path.dirname(os.path.abspath(__file__))
TRAINING_REFERENCE = os.path.normpath(os.path.join(HERE, os.pardir, "tests", "reference",
                                                   "training_reference.py"))

PRESETS = {
    "smollm2-135m": {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
                     "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                     "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
                     "tie_word_embeddings": True, "rope_theta": 100000.0, "rms_norm_eps": 1e-5,
                     "max_position_embeddings": 8192, "hidden_act": "silu"},
    "tiny": {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
             "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256,
             "tie_word_embeddings": True, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
             "max_position_embeddings": 2048, "hidden_act": "silu"},
}


class BenchError(Exception):
    """Bad input: one line on stderr, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise BenchError(message)


def parse_args(argv):
    ap = _Parser(prog=PROG, description="PyTorch AdamW training-step speed (reference model)")
    ap.add_argument("--model", help="HF model directory; default: random weights in --preset's shape")
    ap.add_argument("--preset", default="smollm2-135m", choices=sorted(PRESETS))
    ap.add_argument("--layers", type=int, help="override the preset's layer count")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--threads", default="1", help="comma-separated thread counts, e.g. 1,2 (default 1)")
    ap.add_argument("--torch-threads", default="1",
                    help="torch intra-op threads: N, or 'same' as --threads (default 1)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step (default 3)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--clip", type=float, default=None, help="clip_grad_norm_ max norm (default: none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--malloc", default="keep", choices=("keep", "default"),
                    help="keep: glibc keeps freed memory (no mmap/munmap per step); default: glibc as is")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)  # internal: run one thread count
    ap.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)  # internal: header
    a = ap.parse_args(argv)
    try:
        a.thread_list = [int(t) for t in a.threads.split(",")]
    except ValueError:
        raise BenchError("--threads must be a comma-separated list of integers, got %r" % a.threads)
    if not a.thread_list or min(a.thread_list) < 1:
        raise BenchError("--threads must be positive")
    if a.torch_threads != "same" and not (a.torch_threads.isdigit() and int(a.torch_threads) >= 1):
        raise BenchError("--torch-threads must be 'same' or a positive integer")
    if a.batch < 1 or a.seq_len < 1:
        raise BenchError("--batch and --seq-len must be positive")
    if a.steps < 1:
        raise BenchError("--steps must be at least 1")
    if a.layers is not None and a.layers < 1:
        raise BenchError("--layers must be positive")
    if a.model is not None and a.layers is not None:
        raise BenchError("--layers applies to --preset models only")
    if a.model is not None and not os.path.isfile(os.path.join(a.model, "config.json")):
        raise BenchError("missing file: %s" % os.path.join(a.model, "config.json"))
    if a.clip is not None and not a.clip > 0:
        raise BenchError("--clip must be positive")
    return a


# ---------------------------------------------------------------------------
# child side (torch imported here only, after OPENBLAS_NUM_THREADS is set)
# ---------------------------------------------------------------------------

def _import_training_reference():
    import importlib.util
    spec = importlib.util.spec_from_file_location("training_reference", TRAINING_REFERENCE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def blas_description(torch):
    """(torch's BLAS_INFO, the BLAS library actually mapped, OpenBLAS's config string or '')."""
    import ctypes
    found = re.search(r"BLAS_INFO=[^,\s]*", torch.__config__.show())
    info = found.group(0) if found else "BLAS_INFO=?"
    torch.randn(8, 8) @ torch.randn(8, 8)  # make sure the library is loaded
    mapped = "?"
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1] if len(line.split()) >= 6 else ""
            base = os.path.basename(path)
            if base.startswith(("libblas", "libopenblas", "libmkl", "libblis")):
                mapped = os.path.realpath(path)
                break
    config = ""
    try:
        lib = ctypes.CDLL(mapped)
        lib.openblas_get_config.restype = ctypes.c_char_p
        config = lib.openblas_get_config().decode().strip()
    except Exception:
        pass
    return info, mapped, config


def matmul_gflops(torch, size=1024, repeats=3):
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2.0 * size ** 3 / best / 1e9


def random_weights(torch, cfg, seed):
    """Checkpoint-named float32 tensors: matrices N(0, 0.02), norm weights 1, biases 0."""
    g = torch.Generator().manual_seed(seed)
    E, I, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    H, KV, D = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.02

    w = {"model.embed_tokens.weight": r(V, E)}
    for i in range(cfg.num_hidden_layers):
        p = "model.layers.%d." % i
        w[p + "input_layernorm.weight"] = torch.ones(E)
        w[p + "self_attn.q_proj.weight"] = r(H * D, E)
        w[p + "self_attn.k_proj.weight"] = r(KV * D, E)
        w[p + "self_attn.v_proj.weight"] = r(KV * D, E)
        w[p + "self_attn.o_proj.weight"] = r(E, H * D)
        if cfg.qkv_bias:
            for n, rows in (("q_proj", H * D), ("k_proj", KV * D), ("v_proj", KV * D)):
                w[p + "self_attn.%s.bias" % n] = torch.zeros(rows)
        if cfg.o_bias:
            w[p + "self_attn.o_proj.bias"] = torch.zeros(E)
        w[p + "post_attention_layernorm.weight"] = torch.ones(E)
        w[p + "mlp.gate_proj.weight"] = r(I, E)
        w[p + "mlp.up_proj.weight"] = r(I, E)
        w[p + "mlp.down_proj.weight"] = r(E, I)
        if cfg.mlp_bias:
            for n, rows in (("gate_proj", I), ("up_proj", I), ("down_proj", E)):
                w[p + "mlp.%s.bias" % n] = torch.zeros(rows)
    w["model.norm.weight"] = torch.ones(E)
    if not cfg.tie_word_embeddings:
        w["lm_head.weight"] = r(V, E)
    return w


def build_model(tr, torch, a):
    ref = tr.ref
    if a.model:
        cfg = ref.load_config(a.model)
        weights = ref.load_weights(a.model)
    else:
        raw = dict(PRESETS[a.preset])
        if a.layers is not None:
            raw["num_hidden_layers"] = a.layers
        cfg = ref.Config(raw)
        weights = random_weights(torch, cfg, a.seed)
    model = tr.TrainableModel(cfg, weights)
    return cfg, model


def load_average():
    """The 1-minute load average: other work on the machine skews every figure."""
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[0]
    except OSError:
        return "?"


def run_probe(a):
    import torch
    info, mapped, config = blas_description(torch)
    print("# torch %s; torch.__config__.show(): %s; BLAS library: %s%s"
          % (torch.__version__, info, mapped, " (%s)" % config if config else ""))
    if "openblas" not in (mapped + config).lower():
        print("# warning: torch is not on OpenBLAS; the reference libblas3 is ~5 GFLOP/s "
              "(apt-get install libopenblas0-pthread)")
    return 0


def run_child(a):
    wall = time.perf_counter()
    import torch
    blas_threads = a.child
    torch_threads = blas_threads if a.torch_threads == "same" else int(a.torch_threads)
    torch.set_num_threads(torch_threads)
    torch.set_num_interop_threads(1)
    tr = _import_training_reference()
    gflops = matmul_gflops(torch)

    setup = time.perf_counter()
    cfg, model = build_model(tr, torch, a)
    setup = time.perf_counter() - setup
    g = torch.Generator().manual_seed(a.seed + 1)
    ids = torch.randint(0, cfg.vocab_size, (a.batch, a.seq_len + 1), generator=g)
    inputs, targets = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()
    optimizer = tr.make_optimizer(model, lr=a.lr, weight_decay=a.weight_decay)

    losses = [float(tr.train_step(model, optimizer, inputs, targets, a.clip))]  # warm-up
    times = []
    for _ in range(a.steps):
        start = time.perf_counter()
        loss = tr.train_step(model, optimizer, inputs, targets, a.clip)
        times.append(time.perf_counter() - start)
        losses.append(float(loss))
    mean = sum(times) / len(times)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    params = sum(p.numel() for p in model.parameters())
    print("pytorch_train threads=%d tokens_per_s=%.1f step_ms=%.1f peak_rss_mb=%.1f step_ms_min=%.1f "
          "blas_threads=%d torch_threads=%d matmul_gflops=%.1f batch=%d seq_len=%d steps=%d params=%d "
          "loss_first=%.4f loss_last=%.4f setup_s=%.1f wall_s=%.1f loadavg=%s malloc=%s"
          % (blas_threads, a.batch * a.seq_len / mean, mean * 1e3, peak_mb, min(times) * 1e3,
             blas_threads, torch_threads, gflops, a.batch, a.seq_len, a.steps, params,
             losses[0], losses[-1], setup, time.perf_counter() - wall, load_average(),
             "keep" if os.environ.get("MALLOC_MMAP_MAX_") == "0" else "default"))
    return 0


# ---------------------------------------------------------------------------
# parent: header, then one fresh process per thread count
# ---------------------------------------------------------------------------

def header_lines(a):
    shape = "checkpoint %s" % a.model if a.model else "%s shape, random weights (seed %d)" % (a.preset, a.seed)
    if not a.model:
        raw = dict(PRESETS[a.preset])
        if a.layers is not None:
            raw["num_hidden_layers"] = a.layers
        shape += ": hidden %d, intermediate %d, %d layers, %d heads, %d kv heads, vocab %d, %s" % (
            raw["hidden_size"], raw["intermediate_size"], raw["num_hidden_layers"], raw["num_attention_heads"],
            raw["num_key_value_heads"], raw["vocab_size"], "tied" if raw["tie_word_embeddings"] else "untied")
    return ["# model: " + shape,
            "# step: batch %d x seq_len %d = %d tokens; AdamW lr %g, weight decay %g (dim >= 2), clip %s; "
            "1 warm-up + %d timed steps; float32" % (a.batch, a.seq_len, a.batch * a.seq_len, a.lr,
                                                     a.weight_decay, "none" if a.clip is None else a.clip, a.steps),
            "# threads: OPENBLAS_NUM_THREADS=N, torch.set_num_threads(%s); one fresh process per N; "
            "%d cores, load average %s at start" % ("N" if a.torch_threads == "same" else a.torch_threads,
                                                    os.cpu_count() or 0, load_average()),
            "# malloc: %s" % ("glibc keeps freed memory (MALLOC_MMAP_MAX_=0, MALLOC_TRIM_THRESHOLD_=2**40)"
                              if a.malloc == "keep" else "glibc defaults (large blocks mmap'd and unmapped)")]


MALLOC_KEEP = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}


def child_command(argv, extra):
    return [sys.executable, os.path.abspath(__file__)] + list(argv) + extra


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        a = parse_args(argv)
    except BenchError as e:
        sys.stderr.write("%s: error: %s\n" % (PROG, e))
        return 2
    if a.probe:
        return run_probe(a)
    if a.child is not None:
        try:
            return run_child(a)
        except BenchError as e:
            sys.stderr.write("%s: error: %s\n" % (PROG, e))
            return 2
        except Exception as e:  # the reference's ReferenceError, OSError, ...
            sys.stderr.write("%s: error: %s\n" % (PROG, str(e).replace("\n", " ")))
            return 2

    total = time.perf_counter()
    sys.stdout.flush()
    probe = subprocess.run(child_command(argv, ["--probe"]), stdout=subprocess.PIPE, universal_newlines=True)
    if probe.returncode != 0:
        sys.stderr.write("%s: error: the probe process failed (exit %d)\n" % (PROG, probe.returncode))
        return 3
    sys.stdout.write(probe.stdout)
    for line in header_lines(a):
        print(line)
    sys.stdout.flush()
    for n in a.thread_list:
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(n))
        for key in MALLOC_KEEP:
            env.pop(key, None)
        if a.malloc == "keep":
            env.update(MALLOC_KEEP)
        r = subprocess.run(child_command(argv, ["--child", str(n)]), env=env)
        if r.returncode != 0:
            return r.returncode if r.returncode == 2 else 3
        sys.stdout.flush()
    print("# total_s=%.1f" % (time.perf_counter() - total))
    return 0


if __name__ == "__main__":
    sys.exit(main())
