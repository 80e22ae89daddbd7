#!/usr/bin/python3
"""Reference fixtures for bnlab's ResNet, made with PyTorch (Debian's /usr/bin/python3: torch 1.13, torchvision 0.14).

    /usr/bin/python3 tests/gen_fixtures_resnet.py            # writes tests/fixtures/resnet/ (files + README.md)

Two narrow networks with torchvision's exact module names and tensor layouts (so the state_dict keys are the ones
torchvision's resnet50/resnet18 have, only the channel counts are small):
  resnet50: Bottleneck [3,4,6,3], stem 8, inner widths 4,8,12,28 (outputs x4), 10 classes, input 3x48x48x3,
            bn3 gamma ~ U(0.1, 0.3) (well conditioned in float32; see acceptance())
  resnet18: BasicBlock [2,2,2,2], stem 8, widths 8,12,20,36, 7 classes, input 2x40x36x3 (H != W on purpose)
Widths are deliberately not multiples of 8/16 so SIMD tails get exercised.

The reference numbers are computed in float64 from the float32 weights and stored as float32; the README lists how
far a float32 PyTorch run lands from them, as a guide for tolerances. Every run also checks that a float32 PyTorch
run lands within 1/3 of the C test's tolerances on every checked element (acceptance()), and exits 1 otherwise.
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "resnet")

# Hyperparameters of the expected results (also written into each expected file's __metadata__).
TORCH_BN_MOMENTUM = 0.1  # torch: running = (1 - 0.1) * running + 0.1 * batch  ==  bnlab momentum 0.9
BNLAB_BN_MOMENTUM = 0.9
BN_EPS = 1e-5
STEP = dict(lr=0.1, momentum=0.9, weight_decay=1e-4)
STEP_PLAIN = dict(lr=0.05, momentum=0.0, weight_decay=0.0)
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# --------------------------------------------------------------------------------------------------------------
# A faithful, width-generic copy of torchvision.models.resnet (v1.5: stride on the 3x3 conv of the bottleneck).
# Same module names, same parameter shapes, same forward; checked against torchvision in check_against_torchvision().


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, width, out, stride=1, groups=1, downsample=None):
        super().__init__()
        assert groups == 1 and width == out
        self.conv1 = nn.Conv2d(inplanes, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, width, out, stride=1, groups=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, width, 1, 1, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, 1, 0, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class TVResNet(nn.Module):
    """torchvision ResNet with free widths. widths: inner width per stage; outs: block output channels per stage
    (torchvision: outs = planes * expansion, widths = planes * width_per_group / 64 * groups)."""

    def __init__(self, bottleneck, layers, stem, widths, outs=None, num_classes=1000, groups=1):
        super().__init__()
        block = Bottleneck if bottleneck else BasicBlock
        outs = outs or [w * block.expansion for w in widths]
        self.arch = dict(block="bottleneck" if bottleneck else "basic", layers=list(layers), stem=stem,
                         widths=list(widths), outs=list(outs), num_classes=num_classes, groups=groups)
        self.inplanes = stem
        self.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        for s in range(4):
            layer = self._make_layer(block, layers[s], widths[s], outs[s], 1 if s == 0 else 2, groups)
            setattr(self, f"layer{s + 1}", layer)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(outs[3], num_classes)
        for m in self.modules():  # torchvision's init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block, n, width, out, stride, groups):
        downsample = None
        if stride != 1 or self.inplanes != out:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))
        blocks = [block(self.inplanes, width, out, stride, groups, downsample)]
        self.inplanes = out
        for _ in range(1, n):
            blocks.append(block(out, width, out, 1, groups))
        return nn.Sequential(*blocks)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def arch_from_state(shapes):
    """{key: shape} of a torchvision-named ResNet state -> TVResNet kwargs (the same reading bnlab does)."""
    bottleneck = "layer1.0.conv3.weight" in shapes
    layers, widths, outs = [], [], []
    groups = 1
    for s in range(1, 5):
        n = 0
        while f"layer{s}.{n}.conv1.weight" in shapes:
            n += 1
        if n == 0:
            raise ValueError(f"no blocks in layer{s}")
        layers.append(n)
        widths.append(shapes[f"layer{s}.0.conv1.weight"][0])
        last = "conv3" if bottleneck else "conv2"
        outs.append(shapes[f"layer{s}.0.{last}.weight"][0])
        if bottleneck:
            c2 = shapes[f"layer{s}.0.conv2.weight"]
            groups = c2[0] // c2[1]
    return dict(bottleneck=bottleneck, layers=layers, stem=shapes["conv1.weight"][0], widths=widths, outs=outs,
                num_classes=shapes["fc.weight"][0], groups=groups)


def model_from_state(state, dtype=torch.float64):
    """Build a TVResNet from a {key: tensor/array} state (any float dtype) and load it strictly."""
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    m = TVResNet(**arch_from_state(shapes))
    sd = {}
    for k, v in state.items():
        t = torch.as_tensor(np.asarray(v)) if not torch.is_tensor(v) else v
        sd[k] = t.to(torch.float32) if t.is_floating_point() else t
    if not any(k.endswith("num_batches_tracked") for k in sd):  # optional in the contract
        for k in list(sd):
            if k.endswith(".running_mean"):
                sd[k[: -len("running_mean")] + "num_batches_tracked"] = torch.tensor(0, dtype=torch.int64)
    m.load_state_dict(sd, strict=True)
    return m.to(dtype)


def check_against_torchvision():
    """Keys, shapes and outputs equal torchvision's for resnet18/50, wide_resnet50_2 and resnext50_32x4d."""
    import torchvision.models as tvm

    for name in ["resnet18", "resnet50", "wide_resnet50_2", "resnext50_32x4d"]:
        torch.manual_seed(0)
        ref = getattr(tvm, name)(num_classes=5)
        shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
        mine = TVResNet(**arch_from_state(shapes))
        mine_shapes = {k: tuple(v.shape) for k, v in mine.state_dict().items()}
        assert list(mine_shapes) == list(shapes), name
        assert mine_shapes == shapes, name
        mine.load_state_dict(ref.state_dict())
        x = torch.randn(1, 3, 64, 64)
        for mode in ("eval", "train"):
            getattr(ref, mode)(), getattr(mine, mode)()
            with torch.no_grad():
                d = (ref(x) - mine(x)).abs().max().item()
            assert d == 0.0, (name, mode, d)
    print("TVResNet == torchvision (resnet18, resnet50, wide_resnet50_2, resnext50_32x4d): keys, shapes, outputs")


