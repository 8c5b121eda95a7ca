#!/usr/bin/env python3
"""Golden vectors for common/adamw.c: torch.optim.AdamW, HF's learning-rate schedules and
torch.nn.utils.clip_grad_norm_.

Run with Debian's python3-torch (1.13 suffices):  /usr/bin/python3 tests/reference/optimizer_reference.py
Writes golden/optimizer.json; tests/unit/test_adamw.c compares adamw_update, lr_at, clip_factor
and sum_of_squares with it. The output is deterministic.

The schedules are HF transformers' get_{constant,linear,cosine}_schedule_with_warmup lambdas,
written out here from their definitions (transformers is not needed). They drive a LambdaLR the
way HF Trainer does: the lr of update number k (0-based) is base_lr * lr_lambda(k), because
LambdaLR applies lr_lambda(0) at construction and scheduler.step() follows optimizer.step().
"""
import json
import math
import os
import sys

import torch


def constant_with_warmup(warmup, total):
    def f(step):
        if step < warmup:
            return float(step) / float(max(1.0, warmup))
        return 1.0

    return f


def linear_with_warmup(warmup, total):
    def f(step):
        if step < warmup:
            return float(step) / float(max(1, warmup))
        return max(0.0, float(total - step) / float(max(1, total - warmup)))

    return f


def cosine_with_warmup(warmup, total, num_cycles=0.5):
    def f(step):
        if step < warmup:
            return float(step) / float(max(1, warmup))
        progress = float(step - warmup) / float(max(1, total - warmup))
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))

    return f


LAMBDAS = {"constant": constant_with_warmup, "linear": linear_with_warmup,
           "cosine": cosine_with_warmup}


def f32(t):
    return [float(x) for x in t.detach().reshape(-1).tolist()]


def lr_grid():
    # kind, base lr, warmup, total: the lr of every update 0 .. total-1
    specs = [("constant", 1e-3, 0, 8), ("constant", 1e-3, 3, 8), ("linear", 2e-3, 0, 10),
             ("linear", 2e-3, 3, 10), ("cosine", 5e-4, 0, 10), ("cosine", 5e-4, 4, 20),
             ("cosine", 3e-4, 1, 7), ("linear", 1e-2, 5, 6), ("cosine", 1e-2, 5, 6)]
    out = []
    for kind, lr, warmup, total in specs:
        lam = LAMBDAS[kind](warmup, total)
        # through a real LambdaLR, to pin down which lambda value update k uses
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.AdamW([p], lr=lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lam)
        lrs = []
        for step in range(total):
            lrs.append(opt.param_groups[0]["lr"])
            assert lrs[-1] == lr * lam(step)
            opt.step()
            sched.step()
        out.append({"kind": kind, "lr": lr, "warmup_steps": warmup, "total_steps": total,
                    "lr_at": lrs})
    return out


def adamw_run(name, seed, sizes, lr, betas, eps, wd, kind, warmup, total, clip):
    """total updates of AdamW on len(sizes) float32 tensors (as if on separate shards) with fixed
    per-step gradients; clip[k] > 0 clips update k's gradients to that global norm first."""
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(n, generator=g, dtype=torch.float32)) for n in sizes]
    init = [f32(p) for p in params]
    opt = torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=wd)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, LAMBDAS[kind](warmup, total))
    # gradient magnitudes from 1e-5 to 10 so that eps and the clipping both matter
    scales = [torch.logspace(-5, 1, n, dtype=torch.float32)[torch.randperm(n, generator=g)]
              for n in sizes]
    steps = []
    for k in range(total):
        grads = [torch.randn(n, generator=g, dtype=torch.float32) * s for n, s in zip(sizes, scales)]
        if k == 1:
            grads[0][0] = 0.0  # a zero gradient: only decay and momentum move it
        rec = {"lr": opt.param_groups[0]["lr"], "grads": [f32(x) for x in grads],
               "sum_of_squares": sum(float((x.double() ** 2).sum()) for x in grads)}
        for p, x in zip(params, grads):
            p.grad = x.clone()
        if clip[k] > 0:
            total_norm = torch.nn.utils.clip_grad_norm_(params, clip[k])
            # the factor torch multiplied by: max_norm / (norm + 1e-6), clamped to 1
            coef = torch.clamp(clip[k] / (total_norm + 1e-6), max=1.0)
            rec.update({"max_grad_norm": clip[k], "total_norm": float(total_norm),
                        "clip_factor": float(coef)})
            for p, x in zip(params, grads):
                assert torch.equal(p.grad, x * coef)
        else:
            rec["max_grad_norm"] = 0.0
        opt.step()
        sched.step()
        rec["params"] = [f32(p) for p in params]
        rec["exp_avg"] = [f32(opt.state[p]["exp_avg"]) for p in params]
        rec["exp_avg_sq"] = [f32(opt.state[p]["exp_avg_sq"]) for p in params]
        steps.append(rec)
    return {"name": name, "sizes": sizes, "lr": lr, "beta1": betas[0], "beta2": betas[1],
            "eps": eps, "weight_decay": wd, "kind": kind, "warmup_steps": warmup,
            "total_steps": total, "init": init, "steps": steps}


def clip_grid():
    """clip_grad_norm_ factors over a range of norms, each from a real gradient tensor."""
    out = []
    g = torch.Generator().manual_seed(7)
    for target_norm, max_norm in [(0.1, 1.0), (0.999999, 1.0), (1.0, 1.0), (1.5, 1.0),
                                  (10.0, 1.0), (1e3, 0.5), (3.0, 5.0), (250.0, 1e-3)]:
        x = torch.randn(37, generator=g, dtype=torch.float32)
        x = x * (target_norm / float(x.double().norm()))
        p = torch.nn.Parameter(torch.zeros(37))
        p.grad = x.clone()
        norm = torch.nn.utils.clip_grad_norm_([p], max_norm)
        coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        assert torch.equal(p.grad, x * coef)
        out.append({"grad": f32(x), "max_grad_norm": max_norm, "total_norm": float(norm),
                    "sum_of_squares": float((x.double() ** 2).sum()), "clip_factor": float(coef)})
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "golden", "optimizer.json")
    torch.manual_seed(0)
    result = {
        "torch": torch.__version__,
        "lr_schedules": lr_grid(),
        "adamw": [
            adamw_run("cosine_clip", 11, [10, 6], 1e-2, (0.9, 0.95), 1e-6, 0.1, "cosine", 1, 6,
                      [0, 0, 0, 0.5, 0, 0]),
            adamw_run("linear_warmup", 12, [16], 3e-3, (0.9, 0.999), 1e-8, 0.01, "linear", 2, 5,
                      [0, 0, 0, 0, 0]),
            adamw_run("constant_big_clip", 13, [5, 5, 3], 0.1, (0.8, 0.99), 1e-3, 0.5, "constant",
                      0, 4, [1.0, 1.0, 1.0, 1.0]),
        ],
        "clip": clip_grid(),
    }
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
