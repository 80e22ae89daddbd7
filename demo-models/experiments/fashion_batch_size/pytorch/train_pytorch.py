#!/usr/bin/python3
"""The Fashion-MNIST batch-size recipe of tests/fashion_batch_size_experiment.py in PyTorch 1.13 (Debian's
/usr/bin/python3), for the cross-check: the same images (the training and validation subsets bnlab drew, read from
subset.json), the same network (torchvision ResNet-18 layout at 1/8 width: stem 8, widths 8/16/32/64, 28x28 gray
as 3 channels), the same normalization (the training split's mean/std), augmentation (pad-crop by 3 with pixel-0
padding, horizontal flip), SGD (momentum 0.9, weight decay 5e-4 on every parameter), lr = base * B / 128 with one
warmup epoch then cosine per step, the last partial batch dropped, and BatchNorm with bnlab's rule: Flax momentum
0.9 (PyTorch's 0.1) and a biased running variance (the blog's jnp.var; PyTorch's own layer would store n/(n-1)
times it). One thread. Prints one line per epoch and a final JSON line; writes the model as safetensors in
torchvision names (so the wasm probe can measure it like the bnlab models).

    /usr/bin/python3 train_pytorch.py --batch-size 8 --seed 0 --subset subset.json --out B8-s0.safetensors
"""
import argparse
import gzip
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "..", "tests"))
from gen_fixtures_resnet import TVResNet  # noqa: E402
import st_io  # noqa: E402


class BiasedBN(nn.BatchNorm2d):
    """BatchNorm2d whose running variance takes the biased batch variance (bnlab's default, the blog's)."""

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        mean = x.mean((0, 2, 3))
        var = x.var((0, 2, 3), unbiased=False)
        with torch.no_grad():
            self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
            self.running_var.mul_(1 - self.momentum).add_(self.momentum * var)
            self.num_batches_tracked += 1
        return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)


def swap_bn(m):
    for name, c in m.named_children():
        if isinstance(c, nn.BatchNorm2d):
            b = BiasedBN(c.num_features, eps=1e-5, momentum=0.1)
            b.load_state_dict(c.state_dict())
            setattr(m, name, b)
        else:
            swap_bn(c)


def read_idx(path):
    b = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
    magic, n = int.from_bytes(b[:4], "big"), int.from_bytes(b[4:8], "big")
    if magic == 0x803:
        h, w = int.from_bytes(b[8:12], "big"), int.from_bytes(b[12:16], "big")
        return np.frombuffer(b, np.uint8, n * h * w, 16).reshape(n, h, w)
    return np.frombuffer(b, np.uint8, n, 8)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-size", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--subset", required=True, help="subset.json written by tests/fashion_batch_size_experiment.py")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--base-lr", type=float, default=0.2)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    sub = json.load(open(a.subset))
    mean, std = sub["mean"], sub["std"]
    xtr = read_idx(f"{a.data}/train-images-idx3-ubyte.gz")[sub["train"]]
    ytr = read_idx(f"{a.data}/train-labels-idx1-ubyte.gz")[sub["train"]]
    xva = read_idx(f"{a.data}/t10k-images-idx3-ubyte.gz")[sub["val"]]
    yva = read_idx(f"{a.data}/t10k-labels-idx1-ubyte.gz")[sub["val"]]

    def tensor(x):   # (N,28,28) uint8 -> (N,3,28,28) normalized
        t = (torch.from_numpy(x.astype(np.float32)) / 255.0 - mean) / std
        return t[:, None].expand(-1, 3, -1, -1).contiguous()

    Xtr, Ytr, Xva, Yva = tensor(xtr), torch.from_numpy(ytr.astype(np.int64)), tensor(xva), torch.from_numpy(yva.astype(np.int64))
    N, B, E, P = len(Ytr), a.batch_size, a.epochs, 3
    pad_value = (0.0 - mean) / std
    m = TVResNet(False, [2, 2, 2, 2], 8, [8, 16, 32, 64], num_classes=10)
    swap_bn(m)
    lr = a.base_lr * B / 128
    opt = torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    spe = N // B
    total, warm = spe * E, spe
    step, t0 = 0, time.time()
    Xpad = F.pad(Xtr, (P, P, P, P), value=pad_value)
    for ep in range(E):
        m.train()
        perm = torch.randperm(N)
        tl, hits = 0.0, 0
        for i in range(spe):
            t = step
            if t < warm:
                cur = lr * (t + 1) / warm
            else:
                cur = lr * 0.5 * (1 + math.cos(math.pi * (t - warm) / (total - warm)))
            for g in opt.param_groups:
                g["lr"] = cur
            idx = perm[i * B:(i + 1) * B]
            # RandomCrop(28, padding=3) then RandomHorizontalFlip, per image
            off = torch.randint(0, 2 * P + 1, (B, 2))
            flip = torch.rand(B) < 0.5
            xb = torch.stack([Xpad[j, :, off[k, 0]:off[k, 0] + 28, off[k, 1]:off[k, 1] + 28] for k, j in enumerate(idx.tolist())])
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            yb = Ytr[idx]
            z = m(xb)
            loss = F.cross_entropy(z, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            tl += loss.item()
            hits += (z.argmax(1) == yb).sum().item()
        m.eval()
        with torch.no_grad():
            zv = m(Xva)
            acc = (zv.argmax(1) == Yva).float().mean().item()
            vl = F.cross_entropy(zv, Yva).item()
        print(f"B {B} seed {a.seed} epoch {ep + 1} lr {cur:.4g} train_loss {tl / spe:.4f} train_acc {hits / (spe * B):.4f} "
              f"val_loss {vl:.4f} val_top1 {acc:.4f} {time.time() - t0:.0f}s", flush=True)
    res = {"framework": "pytorch", "batch_size": B, "seed": a.seed, "lr": lr, "steps": step, "val_top1": acc,
           "val_loss": vl, "train_loss_last_epoch": tl / spe, "train_acc_last_epoch": hits / (spe * B),
           "seconds": round(time.time() - t0, 1), "torch": torch.__version__}
    if a.out:
        sd = {k: v for k, v in m.state_dict().items()}
        meta = {"labels": json.dumps(sub["labels"]), "mean": json.dumps([mean] * 3), "std": json.dumps([std] * 3),
                "input_size": "[3,28,28]", "train.data": "fashion-mnist", "train.framework": f"pytorch {torch.__version__}",
                "train.batch-size": str(B), "train.seed": str(a.seed), "train.lr": f"{lr:.9g}"}
        tmp = a.out + ".tmp.py"
        st_io.save(tmp, sd, metadata=meta)
        os.replace(tmp, a.out)
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
