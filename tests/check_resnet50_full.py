#!/usr/bin/python3
"""Full-size check of the native bnlab binary against PyTorch on torchvision's resnet50 (random, seeded weights).

    /usr/bin/python3 tests/check_resnet50_full.py [--bnlab build/native/bnlab] [--keep DIR] [--skip-step]
    /usr/bin/python3 tests/check_resnet50_full.py --self-test     # checks this script: a torch float32 stand-in plays bnlab

Builds torchvision.models.resnet50() (seed 0), fills its running stats with a few train-mode forwards on random data,
nudges BN gamma/beta, writes it as safetensors with a random batch of two 224x224 NHWC images, then runs
  bnlab info W
  bnlab infer --weights W --input X --output Y --mode eval
  bnlab infer ... --mode train --bn-momentum 0.9 --running-var unbiased --state-out S   (torch's rule)
  bnlab infer ... --mode train --state-out S                                            (contract defaults: 0.9, biased)
  bnlab step --weights W --input X --labels X --lr 0.1 --sgd-momentum 0.9 --weight-decay 1e-4 --running-var unbiased --output W2
  bnlab infer with a truncated weights file (must fail with one 'bnlab: error:' line and leave no output)
and compares with a float64 PyTorch reference. One line per check; exit 1 on any mismatch, 0 when all pass.
Prints SKIP and exits 0 when torch/torchvision are missing.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

try:
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    import torchvision
except ImportError as e:  # pragma: no cover
    print(f"SKIP check_resnet50_full: PyTorch/torchvision not importable ({e}); run with /usr/bin/python3")
    sys.exit(0)

import st_io  # noqa: E402

BN_MOMENTUM = 0.9  # bnlab/Flax convention; torch momentum = 1 - 0.9 = 0.1
LR, SGD_MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 1e-4

# Tolerances: errors relative to the largest |value| of the reference tensor (or, for a step, of the update).
# A float32 implementation lands well inside these (see --self-test, which prints its own margins).
TOL = {
    "logits": 1e-4,  # the brief: 1e-4 of max |logit|
    "running": 1e-4,  # running_mean / running_var after one train-mode forward
    "loss": 1e-4,
    # (W2 - W) vs torch's (W2 - W), per tensor, as ||got - ref|| / ||ref||: the gradient's accuracy through 53
    # train-mode BN layers at batch 2 (ReLU/max-pool kinks make it ill-conditioned: torch float32 lands at ~1%)
    "update": 5e-2,
}


# ------------------------------------------------------------------------------------------------ reference


def make_model(seed):
    torch.manual_seed(seed)
    m = torchvision.models.resnet50()
    m.train()
    with torch.no_grad():
        # Small gammas on the last BN of each residual branch (as trained ResNets have, and as zero_init_residual
        # does in the limit): with torchvision's gamma = 1 the gradients at init explode through 16 blocks and a
        # float32 step differs from float64 by ~5% (torch's own float32 included), too loose to check anything.
        for name, mod in m.named_modules():
            if name.endswith(".bn3"):
                mod.weight.uniform_(0.1, 0.3)
        for _ in range(4):  # running stats from real activations: 4 batches of 4 at 112x112 (cheap)
            m(torch.randn(4, 3, 112, 112) * 1.1 + 0.05)
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.mul_(1 + 0.1 * torch.randn_like(mod.weight))
                mod.bias.add_(0.05 * torch.randn_like(mod.bias))
    return m


def state_of(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def load_model(state, dtype):
    m = torchvision.models.resnet50(num_classes=state["fc.weight"].shape[0])
    m.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in state.items()})
    return m.to(dtype)


def bn_stat_hooks(model):
    stats, hs = {}, []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.BatchNorm2d):
            def pre(mod, inp, name=name):
                x = inp[0].detach().to(torch.float64)
                stats[name] = (x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False), x[:, 0].numel())
            hs.append(mod.register_forward_pre_hook(pre))
    return stats, hs


def forward_train(weights, x_nhwc, dtype, bn_momentum=BN_MOMENTUM, running_var="unbiased"):
    """Train-mode forward: logits and the whole updated state (running var by the given rule)."""
    m = load_model(weights, dtype).train()
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.momentum = 1.0 - bn_momentum
    stats, hs = bn_stat_hooks(m)
    with torch.no_grad():
        logits = m(torch.from_numpy(x_nhwc).to(dtype).permute(0, 3, 1, 2))
    for h in hs:
        h.remove()
    state = state_of(m)
    if running_var == "biased":
        for name, (mean, var, n) in stats.items():
            rv = weights[f"{name}.running_var"].to(torch.float64)
            state[f"{name}.running_var"] = (bn_momentum * rv + (1 - bn_momentum) * var).to(dtype)
    return logits, state


def forward_eval(weights, x_nhwc, dtype):
    m = load_model(weights, dtype).eval()
    with torch.no_grad():
        return m(torch.from_numpy(x_nhwc).to(dtype).permute(0, 3, 1, 2))


def sgd_step(weights, x_nhwc, labels, dtype, lr, momentum, weight_decay, bn_momentum=BN_MOMENTUM,
             running_var="unbiased"):
    """One torch SGD step (fresh optimizer, so zero momentum buffer): returns loss and the state after it."""
    m = load_model(weights, dtype).train()
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.momentum = 1.0 - bn_momentum
    stats, hs = bn_stat_hooks(m)
    opt = torch.optim.SGD(m.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    opt.zero_grad()
    logits = m(torch.from_numpy(x_nhwc).to(dtype).permute(0, 3, 1, 2))
    loss = F.cross_entropy(logits, torch.from_numpy(labels).long())
    loss.backward()
    opt.step()
    for h in hs:
        h.remove()
    state = state_of(m)
    if running_var == "biased":
        for name, (mean, var, n) in stats.items():
            rv = weights[f"{name}.running_var"].to(torch.float64)
            state[f"{name}.running_var"] = (bn_momentum * rv + (1 - bn_momentum) * var).to(dtype)
    return loss.item(), state


# ------------------------------------------------------------------------------------------------ stand-in


def emulate_bnlab(argv):
    """A float32 PyTorch stand-in for the bnlab CLI subset used here (for --self-test). Same files in, same files out."""
    p = argparse.ArgumentParser(prog="bnlab(torch stand-in)")
    sub = p.add_subparsers(dest="cmd", required=True)
    pi = sub.add_parser("info")
    pi.add_argument("weights")
    for name in ("infer", "step"):
        q = sub.add_parser(name)
        q.add_argument("--weights", required=True)
        q.add_argument("--input", required=True)
        q.add_argument("--output", required=True)
        q.add_argument("--bn-momentum", type=float, default=BN_MOMENTUM)
        q.add_argument("--running-var", choices=["biased", "unbiased"], default="biased")
        if name == "infer":
            q.add_argument("--mode", choices=["eval", "train"], default="eval")
            q.add_argument("--state-out")
        else:
            q.add_argument("--labels", required=True)
            q.add_argument("--lr", type=float, required=True)
            q.add_argument("--sgd-momentum", type=float, default=0.0)
            q.add_argument("--weight-decay", type=float, default=0.0)
    a = p.parse_args(argv)
    try:
        w, _ = st_io.load_torch(a.weights, torch.float32)
        if a.cmd == "info":
            print(f"blocks [3, 4, 6, 3] bottleneck classes {w['fc.weight'].shape[0]}")
            return 0
        x = st_io.load(a.input)[0]["input"]
        if a.cmd == "infer":
            if a.mode == "eval":
                logits = forward_eval(w, x, torch.float32)
            else:
                logits, state = forward_train(w, x, torch.float32, a.bn_momentum, a.running_var)
                if a.state_out:
                    st_io.save(a.state_out, {k: v.float() if v.is_floating_point() else v for k, v in state.items()})
            st_io.save(a.output, {"logits": logits.float()})
        else:
            labels = st_io.load(a.labels)[0]["labels"].astype(np.int64)
            loss, state = sgd_step(w, x, labels, torch.float32, a.lr, a.sgd_momentum, a.weight_decay,
                                   a.bn_momentum, a.running_var)
            st_io.save(a.output, {k: v.float() if v.is_floating_point() else v for k, v in state.items()})
            print(f"loss {loss:.9g}")
        return 0
    except (st_io.SafetensorsError, KeyError, RuntimeError, OSError) as e:
        print(f"bnlab: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 1


# ------------------------------------------------------------------------------------------------ checks


class Checker:
    def __init__(self):
        self.failed = 0
        self.passed = 0

    def line(self, ok, name, msg):
        print(f"{'PASS' if ok else 'FAIL'} {name}: {msg}", flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        return ok

    def close(self, name, got, ref, rtol, scale=None):
        """max |got - ref| <= rtol * scale (default scale: max |ref|)."""
        got = torch.as_tensor(np.asarray(got)).to(torch.float64)
        ref = torch.as_tensor(np.asarray(ref)).to(torch.float64)
        if tuple(got.shape) != tuple(ref.shape):
            return self.line(False, name, f"shape {list(got.shape)} != expected {list(ref.shape)}")
        if not torch.isfinite(got).all():
            return self.line(False, name, "non-finite values")
        err = (got - ref).abs()
        scale = ref.abs().max().item() if scale is None else scale
        mx = err.max().item()
        i = int(err.flatten().argmax())
        rel = mx / scale if scale > 0 else mx
        msg = (f"max abs err {mx:.3g}, rel {rel:.3g} (tol {rtol:g} x {scale:.4g}); "
               f"worst at flat {i}: got {got.flatten()[i].item():.7g} want {ref.flatten()[i].item():.7g}")
        return self.line(mx <= rtol * scale, name, msg)


def run(cmd, timeout):
    t = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return r, time.time() - t


def compare_state(ck, name, got_path, ref_state, weights, param_tol_scale=None, rtol=TOL["running"]):
    """A state file against a reference state: same keys; params by `param_tol_scale`; BN buffers by rtol."""
    try:
        got, _ = st_io.load(got_path)
    except (OSError, st_io.SafetensorsError) as e:
        return ck.line(False, name, f"cannot read {got_path}: {e}")
    missing = [k for k in ref_state if k not in got and not k.endswith("num_batches_tracked")]
    extra = [k for k in got if k not in ref_state]
    if missing or extra:
        return ck.line(False, f"{name} keys", f"missing {missing[:5]} ({len(missing)}), extra {extra[:5]} ({len(extra)})")
    worst = {"param": (0.0, ""), "running_mean": (0.0, ""), "running_var": (0.0, "")}
    bad = []
    nbt = set()
    for k, ref in ref_state.items():
        if k.endswith("num_batches_tracked"):
            if k in got:
                nbt.add(int(np.asarray(got[k]).reshape(-1)[0]) - int(weights[k].reshape(-1)[0].item()))
            continue
        g = torch.from_numpy(np.asarray(got[k], dtype=np.float64))
        r = ref.to(torch.float64)
        if tuple(g.shape) != tuple(r.shape):
            bad.append(f"{k} shape {list(g.shape)} != {list(r.shape)}")
            continue
        err = (g - r).abs().max().item() if g.numel() else 0.0
        if k.endswith("running_mean") or k.endswith("running_var"):
            kind = k.rsplit(".", 1)[1]
            rel = err / max(r.abs().max().item(), 1e-12)
            if rel > worst[kind][0]:
                worst[kind] = (rel, k)
            if rel > rtol or not torch.isfinite(g).all():
                bad.append(f"{k} rel err {rel:.3g}")
        else:
            w0 = weights[k].to(torch.float64)
            if param_tol_scale is None:  # a forward must leave parameters bit-identical
                rel = err
                ok = err == 0.0
            else:  # a step: compare the update against torch's update, in the 2-norm
                upd = (r - w0).norm().item()
                rel = (g - r).norm().item() / max(upd, 1e-30)
                ok = rel <= param_tol_scale
            if rel > worst["param"][0]:
                worst["param"] = (rel, k)
            if not ok or not torch.isfinite(g).all():
                bad.append(f"{k} max err {err:.3g} ({'update norm-rel' if param_tol_scale else 'abs'} {rel:.3g})")
    label = {"param": "param update norm-rel" if param_tol_scale else "param abs err",
             "running_mean": "running_mean rel", "running_var": "running_var rel"}
    summary = ", ".join(f"{label[kind]} worst {v:.3g} at {k or '-'}" for kind, (v, k) in worst.items())
    if nbt:
        summary += f"; num_batches_tracked +{sorted(nbt)}"
        if nbt != {1}:
            print(f"NOTE {name}: num_batches_tracked changed by {sorted(nbt)} (torch adds 1 per train-mode forward)")
    return ck.line(not bad, name, summary + (f"; {len(bad)} bad, first: {bad[:3]}" if bad else ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bnlab", default=os.path.join(ROOT, "build", "native", "bnlab"), help="the native binary")
    ap.add_argument("--self-test", action="store_true", help="use a float32 torch stand-in instead of bnlab")
    ap.add_argument("--keep", help="write the files to this directory and keep them")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=224, help="input height and width")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--skip-step", action="store_true", help="skip the `bnlab step` check")
    ap.add_argument("--ref-dtype", choices=["float64", "float32"], default="float64")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per bnlab call")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--emulate-bnlab", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.emulate_bnlab is not None:
        return emulate_bnlab(a.emulate_bnlab)
    if a.threads:
        torch.set_num_threads(a.threads)

    if a.self_test:
        bnlab = [sys.executable, os.path.abspath(__file__), "--emulate-bnlab"]
    else:
        if not (os.path.isfile(a.bnlab) and os.access(a.bnlab, os.X_OK)):
            print(f"FAIL check_resnet50_full: no bnlab binary at {a.bnlab} (build it, or pass --bnlab PATH)")
            return 1
        bnlab = [a.bnlab]
    dtype = torch.float64 if a.ref_dtype == "float64" else torch.float32
    work = a.keep or tempfile.mkdtemp(prefix="bnlab_r50_")
    os.makedirs(work, exist_ok=True)
    ck = Checker()
    t0 = time.time()
    try:
        model = make_model(a.seed)
        weights = state_of(model)
        W = os.path.join(work, "resnet50.safetensors")
        st_io.save(W, weights)
        g = torch.Generator().manual_seed(a.seed + 1)
        x = torch.randn(a.batch, a.size, a.size, 3, generator=g).numpy()
        labels = torch.randint(0, 1000, (a.batch,), generator=g).numpy().astype(np.int64)
        X = os.path.join(work, "input.safetensors")
        st_io.save(X, {"input": x, "labels": labels})
        print(f"resnet50: {sum(p.numel() for p in model.parameters())} params, input {list(x.shape)} NHWC, "
              f"reference in {a.ref_dtype}, files in {work} ({time.time() - t0:.1f}s)", flush=True)

        # info
        r, dt = run(bnlab + ["info", W], a.timeout)
        first = (r.stdout.strip().splitlines() or [""])[0]
        ck.line(r.returncode == 0, "info", f"exit {r.returncode} ({dt:.1f}s): {first[:100]}" +
                (f" stderr: {r.stderr.strip()[:200]}" if r.returncode else ""))

        # eval
        ref_eval = forward_eval(weights, x, dtype)
        Y = os.path.join(work, "logits_eval.safetensors")
        r, dt = run(bnlab + ["infer", "--weights", W, "--input", X, "--output", Y, "--mode", "eval"], a.timeout)
        if ck.line(r.returncode == 0, "infer eval runs", f"exit {r.returncode} ({dt:.1f}s) {r.stderr.strip()[:300]}"):
            got = st_io.load(Y)[0].get("logits")
            if got is None:
                ck.line(False, "infer eval logits", "no tensor 'logits' in the output")
            else:
                ck.close("infer eval logits", got, ref_eval, TOL["logits"])

        # train mode, torch's rule and the contract's default rule
        for rule, extra in [("unbiased", ["--bn-momentum", "0.9", "--running-var", "unbiased"]), ("biased", [])]:
            ref_logits, ref_state = forward_train(weights, x, dtype, BN_MOMENTUM, rule)
            Y = os.path.join(work, f"logits_train_{rule}.safetensors")
            S = os.path.join(work, f"state_train_{rule}.safetensors")
            label = f"infer train ({rule}{', defaults' if not extra else ''})"
            r, dt = run(bnlab + ["infer", "--weights", W, "--input", X, "--output", Y, "--mode", "train",
                                 "--state-out", S] + extra, a.timeout)
            if ck.line(r.returncode == 0, f"{label} runs", f"exit {r.returncode} ({dt:.1f}s) {r.stderr.strip()[:300]}"):
                got = st_io.load(Y)[0].get("logits")
                if got is None:
                    ck.line(False, f"{label} logits", "no tensor 'logits' in the output")
                else:
                    ck.close(f"{label} logits", got, ref_logits, TOL["logits"])
                compare_state(ck, f"{label} state", S, ref_state, weights)

        # one SGD step (momentum + weight decay, zero momentum buffer), torch's running-var rule
        if not a.skip_step:
            ref_loss, ref_state = sgd_step(weights, x, labels, dtype, LR, SGD_MOMENTUM, WEIGHT_DECAY)
            W2 = os.path.join(work, "after_step.safetensors")
            r, dt = run(bnlab + ["step", "--weights", W, "--input", X, "--labels", X, "--lr", str(LR),
                                 "--sgd-momentum", str(SGD_MOMENTUM), "--weight-decay", str(WEIGHT_DECAY),
                                 "--bn-momentum", "0.9", "--running-var", "unbiased", "--output", W2], a.timeout)
            if ck.line(r.returncode == 0, "step runs", f"exit {r.returncode} ({dt:.1f}s) {r.stderr.strip()[:300]}"):
                loss = None
                for ln in r.stdout.splitlines():
                    parts = ln.split()
                    if len(parts) >= 2 and parts[0] == "loss":
                        try:
                            loss = float(parts[1])
                        except ValueError:
                            pass
                if loss is None:
                    ck.line(False, "step loss", f"no 'loss <value>' line in stdout: {r.stdout.strip()[:200]!r}")
                else:
                    ck.close("step loss", [loss], [ref_loss], TOL["loss"])
                compare_state(ck, "step state", W2, ref_state, weights, param_tol_scale=TOL["update"])

        # bad input: a truncated weights file must fail cleanly and leave no output behind
        Wbad = os.path.join(work, "truncated.safetensors")
        with open(W, "rb") as f:
            data = f.read()
        with open(Wbad, "wb") as f:
            f.write(data[: len(data) // 2])
        Ybad = os.path.join(work, "should_not_exist.safetensors")
        r, dt = run(bnlab + ["infer", "--weights", Wbad, "--input", X, "--output", Ybad], a.timeout)
        err_lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        ok = (r.returncode not in (0,) and r.returncode > 0 and not os.path.exists(Ybad)
              and len(err_lines) >= 1 and err_lines[-1].startswith("bnlab: error:"))
        ck.line(ok, "truncated weights rejected", f"exit {r.returncode}, stderr {r.stderr.strip()[:200]!r}, "
                f"output {'left behind' if os.path.exists(Ybad) else 'absent'}")
    except subprocess.TimeoutExpired as e:
        ck.line(False, "timeout", f"{e.cmd[:3]}... took over {a.timeout}s")
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    status = "FAILED" if ck.failed else "OK"
    print(f"{status}: {ck.passed} passed, {ck.failed} failed ({time.time() - t0:.0f}s)")
    return 1 if ck.failed else 0


if __name__ == "__main__":
    sys.exit(main())
