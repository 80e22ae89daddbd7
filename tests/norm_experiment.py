#!/usr/bin/env python3
"""Does a ResNet need BatchNorm to train well on the procedural dataset? (standard library only)

Trains the same model on the same procedural data, with the same schedule and budget, with BatchNorm and without
any normalization (`bnlab train --norm none`: every BatchNorm layer becomes a learnable per-channel scale and shift,
no statistics), each over a grid of learning rates, so that each variant is compared at its own best learning rate:

  bn          BatchNorm, torchvision init (the batch-size experiment's setting)
  bn-zero     BatchNorm, --zero-init-residual (torchvision's zero_init_residual)
  none        no normalization, torchvision init
  none-zero   no normalization, --zero-init-residual: every residual branch starts at 0, so every block starts as
              the identity (SkipInit, De & Smith 2020), the standard way to train a deep ResNet without BatchNorm

A run whose loss turns NaN/Inf stops (bnlab train refuses to step on it) and is reported as diverged.

Writes to --out (default demo-models/experiments/no_bn/): results.csv (one row per run), results.md (the table,
settings and command), accuracy_vs_lr.svg (final eval top-1 against lr per variant), curves.svg (validation top-1
per epoch of each variant at its best lr) and command.txt. Runs live in --runs-dir (default
build/experiments/no_bn/<variant>-lr<lr>, ignored by git); finished or diverged runs are not trained again.

  python3 tests/norm_experiment.py                 # the committed experiment (2 runs at a time)
  python3 tests/norm_experiment.py --epochs 2 --train-size 2000 --lrs 0.01,0.1 --out /tmp/nb   # a quick look
"""
import argparse
import concurrent.futures
import csv
import os
import shlex
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import plot_svg  # noqa: E402
from experiment_common import git_commit, pct  # noqa: E402
from experiment_common import read_metrics as read_csv  # noqa: E402

VARIANTS = {
    "bn": ["--norm", "batch"],
    "bn-zero": ["--norm", "batch", "--zero-init-residual"],
    "none": ["--norm", "none"],
    "none-zero": ["--norm", "none", "--zero-init-residual"],
}
LABELS = {
    "bn": "BatchNorm",
    "bn-zero": "BatchNorm, zero-init residual",
    "none": "no normalization",
    "none-zero": "no normalization, zero-init residual (SkipInit)",
}
SHORT = {"bn": "BatchNorm", "bn-zero": "BatchNorm, zero-init", "none": "no norm", "none-zero": "no norm, zero-init"}
TINY = {"bn": "BN", "bn-zero": "BN zero-init", "none": "no norm", "none-zero": "SkipInit"}
COLORS = {"bn": "#1f77b4", "bn-zero": "#17becf", "none": "#d62728", "none-zero": "#ff7f0e"}


def read_metrics(path):
    return read_csv(path) if os.path.exists(path) else []


def run_dir(a, variant, lr, seed=None):
    seed = a.seed if seed is None else seed
    return os.path.join(a.runs_dir, f"{variant}-lr{lr:g}" + ("" if seed == a.seed else f"-seed{seed}"))


def state(d, epochs):
    if os.path.exists(os.path.join(d, "diverged")):
        return "diverged"
    rows = read_metrics(os.path.join(d, "metrics.csv"))
    if rows and int(rows[-1]["epoch"]) >= epochs and rows[-1]["val_top1"] != "" and \
            os.path.exists(os.path.join(d, "model.safetensors")):
        return "done"
    return "todo"


def train_cmd(a, variant, lr, d, seed=None):
    return [a.bnlab, "train", "--out", d, "--data", "procedural", "--classes", str(a.classes),
            "--image-size", str(a.image_size), "--train-size", str(a.train_size), "--val-size", str(a.val_size),
            "--data-seed", str(a.data_seed), "--arch", a.arch, "--width-mult", str(a.width_mult),
            "--epochs", str(a.epochs), "--batch-size", str(a.batch_size), "--lr", f"{lr:g}",
            "--warmup-epochs", str(a.warmup_epochs), "--schedule", "cosine",
            "--seed", str(a.seed if seed is None else seed),
            "--threads", "1", "--quiet"] + VARIANTS[variant]


def run_one(a, variant, lr, seed=None):
    seed = a.seed if seed is None else seed
    d = run_dir(a, variant, lr, seed)
    if state(d, a.epochs) != "todo":
        return f"{variant} lr {lr:g} seed {seed}: done already"
    if os.path.exists(d):  # an interrupted run: start it again (runs are short)
        for f in os.listdir(d):
            os.remove(os.path.join(d, f))
    os.makedirs(d, exist_ok=True)
    cmd = train_cmd(a, variant, lr, d, seed)
    t = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t
    with open(os.path.join(d, "wall_s"), "w") as f:
        f.write(f"{wall:.1f}\n")
    if r.returncode != 0:
        if "diverged" in r.stderr:
            with open(os.path.join(d, "diverged"), "w") as f:
                f.write(r.stderr)
            return f"{variant} lr {lr:g} seed {seed}: diverged after {wall:.0f} s: {r.stderr.strip()}"
        raise RuntimeError(f"{shlex.join(cmd)} failed ({r.returncode}): {r.stderr}")
    return f"{variant} lr {lr:g} seed {seed}: {wall:.0f} s"


