#!/usr/bin/python3
"""Reference fixtures for bnlab's other normalizations (bnl_resnet_set_norm_spec, `bnlab train --norm ...`), made with
PyTorch (Debian's /usr/bin/python3: torch 1.13).

    /usr/bin/python3 tests/gen_fixtures_norms.py       # writes tests/fixtures/norms/ (files + README.md)

Every BatchNorm layer of the torchvision-layout ResNet of gen_fixtures_resnet.py is swapped for:
  group   nn.GroupNorm(4, C) (the weights file holds weight/bias only, as torchvision's
          resnet(norm_layer=lambda c: nn.GroupNorm(4, c)) state dict; "bnlab.norm": "group:4")
  renorm  Batch Renormalization written out below in float64 ("bnlab.norm": "renorm", bounds r_max 1.5, d_max 0.5
          from "bnlab.renorm_rmax"/"bnlab.renorm_dmax", small so that some channels clip and some do not)
  ghost   nn.functional.batch_norm over each chunk of 2 images (x.split(2)); the running statistics move once per
          forward by the chunks' average mean and biased variance ("bnlab.norm": "ghost:2")
  frozen  a FrozenBatchNorm-like module: running statistics in both modes, never updated; weight/bias still learn
          ("bnlab.norm": "frozen")
bnlab's running-statistics rule throughout: running = 0.9*running + 0.1*batch, biased variance, eps 1e-5.

Two narrow networks (G = 4 divides every width):
  basic:      BasicBlock [1,1,1,1], stem 8, widths 8,12,20,36, 7 classes, input 4x40x36x3
  bottleneck: Bottleneck [1,1,1,1], stem 8, inner widths 4,8,12,28 (outputs x4), 5 classes, input 4x33x33x3
Running statistics from 20 BatchNorm warm-up forwards, then perturbed (so renorm's r and d are not 1 and 0).

Expected per (kind, model), computed in float64 from the float32 weights: logits_eval, logits_train (one train-mode
forward from the file's state), after_train_forward.* (the running statistics after it), the layers' own statistics of that
forward (group_mean/var.<layer> (N,G); renorm_r/d.<layer> (C); ghost_mean/var.<layer> (N/V,C)), step_loss and
after_step.* (one SGD step: lr 0.1, momentum 0.9, weight decay 1e-4). Every run checks that a float32 PyTorch run
lands within 1/3 of the C test's tolerances, and exits 1 otherwise.
"""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402
from gen_fixtures_resnet import make_model, model_from_state, state_f32  # noqa: E402
from pyref_common import (MARGIN, STEP, BatchNormState, acceptance, check_acceptance, check_step_moves,  # noqa: E402
                          make_input, replace_batchnorm, sgd_step, to_store)

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "norms")
EPS, MOM = 1e-5, 0.9
G, V, RMAX, DMAX = 4, 2, 1.5, 0.5
KINDS = {"group": f"group:{G}", "renorm": "renorm", "ghost": f"ghost:{V}", "frozen": "frozen"}
# (atol, rtol) of tests/c/test_resnet.c's run_norms checks; "max": 1e-4 * max|ref| of the tensor
TOL = {"logits_eval": ("max", 0.0), "logits_train": ("max", 0.0), "after_train_forward": (1e-5, 1e-4),
       "group_mean": (1e-5, 1e-4), "group_var": (1e-5, 1e-4), "renorm_r": (1e-5, 1e-4), "renorm_d": (1e-5, 1e-4),
       "ghost_mean": (1e-5, 1e-4), "ghost_var": (1e-5, 1e-4), "step_loss": (1e-6, 1e-5), "after_step": (1e-5, 1e-4)}


def bshape(v):
    return v[None, :, None, None]


