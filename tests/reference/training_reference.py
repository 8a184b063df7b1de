#!/usr/bin/python3
"""PyTorch oracle for Loom's training: loss, every gradient, and AdamW steps.

The forward is apps/trace_layers/llama_reference.py's Model (imported by path), run
with autograd on float32 leaf copies of the checkpoint tensors; nothing here comes
from `transformers`. Self-check: tests/reference/selfcheck_training.py.

CLI
---
    /usr/bin/python3 tests/reference/training_reference.py \
        --model DIR --batch BATCH.safetensors --out FILE.safetensors \
        [--steps N] [--lr LR] [--beta1 B1] [--beta2 B2] [--eps EPS] \
        [--weight-decay WD] [--clip C] [--threads 1]

BATCH (safetensors, both tensors F32 holding integers, exact below 2**24):
    inputs   [B, T]  token ids; each row is its own sequence from position 0
                     (causal attention within the row, RoPE positions 0..T-1)
    targets  [B, T]  the token each position should predict; -100 = ignored

Writes FILE (safetensors, every tensor F32):
    loss               [1]        mean cross-entropy of the initial weights over the
                                  non-ignored targets, i.e.
                                  F.cross_entropy(logits.view(-1, V), targets.view(-1),
                                                  ignore_index=-100)
    logits             [B, T, V]  of the initial forward
    grad.<name>        shape of <name>, for every checkpoint tensor <name> under its
                       exact checkpoint name (rotary_emb.inv_freq buffers are not
                       parameters and are skipped). Tied model without lm_head.weight:
                       grad.model.embed_tokens.weight holds both uses (lookup and
                       output projection) and there is no grad.lm_head.weight.
                       A tensor the forward does not use gets a zero gradient.
  with --steps N > 0, also
    step_losses        [N]        loss before step s's update (step_losses[0] == loss)
    final.<name>       every parameter after N AdamW steps on the same batch
  and __metadata__ {"family", "torch_version", "tied", "steps", "lr", "beta1", "beta2",
                    "eps", "weight_decay", "clip"}

Optimizer: torch.optim.AdamW(lr, betas=(beta1, beta2), eps, foreach=False) with two groups:
tensors with dim >= 2 get weight_decay WD, 1-D tensors (norm weights, biases) get 0.
Defaults are torch's: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 0.01.
Each step: zero_grad, forward, loss, backward, clip_grad_norm_(params, C) if --clip
(torch's rule: grads *= C / (total_norm + 1e-6) when that is < 1), optimizer.step.

Weights are read in their checkpoint dtype (BF16/F16/F32) and widened to float32
exactly as llama_reference loads them; all arithmetic is float32.

Threads: --threads N (default 1) sets OpenBLAS's thread count (before torch loads)
and torch's intra-op threads.

Exit 0 on success; on bad input one line "training_reference: error: ..." on stderr,
exit 2.

Library use (import this file by path)
--------------------------------------
    ref                                  the llama_reference module
    TrainableModel(cfg, weights, dtype)  .forward(ids [B,T]) -> logits [B,T,V] with autograd;
                                         .params {checkpoint name: leaf tensor}
    cross_entropy(logits, targets)       the loss above
    make_optimizer(model, lr, betas, eps, weight_decay), train_step(model, opt, inputs, targets, clip)
    load_batch(path, vocab_size) -> (inputs, targets) int64
    run(model, inputs, targets, steps, ...) -> {output name: tensor}
    float64_blocks()                     context manager: the reference blocks keep float64
"""

import argparse
import contextlib
import importlib.util
import math
import os
import sys

PROG = "training_reference"
HERE = os.path.dirname(os.path.abspath(__file__))
REF_PATH = os.path.normpath(os.path.join(HERE, "..", "..", "apps", "trace_layers", "llama_reference.py"))
IGNORE_INDEX = -100


