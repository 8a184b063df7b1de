#!/usr/bin/python3
"""PyTorch oracle for loom/train/optimizer.hpp (tests/unit-train-optimizer.cpp).

Runs torch.optim.AdamW or torch.optim.SGD (foreach=False), optionally
torch.nn.utils.clip_grad_norm_, under a torch.optim.lr_scheduler.LambdaLR whose
multipliers are Hugging Face's warmup schedules written out here from their
definitions (transformers is not needed).

CLI
---
    /usr/bin/python3 tests/reference/optimizer_reference.py IN.safetensors OUT.safetensors

IN holds "initial.<name>" (the starting values) and "gradient.<k>.<name>" (the
gradient of every trainable parameter at step k), and a metadata key "config", JSON:
    {"optimizer": "adamw" | "sgd", "lr": peak learning rate, "steps": N,
     "adamw": {"beta1", "beta2", "eps", "weight_decay"},
     "sgd": {"momentum", "weight_decay", "nesterov"},
     "schedule": {"kind": "constant"|"linear"|"cosine", "warmup", "total", "min_ratio"},
     "frozen": [names], "clip": max_norm or null,
     "schedule_checks": [{"kind", "warmup", "total", "min_ratio", "steps"}, ...]}
Weight decay applies to parameters of two or more dimensions only (a second param
group with weight_decay 0 holds the vectors); frozen parameters get no gradient.

OUT holds "value.<name>" after N steps, the optimizer state as "<slot>.<name>"
(exp_avg, exp_avg_sq, momentum_buffer), and with clipping "clip_norm" [N] and
"clipped_gradient.<k>.<name>". Metadata: "learning_rates" (JSON list, the lr of
each step), "multipliers" (JSON list per schedule check, steps 0..steps-1), and
"torch_version". Exit 0 on success, 2 on bad input.
"""

import importlib.util
import json
import math
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location(
    "llama_reference", os.path.join(HERE, "..", "..", "apps", "trace_layers", "llama_reference.py"))
llama_reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(llama_reference)


def schedule_lambda(kind, warmup, total, min_ratio=0.0):
    """Hugging Face transformers' get_*_schedule_with_warmup multiplier (optimization.py)."""
    def warm(step):
        return float(step) / float(max(1, warmup))

    if kind == "constant":
        return lambda step: warm(step) if step < warmup else 1.0
    if kind == "linear":
        def linear(step):
            if step < warmup:
                return warm(step)
            return max(0.0, float(total - step) / float(max(1, total - warmup)))
        return linear
    if kind == "cosine":
        num_cycles = 0.5

        def cosine(step):
            if step < warmup:
                return warm(step)
            progress = float(step - warmup) / float(max(1, total - warmup))
            factor = 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))
            factor = factor * (1 - min_ratio) + min_ratio
            return max(0, factor)
        return cosine
    raise ValueError("unknown schedule %r" % (kind,))


def main(argv):
    if len(argv) != 3:
        print("usage: optimizer_reference.py IN.safetensors OUT.safetensors", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    _, meta, _ = llama_reference.read_safetensors_header(argv[1])
    config = json.loads(meta["config"])
    tensors = llama_reference.read_safetensors(argv[1])
    names = sorted(n[len("initial."):] for n in tensors if n.startswith("initial."))
    frozen = set(config.get("frozen", []))
    params = {}
    for name in names:
        p = torch.nn.Parameter(tensors["initial." + name].clone())
        p.requires_grad_(name not in frozen)
        params[name] = p
    trainable = [n for n in names if n not in frozen]
    decay = [params[n] for n in trainable if params[n].dim() >= 2]
    no_decay = [params[n] for n in trainable if params[n].dim() < 2]

    lr = config["lr"]
    if config["optimizer"] == "adamw":
        c = config["adamw"]
        groups = [{"params": decay, "weight_decay": c["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW(groups, lr=lr, betas=(c["beta1"], c["beta2"]), eps=c["eps"], foreach=False)
    elif config["optimizer"] == "sgd":
        c = config["sgd"]
        groups = [{"params": decay, "weight_decay": c["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=c["momentum"], nesterov=c["nesterov"], foreach=False)
    else:
        print("optimizer_reference: error: unknown optimizer %r" % (config["optimizer"],), file=sys.stderr)
        return 2
    s = config["schedule"]
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, schedule_lambda(s["kind"], s["warmup"], s["total"], s.get("min_ratio", 0.0)))

    out = {}
    learning_rates = []
    clip_norms = []
    for k in range(config["steps"]):
        for name in trainable:
            params[name].grad = tensors["gradient.%d.%s" % (k, name)].clone()
        if config.get("clip") is not None:
            norm = torch.nn.utils.clip_grad_norm_([params[n] for n in trainable], config["clip"])
            clip_norms.append(float(norm))
            for name in trainable:
                out["clipped_gradient.%d.%s" % (k, name)] = params[name].grad.clone()
        learning_rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()

    for name in names:
        out["value." + name] = params[name].detach()
        for slot, value in optimizer.state[params[name]].items():
            if slot != "step" and value is not None:
                out["%s.%s" % (slot, name)] = value
    if clip_norms:
        out["clip_norm"] = torch.tensor(clip_norms, dtype=torch.float32)

    multipliers = []
    for check in config.get("schedule_checks", []):
        f = schedule_lambda(check["kind"], check["warmup"], check["total"], check.get("min_ratio", 0.0))
        multipliers.append([float(f(step)) for step in range(check["steps"])])
    metadata = {"learning_rates": json.dumps(learning_rates), "multipliers": json.dumps(multipliers),
                "torch_version": torch.__version__}
    llama_reference.write_safetensors(argv[2], dict(sorted(out.items())), metadata)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
