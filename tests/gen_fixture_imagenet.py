#!/usr/bin/python3
"""A small 1000-class ResNet-50-topology model WITHOUT __metadata__, as a user's own converted ImageNet weights
would look to bnlab (no input_size, mean, std or labels): the page and `bnlab info` must take it as an ImageNet
model (224x224, ImageNet mean/std, the ImageNet class names) and say that they assumed so.

    /usr/bin/python3 tests/gen_fixture_imagenet.py     # writes tests/fixtures/imagenet/resnet50-narrow-1000.safetensors

Bottleneck [3,4,6,3], stem 8, inner widths 4,8,12,28 (outputs x4: 112 features), fc 1000 x 112; random torchvision
init with random gamma/beta and running statistics from 20 train-mode forwards of noise (tests/gen_fixtures_resnet.py's
make_model). Not trained: its top-5 is arbitrary, only its shape and the absence of metadata matter. About 0.8 MB.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gen_fixtures_resnet as g  # noqa: E402
import st_io  # noqa: E402

OUT = os.path.join(HERE, "fixtures", "imagenet", "resnet50-narrow-1000.safetensors")


def main():
    m = g.make_model(1000, True, [3, 4, 6, 3], 8, [4, 8, 12, 28], 1000, (4, 64, 64, 3))
    state = g.state_f32(m)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    st_io.save(OUT, state)   # no metadata on purpose
    print(f"wrote {OUT}: {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
