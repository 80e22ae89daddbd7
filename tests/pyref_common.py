"""What the PyTorch fixture generators for the other normalizations share (tests/gen_fixtures_nonorm.py,
tests/gen_fixtures_norms.py; Debian's /usr/bin/python3, torch 1.13): the layer swap, the input batch, the SGD step,
the checks that the step moves every parameter and that float32 PyTorch lands within the C test's tolerances.
The torchvision-layout ResNet itself is gen_fixtures_resnet.py's.
"""
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

STEP = dict(lr=0.1, momentum=0.9, weight_decay=1e-4)   # the one SGD step of the fixtures
MARGIN = 3.0   # float32 PyTorch must land within 1/MARGIN of the C test's tolerances


class BatchNormState(nn.Module):
    """A copy of a BatchNorm layer's parameters and buffers under torchvision's names (so the state dict keeps the
    file layout); subclasses say what the layer computes."""

    def __init__(self, bn):
        super().__init__()
        self.weight = nn.Parameter(bn.weight.detach().clone())
        self.bias = nn.Parameter(bn.bias.detach().clone())
        self.register_buffer("running_mean", bn.running_mean.detach().clone())
        self.register_buffer("running_var", bn.running_var.detach().clone())
        self.register_buffer("num_batches_tracked", bn.num_batches_tracked.detach().clone())


def replace_batchnorm(model, make):
    """Replaces every nn.BatchNorm2d of model by make(bn); returns model."""
    for _, mod in list(model.named_modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(mod, child_name, make(child))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    return model


def make_input(seed, in_shape, num_classes):
    """The fixture's batch: x (NHWC float32 numpy) and int64 labels, from torch.Generator seed + 1."""
    g = torch.Generator().manual_seed(seed + 1)
    x = (torch.randn(*in_shape, generator=g) * 1.1 + 0.05).to(torch.float32).numpy()
    labels = torch.randint(0, num_classes, (in_shape[0],), generator=g).to(torch.int64).numpy()
    return x, labels


def sgd_step(m, x, labels):
    """One SGD step (STEP) of m in its current mode on cross-entropy; returns the loss as a 1-element tensor."""
    opt = torch.optim.SGD(m.parameters(), **STEP)
    opt.zero_grad()
    loss = F.cross_entropy(m(x), torch.from_numpy(labels))
    loss.backward()
    opt.step()
    return loss.detach().reshape(1)


def check_step_moves(ref, weights, what):
    """Exits unless the step moves every parameter tensor by far more than the C test's atol (1e-5): a wrong
    gradient would pass unseen."""
    dmin = min((ref[f"after_step.{k}"] - v.to(torch.float64)).abs().max().item()
               for k, v in weights.items() if v.is_floating_point() and "running" not in k)
    if dmin < 5e-4:
        sys.exit(f"FAIL {what}: a parameter tensor moves by only {dmin:.3g} in the step; change the model")


def acceptance(ref, f32, tol):
    """Worst float32-vs-float64 error over the tolerance per group (the name before the first dot), with
    tol {group: (atol, rtol)} (atol "max": 1e-4 * max|ref| of the tensor)."""
    worst = {}
    for k, v in ref.items():
        g = k.split(".")[0]
        if not v.is_floating_point():
            continue
        want = v.to(torch.float32).to(torch.float64).flatten()
        got = f32[k].to(torch.float64).flatten()
        atol, rtol = tol[g]
        if atol == "max":
            atol = 1e-4 * want.abs().max().item()
        r = ((got - want).abs() / (atol + rtol * want.abs())).max().item()
        worst[g] = max(worst.get(g, 0.0), r)
    return worst


def check_acceptance(worst, what):
    """Exits when float32 PyTorch is not within 1/MARGIN of the tolerances: the fixture would be badly conditioned."""
    if any(r > 1 / MARGIN for r in worst.values()):
        sys.exit(f"FAIL {what}: badly conditioned in float32 (must be <= {1 / MARGIN:.3f}); change the model")


def to_store(ref):
    """The float64 reference as the fixture stores it: floating tensors in float32."""
    return {k: (v.to(torch.float32) if v.is_floating_point() else v) for k, v in ref.items()}
