#!/usr/bin/python3
"""Self-check of tests/reference/training_reference.py on tiny random models.

Run:  /usr/bin/python3 tests/reference/selfcheck_training.py
Prints one line per check and "N passed, M failed"; exits 1 on any failure.

Tiny models come from selfcheck_reference.py's make_config / make_weights / write_model.
"""

import importlib.util
import json
import math
import os
import struct
import subprocess
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
TRAIN_PATH = os.path.join(HERE, "training_reference.py")


def _import(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


tr = _import("training_reference", TRAIN_PATH)
tiny = _import("selfcheck_reference", os.path.join(HERE, "selfcheck_reference.py"))
ref = tr.ref
make_config, make_weights, write_model = tiny.make_config, tiny.make_weights, tiny.write_model
torch.set_num_threads(1)

CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


def close(a, b, atol, rtol=0.0, what=""):
    if a.shape != b.shape:
        raise AssertionError("%s: shape %s vs %s" % (what, list(a.shape), list(b.shape)))
    if not torch.allclose(a.double(), b.double(), atol=atol, rtol=rtol):
        raise AssertionError("%s: max abs diff %.3g" % (what, float((a.double() - b.double()).abs().max())))


# Models covering every bias kind, tying, GQA/MQA/MHA, head_dim != hidden/heads, sliding window.
CASES = [
    ("llama tied + all biases", make_config("llama", kv=2, tie_word_embeddings=True,
                                            attention_bias=True, mlp_bias=True)),
    ("qwen2 untied, mqa, head_dim 16", make_config("qwen2", hidden=24, heads=2, kv=1, head_dim=16)),
    ("mistral window 3", make_config("mistral", kv=4, sliding_window=3)),
]


def model_of(cfg, seed, dtype=torch.float32):
    return tr.TrainableModel(ref.Config(cfg), make_weights(cfg, seed=seed), dtype)


def batch(cfg, B=2, T=7, seed=0):
    """inputs, targets [B,T] int64 with some ignored targets (row 0 starts with two)."""
    g = torch.Generator().manual_seed(seed)
    V = cfg["vocab_size"]
    inputs = torch.randint(0, V, (B, T), generator=g)
    targets = torch.randint(0, V, (B, T), generator=g)
    targets[0, :2] = tr.IGNORE_INDEX
    targets[-1, T // 2] = tr.IGNORE_INDEX
    return inputs, targets


def loss_and_grads(model, inputs, targets):
    for p in model.parameters():
        p.grad = None
    loss, _ = tr.backward(model, inputs, targets)
    return loss, {n: p.grad.clone() for n, p in model.params.items()}


# ---------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------

@check
def forward_matches_reference():
    """TrainableModel's autograd forward gives exactly llama_reference's (no_grad) logits;
    the float64 block replacements compute the same as the originals in float32."""
    for what, cfg in CASES:
        m = model_of(cfg, seed=1)
        inputs, _ = batch(cfg)
        want = ref.Model(ref.Config(cfg), make_weights(cfg, seed=1)).forward(inputs)
        got = m.forward(inputs)
        if not got.requires_grad:
            raise AssertionError("%s: logits carry no autograd graph" % what)
        close(got.detach(), want, atol=0, what=what)
        with tr.float64_blocks():
            close(m.forward(inputs).detach(), want, atol=0, what=what + " (float64_blocks, f32)")
        if ref.rms_norm is tr._rms_norm_keep_dtype:
            raise AssertionError("float64_blocks did not restore ref.rms_norm")


def _finite_difference(model, inputs, targets, name, index, h=1e-6):
    p = model.params[name]
    with torch.no_grad():
        old = float(p[index])
        p[index] = old + h
        up = float(tr.cross_entropy(model.forward(inputs), targets))
        p[index] = old - h
        down = float(tr.cross_entropy(model.forward(inputs), targets))
        p[index] = old
    return (up - down) / (2 * h)


def _fd_agrees(fd, ag):
    return abs(fd - ag) <= 1e-8 + 2e-6 * abs(ag)


@check
def gradients_match_finite_differences():
    """float64: autograd gradient of random entries of every tensor == central differences.
    For the tied model, embedding rows that are also inputs carry both uses; the gradient of
    the lookup alone must be rejected by the same comparison (the check can fail)."""
    for what, cfg in CASES:
        with tr.float64_blocks():
            m = model_of(cfg, seed=2, dtype=torch.float64)
            inputs, targets = batch(cfg, seed=2)
            loss, grads = loss_and_grads(m, inputs, targets)
            if loss.dtype != torch.float64 or m.forward(inputs).dtype != torch.float64:
                raise AssertionError("%s: the model did not run in float64" % what)
            g = torch.Generator().manual_seed(3)
            largest, count = 0.0, 0
            for name, p in m.params.items():
                picks = [tuple(int(torch.randint(0, s, (1,), generator=g)) for s in p.shape)
                         for _ in range(2)]
                if name == "model.embed_tokens.weight":
                    picks += [(int(inputs[0, 3]), 5), (int(inputs[1, 0]), 0)]
                for idx in picks:
                    fd = _finite_difference(m, inputs, targets, name, idx)
                    ag = float(grads[name][idx])
                    if not _fd_agrees(fd, ag):
                        raise AssertionError("%s: %s%s autograd %.10g vs finite difference %.10g"
                                             % (what, name, list(idx), ag, fd))
                    largest, count = max(largest, abs(ag)), count + 1
            if largest < 1e-3:
                raise AssertionError("%s: gradients are all tiny (max %.3g); the check proves nothing"
                                     % (what, largest))
            if m.tied:
                # negative control: the embedding gradient through the lookup only
                saved = m.model.lm_head
                m.model.lm_head = saved.detach()
                _, lookup_only = loss_and_grads(m, inputs, targets)
                m.model.lm_head = saved
                idx = (int(inputs[0, 3]), 5)
                fd = _finite_difference(m, inputs, targets, "model.embed_tokens.weight", idx)
                if _fd_agrees(fd, float(lookup_only["model.embed_tokens.weight"][idx])):
                    raise AssertionError("%s: the lookup-only embedding gradient passed the comparison"
                                         % what)
        print("    %s: %d entries agree, largest |grad| %.3g" % (what, count, largest))


@check
def float32_gradients_match_float64():
    """The float32 oracle path (reference blocks unpatched) agrees with the float64 one."""
    for what, cfg in CASES:
        inputs, targets = batch(cfg, seed=4)
        l32, g32 = loss_and_grads(model_of(cfg, seed=4), inputs, targets)
        with tr.float64_blocks():
            l64, g64 = loss_and_grads(model_of(cfg, seed=4, dtype=torch.float64), inputs, targets)
        if g32["model.norm.weight"].dtype != torch.float32:
            raise AssertionError("float32 path is not float32")
        close(l32, l64, atol=1e-5, what=what + " loss")
        for name in g64:
            scale = float(g64[name].abs().max())
            close(g32[name], g64[name], atol=1e-4 * scale + 1e-7, what="%s grad %s" % (what, name))


@check
def ignored_targets_contribute_nothing():
    """-100 targets: loss is the mean over the rest (by hand), their logits get zero gradient,
    and trailing ignored positions change neither loss nor any gradient."""
    what, cfg = CASES[0]
    with tr.float64_blocks():
        m = model_of(cfg, seed=5, dtype=torch.float64)
        inputs, targets = batch(cfg, B=2, T=8, seed=5)
        targets[1, 5:] = tr.IGNORE_INDEX
        logits = m.forward(inputs)
        logits.retain_grad()
        loss = tr.cross_entropy(logits, targets)
        loss.backward()
        keep = targets != tr.IGNORE_INDEX
        lp = logits.detach() - torch.logsumexp(logits.detach(), dim=-1, keepdim=True)
        terms = [-float(lp[b, t, targets[b, t]]) for b in range(2) for t in range(8) if keep[b, t]]
        if abs(float(loss) - sum(terms) / len(terms)) > 1e-12:
            raise AssertionError("loss %.15g vs hand mean %.15g" % (float(loss), sum(terms) / len(terms)))
        if float(logits.grad[~keep].abs().max()) != 0.0:
            raise AssertionError("ignored positions have a nonzero logit gradient")
        if float(logits.grad[keep].abs().max()) == 0.0:
            raise AssertionError("kept positions have a zero logit gradient")
        # row 1 alone, with and without its ignored tail
        l_full, g_full = loss_and_grads(m, inputs[1:], targets[1:])
        l_cut, g_cut = loss_and_grads(m, inputs[1:, :5], targets[1:, :5])
        close(l_full, l_cut, atol=1e-12, what="loss with / without ignored tail")
        for name in g_full:
            close(g_full[name], g_cut[name], atol=1e-12, what="grad %s with / without ignored tail" % name)
        # control: giving the tail real targets does change the loss
        filled = targets[1:].clone()
        filled[0, 5:] = inputs[1, 5:]
        if abs(float(loss_and_grads(m, inputs[1:], filled)[0]) - float(l_full)) < 1e-6:
            raise AssertionError("filling the ignored targets did not change the loss")


@check
def rows_are_independent():
    """Row 0's logits do not see row 1's tokens; the batch loss/gradient is the
    target-count-weighted mean of the rows' own."""
    for what, cfg in CASES:
        m = model_of(cfg, seed=6)
        inputs, targets = batch(cfg, B=2, T=7, seed=6)
        base = m.forward(inputs).detach()
        other = inputs.clone()
        other[1] = (other[1] + 1 + torch.arange(7)) % cfg["vocab_size"]
        changed = m.forward(other).detach()
        close(changed[0], base[0], atol=0, what=what + ": row 0 after changing row 1")
        if torch.allclose(changed[1], base[1], atol=1e-4):
            raise AssertionError("%s: changing row 1's tokens did not change row 1" % what)
        close(m.forward(inputs[:1]).detach()[0], base[0], atol=1e-5, what=what + ": row 0 alone")
        # control: causality inside row 0
        edit = inputs.clone()
        edit[0, 3] = (edit[0, 3] + 1) % cfg["vocab_size"]
        moved = m.forward(edit).detach()
        close(moved[0, :3], base[0, :3], atol=0, what=what + ": positions before the edit")
        if torch.allclose(moved[0, 3:], base[0, 3:], atol=1e-4):
            raise AssertionError("%s: editing row 0 position 3 changed nothing after it" % what)
        # gradient of the batch == weighted mean of the rows' gradients (float64)
        with tr.float64_blocks():
            m64 = model_of(cfg, seed=6, dtype=torch.float64)
            lb, gb = loss_and_grads(m64, inputs, targets)
            rows = [loss_and_grads(m64, inputs[r:r + 1], targets[r:r + 1]) for r in range(2)]
        n = [int((targets[r] != tr.IGNORE_INDEX).sum()) for r in range(2)]
        close(lb, (n[0] * rows[0][0] + n[1] * rows[1][0]) / sum(n), atol=1e-12, what=what + " loss mix")
        for name in gb:
            mix = (n[0] * rows[0][1][name] + n[1] * rows[1][1][name]) / sum(n)
            close(gb[name], mix, atol=1e-12, what="%s grad mix %s" % (what, name))


def _hand_adamw(model, inputs, targets, steps, lr, betas, eps, wd, clip, decay_vectors=False):
    """torch's AdamW update written out (float32), decay on dim >= 2 (or on all tensors)."""
    state = {n: (torch.zeros_like(p), torch.zeros_like(p)) for n, p in model.params.items()}
    losses, norms = [], []
    for s in range(1, steps + 1):
        loss, grads = loss_and_grads(model, inputs, targets)
        losses.append(float(loss))
        # the total 2-norm, in float32 as clip_grad_norm_ computes it
        norm = torch.stack([g.norm() for g in grads.values()]).norm()
        norms.append(float(norm))
        if clip is not None:
            grads = {n: g * torch.clamp(clip / (norm + 1e-6), max=1.0) for n, g in grads.items()}
        with torch.no_grad():
            for n, p in model.params.items():
                m_, v_ = state[n]
                g = grads[n]
                if p.dim() >= 2 or decay_vectors:
                    p.mul_(1 - lr * wd)
                m_.mul_(betas[0]).add_(g, alpha=1 - betas[0])
                v_.mul_(betas[1]).addcmul_(g, g, value=1 - betas[1])
                denom = (v_.sqrt() / math.sqrt(1 - betas[1] ** s)).add_(eps)
                p.addcdiv_(m_, denom, value=-lr / (1 - betas[0] ** s))
    return losses, norms


@check
def adamw_steps_match_hand_written():
    """run(): step_losses and final weights equal a hand-written AdamW with decay on
    matrices only, with and without clipping (clipping active); decaying the vectors
    too must not match."""
    what, cfg = CASES[0]  # has 1-D biases and norm weights, tied embedding
    inputs, targets = batch(cfg, seed=7)
    lr, betas, eps, wd = 1e-2, (0.8, 0.95), 1e-6, 0.1
    _, norms = _hand_adamw(model_of(cfg, seed=7), inputs, targets, 1, lr, betas, eps, wd, None)
    for clip in (None, 0.5 * norms[0]):
        out = tr.run(model_of(cfg, seed=7), inputs, targets, 3, lr, betas, eps, wd, clip)
        hand = model_of(cfg, seed=7)
        losses, norms = _hand_adamw(hand, inputs, targets, 3, lr, betas, eps, wd, clip)
        if clip is not None and not norms[0] > clip:
            raise AssertionError("clipping was not active")
        close(out["step_losses"], torch.tensor(losses), atol=1e-5, what="step losses clip=%s" % clip)
        if float(out["step_losses"][0]) != float(out["loss"][0]):
            raise AssertionError("step_losses[0] != loss")
        if not float(out["step_losses"][-1]) < float(out["step_losses"][0]):
            raise AssertionError("loss did not fall over 3 steps: %s" % out["step_losses"].tolist())
        for name, p in hand.params.items():
            close(out["final." + name], p.detach(), atol=2e-6, rtol=1e-5,
                  what="final %s clip=%s" % (name, clip))
    wrong = model_of(cfg, seed=7)
    _hand_adamw(wrong, inputs, targets, 3, lr, betas, eps, wd, None, decay_vectors=True)
    out = tr.run(model_of(cfg, seed=7), inputs, targets, 3, lr, betas, eps, wd, None)
    name = "model.norm.weight"
    if torch.allclose(out["final." + name], wrong.params[name].detach(), atol=2e-6, rtol=1e-5):
        raise AssertionError("decaying 1-D tensors went unnoticed")


def _run_cli(args):
    return subprocess.run([sys.executable, TRAIN_PATH] + args, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True)


def _header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))


