"""PyTorch 1.13 cross-check of the no-normalization experiment: the same ResNet (torchvision layout, quarter width)
trained with and without BatchNorm on the same procedural images (exported by export_data.mjs), batch 64, 10 epochs,
SGD momentum 0.9, weight decay 5e-4, cosine after a 1-epoch warmup, no augmentation.

    /usr/bin/python3 demo-models/experiments/no_bn_resnet50/pytorch/train_pytorch.py bn|none LR r50|r18 DATADIR
"""
import os, sys, math
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '../../../../tests'))
from gen_fixtures_resnet import TVResNet
from gen_fixtures_nonorm import Affine, strip_norm
torch.set_num_threads(1)
norm, lr, arch, DATA = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
torch.manual_seed(0)
if arch == 'r50':
    m = TVResNet(True, [3, 4, 6, 3], 16, [16, 32, 64, 128], num_classes=10)
else:
    m = TVResNet(False, [2, 2, 2, 2], 16, [16, 32, 64, 128], num_classes=10)
if norm == 'none':
    strip_norm(m)
def load(n, N):
    x = torch.from_numpy(np.fromfile(f'{DATA}/{n}_x.f32', dtype=np.float32).reshape(N, 32, 32, 3)).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(np.fromfile(f'{DATA}/{n}_y.i32', dtype=np.int32).astype(np.int64))
    return x, y
xt, yt = load('train', 10000); xv, yv = load('val', 1000)
B, E = 64, 10
spe = 10000 // B; total = spe * E
opt = torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
step = 0
for ep in range(E):
    m.train()
    perm = torch.randperm(10000)
    tl = 0
    for i in range(spe):
        t = step
        l = lr * 0.5 * (1 + math.cos(math.pi * min(1, (t - spe) / (total - spe)))) if t >= spe else lr
        if t < spe: l *= (t + 1) / spe
        for g in opt.param_groups: g['lr'] = l
        idx = perm[i * B:(i + 1) * B]
        loss = F.cross_entropy(m(xt[idx]), yt[idx])
        opt.zero_grad(); loss.backward(); opt.step(); step += 1
        tl += loss.item()
    m.eval()
    with torch.no_grad():
        acc = (m(xv).argmax(1) == yv).float().mean().item()
    print(f'{arch} {norm} lr {lr} epoch {ep+1} train_loss {tl/spe:.4f} val_top1 {acc:.3f}', flush=True)
