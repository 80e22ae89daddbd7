#!/usr/bin/python3
"""Writes the demo page's photo pool, web/photos/*.jpg + web/photos/index.json, from the sample images that Debian's
python3-skimage ships in skimage/data/ (licences below, from skimage's data module docstrings; web/photos/LICENSES.md
records them beside the files). Longer side scaled to at most 512 px (antialiased), greyscale images made RGB, JPEG
quality 88: about 0.6 MB in all. Needs only torch/torchvision (their image I/O) and skimage's data folder.

    /usr/bin/python3 tests/make_photos.py
"""
import json
import os

import torch
import torchvision
from torchvision.io import ImageReadMode, encode_jpeg, read_image
from torchvision.transforms import functional as TF

import skimage

SRC = os.path.join(os.path.dirname(skimage.__file__), "data")
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "web", "photos")
MAX_SIDE = 512

# name, source file, what it shows, licence as skimage states it, original source
PHOTOS = [
    ("astronaut", "astronaut.png", "Astronaut Eileen Collins", "public domain (NASA; \"no known copyright restrictions, released into the public domain\")", "NASA Great Images, https://flic.kr/p/r9qvLn"),
    ("chelsea", "chelsea.png", "Chelsea the cat", "CC0 (photographer Stefan van der Walt)", "scikit-image"),
    ("coffee", "coffee.png", "A cup of coffee", "CC0 (photographer Rachel Michetti; courtesy of Pikolo Espresso Bar)", "scikit-image"),
    ("rocket", "rocket.jpg", "Falcon 9 launching DSCOVR", "public domain (released by SpaceX)", "https://www.flickr.com/photos/spacexphotos/16511594820/"),
    ("hubble", "hubble_deep_field.jpg", "Hubble eXtreme Deep Field", "public domain (NASA)", "http://hubblesite.org/newscenter/archive/releases/2012/37/image/a/"),
    ("retina", "retina.jpg", "Fundus photograph of a human retina", "CC0 1.0 (Mikael Häggström)", "https://commons.wikimedia.org/wiki/File:Fundus_photograph_of_normal_left_eye.jpg"),
    ("ihc", "ihc.png", "Immunohistochemical staining of colonic glands", "no known copyright restrictions (CMMI)", "scikit-image"),
    ("camera", "camera.png", "A man with a camera (greyscale)", "CC0 (photographer Lav Varshney)", "scikit-image"),
    ("coins", "coins.png", "Greek coins from Pompeii (greyscale)", "no known copyright restrictions (Brooklyn Museum)", "https://www.brooklynmuseum.org/opencollection/archives/image/51611"),
    ("grass", "grass.png", "Grass (greyscale)", "CC0", "https://www.deviantart.com/linolafett/art/Grass-01-434853879"),
    ("gravel", "gravel.png", "Gravel (greyscale)", "CC0", "https://cc0textures.com/view.php?tex=Gravel04"),
    ("brick", "brick.png", "A brick wall (greyscale)", "CC0", "https://cc0textures.com/view.php?tex=Bricks25"),
]


def main():
    os.makedirs(OUT, exist_ok=True)
    index, total = [], 0
    for name, fname, what, licence, source in PHOTOS:
        img = read_image(os.path.join(SRC, fname), ImageReadMode.RGB)   # uint8 [3, H, W]
        h, w = img.shape[1:]
        s = min(1.0, MAX_SIDE / max(h, w))
        if s < 1:
            img = TF.resize(img, [round(h * s), round(w * s)], antialias=True)
        data = encode_jpeg(img, quality=88).numpy().tobytes()
        path = os.path.join(OUT, f"{name}.jpg")
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.replace(path + ".tmp", path)
        total += len(data)
        index.append({"file": f"{name}.jpg", "width": int(img.shape[2]), "height": int(img.shape[1]), "what": what,
                      "licence": licence, "source": source, "from": f"skimage/data/{fname} (python3-skimage {skimage.__version__})"})
    with open(os.path.join(OUT, "index.json"), "w", encoding="utf-8") as f:
        json.dump(index, f, indent=1, ensure_ascii=False)
        f.write("\n")
    lines = ["# Photo pool of the demo page", "",
             "Made by `tests/make_photos.py` from the sample images of Debian's python3-skimage "
             f"({skimage.__version__}, `skimage/data/`), scaled to at most {MAX_SIDE} px and re-encoded as JPEG. "
             "Licences as scikit-image's data module (`skimage/data/_fetchers.py`) states them.", "",
             "| file | shows | licence | original source |", "| --- | --- | --- | --- |"]
    lines += [f"| {e['file']} | {e['what']} | {e['licence']} | {e['source']} |" for e in index]
    with open(os.path.join(OUT, "LICENSES.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {len(index)} photos, {total / 1e6:.2f} MB, to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
