#!/usr/bin/python3
"""Export a ResNet to ONNX for benchmarks (onnxruntime / onnxruntime-web against bnlab).

    /usr/bin/python3 tests/make_onnx_resnet50.py OUT.onnx                        # seeded random torchvision resnet50
    /usr/bin/python3 tests/make_onnx_resnet50.py OUT.onnx --weights W.safetensors [--io-out IO.safetensors]

The model is exported in eval mode (BatchNorm uses running stats) with torch.onnx.export, opset 13, one input
`input` float32 NCHW [batch, 3, size, size] (default 1x3x224x224) and one output `logits` [batch, classes].
--weights takes any torchvision-named ResNet safetensors file (F32/F16/BF16; ResNet-50 is the reference) and checks it
loads strictly. --io-out writes a safetensors file with the test batch (`input` NHWC as bnlab takes it, `input_nchw`)
and torch's `logits`, so a benchmark can check its numbers. If the `onnx` package is importable the file is checked
with onnx.checker; if `onnxruntime` is importable the model is run and compared with torch. Otherwise it only exports.
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import st_io  # noqa: E402


def build(weights, seed):
    if weights:
        from gen_fixtures_resnet import arch_from_state, model_from_state

        state, meta = st_io.load_torch(weights)
        arch = arch_from_state({k: tuple(v.shape) for k, v in state.items()})
        model = model_from_state(state, torch.float32)  # strict load into torchvision's layout
        kind = 'bottleneck' if arch['bottleneck'] else 'basic'
        what = f"{weights}: {kind} {arch['layers']}, widths {arch['widths']}, {arch['num_classes']} classes"
    else:
        from check_resnet50_full import make_model  # torchvision resnet50, running stats filled, gamma/beta nudged

        model = make_model(seed)
        what = f"torchvision resnet50, random (seed {seed})"
    return model.eval(), what


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("output", help="the .onnx file to write")
    ap.add_argument("--weights", help="safetensors ResNet (torchvision names); default: seeded random resnet50")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--opset", type=int, default=13)
    ap.add_argument("--dynamic-batch", action="store_true", help="make the batch dimension symbolic")
    ap.add_argument("--io-out", help="also write the test batch and torch's logits here (safetensors)")
    a = ap.parse_args()

    model, what = build(a.weights, a.seed)
    g = torch.Generator().manual_seed(a.seed + 7)
    x = torch.randn(a.batch, 3, a.size, a.size, generator=g)
    with torch.no_grad():
        ref = model(x)

    tmp = f"{a.output}.tmp.{os.getpid()}"
    try:
        torch.onnx.export(
            model, x, tmp, export_params=True, opset_version=a.opset, do_constant_folding=True,
            input_names=["input"], output_names=["logits"], training=torch.onnx.TrainingMode.EVAL,
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}} if a.dynamic_batch else None,
        )
        os.replace(tmp, a.output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(f"wrote {a.output} ({os.path.getsize(a.output)} bytes): {what}; input 'input' float32 "
          f"[{'batch' if a.dynamic_batch else a.batch}, 3, {a.size}, {a.size}], output 'logits', opset {a.opset}")

    if a.io_out:
        st_io.save(a.io_out, {"input": x.permute(0, 2, 3, 1).contiguous(), "input_nchw": x, "logits": ref})
        print(f"wrote {a.io_out}: input [N,H,W,3], input_nchw [N,3,H,W], logits {list(ref.shape)}")

    rc = 0
    try:
        import onnx
    except ImportError:
        print("onnx not importable: exported without checking")
    else:
        onnx.checker.check_model(onnx.load(a.output))
        print(f"onnx.checker: ok (onnx {onnx.__version__})")
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime not importable: not run")
    else:
        sess = ort.InferenceSession(a.output, providers=["CPUExecutionProvider"])
        out = sess.run(["logits"], {"input": x.numpy()})[0]
        err = float(np.abs(out - ref.numpy()).max())
        scale = float(np.abs(ref.numpy()).max())
        ok = err <= 1e-4 * scale
        print(f"onnxruntime {ort.__version__}: max abs err vs torch {err:.3g} (rel {err / scale:.3g}) "
              f"{'ok' if ok else 'MISMATCH'}")
        rc = 0 if ok else 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
