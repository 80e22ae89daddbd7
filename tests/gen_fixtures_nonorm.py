#!/usr/bin/python3
"""Reference fixtures for bnlab's ResNet without normalization (bnl_resnet_set_norm(m, BNL_NORM_NONE),
`bnlab train --norm none`), made with PyTorch (Debian's /usr/bin/python3: torch 1.13).

    /usr/bin/python3 tests/gen_fixtures_nonorm.py       # writes tests/fixtures/nonorm/ (files + README.md)

In that mode every BatchNorm layer of the torchvision ResNet is replaced by a per-channel affine layer,
y = weight * x + bias, with the same state-dict keys (running_mean / running_var / num_batches_tracked stay in the
file, unused and unchanged). The PyTorch side here is the torchvision-layout ResNet of gen_fixtures_resnet.py with
each nn.BatchNorm2d swapped for such a module, run in float64 from the float32 weights.

Two narrow networks, widths deliberately not multiples of 8/16:
  basic:      BasicBlock [2,2,2,2], stem 8, widths 8,12,20,36, 7 classes, input 2x40x36x3
  bottleneck: Bottleneck [1,2,1,1], stem 8, inner widths 4,8,12,28 (outputs x4), 5 classes, input 3x33x33x3
Random gamma/beta (the last gamma of every residual branch small so activations stay O(1) without normalization)
and random running statistics (so using them by mistake changes the numbers).

Expected per model: logits (train and eval mode are the same function), the loss and the state after one SGD step
(lr 0.1, momentum 0.9, weight decay 1e-4; running statistics must come out unchanged). Every run checks that a
float32 PyTorch run lands within 1/3 of the C test's tolerances, and exits 1 otherwise.
"""
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402
from gen_fixtures_resnet import TVResNet, model_from_state, state_f32  # noqa: E402
from pyref_common import (MARGIN, STEP, BatchNormState, acceptance, check_acceptance, check_step_moves,  # noqa: E402
                          make_input, replace_batchnorm, sgd_step, to_store)

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "nonorm")
# (atol, rtol) of tests/c/test_resnet.c's non-normalized checks; "max": 1e-4 * max|ref| of the tensor
TOL = {"logits": ("max", 0.0), "step_loss": (1e-6, 1e-5), "after_step": (1e-5, 1e-4)}
GAMMA, LAST_GAMMA = (1.0, 1.5), (0.2, 0.5)   # gamma ~ U(GAMMA); the last of each residual branch ~ U(LAST_GAMMA)


class Affine(BatchNormState):
    """What a BatchNorm layer becomes without normalization: y = weight * x + bias per channel. Keeps BatchNorm's
    state-dict entries so the file layout is torchvision's."""

    def forward(self, x):
        return x * self.weight[None, :, None, None] + self.bias[None, :, None, None]


def strip_norm(model):   # also used by demo-models/experiments/no_bn_resnet50/pytorch/train_pytorch.py
    return replace_batchnorm(model, Affine)


def make_weights(seed, bottleneck, layers, stem, widths, num_classes):
    torch.manual_seed(seed)
    m = TVResNet(bottleneck, layers, stem, widths, num_classes=num_classes)
    last = "bn3" if bottleneck else "bn2"
    with torch.no_grad():
        for name, mod in m.named_modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.uniform_(GAMMA[0], GAMMA[1])
                mod.bias.normal_(0.0, 0.2)
                if name.startswith("layer") and name.endswith("." + last):
                    mod.weight.uniform_(LAST_GAMMA[0], LAST_GAMMA[1])
                mod.running_mean.normal_(0.0, 1.0)
                mod.running_var.uniform_(0.5, 2.0)
                mod.num_batches_tracked.fill_(7)
    return state_f32(m)


def run(weights, x_nhwc, labels, dtype):
    res = {}
    x = torch.from_numpy(x_nhwc).to(dtype).permute(0, 3, 1, 2)
    m = strip_norm(model_from_state(weights, dtype))
    for mode in ("eval", "train"):
        getattr(m, mode)()
        with torch.no_grad():
            res[f"logits_{mode}"] = m(x)
    assert torch.equal(res["logits_eval"], res["logits_train"])
    res["logits"] = res.pop("logits_eval")
    del res["logits_train"]
    m.train()
    res["step_loss"] = sgd_step(m, x, labels)
    for k, v in m.state_dict().items():
        res[f"after_step.{k}"] = v.detach()
        if "running" in k or "num_batches" in k:
            assert torch.equal(v.to(weights[k].dtype), weights[k]), k
    return res


def gen(name, seed, bottleneck, layers, stem, widths, num_classes, in_shape):
    weights = make_weights(seed, bottleneck, layers, stem, widths, num_classes)
    x, labels = make_input(seed, in_shape, num_classes)
    ref = run(weights, x, labels, torch.float64)
    f32 = run(weights, x, labels, torch.float32)
    worst = acceptance(ref, f32, TOL)
    mx = ref["logits"].abs().max().item()
    check_step_moves(ref, weights, name)
    print(f"{name}: max |logit| {mx:.3g}, loss {ref['step_loss'].item():.6f}; float32 torch worst err / tolerance: "
          + ", ".join(f"{g} {r:.3f}" for g, r in worst.items()))
    check_acceptance(worst, name)
    st_io.save(os.path.join(OUT_DIR, f"{name}.weights.safetensors"), weights, {"bnlab.norm": "none"})
    st_io.save(os.path.join(OUT_DIR, f"{name}.input.safetensors"), {"input": x, "labels": labels})
    st_io.save(os.path.join(OUT_DIR, f"{name}.expected.safetensors"), to_store(ref),
               {"model": name, "norm": "none (per-channel affine)", "compute_dtype": "float64 (stored as float32)",
                "step": str(STEP), "torch_version": torch.__version__})
    return f"| {name} | {'bottleneck' if bottleneck else 'basic'} {layers} | {list(in_shape)} | {mx:.3g} | " \
           + " | ".join(f"{worst[g]:.3f}" for g in TOL) + " |"


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    rows = [
        gen("basic", 11, False, [2, 2, 2, 2], 8, [8, 12, 20, 36], 7, (2, 40, 36, 3)),
        gen("bottleneck", 12, True, [1, 2, 1, 1], 8, [4, 8, 12, 28], 5, (3, 33, 33, 3)),
    ]
    with open(os.path.join(OUT_DIR, "README.md"), "w") as f:
        f.write("# Fixtures: ResNet without normalization (PyTorch 1.13)\n\n"
                "Written by `/usr/bin/python3 tests/gen_fixtures_nonorm.py`; read by `tests/c/test_resnet.c`\n"
                "(`run_nonorm`). Each BatchNorm layer is a per-channel affine `y = weight*x + bias`; the weights file\n"
                "carries `__metadata__` `\"bnlab.norm\": \"none\"`, which bnlab's loader honours.\n\n"
                "Last columns: how far a float32 PyTorch run lands from the float64 reference, as a fraction of\n"
                f"the C test's tolerance (must be <= 1/{MARGIN:g}).\n\n"
                "| model | blocks | input NHWC | max abs logit | logits | step_loss | after_step |\n"
                "|---|---|---|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
