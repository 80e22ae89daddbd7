#!/usr/bin/env python3
"""Converts a torchvision ResNet to the safetensors file the bnlab page (and CLI) loads.

    /usr/bin/python3 demo-models/convert_torchvision.py resnet50 --pretrained -o demo-models/resnet50-imagenet.safetensors
    /usr/bin/python3 demo-models/convert_torchvision.py resnet18 --weights my_resnet18.pth -o r18.safetensors
    /usr/bin/python3 demo-models/convert_torchvision.py resnet50 --random --num-classes 10 -o r50-random.safetensors

Names and layouts are torchvision's own (conv1.weight [O,I,kh,kw], bn1.running_mean, layer1.0.conv1.weight, ...,
fc.weight [classes, features]); __metadata__ carries labels (JSON list), mean, std (JSON lists), input_size
(JSON [3, H, W], timm's convention) and train.data (the dataset: "imagenet" for 1000 classes unless --train-data says
otherwise), so bnlab info and the page read them instead of assuming.

Weights: --weights FILE (a state dict saved with torch.save, or a whole pickled model; "state_dict"/"model" wrappers
and "module." prefixes are unwrapped), --pretrained (torchvision's default weights, only if they are already in the
torch hub cache: nothing is downloaded), or --random (torchvision's initialization, for tests). ImageNet class names come
from torchvision's weight metadata (no download needed); --labels FILE (JSON list or one name per line) overrides them.

Needs only torch and torchvision (Debian's /usr/bin/python3 has torch 1.13). The safetensors format is written by hand:
8-byte little-endian header length, JSON header padded with spaces to a multiple of 8, then the raw little-endian data.
"""
import argparse
import json
import os
import struct
import sys
import tempfile

import torch
import torchvision

ARCHS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2", "wide_resnet101_2"]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def fail(msg):
    print(f"convert_torchvision: error: {msg}", file=sys.stderr)
    sys.exit(1)


def default_weights(arch):
    """torchvision's default weights enum entry for arch, or None on torchvision versions without the API."""
    try:
        return torchvision.models.get_model_weights(arch).DEFAULT
    except Exception:
        return None


def load_state_dict(path):
    obj = torch.load(path, map_location="cpu")
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        fail(f"{path}: not a state dict (got {type(obj).__name__})")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def cached_pretrained(arch):
    w = default_weights(arch)
    if w is None:
        fail(f"this torchvision ({torchvision.__version__}) has no weight registry for {arch}; pass --weights")
    fname = os.path.basename(w.url)
    path = os.path.join(torch.hub.get_dir(), "checkpoints", fname)
    if not os.path.isfile(path):
        fail(f"{arch} pretrained weights are not in the local cache ({path}); nothing is downloaded here. "
             f"Fetch {w.url} yourself and pass --weights FILE")
    return torch.load(path, map_location="cpu"), w


def tensor_bytes(t, dtype_name):
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.int64 or t.dtype == torch.long:
        return "I64", t.numpy().astype("<i8").tobytes()
    if not t.is_floating_point():
        return "I64", t.to(torch.int64).numpy().astype("<i8").tobytes()
    t = t.to(DTYPES[dtype_name])
    if dtype_name == "BF16":
        return "BF16", t.view(torch.int16).numpy().astype("<i2").tobytes()
    return dtype_name, t.numpy().astype("<f4" if dtype_name == "F32" else "<f2").tobytes()


def write_safetensors(path, tensors, metadata, dtype_name):
    """tensors: ordered {name: torch.Tensor}; metadata: {str: str}. Written atomically (temp file + rename)."""
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, t in tensors.items():
        dt, data = tensor_bytes(t, dtype_name)
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((8 - len(hjson) % 8) % 8)
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".convert.", suffix=".tmp", dir=d)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)   # mkstemp makes it 0600; give it the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(hjson)))
            f.write(hjson)
            for b in blobs:
                f.write(b)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_labels(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        labels = json.loads(text)
    except json.JSONDecodeError:
        labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not isinstance(labels, list) or not all(isinstance(s, str) for s in labels):
        fail(f"{path}: expected a JSON list of strings or one name per line")
    return labels


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("arch", choices=ARCHS, help="torchvision model name")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", metavar="FILE", help="a torch.save'd state dict (or model) to convert")
    src.add_argument("--pretrained", action="store_true", help="torchvision's default weights, from the local torch hub cache")
    src.add_argument("--random", action="store_true", help="torchvision's random initialization (for tests)")
    ap.add_argument("--num-classes", type=int, default=None, help="classes of fc (default: from the weights, else 1000)")
    ap.add_argument("--labels", metavar="FILE", help="class names: a JSON list or one per line")
    ap.add_argument("--input-size", type=int, default=224, help="image side the model expects (metadata input_size, default 224)")
    ap.add_argument("--mean", type=float, nargs=3, default=IMAGENET_MEAN, metavar=("R", "G", "B"))
    ap.add_argument("--std", type=float, nargs=3, default=IMAGENET_STD, metavar=("R", "G", "B"))
    ap.add_argument("--train-data", default=None, metavar="NAME",
                    help="the dataset the weights were trained on (metadata train.data; default imagenet for 1000 classes)")
    ap.add_argument("--dtype", choices=list(DTYPES), default="F32", help="float type of the stored weights (default F32)")
    ap.add_argument("--seed", type=int, default=0, help="seed for --random")
    ap.add_argument("-o", "--output", required=True, help="the .safetensors file to write")
    a = ap.parse_args()

    labels, weights_meta = None, None
    if a.weights:
        if not os.path.isfile(a.weights):
            fail(f"{a.weights}: no such file")
        state = load_state_dict(a.weights)
    elif a.pretrained:
        state, weights_meta = cached_pretrained(a.arch)
    else:
        state = None

    num_classes = a.num_classes
    if num_classes is None:
        num_classes = state["fc.weight"].shape[0] if state is not None and "fc.weight" in state else 1000
    torch.manual_seed(a.seed)
    model = getattr(torchvision.models, a.arch)(num_classes=num_classes)
    if state is not None:
        # load through the module: checks every name and shape against torchvision's layout
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            fail(f"the weights do not fit torchvision's {a.arch} with {num_classes} classes: {str(e).splitlines()[0]} ...")
    model.eval()

    if a.labels:
        labels = read_labels(a.labels)
    else:
        w = weights_meta or default_weights(a.arch)
        cats = w.meta.get("categories") if w is not None else None
        if cats and len(cats) == num_classes:
            labels = list(cats)
    if labels is not None and len(labels) != num_classes:
        fail(f"{len(labels)} labels for {num_classes} classes")

    metadata = {
        "format": "pt",
        "arch": a.arch,
        "input_size": json.dumps([3, a.input_size, a.input_size]),
        "mean": json.dumps(a.mean),
        "std": json.dumps(a.std),
        "source": "torchvision pretrained" if a.pretrained else ("random init" if a.random else os.path.basename(a.weights)),
    }
    if labels is not None:
        metadata["labels"] = json.dumps(labels)
    train_data = a.train_data or ("imagenet" if num_classes == 1000 else None)
    if train_data:
        metadata["train.data"] = train_data
    tensors = dict(model.state_dict())
    write_safetensors(a.output, tensors, metadata, a.dtype)
    n = sum(t.numel() for k, t in tensors.items() if not k.endswith("num_batches_tracked"))
    print(f"wrote {a.output}: {a.arch}, {num_classes} classes, {n / 1e6:.1f} M values, {a.dtype}, "
          f"{'with' if labels else 'without'} labels")


if __name__ == "__main__":
    main()
