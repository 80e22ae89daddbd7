#!/usr/bin/env python3
"""The GroupNorm paper's Table 2 in miniature: eval error against batch size for BatchNorm, GroupNorm, Batch Renorm,
Ghost BatchNorm and no normalization, with bnlab on the procedural data (standard library only).

Wu & He 2018, Table 2 (ResNet-50, ImageNet, images per GPU 32/16/8/4/2): BatchNorm 23.6/23.7/24.8/27.3/34.7 % val
error, GroupNorm 24.1/24.2/24.0/24.2/24.1 %. Here: the same model and data for every cell, batch sizes 2 ... 64,
the linear learning-rate scaling rule (lr = --lr-per-64 * B / 64, as the paper's 0.1 per 32 images), the same number
of epochs (so small batches take more steps), --seeds seeds per cell. Variants (bnlab train --norm):

  batch    BatchNorm
  group    GroupNorm, --groups groups (group:G)
  renorm   Batch Renormalization, r_max 3, d_max 5 fixed from the first step
  ghost    Ghost BatchNorm, virtual batches of min(--ghost-v, B) images (at B <= V it is BatchNorm)
  KIND@M   any of them with the learning rate multiplied by M (e.g. group@0.25)
  none     no normalization (per-channel scale and shift), torchvision init (no zero-init: SkipInit trained worst
           in tests/norm_experiment.py on this data)

Resumable: finished runs (metrics of the last epoch and a model) are not trained again; an interrupted run starts
again. Runs live in --runs-dir (build/experiments/norm_batch/<variant>-b<B>-s<seed>, ignored by git). Writes
results.csv, results.md and error_vs_batch.svg to --out (demo-models/experiments/norm_batch/). The small demo models
of each kind are made by tests/make_norm_demo_models.sh.

  nice -n 10 python3 tests/norm_batch_experiment.py &      # the committed experiment (one run at a time, 1 thread)
  python3 tests/norm_batch_experiment.py --report-only     # tables and plot from whatever has finished
"""
import argparse
import csv
import os
import shlex
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import plot_svg  # noqa: E402
from experiment_common import git_commit  # noqa: E402
from experiment_common import read_metrics as read_csv  # noqa: E402

LABELS = {"batch": "BatchNorm", "group": "GroupNorm", "renorm": "Batch Renorm", "ghost": "Ghost BN",
          "none": "no norm"}
COLORS = {"batch": "#1f77b4", "group": "#2ca02c", "renorm": "#9467bd", "ghost": "#ff7f0e", "none": "#d62728"}


def split_variant(variant):
    """'group@0.25' -> ('group', 0.25): the kind and its learning-rate multiplier."""
    base, _, mult = variant.partition("@")
    return base, float(mult) if mult else 1.0


def label(variant):
    base, mult = split_variant(variant)
    return LABELS[base] + (f", lr x{mult:g}" if mult != 1.0 else "")


def norm_args(a, variant, B):
    variant = split_variant(variant)[0]
    if variant == "group":
        return ["--norm", f"group:{a.groups}"]
    if variant == "ghost":
        return ["--norm", f"ghost:{min(a.ghost_v, B)}"]
    return ["--norm", variant]


def lr_of(a, B, variant=""):
    return a.lr_per_64 * B / 64.0 * split_variant(variant)[1]


def run_dir(a, variant, B, seed):
    return os.path.join(a.runs_dir, f"{variant}-b{B}-s{seed}")


def metrics(d):
    p = os.path.join(d, "metrics.csv")
    return read_csv(p) if os.path.exists(p) else []


def state(a, d):
    if os.path.exists(os.path.join(d, "diverged")):
        return "diverged"
    m = metrics(d)
    if m and int(m[-1]["epoch"]) >= a.epochs and m[-1]["val_top1"] != "" and \
            os.path.exists(os.path.join(d, "model.safetensors")):
        return "done"
    return "todo"