def best_lrs(a, rows):
    best = {}
    for r in rows:
        if r["status"] == "done" and (r["variant"] not in best or float(r["val_top1"]) > float(best[r["variant"]]["val_top1"])):
            best[r["variant"]] = r
    return best


def seed_result(a, variant, lr, seed):
    d = run_dir(a, variant, lr, seed)
    st = state(d, a.epochs)
    m = read_metrics(os.path.join(d, "metrics.csv"))
    return st, (float(m[-1]["val_top1"]) if st == "done" else None)


def collect(a):
    rows = []
    for v in a.variants:
        for lr in a.lrs:
            d = run_dir(a, v, lr)
            st = state(d, a.epochs)
            m = read_metrics(os.path.join(d, "metrics.csv"))
            last = m[-1] if m else None
            row = {"variant": v, "lr": f"{lr:g}", "status": st, "epochs_done": last["epoch"] if last else "0",
                   "val_top1": "", "val_top5": "", "best_val_top1": "", "train_loss_last_epoch": "",
                   "train_acc_last_epoch": "", "curve_val_top1": ";".join(r["val_top1"] for r in m)}
            if st == "done":
                row.update(val_top1=last["val_top1"], val_top5=last["val_top5"], train_loss_last_epoch=last["train_loss"],
                           train_acc_last_epoch=last["train_acc"])
            if m:
                row["best_val_top1"] = f"{max(float(r['val_top1']) for r in m if r['val_top1'] != ''):.6f}"
            rows.append(row)
    return rows