# --------------------------------------------------------------------------------------------------------------


def nhwc(t):
    return t.permute(0, 2, 3, 1).contiguous()


def bn_names(model):
    return [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]


def capture(model, record_bn):
    """Hooks: NHWC activations at maxpool, layer1..4, avgpool; per-BN batch mean and biased var of the input."""
    acts, stats, handles = {}, {}, []
    for name in ["maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool"]:
        def hook(mod, inp, out, name=name):
            acts[name] = nhwc(out.detach()) if name != "avgpool" else out.detach().flatten(1)
        handles.append(getattr(model, name).register_forward_hook(hook))
    if record_bn:
        for name, mod in model.named_modules():
            if isinstance(mod, nn.BatchNorm2d):
                def pre(mod, inp, name=name):
                    x = inp[0].detach().to(torch.float64)
                    stats[name] = (x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False), x[:, 0].numel())
                handles.append(mod.register_forward_pre_hook(pre))
    return acts, stats, handles


def state_f32(model):
    return {k: (v.detach().to(torch.float32) if v.is_floating_point() else v.detach().clone())
            for k, v in model.state_dict().items()}


def make_model(seed, bottleneck, layers, stem, widths, num_classes, in_shape, last_gamma=None, warmup=20):
    """Random torchvision-init model with random gamma/beta, then running stats from `warmup` train-mode forwards.
    last_gamma=(lo, hi): gamma of the last BN of every residual branch (bn3 / bn2) ~ U(lo, hi) instead of U(0.5, 1.5),
    drawn right after that layer's other values (None: the RNG sequence is exactly the original one)."""
    torch.manual_seed(seed)
    m = TVResNet(bottleneck, layers, stem, widths, num_classes=num_classes)
    last = "bn3" if bottleneck else "bn2"
    for name, mod in m.named_modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.momentum = TORCH_BN_MOMENTUM
            with torch.no_grad():
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.normal_(0.0, 0.25)
                if last_gamma is not None and name.startswith("layer") and name.endswith("." + last):
                    mod.weight.uniform_(*last_gamma)
    m.train()
    n, h, w, _ = in_shape
    with torch.no_grad():
        for i in range(warmup):  # 20 batches: running stats are ~88% data, num_batches_tracked = 20
            x = torch.randn(n + 2, 3, h, w) * 1.2 + 0.1
            m(x)
    return m