def train_cmd(a, variant, B, seed, d):
    data = ["--data", a.data] + (["--classes", str(a.classes)] if a.data == "procedural" else [])
    return [a.bnlab, "train", "--out", d] + data + [
            "--image-size", str(a.image_size), "--train-size", str(a.train_size), "--val-size", str(a.val_size),
            "--data-seed", str(a.data_seed), "--arch", a.arch, "--width-mult", str(a.width_mult),
            "--epochs", str(a.epochs), "--batch-size", str(B), "--lr", f"{lr_of(a, B, variant):g}",
            "--warmup-epochs", str(a.warmup_epochs), "--schedule", "cosine", "--seed", str(seed),
            "--threads", "1", "--quiet"] + norm_args(a, variant, B)


def run_one(a, variant, B, seed):
    d = run_dir(a, variant, B, seed)
    if state(a, d) != "todo":
        return
    if os.path.exists(d):
        shutil.rmtree(d)
    os.makedirs(d)
    cmd = train_cmd(a, variant, B, seed, d)
    t = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t
    with open(os.path.join(d, "wall_s"), "w") as f:
        f.write(f"{wall:.1f}\n")
    if r.returncode != 0:
        if "diverged" in r.stderr or "loss is" in r.stderr:
            with open(os.path.join(d, "diverged"), "w") as f:
                f.write(r.stderr)
            print(f"{variant} B={B} seed {seed}: diverged ({wall:.0f} s)", flush=True)
            return
        raise RuntimeError(f"{shlex.join(cmd)} failed ({r.returncode}): {r.stderr}")
    print(f"{variant} B={B} seed {seed}: {wall:.0f} s, eval top-1 {metrics(d)[-1]['val_top1']}", flush=True)


def cell(a, variant, B):
    """(mean error, [per-seed error or None for diverged], done count)"""
    errs, done = [], 0
    for s in a.seeds:
        d = run_dir(a, variant, B, s)
        st = state(a, d)
        if st == "done":
            errs.append(1.0 - float(metrics(d)[-1]["val_top1"]))
            done += 1
        elif st == "diverged":
            errs.append(None)
            done += 1
    vals = [e for e in errs if e is not None]
    return (sum(vals) / len(vals) if vals and len(vals) == len(errs) else None), errs, done