def report(a, argv):
    rows = collect(a)
    missing = [r for r in rows if r["status"] == "todo"]
    if missing:
        sys.exit(f"{len(missing)} runs are not finished (first: {missing[0]['variant']} lr {missing[0]['lr']})")
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)

    best = best_lrs(a, rows)
    cmd = "python3 tests/norm_experiment.py " + shlex.join(argv)
    settings = (f"{a.arch} --width-mult {a.width_mult}, procedural data: {a.classes} classes, "
                f"{a.image_size}x{a.image_size}, {a.train_size} train / {a.val_size} val images (data seed "
                f"{a.data_seed}), batch {a.batch_size}, {a.epochs} epochs, SGD momentum 0.9, weight decay 5e-4, "
                f"cosine schedule with {a.warmup_epochs} warmup epoch(s), seed {a.seed}, default augmentation, "
                f"BatchNorm momentum 0.9, biased running variance, 1 thread per run")
    md = ["# Does the ResNet need BatchNorm? The same training with and without normalization", "",
          f"Settings: {settings}.", "",
          "Final eval top-1 % (last epoch; `div.` = the loss became NaN/Inf and training stopped, at the epoch given):", "",
          "| variant | " + " | ".join(f"lr {lr:g}" for lr in a.lrs) + " | best |",
          "|---|" + "---:|" * (len(a.lrs) + 1)]
    for v in a.variants:
        cells = []
        for lr in a.lrs:
            r = next(x for x in rows if x["variant"] == v and x["lr"] == f"{lr:g}")
            cells.append(pct(r["val_top1"]) if r["status"] == "done" else f"div. (ep {int(r['epochs_done']) + 1})")
        b = best.get(v)
        cells.append(f"**{pct(b['val_top1'])}** (lr {b['lr']})" if b else "all diverged")
        md.append(f"| {LABELS[v]} | " + " | ".join(cells) + " |")
    if a.confirm_seeds:
        seeds = [a.seed] + a.confirm_seeds
        md += ["", "Each variant again at its best learning rate with other seeds (initialization, data order and "
               "augmentation; the data stay the same), eval top-1 %:", "",
               "| variant | lr | " + " | ".join(f"seed {x}" for x in seeds) + " | mean |",
               "|---|---:|" + "---:|" * (len(seeds) + 1)]
        for v in a.variants:
            b = best.get(v)
            if not b:
                continue
            res = [seed_result(a, v, float(b["lr"]), x) for x in seeds]
            vals = [r for st, r in res if r is not None]
            cells = [pct(r) if r is not None else ("div." if st == "diverged" else "missing") for st, r in res]
            mean = f"{100 * sum(vals) / len(vals):.1f}" if len(vals) == len(res) else ""
            md.append(f"| {LABELS[v]} | {b['lr']} | " + " | ".join(cells) + f" | {mean} |")
    md += ["", f"Chance: {100 / a.classes:.0f} %. Eval mode: BatchNorm uses running statistics; without normalization "
           "train and eval mode compute the same function.", "",
           "![final eval top-1 against learning rate](accuracy_vs_lr.svg)", "",
           "![validation top-1 per epoch at each variant's best learning rate](curves.svg)", "",
           "Command:", "", "```", cmd, "```", "", f"Code: git {git_commit()}; binary {a.bnlab}.", ""]
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write("\n".join(md))
    with open(os.path.join(a.out, "command.txt"), "w") as f:
        f.write(cmd + "\n" + f"# git {git_commit()}; binary {a.bnlab}\n")
        for v in a.variants:
            for lr in a.lrs:
                f.write("# " + shlex.join(train_cmd(a, v, lr, run_dir(a, v, lr))) + "\n")
            if v in best:
                for x in a.confirm_seeds:
                    lr = float(best[v]["lr"])
                    f.write("# " + shlex.join(train_cmd(a, v, lr, run_dir(a, v, lr, x), x)) + "\n")

    chance = 1.0 / a.classes
    series = []
    for v in a.variants:
        pts = [(lr, float(r["val_top1"]) if r["status"] == "done" else chance)
               for lr in a.lrs for r in rows if r["variant"] == v and r["lr"] == f"{lr:g}"]
        series.append({"label": SHORT[v], "color": COLORS[v],
                       "dash": v.endswith("zero"), "points": pts})
    series.append({"label": f"chance ({100 * chance:.0f}%)", "color": "#999999", "dash": True,
                   "points": [(a.lrs[0], chance), (a.lrs[-1], chance)]})
    plot_svg.line_plot(series, os.path.join(a.out, "accuracy_vs_lr.svg"),
                       title=f"final eval top-1 after {a.epochs} epochs (diverged runs drawn at chance)",
                       xlabel="peak learning rate (log2 axis)", ylabel="eval top-1")
    curves = []
    for v in a.variants:
        b = best.get(v)
        if not b:
            continue
        ys = [float(y) for y in b["curve_val_top1"].split(";") if y != ""]
        curves.append({"label": f"{TINY[v]}, lr {b['lr']}",
                       "color": COLORS[v], "dash": v.endswith("zero"),
                       "points": [(i + 1, y) for i, y in enumerate(ys)]})
    plot_svg.line_plot(curves, os.path.join(a.out, "curves.svg"), title="validation top-1 per epoch, best lr of each",
                       xlabel="epoch", ylabel="eval top-1", log2x=False)
    print("\n".join(md))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--bnlab", default=os.path.join("build", "native", "bnlab"))
    ap.add_argument("--runs-dir", default=os.path.join("build", "experiments", "no_bn"))
    ap.add_argument("--out", default=os.path.join("demo-models", "experiments", "no_bn"))
    ap.add_argument("--variants", default="bn,bn-zero,none,none-zero")
    ap.add_argument("--lrs", default="0.003,0.01,0.03,0.1,0.3")
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--width-mult", type=float, default=0.25)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--train-size", type=int, default=10000)
    ap.add_argument("--val-size", type=int, default=1000)
    ap.add_argument("--data-seed", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--warmup-epochs", type=float, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--confirm-seeds", default="1,2",
                    help="after the grid, rerun each variant's best lr with these seeds too ('' for none)")
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time (each uses one thread)")
    ap.add_argument("--report-only", action="store_true", help="do not train; rebuild the results from the runs")
    argv = sys.argv[1:]
    a = ap.parse_args(argv)
    a.variants = a.variants.split(",")
    for v in a.variants:
        if v not in VARIANTS:
            ap.error(f"--variants: unknown '{v}' (known: {', '.join(VARIANTS)})")
    a.lrs = sorted(float(x) for x in a.lrs.split(","))
    a.confirm_seeds = [int(x) for x in a.confirm_seeds.split(",") if x.strip()]
    os.chdir(ROOT)
    if not a.report_only:
        t = time.time()
        with concurrent.futures.ThreadPoolExecutor(max_workers=a.jobs) as ex:
            futs = [ex.submit(run_one, a, v, lr) for v in a.variants for lr in a.lrs]
            for f in concurrent.futures.as_completed(futs):
                print(f.result(), flush=True)
            best = best_lrs(a, collect(a))
            futs = [ex.submit(run_one, a, v, float(best[v]["lr"]), x) for v in a.variants if v in best
                    for x in a.confirm_seeds]
            for f in concurrent.futures.as_completed(futs):
                print(f.result(), flush=True)
        print(f"all runs: {time.time() - t:.0f} s", flush=True)
    report(a, [x for x in argv if x != "--report-only"])


if __name__ == "__main__":
    main()