class StatNorm(BatchNormState):
    """BatchNorm's parameters and buffers (torchvision names) with renorm / ghost / frozen behaviour. `record` gets
    this layer's own statistics of the last train-mode forward."""

    def __init__(self, bn, kind):
        super().__init__(bn)
        self.kind = kind
        self.record = {}

    def update(self, mean, var):
        with torch.no_grad():
            self.running_mean.mul_(MOM).add_((1 - MOM) * mean.detach())
            self.running_var.mul_(MOM).add_((1 - MOM) * var.detach())
            self.num_batches_tracked += 1

    def forward(self, x):
        if self.kind == "frozen" or not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, EPS)
        if self.kind == "ghost":
            outs, ms, vs = [], [], []
            for c in x.split(V, 0):
                ms.append(c.mean((0, 2, 3)))
                vs.append(c.var((0, 2, 3), unbiased=False))
                outs.append(F.batch_norm(c, None, None, self.weight, self.bias, True, 0.0, EPS))
            m, v = torch.stack(ms), torch.stack(vs)
            self.record = {"ghost_mean": m.detach(), "ghost_var": v.detach()}
            self.update(m.mean(0), v.mean(0))
            return torch.cat(outs)
        # Batch Renormalization (Ioffe 2017, Algorithm 1), r and d without gradient
        mu, var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)
        sb, sr = torch.sqrt(var + EPS), torch.sqrt(self.running_var + EPS)
        r = (sb.detach() / sr).clamp(1 / RMAX, RMAX)
        d = ((mu.detach() - self.running_mean) / sr).clamp(-DMAX, DMAX)
        self.record = {"renorm_r": r.detach(), "renorm_d": d.detach()}
        xhat = (x - bshape(mu)) / bshape(sb)
        y = bshape(self.weight) * (xhat * bshape(r) + bshape(d)) + bshape(self.bias)
        self.update(mu, var)
        return y


class RecGroupNorm(nn.GroupNorm):
    """nn.GroupNorm that also records its per-sample group statistics."""

    def forward(self, x):
        xg = x.detach().reshape(x.shape[0], self.num_groups, -1)
        self.record = {"group_mean": xg.mean(2), "group_var": xg.var(2, unbiased=False)}
        return super().forward(x)


def group_norm(bn):
    gn = RecGroupNorm(G, bn.num_features, eps=EPS).to(bn.weight.dtype)
    with torch.no_grad():
        gn.weight.copy_(bn.weight), gn.bias.copy_(bn.bias)
    return gn


def swap(model, kind):
    return replace_batchnorm(model, group_norm if kind == "group" else lambda bn: StatNorm(bn, kind))


def make_weights(seed, bottleneck, layers, stem, widths, num_classes, in_shape):
    m = make_model(seed, bottleneck, layers, stem, widths, num_classes, in_shape, last_gamma=(0.3, 0.6))
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                sd = mod.running_var.sqrt()
                mod.running_mean.add_(torch.randn(mod.running_mean.shape, generator=g) * 0.6 * sd)
                mod.running_var.mul_(torch.exp((torch.rand(mod.running_var.shape, generator=g) * 2 - 1) * 1.5))
    return state_f32(m)


def layer_names(model):
    return [n for n, mod in model.named_modules() if isinstance(mod, (StatNorm, RecGroupNorm))]


def run(kind, weights, x_nhwc, labels, dtype):
    res = {}
    x = torch.from_numpy(x_nhwc).to(dtype).permute(0, 3, 1, 2)
    m = swap(model_from_state(weights, dtype), kind)
    names = layer_names(m)
    m.eval()
    with torch.no_grad():
        res["logits_eval"] = m(x)
    m = swap(model_from_state(weights, dtype), kind).train()
    with torch.no_grad():
        res["logits_train"] = m(x)
    for name, mod in zip(names, [mod for n, mod in m.named_modules() if n in names]):
        for k, v in mod.record.items():
            res[f"{k}.{name}"] = v
    # the parameters do not move in a forward: only the running statistics (none in GroupNorm)
    res.update({f"after_train_forward.{k}": v.detach() for k, v in m.state_dict().items()
                if "running_" in k or "num_batches" in k})
    if kind == "group":
        assert torch.allclose(res["logits_eval"], res["logits_train"], rtol=0, atol=1e-12 if dtype == torch.float64
                              else 1e-6)
    m = swap(model_from_state(weights, dtype), kind).train()
    res["step_loss"] = sgd_step(m, x, labels)
    res.update({f"after_step.{k}": v.detach() for k, v in m.state_dict().items()})
    if kind == "frozen":
        for k, v in weights.items():
            if "running" in k or "num_batches" in k:
                assert torch.equal(res[f"after_step.{k}"].to(v.dtype), v), k
    return res