def run_reference(weights, x_nhwc, labels, dtype):
    """All the expected results for one model, computed in `dtype` from the float32 weights."""
    res = {}
    x = torch.from_numpy(x_nhwc).to(dtype)
    y = torch.from_numpy(labels)

    # eval
    m = model_from_state(weights, dtype).eval()
    acts, _, hs = capture(m, False)
    with torch.no_grad():
        res["logits_eval"] = m(x.permute(0, 3, 1, 2))
    res.update({f"act_eval.{k}": v for k, v in acts.items()})
    before = state_f32(m)
    for h in hs:
        h.remove()
    assert all(torch.equal(before[k], weights[k]) for k in weights), "eval changed the state"

    # one train-mode forward (no step)
    m = model_from_state(weights, dtype).train()
    acts, stats, hs = capture(m, True)
    with torch.no_grad():
        res["logits_train"] = m(x.permute(0, 3, 1, 2))
    res.update({f"act_train.{k}": v for k, v in acts.items()})
    for name, (mean, var, _) in stats.items():
        res[f"train_batch_mean.{name}"] = mean
        res[f"train_batch_var.{name}"] = var
    after = m.state_dict()
    res.update({f"after_train_forward.{k}": v for k, v in after.items()})
    # bnlab's default (biased) rule, momentum 0.9, from the ORIGINAL running stats, in float64
    for name, (mean, var, cnt) in stats.items():
        rm = weights[f"{name}.running_mean"].to(torch.float64)
        rv = weights[f"{name}.running_var"].to(torch.float64)
        res[f"after_train_forward_biased.{name}.running_mean"] = BNLAB_BN_MOMENTUM * rm + (1 - BNLAB_BN_MOMENTUM) * mean
        res[f"after_train_forward_biased.{name}.running_var"] = BNLAB_BN_MOMENTUM * rv + (1 - BNLAB_BN_MOMENTUM) * var
        res[f"after_train_forward_biased.{name}.num_batches_tracked"] = after[f"{name}.num_batches_tracked"]
        # sanity: torch's own update is the unbiased rule with the same mean
        unb = BNLAB_BN_MOMENTUM * rv + (1 - BNLAB_BN_MOMENTUM) * var * cnt / (cnt - 1)
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        assert torch.allclose(after[f"{name}.running_var"].to(torch.float64), unb, rtol=tol, atol=tol), name
        assert torch.allclose(after[f"{name}.running_mean"].to(torch.float64),
                              res[f"after_train_forward_biased.{name}.running_mean"], rtol=tol, atol=tol), name
    for h in hs:
        h.remove()

    # one SGD step with momentum + weight decay (zero momentum buffer), and one plain SGD step
    for prefix, cfg, loss_name in [("after_step", STEP, "step_loss"), ("after_step_plain", STEP_PLAIN, "step_plain_loss")]:
        m = model_from_state(weights, dtype).train()
        opt = torch.optim.SGD(m.parameters(), lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
        opt.zero_grad()
        xin = x.clone().requires_grad_(True)
        logits = m(xin.permute(0, 3, 1, 2))
        logits.retain_grad()
        loss = F.cross_entropy(logits, y)  # mean over the batch
        loss.backward()
        p0 = {k: v.detach().clone() for k, v in m.named_parameters()}
        g = {k: v.grad.detach().clone() for k, v in m.named_parameters()}
        opt.step()
        # sanity: torch's first SGD step is p -= lr * (grad + wd * p), momentum buffer starts as that same value
        for k, v in m.named_parameters():
            manual = p0[k] - cfg["lr"] * (g[k] + cfg["weight_decay"] * p0[k])
            assert torch.allclose(v.detach(), manual, rtol=1e-6, atol=1e-7 if dtype == torch.float64 else 1e-6), k
        res[loss_name] = loss.detach().reshape(1)
        res.update({f"{prefix}.{k}": v for k, v in m.state_dict().items()})
        if prefix == "after_step":
            res["grad_logits"] = logits.grad.detach()
            res["grad_input"] = xin.grad.detach()
    return res


def to_store(res):
    out = {}
    for k, v in res.items():
        v = v.detach()
        out[k] = v.to(torch.float32) if v.is_floating_point() else v.clone()
    return out


def compare(a, b):
    """max abs error and max abs error / max|ref| over the float tensors with the same name prefix group."""
    groups = {}
    for k in a:
        if not a[k].is_floating_point():
            assert torch.equal(a[k], b[k]), k
            continue
        g = k.split(".")[0]
        ref = a[k].to(torch.float64)
        err = (b[k].to(torch.float64) - ref).abs().max().item()
        scale = ref.abs().max().item()
        ea, er = groups.get(g, (0.0, 0.0))
        groups[g] = (max(ea, err), max(er, err / scale if scale > 0 else err))
    return groups


# The C test's tolerances (tests/c/test_resnet.c), per tensor group: (atol, rtol), atol "max" = 1e-4 * max|ref| of the
# tensor. A float32 PyTorch run must land within 1/ACCEPT_MARGIN of them, or the fixture is too badly conditioned to
# tell a correct float32 implementation from a wrong one.
ACCEPT_MARGIN = 3.0
ACCEPT_TOL = {
    "logits_eval": ("max", 0.0),
    "logits_train": ("max", 0.0),
    "train_batch_mean": (1e-5, 1e-4),
    "train_batch_var": (1e-5, 1e-4),
    "after_train_forward": (1e-5, 1e-4),
    "after_train_forward_biased": (1e-5, 1e-4),
    "after_step": (1e-5, 1e-4),
    "after_step_plain": (1e-5, 1e-4),
    "step_loss": (1e-6, 1e-5),
    "step_plain_loss": (1e-6, 1e-5),
}


def acceptance(ref, f32):
    """Elementwise float32-vs-float64 errors against the C test's tolerances. Returns {group: (worst err / tol,
    max abs err, where)}, where = "tensor[flat index] f32 got, f64 want" of the worst element."""
    out = {}
    for k in ref:
        g = k.split(".")[0]
        if g not in ACCEPT_TOL or not ref[k].is_floating_point():
            continue
        want = ref[k].to(torch.float32).to(torch.float64).flatten()  # what the fixture stores
        got = f32[k].to(torch.float64).flatten()
        atol, rtol = ACCEPT_TOL[g]
        if atol == "max":
            atol = 1e-4 * want.abs().max().item()
        err = (got - want).abs()
        ratio = err / (atol + rtol * want.abs())
        i = int(ratio.argmax())
        r0, e0, w0 = out.get(g, (-1.0, 0.0, ""))
        if ratio[i].item() > r0:
            r0, w0 = ratio[i].item(), f"{k}[{i}] {got[i].item():.9g} vs {want[i].item():.9g}"
        out[g] = (r0, max(e0, err.max().item()), w0)
    return out


def describe(path):
    kinds = st_io.dtypes_of(path)
    tensors, meta = st_io.load(path)
    return [(k, kinds[k], list(v.shape)) for k, v in tensors.items()], meta


def gen_model(name, seed, bottleneck, layers, stem, widths, num_classes, in_shape, labels_meta=None, halves=False,
              last_gamma=None):
    m = make_model(seed, bottleneck, layers, stem, widths, num_classes, in_shape, last_gamma=last_gamma)
    weights = state_f32(m)
    arch = m.arch
    g = torch.Generator().manual_seed(seed + 1)
    x = (torch.randn(*in_shape, generator=g) * 1.1 + 0.05).to(torch.float32).numpy()  # NHWC
    labels = torch.randint(0, num_classes, (in_shape[0],), generator=g).to(torch.int64).numpy()

    wmeta = {"labels": json.dumps(labels_meta)} if labels_meta else None
    st_io.save(os.path.join(OUT_DIR, f"{name}.weights.safetensors"), weights, wmeta)
    st_io.save(os.path.join(OUT_DIR, f"{name}.input.safetensors"), {"input": x, "labels": labels})

    ref = run_reference(weights, x, labels, torch.float64)
    f32 = run_reference(weights, x, labels, torch.float32)
    drift = compare(ref, f32)
    accept = acceptance(ref, f32)
    print(f"{name}: float32 torch vs the float64 reference, worst |err| / tolerance per group "
          f"(must be <= 1/{ACCEPT_MARGIN:g} = {1 / ACCEPT_MARGIN:.3f}):")
    for g, (r, e, where) in accept.items():
        print(f"   {g:28s} {r:7.3f}  max abs err {e:.3g}  worst: {where}")
    bad = {g: v for g, v in accept.items() if v[0] > 1 / ACCEPT_MARGIN}
    if bad or set(accept) != set(ACCEPT_TOL):
        sys.exit(f"FAIL {name}: the fixture is badly conditioned in float32 (torch's own float32 run is not within "
                 f"1/{ACCEPT_MARGIN:g} of the tolerances) in {sorted(bad)}; missing groups "
                 f"{sorted(set(ACCEPT_TOL) - set(accept))}. Change the model, not the tolerances.")
    # the step's update itself (after - before), which is small next to the weights
    for prefix in ("after_step", "after_step_plain"):
        da = {f"delta_{prefix}.{k}": ref[f"{prefix}.{k}"] - weights[k].to(torch.float64)
              for k in weights if weights[k].is_floating_point() and "running" not in k}
        db = {f"delta_{prefix}.{k}": f32[f"{prefix}.{k}"].to(torch.float64) - weights[k].to(torch.float64)
              for k in weights if weights[k].is_floating_point() and "running" not in k}
        drift.update(compare(da, db))

    store = to_store(ref)
    if halves:
        for tag, tdtype, sdtype in [("f16", torch.float16, "F16"), ("bf16", torch.bfloat16, "BF16")]:
            path = os.path.join(OUT_DIR, f"{name}.weights_{tag}.safetensors")
            st_io.save(path, {k: (v.to(tdtype) if v.is_floating_point() else v) for k, v in weights.items()})
            # read back through st_io (checks the reader) and run in float64 from the widened values
            back, _ = st_io.load_torch(path)
            assert st_io.dtypes_of(path)["conv1.weight"] == sdtype
            if tag == "bf16":  # st_io's own float32->bf16 rounding agrees with torch's
                np.testing.assert_array_equal(st_io.f32_to_bf16_bits(weights["fc.weight"].numpy()),
                                              weights["fc.weight"].to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16))
            mh = model_from_state(back, torch.float64).eval()
            with torch.no_grad():
                store[f"logits_eval_from_{tag}"] = mh(torch.from_numpy(x).to(torch.float64).permute(0, 3, 1, 2)).to(torch.float32)

    meta = {
        "model": name,
        "arch": json.dumps(arch),
        "input_nhwc": json.dumps(list(in_shape)),
        "compute_dtype": "float64 (stored as float32)",
        "bn_eps": str(BN_EPS),
        "bn_momentum_torch": str(TORCH_BN_MOMENTUM),
        "bn_momentum_bnlab": str(BNLAB_BN_MOMENTUM),
        "running_var_rule": "after_train_forward.* and after_step*.*: unbiased (torch, batch var * n/(n-1)); "
                            "after_train_forward_biased.*: biased (bnlab default)",
        "step": json.dumps({"optimizer": "torch.optim.SGD", **STEP, "dampening": 0.0, "nesterov": False,
                            "momentum_buffer": "zero (first step)", "loss": "F.cross_entropy, mean over batch",
                            "weight_decay_applies_to": "all parameters (conv, bn gamma/beta, fc weight/bias)"}),
        "step_plain": json.dumps({"optimizer": "torch.optim.SGD", **STEP_PLAIN, "loss": "F.cross_entropy, mean"}),
        "torch_version": torch.__version__,
    }
    st_io.save(os.path.join(OUT_DIR, f"{name}.expected.safetensors"), store, meta)

    # round-trip check of every file just written
    for f in sorted(os.listdir(OUT_DIR)):
        if f.startswith(name + ".") and f.endswith(".safetensors"):
            p = os.path.join(OUT_DIR, f)
            t, mt = st_io.load(p, bf16="bits")
            raw = open(p, "rb").read()
            assert st_io.dumps(t, mt, {k: v for k, v in st_io.dtypes_of(p).items()}) == raw, f
    tl, _ = st_io.load(os.path.join(OUT_DIR, f"{name}.weights.safetensors"))
    assert all(np.array_equal(tl[k], weights[k].numpy()) for k in weights)
    nparams = sum(v.numel() for k, v in weights.items() if "running" not in k and "num_batches" not in k)
    return dict(name=name, arch=arch, nparams=nparams, drift=drift, accept=accept, in_shape=in_shape,
                labels=labels.tolist(), nbn=len(bn_names(m)), last_gamma=last_gamma)