@check
def cli_end_to_end():
    """CLI on bf16 tied and bare-named untied checkpoints: names, shapes, values, metadata;
    bad input exits 2 with one line."""
    with tempfile.TemporaryDirectory() as tmp:
        for what, cfg, bare in [("tied bf16", CASES[0][1], False), ("bare untied", CASES[1][1], True)]:
            w = make_weights(cfg, seed=8, bf16_exact=True)
            stored = {(k[len("model."):] if bare and k.startswith("model.") else k): v for k, v in w.items()}
            d = os.path.join(tmp, what.replace(" ", "_"))
            write_model(d, cfg, stored, "BF16")
            inputs, targets = batch(cfg, B=3, T=6, seed=8)
            bpath = os.path.join(tmp, "batch.safetensors")
            ref.write_safetensors(bpath, {"inputs": inputs.float(), "targets": targets.float()})
            out = os.path.join(tmp, "out.safetensors")
            r = _run_cli(["--model", d, "--batch", bpath, "--out", out, "--steps", "2", "--lr", "0.01",
                          "--weight-decay", "0.05", "--clip", "1.0"])
            if r.returncode != 0:
                raise AssertionError("%s: exit %d: %s" % (what, r.returncode, r.stderr))
            hdr = _header(out)
            meta = hdr.pop("__metadata__")
            if (meta.get("family"), meta.get("torch_version"), meta.get("tied")) != \
                    (cfg["model_type"], torch.__version__, str(cfg["tie_word_embeddings"]).lower()):
                raise AssertionError("%s: metadata %s" % (what, meta))
            B, T, V = 3, 6, cfg["vocab_size"]
            want = {"loss": [1], "logits": [B, T, V], "step_losses": [2]}
            for name, t in stored.items():
                want["grad." + name] = list(t.shape)
                want["final." + name] = list(t.shape)
            got = {k: v["shape"] for k, v in hdr.items()}
            if got != want or any(v["dtype"] != "F32" for v in hdr.values()):
                raise AssertionError("%s: tensors %s, want %s" % (what, sorted(got), sorted(want)))
            if cfg["tie_word_embeddings"] and "grad.lm_head.weight" in got:
                raise AssertionError("tied model reports grad.lm_head.weight")
            o = ref.read_safetensors(out)
            mine = tr.run(tr.TrainableModel(ref.Config(cfg), w), inputs, targets, 2, 0.01,
                          (0.9, 0.999), 1e-8, 0.05, 1.0)
            for k, v in mine.items():
                stored_name = k
                if bare:
                    for prefix in ("grad.", "final."):
                        if k.startswith(prefix + "model."):
                            stored_name = prefix + k[len(prefix + "model."):]
                close(o[stored_name], v, atol=1e-6, rtol=1e-6, what="%s: %s" % (what, stored_name))
            close(o["logits"], ref.Model(ref.Config(cfg), w).forward(inputs), atol=1e-5,
                  what=what + ": logits vs llama_reference")

        d = os.path.join(tmp, "tied_bf16")
        V = CASES[0][1]["vocab_size"]

        def write_batch(name, inputs, targets, dtype="F32"):
            p = os.path.join(tmp, name)
            t = {}
            if inputs is not None:
                t["inputs"] = torch.tensor(inputs, dtype=torch.float32)
            if targets is not None:
                t["targets"] = torch.tensor(targets, dtype=torch.float32)
            ref.write_safetensors(p, t, dtype=dtype)
            return p

        good = write_batch("good.st", [[1, 2, 3]], [[2, 3, 4]])
        bad_batches = [
            write_batch("no_targets.st", [[1, 2, 3]], None),
            write_batch("shape.st", [[1, 2, 3]], [[2, 3]]),
            write_batch("one_d.st", [1, 2, 3], [2, 3, 4]),
            write_batch("frac.st", [[1, 2.5, 3]], [[2, 3, 4]]),
            write_batch("in_range.st", [[1, V, 3]], [[2, 3, 4]]),
            write_batch("tgt_range.st", [[1, 2, 3]], [[2, -5, 4]]),
            write_batch("all_ignored.st", [[1, 2, 3]], [[-100, -100, -100]]),
            write_batch("bf16.st", [[1, 2, 3]], [[2, 3, 4]], dtype="BF16"),
            os.path.join(tmp, "missing.st"),
        ]
        o = os.path.join(tmp, "o.st")
        cases = [["--model", d, "--batch", b, "--out", o] for b in bad_batches]
        cases += [["--model", os.path.join(tmp, "nope"), "--batch", good, "--out", o],
                  ["--model", d, "--batch", good, "--out", o, "--steps", "-1"],
                  ["--model", d, "--batch", good, "--out", o, "--clip", "0"],
                  ["--model", d, "--batch", good, "--out", o, "--beta1", "1.0"],
                  ["--model", d, "--batch", good, "--out", o, "--lr", "nan"],
                  ["--model", d, "--batch", good, "--out", os.path.join(tmp, "no", "dir", "o.st")],
                  ["--model", d, "--out", o]]
        for args in cases:
            r = _run_cli(args)
            lines = r.stderr.strip().splitlines()
            if r.returncode != 2 or len(lines) != 1 or not lines[0].startswith("training_reference: error: "):
                raise AssertionError("args %s: rc=%d stderr=%r" % (args, r.returncode, r.stderr))
        r = _run_cli(["--model", d, "--batch", good, "--out", o])
        if r.returncode != 0 or "step_losses" in _header(o):
            raise AssertionError("steps=0 run: rc=%d %s" % (r.returncode, r.stderr))


def main():
    return tiny.run_checks(CHECKS)


if __name__ == "__main__":
    sys.exit(main())
