#!/usr/bin/python3
"""BatchNorm reference fixtures from PyTorch, for tests/c/test_batchnorm.c and the wasm node tests.

Run with Debian's python (torch 1.13 lives there, not in the pyenv one):

    /usr/bin/python3 tests/gen_fixtures_bn.py          # writes tests/fixtures/bn/*.safetensors

Every case is one safetensors file. Activations are NHWC ([N,H,W,C]); torch computes on the
permuted NCHW tensor. All tensors are F32 except num_batches_tracked (I64, shape []).
The `__metadata__` map says what the file holds: `kind` (standard | relu | cumulative),
`shape` ("N,H,W,C"), `eps`, `momentum_bnlab` (0.9) and `momentum_torch` (0.1; "None" for the
cumulative case). The tensor names are documented in tests/fixtures/bn/README.md.
There is no python safetensors package here: write_safetensors() below is the whole format.
"""
import json
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "bn")
EPS = 1e-5
TORCH_MOMENTUM = 0.1   # == bnlab momentum 0.9: running = 0.9*running + 0.1*batch


def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, np.ndarray) in file order; metadata: dict str -> str.

    Layout: u64 little-endian header length, JSON header padded with spaces to a multiple of 8,
    then the raw little-endian data of each tensor, contiguous, in the order given."""
    dtypes = {np.dtype("<f4"): "F32", np.dtype("<i8"): "I64"}
    header = {"__metadata__": dict(metadata)}
    blobs, off = [], 0
    for name, a in tensors:
        a = np.array(a, order="C", copy=True)   # (ascontiguousarray would turn shape [] into [1])
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        b = a.tobytes()
        header[name] = {"dtype": dtypes[a.dtype], "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def nchw(t):   # [N,H,W,C] -> [N,C,H,W]
    return t.permute(0, 3, 1, 2)


def nhwc(t):   # [N,C,H,W] -> [N,H,W,C] as a contiguous float32 numpy array
    return t.permute(0, 2, 3, 1).contiguous().detach().numpy().astype(np.float32)


def f32(t):
    return t.detach().numpy().astype(np.float32)


def make_inputs(g, N, H, W, C):
    """x with per-channel offsets and scales (so mean and var differ per channel), unit-ish gamma, beta."""
    off = torch.rand(C, generator=g) * 4 - 2
    scl = torch.rand(C, generator=g) * 1.5 + 0.5
    x = torch.randn(N, H, W, C, generator=g) * scl + off
    gamma = torch.randn(C, generator=g) * 0.5 + 1.0
    beta = torch.randn(C, generator=g) * 0.5
    rm = torch.randn(C, generator=g) * 0.1
    rv = torch.rand(C, generator=g) + 0.5
    dy = torch.randn(N, H, W, C, generator=g)
    return x, gamma, beta, rm, rv, dy


def train_and_eval(x, gamma, beta, rm, rv, dy, relu):
    """Forward + backward in train and eval mode; returns a dict of numpy arrays."""
    act = F.relu if relu else (lambda t: t)
    out = {}
    # train mode: batch statistics, running stats updated in place (torch: unbiased variance)
    xt = nchw(x).clone().requires_grad_(True)
    gt, bt = gamma.clone().requires_grad_(True), beta.clone().requires_grad_(True)
    rm_t, rv_t = rm.clone(), rv.clone()
    y = act(F.batch_norm(xt, rm_t, rv_t, gt, bt, training=True, momentum=TORCH_MOMENTUM, eps=EPS))
    (y * nchw(dy)).sum().backward()
    out["train_y"] = nhwc(y)
    out["train_dx"] = nhwc(xt.grad)
    out["train_dgamma"] = f32(gt.grad)
    out["train_dbeta"] = f32(bt.grad)
    out["running_mean_out"] = f32(rm_t)
    out["running_var_unbiased_out"] = f32(rv_t)
    # batch statistics as torch computes them (float32), biased variance
    x4 = nchw(x).detach()
    out["batch_mean"] = f32(x4.mean(dim=(0, 2, 3)))
    out["batch_var"] = f32(x4.var(dim=(0, 2, 3), unbiased=False))
    # the biased rule (bnlab default), in float64: 0.9*running + 0.1*biased_var
    x64 = x.double().reshape(-1, x.shape[-1])
    var64 = x64.var(dim=0, unbiased=False)
    out["running_var_biased_out"] = f32(0.9 * rv.double() + 0.1 * var64)
    # eval mode: running statistics, which must not change
    xe = nchw(x).clone().requires_grad_(True)
    ge, be = gamma.clone().requires_grad_(True), beta.clone().requires_grad_(True)
    rm_e, rv_e = rm.clone(), rv.clone()
    ye = act(F.batch_norm(xe, rm_e, rv_e, ge, be, training=False, momentum=TORCH_MOMENTUM, eps=EPS))
    (ye * nchw(dy)).sum().backward()
    assert torch.equal(rm_e, rm) and torch.equal(rv_e, rv)
    out["eval_y"] = nhwc(ye)
    out["eval_dx"] = nhwc(xe.grad)
    out["eval_dgamma"] = f32(ge.grad)
    out["eval_dbeta"] = f32(be.grad)
    return out


def check_against_float64(x, gamma, beta, rm, rv, dy, relu, got):
    """The float32 torch results must agree with the same computation in float64 (fixture sanity)."""
    ref = train_and_eval(x.double(), gamma.double(), beta.double(), rm.double(), rv.double(), dy.double(), relu)
    for k, v in got.items():
        if k == "running_var_biased_out":
            continue
        r = ref[k]
        err = np.max(np.abs(v.astype(np.float64) - r) / (1e-5 * max(1.0, np.max(np.abs(r))) + 1e-4 * np.abs(r)))
        assert err <= 0.2, (k, err)


def standard_case(seed, N, H, W, C, relu=False):
    g = torch.Generator().manual_seed(seed)
    while True:
        x, gamma, beta, rm, rv, dy = make_inputs(g, N, H, W, C)
        if relu:
            beta = beta + torch.linspace(-0.6, 0.6, C)   # some channels mostly off, some mostly on
        if not relu:
            break
        # keep every pre-activation clear of 0, so rounding cannot flip the ReLU mask
        x64 = x.double()
        mu, var = x64.reshape(-1, C).mean(0), x64.reshape(-1, C).var(0, unbiased=False)
        t_train = (x64 - mu) / torch.sqrt(var + EPS) * gamma.double() + beta.double()
        t_eval = (x64 - rm.double()) / torch.sqrt(rv.double() + EPS) * gamma.double() + beta.double()
        if min(t_train.abs().min().item(), t_eval.abs().min().item()) > 1e-3:
            break
    out = train_and_eval(x, gamma, beta, rm, rv, dy, relu)
    check_against_float64(x, gamma, beta, rm, rv, dy, relu, out)
    tensors = [("x", f32(x)), ("gamma", f32(gamma)), ("beta", f32(beta)),
               ("running_mean_in", f32(rm)), ("running_var_in", f32(rv)), ("dy", f32(dy))]
    order = ["train_y", "batch_mean", "batch_var", "running_mean_out", "running_var_unbiased_out",
             "running_var_biased_out", "train_dx", "train_dgamma", "train_dbeta",
             "eval_y", "eval_dx", "eval_dgamma", "eval_dbeta"]
    tensors += [(k, out[k]) for k in order]
    kind = "relu" if relu else "standard"
    meta = {"kind": kind, "shape": f"{N},{H},{W},{C}", "eps": repr(EPS), "momentum_bnlab": "0.9",
            "momentum_torch": repr(TORCH_MOMENTUM), "relu": "1" if relu else "0",
            "torch": torch.__version__, "seed": str(seed)}
    name = f"bn_{kind}_N{N}_H{H}_W{W}_C{C}.safetensors"
    write_safetensors(os.path.join(OUT, name), tensors, meta)
    return name


def cumulative_case(seed, N, H, W, C, batches=3):
    """torch momentum=None: running stats are the plain average of all batches seen so far."""
    g = torch.Generator().manual_seed(seed)
    x0, gamma, beta, rm, rv, _ = make_inputs(g, N, H, W, C)
    bn = torch.nn.BatchNorm2d(C, eps=EPS, momentum=None)
    with torch.no_grad():
        bn.weight.copy_(gamma), bn.bias.copy_(beta)
        bn.running_mean.copy_(rm), bn.running_var.copy_(rv)
    bn.train()
    tensors = [("gamma", f32(gamma)), ("beta", f32(beta)),
               ("running_mean_in", f32(rm)), ("running_var_in", f32(rv)),
               ("num_batches_tracked_in", np.array(0, dtype=np.int64))]
    rv_biased = rv.double()
    for k in range(batches):
        x = x0 if k == 0 else make_inputs(g, N, H, W, C)[0] * (1.0 + 0.5 * k) + 0.3 * k
        with torch.no_grad():
            y = bn(nchw(x))
        n = k + 1   # num_batches_tracked after this batch; factor 1/n
        var64 = x.double().reshape(-1, C).var(dim=0, unbiased=False)
        rv_biased = (1.0 - 1.0 / n) * rv_biased + (1.0 / n) * var64
        tensors += [(f"x_{k}", f32(x)), (f"train_y_{k}", nhwc(y)),
                    (f"running_mean_out_{k}", f32(bn.running_mean)),
                    (f"running_var_unbiased_out_{k}", f32(bn.running_var)),
                    (f"running_var_biased_out_{k}", f32(rv_biased))]
    assert int(bn.num_batches_tracked) == batches
    tensors.append(("num_batches_tracked_out", np.array(int(bn.num_batches_tracked), dtype=np.int64)))
    meta = {"kind": "cumulative", "shape": f"{N},{H},{W},{C}", "eps": repr(EPS), "momentum_bnlab": "cumulative",
            "momentum_torch": "None", "batches": str(batches), "relu": "0", "torch": torch.__version__,
            "seed": str(seed)}
    name = f"bn_cumulative_N{N}_H{H}_W{W}_C{C}.safetensors"
    write_safetensors(os.path.join(OUT, name), tensors, meta)
    return name


# (N, H, W, C): every channel count the issue names, spread over N=1 with H*W>1, N=2 H=W=4 and
# odd N=3 H=5 W=7, plus the smallest batches (M = 2) and a few more lane multiples.
STANDARD = [
    (1, 3, 5, 1), (2, 4, 4, 1), (2, 1, 1, 1),
    (2, 4, 4, 3), (1, 1, 2, 3),
    (3, 5, 7, 4),
    (1, 3, 5, 5),
    (2, 4, 4, 7),
    (3, 5, 7, 8), (1, 3, 5, 8),
    (2, 4, 4, 9),
    (1, 3, 5, 15),
    (2, 4, 4, 16), (3, 5, 7, 16),
    (3, 5, 7, 17),
    (2, 4, 4, 32),
    (2, 4, 4, 63),
    (3, 5, 7, 64), (1, 3, 5, 64),
    (1, 3, 5, 65),
    (1, 3, 5, 128),
    (2, 2, 3, 256),
]


def main():
    torch.set_num_threads(1)   # deterministic reductions
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        if f.endswith(".safetensors"):
            os.remove(os.path.join(OUT, f))
    names = []
    for i, (N, H, W, C) in enumerate(STANDARD):
        names.append(standard_case(1000 + i, N, H, W, C))
    names.append(standard_case(2000, 2, 4, 4, 6, relu=True))
    names.append(standard_case(2001, 1, 3, 5, 17, relu=True))
    names.append(cumulative_case(3000, 2, 3, 3, 5))
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in names)
    print(f"wrote {len(names)} files, {total} bytes, to {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