README_HEAD = """# ResNet reference fixtures (PyTorch)

Made by `tests/gen_fixtures_resnet.py` with Debian's `/usr/bin/python3` (torch {torch}, torchvision {tv}); regenerate with

    /usr/bin/python3 tests/gen_fixtures_resnet.py

(the safetensors reader/writer is `tests/st_io.py`; `/usr/bin/python3 tests/st_io.py FILE` lists a file's tensors).

Two narrow networks with **torchvision's exact state_dict names and layouts** (the generator checks its model class
against torchvision's resnet18/resnet50/wide_resnet50_2/resnext50_32x4d: same keys, shapes and outputs). Only the
channel counts are small; widths are deliberately not multiples of 8 or 16.

| name | blocks | block | stem | inner widths | block outputs | classes | params | BN layers | input (NHWC) | labels | last-BN gamma |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
{rows}

Architecture details that matter (torchvision v1.5): conv1 7x7 stride 2 pad 3 (no bias) -> bn1 -> relu -> maxpool 3x3
stride 2 pad 1 -> layer1..4 (stride 1,2,2,2; in a bottleneck the stride is on conv2, the 3x3; a downsample
`conv 1x1 stride s` + BN exists on block 0 whenever stride != 1 or in != out channels, which includes layer1.0 of the
bottleneck model) -> global average pool -> fc. Residual add before the final ReLU. BN eps 1e-5.

## How the numbers were made
- Random torchvision init (seeded), BN gamma ~ U(0.5, 1.5), beta ~ N(0, 0.25), then 20 train-mode forwards on
  random data with torch momentum 0.1, so running stats are non-trivial and `num_batches_tracked` = 20.
  In resnet50 the last BN of every residual branch (`layerS.B.bn3`) has gamma ~ U(0.1, 0.3) instead (as trained
  ResNets have, and as torchvision's `zero_init_residual` does in the limit): with gamma ~ 1 there, the residual
  stream grows through 16 blocks, the gradients at init explode and even PyTorch's own float32 step lands ~4e-4 from
  float64, far outside any useful tolerance. The generator refuses to write a fixture that is not well conditioned
  (last section).
- The weights are float32. All expected values are computed in **float64** from those float32 weights (a float64
  copy of the model) and stored as float32.
- **BatchNorm momentum**: torch momentum 0.1 == bnlab/Flax momentum 0.9:
  `running = 0.9 * running + 0.1 * batch`. Normalization in train mode uses the biased batch variance.
- **Running-variance rule**: torch updates running_var with the **unbiased** batch variance (`var * n/(n-1)`,
  n = N*H*W at that layer). So `after_train_forward.*` and `after_step.*` / `after_step_plain.*` hold torch's
  unbiased-rule running_var (use `--running-var unbiased` to compare). `after_train_forward_biased.*` holds the
  bnlab default (biased) rule `0.9 * running_var + 0.1 * biased_batch_var`, computed in float64 from BN-input hooks;
  running_mean is the same under both rules. A step's forward is the same train-mode forward, so after a step the
  biased-rule BN buffers equal `after_train_forward_biased.*` too.
- `num_batches_tracked` goes 20 -> 21 in every train-mode forward (torch increments it; it plays no role with momentum set).
- **SGD (`after_step.*`, `step_loss`)**: train mode, loss `F.cross_entropy(logits, labels)` (mean over the batch),
  `torch.optim.SGD(lr=0.1, momentum=0.9, weight_decay=1e-4, dampening=0, nesterov=False)`, fresh optimizer (zero /
  absent momentum buffer). torch's first step is `buf = grad + wd * p; p -= lr * buf`, i.e. exactly
  `p -= 0.1 * (grad + 1e-4 * p)`; weight decay applies to **all** parameters (conv weights, BN gamma and beta,
  fc weight and bias). Running stats are updated by that step's forward (unbiased rule, as above).
- **Plain SGD (`after_step_plain.*`, `step_plain_loss`)**: `SGD(lr=0.05)`, no momentum, no decay:
  `p -= 0.05 * grad`, so `grad = (weights - after_step_plain) / 0.05`.
- `act_eval.*` / `act_train.*`: NHWC outputs of the stem (`maxpool`: conv1, bn1, relu, maxpool), of each stage
  (`layer1`..`layer4`, after the last block's ReLU) and of the global average pool (`avgpool`, [N, C]), in the
  eval forward and the train-mode forward, for locating a mismatch.
- `grad_logits` = dLoss/dlogits (= (softmax - onehot)/N) and `grad_input` = dLoss/dinput (NHWC), from the SGD step's
  backward (they do not depend on the optimizer).

## Files
All tensors are little-endian and C-ordered. `K` below stands for every key of the model's state_dict (listed in
`<name>.weights.safetensors`, in state_dict order), `B` for every BatchNorm layer name (`bn1`, `layer1.0.bn1`, ...,
`layer1.0.downsample.1`, ...), in module order.

{files}

## Related scripts
- `tests/st_io.py`: the safetensors reader/writer these scripts share (numpy; F32/F16/BF16/I64/I32, `__metadata__`).
- `tests/check_resnet50_full.py`: full-size torchvision resnet50 against `build/native/bnlab` (`infer` eval/train,
  both running-var rules, `step`, a truncated file); `--self-test` runs it against a float32 torch stand-in.
- `tests/make_onnx_resnet50.py OUT.onnx [--weights W]`: ONNX export (opset 13, `input` NCHW 1x3x224x224) for benchmarks.

## How far float32 lands from these float64 references
The same computations run in float32 PyTorch, max abs error (and max abs error / max |reference| of that tensor
group); the `delta_*` rows are the step's update `after - weights` alone, i.e. the gradient's accuracy.
A correct float32 implementation should land at about these magnitudes; tolerances of a few times these are fair.

{drift}

## Conditioning check (the generator fails without it)
`tests/c/test_resnet.c` compares elementwise, `|got - want| <= atol + rtol * |want|`, with the tolerances below.
Every run of the generator also computes all expected values in float32 PyTorch and requires that float32 run to land
within 1/{margin} of those tolerances on every element (worst ratio <= {accept_max}), so that an independent correct
float32 implementation (different summation order) passes with room to spare. The worst elements of this fixture:

{accept}
"""


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    check_against_torchvision()
    import torchvision

    infos = [
        # bn3 gammas ~ U(0.1, 0.3): tames the residual stream (with gamma ~ U(0.5, 1.5) on all 16 bn3 the float32
        # step lands 4e-4 from float64, 20x the tolerance; see ACCEPT_TOL and the README's last section)
        gen_model("resnet50", 50, True, [3, 4, 6, 3], 8, [4, 8, 12, 28], 10, (3, 48, 48, 3), labels_meta=CIFAR10,
                  last_gamma=(0.1, 0.3)),
        gen_model("resnet18", 18, False, [2, 2, 2, 2], 8, [8, 12, 20, 36], 7, (2, 40, 36, 3), halves=True),
    ]

    rows = []
    for i in infos:
        a = i["arch"]
        rows.append(f"| {i['name']} | {a['layers']} | {a['block']} | {a['stem']} | {a['widths']} | {a['outs']} | "
                    f"{a['num_classes']} | {i['nparams']} | {i['nbn']} | {list(i['in_shape'])} | {i['labels']} | "
                    f"{'U' + str(tuple(i['last_gamma'])) if i['last_gamma'] else 'U(0.5, 1.5)'} |")

    files = []
    for i in infos:
        name = i["name"]
        for f in sorted(os.listdir(OUT_DIR)):
            if not (f.startswith(name + ".") and f.endswith(".safetensors")):
                continue
            p = os.path.join(OUT_DIR, f)
            listing, meta = describe(p)
            files.append(f"### `{f}` ({os.path.getsize(p)} bytes, {len(listing)} tensors)")
            if meta:
                files.append("`__metadata__`: " + ", ".join(f"`{k}`" for k in meta) +
                             (f"; labels = `{meta['labels']}`" if "labels" in meta else ""))
            files.append("")
            if ".weights_" in f:  # the F16/BF16 copies: same keys and shapes as the F32 weights file
                kinds = sorted({dt for _, dt, _ in listing})
                files.append(f"Same {len(listing)} keys, order and shapes as `{name}.weights.safetensors`; floating tensors "
                             f"stored as {'/'.join(k for k in kinds if k != 'I64')} (converted from the F32 weights with "
                             f"torch's round-to-nearest-even), `num_batches_tracked` stays I64 []. No `__metadata__`.")
            else:
                files.extend(summarize(listing, name))
            files.append("")

    drift = ["| model | tensor group | max abs err | max abs err / max abs ref |", "| --- | --- | --- | --- |"]
    for i in infos:
        for g, (ea, er) in sorted(i["drift"].items()):
            drift.append(f"| {i['name']} | `{g}` | {ea:.3g} | {er:.3g} |")

    accept = ["| model | tensor group | C test tolerance | max abs err | worst err / tolerance | worst element: float32 vs float64 |",
              "| --- | --- | --- | --- | --- | --- |"]
    for i in infos:
        for g, (r, e, where) in i["accept"].items():
            atol, rtol = ACCEPT_TOL[g]
            tol = "1e-4 * max abs" if atol == "max" else f"abs {atol:g} + rel {rtol:g}"
            accept.append(f"| {i['name']} | `{g}` | {tol} | {e:.3g} | {r:.3f} | `{where}` |")

    readme = README_HEAD.format(torch=torch.__version__, tv=torchvision.__version__, rows="\n".join(rows),
                                files="\n".join(files), drift="\n".join(drift), accept="\n".join(accept),
                                margin=f"{ACCEPT_MARGIN:g}", accept_max=f"{1 / ACCEPT_MARGIN:.3f}")
    with open(os.path.join(OUT_DIR, "README.md"), "w") as f:
        f.write(readme)
    total = sum(os.path.getsize(os.path.join(OUT_DIR, f)) for f in os.listdir(OUT_DIR))
    print(f"wrote {OUT_DIR}: {len(os.listdir(OUT_DIR))} files, {total} bytes")
    for i in infos:
        print(i["name"], i["arch"], "params", i["nparams"])
        for g, (ea, er) in sorted(i["drift"].items()):
            print(f"   f32 vs f64 {g:28s} abs {ea:.3g} rel {er:.3g}")