def report(a, argv):
    os.makedirs(a.out, exist_ok=True)
    rows = []
    for v in a.variants:
        for B in a.batches:
            for s in a.seeds:
                d = run_dir(a, v, B, s)
                st = state(a, d)
                m = metrics(d)
                wall = open(os.path.join(d, "wall_s")).read().strip() if os.path.exists(os.path.join(d, "wall_s")) else ""
                rows.append({"variant": v, "norm": norm_args(a, v, B)[1], "batch": B, "lr": f"{lr_of(a, B, v):g}",
                             "seed": s, "status": st, "val_top1": m[-1]["val_top1"] if st == "done" else "",
                             "train_loss_last_epoch": m[-1]["train_loss"] if st == "done" else "", "wall_s": wall})
    with open(os.path.join(a.out, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    settings = (f"{a.arch} --width-mult {a.width_mult}, {a.data} data: {a.classes} classes, {a.image_size}x"
                f"{a.image_size}, {a.train_size} train / {a.val_size} val images (data seed {a.data_seed}), "
                f"{a.epochs} epochs at every batch size, lr = {a.lr_per_64:g} x B/64, SGD momentum 0.9, weight decay "
                f"5e-4, cosine schedule, {a.warmup_epochs} warmup epoch(s), BatchNorm momentum 0.9, seeds "
                f"{', '.join(map(str, a.seeds))}, 1 thread per run")
    md = ["# Normalization against batch size (the GroupNorm paper's Table 2, in miniature)", "",
          f"Settings: {settings}.", "",
          "Eval error % (last epoch, eval mode; mean over seeds, the seeds in brackets; `div.`: the loss became "
          "NaN/Inf; blank: not run yet):", "",
          "| norm | " + " | ".join(f"B={B}" for B in a.batches) + " |",
          "|---|" + "---:|" * len(a.batches)]
    for v in a.variants:
        cells = []
        for B in a.batches:
            mean, errs, done = cell(a, v, B)
            if done == 0:
                cells.append("")
                continue
            per = "/".join("div." if e is None else f"{100 * e:.1f}" for e in errs)
            cells.append(f"**{100 * mean:.1f}** ({per})" if mean is not None and done == len(a.seeds) else per)
        md.append(f"| {label(v)} (`{norm_args(a, v, max(a.batches))[1]}`) | " + " | ".join(cells) + " |")
    md += ["", f"Chance: {100 - 100 / a.classes:.0f} % error. Ghost uses virtual batches of min({a.ghost_v}, B) "
           f"images, so at B <= {a.ghost_v} it is BatchNorm. The lr column of results.csv gives each run's lr.", "",
           "![eval error against batch size](error_vs_batch.svg)", "",
           "Command:", "", "```", "python3 tests/norm_batch_experiment.py " + shlex.join(argv), "```", "",
           f"Code: git {git_commit()}; binary {a.bnlab}.", ""]
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write("\n".join(md))
    series = []
    for v in a.variants:
        pts = [(B, cell(a, v, B)[0]) for B in a.batches]
        pts = [(B, e) for B, e in pts if e is not None]
        if pts:
            base, mult = split_variant(v)
            series.append({"label": label(v), "color": COLORS[base], "dash": mult != 1.0, "points": pts})
    if series:
        chance = 1.0 - 1.0 / a.classes
        series.append({"label": f"chance ({100 * chance:.0f}%)", "color": "#999999", "dash": True,
                       "points": [(min(a.batches), chance), (max(a.batches), chance)]})
        plot_svg.line_plot(series, os.path.join(a.out, "error_vs_batch.svg"),
                           title=f"eval error after {a.epochs} epochs, mean of {len(a.seeds)} seeds",
                           xlabel="batch size (log2 axis)", ylabel="eval error", ymin=0.2 if a.data == "procedural" else 0.0,
                           ymax=0.8 if a.data == "procedural" else 1.0)
    print("\n".join(md))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bnlab", default=os.path.join("build", "native", "bnlab"))
    ap.add_argument("--runs-dir", default=os.path.join("build", "experiments", "norm_batch"))
    ap.add_argument("--out", default=os.path.join("demo-models", "experiments", "norm_batch"))
    ap.add_argument("--variants", default="batch,group,renorm,ghost,none")
    ap.add_argument("--batches", default="2,4,8,16,32,64")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--groups", type=int, default=4, help="GroupNorm groups (must divide every width)")
    ap.add_argument("--ghost-v", type=int, default=4)
    ap.add_argument("--lr-per-64", type=float, default=0.1)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--width-mult", type=float, default=0.25)
    ap.add_argument("--data", default="procedural", help="bnlab train --data: procedural or fashion-mnist[:DIR] "
                    "(then --train-size/--val-size are fixed random subsets of its splits)")
    ap.add_argument("--classes", type=int, default=4, help="procedural classes (fashion-mnist: 10)")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--train-size", type=int, default=4000)
    ap.add_argument("--val-size", type=int, default=1000)
    ap.add_argument("--data-seed", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--warmup-epochs", type=float, default=1)
    ap.add_argument("--report-only", action="store_true")
    argv = sys.argv[1:]
    a = ap.parse_args()
    if a.data != "procedural":
        a.classes = 10
    a.variants = a.variants.split(",")
    a.batches = [int(x) for x in a.batches.split(",")]
    a.seeds = [int(x) for x in a.seeds.split(",")]
    os.chdir(ROOT)
    if not a.report_only:
        # seed-major, then batch size: a partial run still fills whole rows of the table for the first seed
        for s in a.seeds:
            for B in a.batches:
                for v in a.variants:
                    run_one(a, v, B, s)
    report(a, argv)


if __name__ == "__main__":
    main()