def _threads_from_argv(argv):
    """The --threads value, read before torch loads (OpenBLAS reads its thread count once)."""
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return "1"


if __name__ == "__main__":
    _t = _threads_from_argv(sys.argv[1:])
    if _t.isdigit() and int(_t) >= 1:
        os.environ["OPENBLAS_NUM_THREADS"] = _t

import torch  # noqa: E402


def _import_ref():
    spec = importlib.util.spec_from_file_location("llama_reference", REF_PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ref = _import_ref()


class TrainingError(Exception):
    """Bad input: reported as one line on stderr, exit 2."""


# ---------------------------------------------------------------------------
# the differentiable forward
# ---------------------------------------------------------------------------

class TrainableModel:
    """ref.Model over leaf copies of the checkpoint tensors (requires_grad=True).

    ref.Model's blocks (attention_block, mlp_block, rms_norm, rope, mask) are plain torch
    ops and differentiate as they are; only Model.hidden / logits_from_hidden wrap
    themselves in torch.no_grad, so forward() below is Model.hidden's loop without it.
    ref.Model shares the leaf tensors (for a tied model its lm_head *is* the embedding
    leaf), so a gradient lands on the checkpoint tensor whatever the use.
    """

    def __init__(self, cfg, weights, dtype=torch.float32):
        self.cfg = cfg
        # checkpoint name -> leaf, in checkpoint order
        self.params = {name: t.detach().to(dtype).clone().requires_grad_(True)
                       for name, t in weights.items()}
        # ref.Model may rename its keys (a bare checkpoint gains "model."), but it holds
        # these same tensor objects, so gradients are read from self.params by checkpoint name.
        self.model = ref.Model(cfg, self.params)
        self.tied = self.model.lm_head is self.model.w["model.embed_tokens.weight"]

    def parameters(self):
        return list(self.params.values())

    def forward(self, ids):
        """Logits [B,T,V] for ids [B,T] (int64); as ref.Model.forward, with autograd."""
        m, c = self.model, self.cfg
        T = ids.shape[1]
        eps = c.rms_norm_eps
        h = torch.nn.functional.embedding(ids, m.w["model.embed_tokens.weight"])
        cos, sin = ref.rope_cos_sin(m.inv_freq, torch.arange(T))  # every row starts at position 0
        mask = ref.causal_mask(T, c.sliding_window)                # [T,T], broadcast over rows
        for i in range(c.num_hidden_layers):
            p = "model.layers.%d." % i
            x = ref.rms_norm(h, m.w[p + "input_layernorm.weight"], eps)
            h = h + m.attention_block(i, x, cos, sin, mask)
            x = ref.rms_norm(h, m.w[p + "post_attention_layernorm.weight"], eps)
            h = h + m.mlp_block(i, x)
        h = ref.rms_norm(h, m.w["model.norm.weight"], eps)
        return ref.linear(h, m.lm_head)

    __call__ = forward


def cross_entropy(logits, targets):
    """Mean over non-ignored targets of -log softmax(logits)[target]; logits [B,T,V], targets [B,T]."""
    V = logits.shape[-1]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, V), targets.reshape(-1),
                                             ignore_index=IGNORE_INDEX)


def _rms_norm_keep_dtype(x, weight, eps):
    variance = x.pow(2).mean(-1, keepdim=True)
    return weight * (x * torch.rsqrt(variance + eps))


def _attention_keep_dtype(q, k, v, mask, scaling):
    scores = torch.matmul(q, k.transpose(2, 3)) * scaling
    scores = scores + mask
    probs = torch.nn.functional.softmax(scores, dim=-1, dtype=q.dtype)
    return torch.matmul(probs, v)