def gen(name, seed, bottleneck, layers, stem, widths, num_classes, in_shape):
    weights = make_weights(seed, bottleneck, layers, stem, widths, num_classes, in_shape)
    x, labels = make_input(seed, in_shape, num_classes)
    rows = []
    for kind, norm in KINDS.items():
        ref = run(kind, weights, x, labels, torch.float64)
        f32 = run(kind, weights, x, labels, torch.float32)
        worst = acceptance(ref, f32, TOL)
        if kind == "renorm":   # the fixture must exercise both the clipped and the free regime
            r = torch.cat([v for k, v in ref.items() if k.startswith("renorm_r.")])
            d = torch.cat([v for k, v in ref.items() if k.startswith("renorm_d.")])
            clip_r = ((r - RMAX).abs() < 1e-12) | ((r - 1 / RMAX).abs() < 1e-12)
            clip_d = (d.abs() - DMAX).abs() < 1e-12
            print(f"  renorm: r clipped in {int(clip_r.sum())} of {len(r)} channels, d in {int(clip_d.sum())}")
            if clip_r.all() or not clip_r.any() or clip_d.all() or not clip_d.any():
                sys.exit(f"FAIL {name}: renorm's r/d are all clipped or none is; change the perturbation")
        check_step_moves(ref, weights, f"{name} {kind}")
        print(f"{name} {kind}: loss {ref['step_loss'].item():.6f}; float32 torch worst err / tolerance: "
              + ", ".join(f"{g} {r:.3f}" for g, r in worst.items()))
        check_acceptance(worst, f"{name} {kind}")
        meta = {"bnlab.norm": norm}
        w = dict(weights)
        if kind == "renorm":
            meta.update({"bnlab.renorm_rmax": f"{RMAX:g}", "bnlab.renorm_dmax": f"{DMAX:g}"})
        if kind == "group":  # nn.GroupNorm's state dict: weight and bias only
            w = {k: v for k, v in w.items() if not any(s in k for s in ("running_", "num_batches"))
                 or k.startswith("fc")}
            ref = {k: v for k, v in ref.items() if not (k.startswith("after_") and any(
                s in k for s in ("running_", "num_batches")))}
            assert set(k.split(".", 1)[1] for k in ref if k.startswith("after_step.")) == set(w)
        st_io.save(os.path.join(OUT_DIR, f"{kind}-{name}.weights.safetensors"), w, meta)
        st_io.save(os.path.join(OUT_DIR, f"{kind}-{name}.expected.safetensors"), to_store(ref),
                   {"model": name, "norm": norm, "compute_dtype": "float64 (stored as float32)", "step": str(STEP),
                    "torch_version": torch.__version__})
        rows.append(f"| {kind} | {name} | " + " | ".join(f"{worst.get(g, 0):.3f}" for g in
                                                           ("logits_eval", "logits_train", "after_train_forward",
                                                            "after_step")) + " |")
    st_io.save(os.path.join(OUT_DIR, f"{name}.input.safetensors"), {"input": x, "labels": labels})
    return rows


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    rows = gen("basic", 21, False, [1, 1, 1, 1], 8, [8, 12, 20, 36], 7, (4, 40, 36, 3))
    rows += gen("bottleneck", 22, True, [1, 1, 1, 1], 8, [4, 8, 12, 28], 5, (4, 33, 33, 3))
    with open(os.path.join(OUT_DIR, "README.md"), "w") as f:
        f.write("# Fixtures: GroupNorm, Batch Renorm, Ghost BatchNorm, frozen BatchNorm (PyTorch 1.13)\n\n"
                "Written by `/usr/bin/python3 tests/gen_fixtures_norms.py` (its docstring says how each kind is\n"
                "computed); read by `tests/c/test_resnet.c` (`run_norms`) and `tests/node/norms.test.mjs`.\n"
                "`<kind>-<model>.weights.safetensors` carries `__metadata__` `bnlab.norm`; the group files hold\n"
                "`bnK.weight`/`bnK.bias` only (nn.GroupNorm's names).\n\n"
                "Last columns: how far a float32 PyTorch run lands from the float64 reference, as a fraction of\n"
                f"the C test's tolerance (must be <= 1/{MARGIN:g}).\n\n"
                "| kind | model | logits_eval | logits_train | after_train_forward | after_step |\n"
                "|---|---|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