def summarize(listing, name):
    """Markdown lines for a file: groups of per-key tensors collapsed to one line with the key pattern."""
    lines = ["| tensor | dtype | shape |", "| --- | --- | --- |"]
    grouped = {}
    order = []
    for k, dt, shape in listing:
        head = k.split(".")[0]
        if "." in k and head in ("after_train_forward", "after_train_forward_biased", "after_step", "after_step_plain",
                                 "train_batch_mean", "train_batch_var"):
            if head not in grouped:
                grouped[head] = []
                order.append(("group", head))
            grouped[head].append((k, dt, shape))
        else:
            order.append(("one", (k, dt, shape)))
    for kind, v in order:
        if kind == "one":
            k, dt, shape = v
            lines.append(f"| `{k}` | {dt} | {shape} |")
        else:
            items = grouped[v]
            if v in ("train_batch_mean", "train_batch_var"):
                what = "biased batch variance" if v == "train_batch_var" else "batch mean"
                lines.append(f"| `{v}.B` ({len(items)} tensors) | F32 | [C of B]: {what} of B's input per channel "
                             f"in the train-mode forward (what normalizes it) |")
            elif v == "after_train_forward_biased":
                lines.append(f"| `{v}.B.running_mean`, `.running_var` (F32 [C]), `.num_batches_tracked` (I64 []) "
                             f"({len(items)} tensors) | | BN buffers only; parameters are unchanged by a forward |")
            else:
                lines.append(f"| `{v}.K` ({len(items)} tensors) | F32 / I64 | same shapes as the weights file |")
    return lines


if __name__ == "__main__":
    main()