@contextlib.contextmanager
def float64_blocks():
    """The reference blocks with their two float32 casts removed, for a float64 model.

    ref.rms_norm casts its input to float32 and ref.attention takes softmax in float32
    (as HF does); everything else in ref follows its inputs' dtype. Inside this context
    both keep their input dtype, so a TrainableModel(dtype=float64) is float64 end to end
    (cos/sin and the mask stay the float32 constants, promoted). For float32 inputs the
    replacements compute the same ops as the originals.
    """
    saved = ref.rms_norm, ref.attention
    ref.rms_norm, ref.attention = _rms_norm_keep_dtype, _attention_keep_dtype
    try:
        yield
    finally:
        ref.rms_norm, ref.attention = saved


# ---------------------------------------------------------------------------
# optimizer and steps
# ---------------------------------------------------------------------------

def make_optimizer(model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
    """AdamW; weight decay on tensors with dim >= 2 only."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [g for g in ({"params": decay, "weight_decay": weight_decay},
                          {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    # foreach=False pins the per-tensor update (torch 1.13's default; later versions differ)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, foreach=False)


def backward(model, inputs, targets):
    """Forward + loss + backward into .grad; returns (loss, logits), both detached.

    A parameter the loss does not depend on gets a zero gradient (not None), so AdamW
    treats it like any other tensor (its weight decay still applies).
    """
    logits = model.forward(inputs)
    loss = cross_entropy(logits, targets)
    loss.backward()
    for p in model.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    return loss.detach(), logits.detach()


def train_step(model, optimizer, inputs, targets, clip=None):
    """One AdamW step on (inputs, targets); returns the loss before the update."""
    optimizer.zero_grad()
    loss, _ = backward(model, inputs, targets)
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return loss


def run(model, inputs, targets, steps=0, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
        weight_decay=0.01, clip=None):
    """Every output tensor of the CLI, name -> float32 tensor (see the module docstring)."""
    for p in model.parameters():
        p.grad = None
    loss, logits = backward(model, inputs, targets)
    out = {"loss": loss.reshape(1).float(), "logits": logits.float()}
    for name, p in model.params.items():
        out["grad." + name] = p.grad.detach().float().clone()
    if steps > 0:
        optimizer = make_optimizer(model, lr, betas, eps, weight_decay)
        losses = [train_step(model, optimizer, inputs, targets, clip) for _ in range(steps)]
        out["step_losses"] = torch.stack(losses).float()
        for name, p in model.params.items():
            out["final." + name] = p.detach().float().clone()
    return out


# ---------------------------------------------------------------------------
# batch file
# ---------------------------------------------------------------------------

def _as_ids(t, what):
    if not bool(torch.isfinite(t).all()) or not torch.equal(t, t.round()):
        raise TrainingError("%s must hold integers" % what)
    if t.numel() and float(t.abs().max()) >= 2 ** 24:
        raise TrainingError("%s holds a value beyond 2**24 (not exact in F32)" % what)
    return t.to(torch.int64)


def load_batch(path, vocab_size):
    """(inputs, targets), int64 [B,T] each, validated against vocab_size."""
    try:
        header, _, _ = ref.read_safetensors_header(path)
    except ref.ReferenceError as e:
        raise TrainingError(str(e))
    for key in ("inputs", "targets"):
        if key not in header:
            raise TrainingError("batch file %s lacks tensor %r" % (path, key))
        if header[key].get("dtype") != "F32":
            raise TrainingError("batch tensor %r must be F32, got %s" % (key, header[key].get("dtype")))
    try:
        raw = ref.read_safetensors(path, names={"inputs", "targets"})
    except ref.ReferenceError as e:
        raise TrainingError(str(e))
    inputs, targets = raw["inputs"], raw["targets"]
    if inputs.dim() != 2 or inputs.shape[0] < 1 or inputs.shape[1] < 1:
        raise TrainingError("batch inputs must be [B, T] with B, T >= 1, got %s" % list(inputs.shape))
    if targets.shape != inputs.shape:
        raise TrainingError("batch targets %s and inputs %s differ in shape"
                            % (list(targets.shape), list(inputs.shape)))
    inputs, targets = _as_ids(inputs, "batch inputs"), _as_ids(targets, "batch targets")
    if int(inputs.min()) < 0 or int(inputs.max()) >= vocab_size:
        raise TrainingError("batch inputs hold an id outside [0, %d)" % vocab_size)
    ignored = targets == IGNORE_INDEX
    if bool(((targets < 0) | (targets >= vocab_size))[~ignored].any()):
        raise TrainingError("batch targets hold an id outside [0, %d) that is not %d"
                            % (vocab_size, IGNORE_INDEX))
    if bool(ignored.all()):
        raise TrainingError("every batch target is %d: the mean loss is undefined" % IGNORE_INDEX)
    return inputs, targets


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise TrainingError(message)


def _check_args(a):
    def finite(name, v):
        if not math.isfinite(v):
            raise TrainingError("%s must be finite" % name)
    for name, v in (("--lr", a.lr), ("--beta1", a.beta1), ("--beta2", a.beta2), ("--eps", a.eps),
                    ("--weight-decay", a.weight_decay)):
        finite(name, v)
    if a.steps < 0:
        raise TrainingError("--steps must be >= 0")
    if a.threads < 1:
        raise TrainingError("--threads must be >= 1")
    if a.lr < 0:
        raise TrainingError("--lr must be >= 0")
    for name, v in (("--beta1", a.beta1), ("--beta2", a.beta2)):
        if not 0.0 <= v < 1.0:
            raise TrainingError("%s must be in [0, 1)" % name)
    if a.eps < 0:
        raise TrainingError("--eps must be >= 0")
    if a.weight_decay < 0:
        raise TrainingError("--weight-decay must be >= 0")
    if a.clip is not None and not (math.isfinite(a.clip) and a.clip > 0):
        raise TrainingError("--clip must be a positive number")


def main(argv=None):
    ap = _Parser(prog=PROG, description="PyTorch loss/gradient/AdamW oracle for Loom training")
    ap.add_argument("--model", required=True, help="HF model directory (config.json + safetensors)")
    ap.add_argument("--batch", required=True, help="safetensors with F32 'inputs' and 'targets' [B, T]")
    ap.add_argument("--out", required=True, help="output .safetensors path")
    ap.add_argument("--steps", type=int, default=0, help="AdamW steps on the batch (default 0)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--beta1", type=float, default=0.9)
    ap.add_argument("--beta2", type=float, default=0.999)
    ap.add_argument("--eps", type=float, default=1e-8)
    ap.add_argument("--weight-decay", type=float, default=0.01, help="for tensors with dim >= 2")
    ap.add_argument("--clip", type=float, default=None, help="clip_grad_norm_ max norm (default: none)")
    ap.add_argument("--threads", type=int, default=1, help="OpenBLAS and torch threads (default 1)")
    try:
        args = ap.parse_args(argv)
        _check_args(args)
        torch.set_num_threads(args.threads)
        cfg = ref.load_config(args.model)
        inputs, targets = load_batch(args.batch, cfg.vocab_size)
        model = TrainableModel(cfg, ref.load_weights(args.model))
        out = run(model, inputs, targets, args.steps, args.lr, (args.beta1, args.beta2), args.eps,
                  args.weight_decay, args.clip)
        meta = {"family": cfg.family, "torch_version": torch.__version__, "tied": str(model.tied).lower(),
                "steps": args.steps, "lr": repr(args.lr), "beta1": repr(args.beta1),
                "beta2": repr(args.beta2), "eps": repr(args.eps),
                "weight_decay": repr(args.weight_decay),
                "clip": "none" if args.clip is None else repr(args.clip)}
        ref.write_safetensors(args.out, out, meta)
    except (TrainingError, ref.ReferenceError, OSError) as e:
        sys.stderr.write("%s: error: %s\n" % (PROG, str(e).replace("\n", " ")))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
