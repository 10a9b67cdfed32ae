"""MVTec-layout texture sets with exact defect masks, from photographs shipped by installed packages.

    python benchmarks/make_texture_sets.py --out textures        # every set, its validation twin
    python benchmarks/make_texture_sets.py --out textures --sets moon

Sources (scikit-image's bundled images; brick, grass and gravel are kept out for an independent
check): ``moon`` (the lunar surface, grayscale), ``tissue`` (immunohistochemistry, colour),
``hubble`` (the Hubble deep field, colour), ``cells`` (a microscopy image, grayscale). Each
photograph is cut in three vertical bands that never overlap: training (the left half), validation
(the next fifth) and test (the rest). From them, reproducibly (``--seed``):

- ``NAME/train/good``: 300 random 64x64 crops of the training band;
- ``NAME/test``: 60 good crops of the test band and 90 defective ones, 30 of each kind, with
  ``NAME/ground_truth/<kind>/<i>_mask.png`` marking exactly the changed pixels;
- ``NAME-val``: the same training images, and a test part of 40 good and 60 defective crops of the
  validation band (choose settings there; report on ``NAME`` once).

Defect kinds: ``scratch`` (a 1-2 pixel line, 12-40 pixels long, much brighter or darker than its
surroundings), ``stain`` (an ellipse 6-16 pixels across whose intensity is scaled by 0.45-0.7 or
1.4-1.8, soft-edged: the mask is where it changed the pixel by at least 8 grey levels) and
``foreign`` (a 10-20 pixel patch of another of the photographs pasted in).
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 64
SOURCES = {"moon": "moon", "tissue": "immunohistochemistry", "hubble": "hubble_deep_field", "cells": "cell"}
KINDS = ("scratch", "stain", "foreign")


def load(source: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, source)()
    return img if img.ndim == 3 else img  # (H, W) or (H, W, 3), uint8


def bands(img: np.ndarray) -> dict[str, np.ndarray]:
    w = img.shape[1]
    return {"train": img[:, : w // 2], "val": img[:, w // 2 : w // 2 + w // 5], "test": img[:, w // 2 + w // 5 :]}


def crop(band: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    y = int(rng.integers(0, band.shape[0] - SIDE + 1))
    x = int(rng.integers(0, band.shape[1] - SIDE + 1))
    return band[y : y + SIDE, x : x + SIDE].copy()


def scratch(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    out = img.astype(np.float64)
    mask = np.zeros(img.shape[:2], bool)
    length, width = int(rng.integers(12, 41)), int(rng.integers(1, 3))
    angle = rng.uniform(0, np.pi)
    cy, cx = rng.uniform(12, SIDE - 12, size=2)
    for t in np.linspace(-length / 2, length / 2, 4 * length):
        y, x = int(round(cy + t * np.sin(angle))), int(round(cx + t * np.cos(angle)))
        mask[max(y, 0) : min(y + width, SIDE), max(x, 0) : min(x + width, SIDE)] = True
    value = 255.0 if out[mask].mean() < 128 else 0.0  # the far end from what is there
    out[mask] = 0.15 * out[mask] + 0.85 * value
    return out.round().clip(0, 255).astype(np.uint8), mask


def stain(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    cy, cx = rng.uniform(10, SIDE - 10, size=2)
    ry, rx = rng.uniform(3, 8, size=2)
    d = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
    weight = np.clip(1.5 - d, 0, 1)  # 1 inside, a soft rim
    factor = rng.uniform(0.45, 0.7) if rng.random() < 0.5 else rng.uniform(1.4, 1.8)
    scale = 1 + (factor - 1) * weight
    src = img.astype(np.float64)
    out = (src * (scale[..., None] if img.ndim == 3 else scale)).round().clip(0, 255)
    changed = np.abs(out - src)
    mask = (changed.max(-1) if img.ndim == 3 else changed) >= 8
    return out.astype(np.uint8), mask


def foreign(img: np.ndarray, rng: np.random.Generator, others: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    other = others[int(rng.integers(len(others)))]
    size = int(rng.integers(10, 21))
    y0, x0 = (int(v) for v in rng.integers(2, SIDE - size - 2, size=2))
    oy = int(rng.integers(0, other.shape[0] - size))
    ox = int(rng.integers(0, other.shape[1] - size))
    patch = other[oy : oy + size, ox : ox + size]
    if img.ndim == 3 and patch.ndim == 2:
        patch = np.repeat(patch[..., None], 3, -1)
    if img.ndim == 2 and patch.ndim == 3:
        patch = patch.mean(-1).round().astype(np.uint8)
    out = img.copy()
    out[y0 : y0 + size, x0 : x0 + size] = patch
    diff = np.abs(out.astype(int) - img.astype(int))
    mask = (diff.max(-1) if img.ndim == 3 else diff) > 0
    return out, mask


def save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_test(root: Path, band: np.ndarray, n_good: int, n_per_kind: int, rng, others) -> dict:
    counts = {"good": n_good}
    for i in range(n_good):
        save(root / "test" / "good" / f"{i:03d}.png", crop(band, rng))
    for kind in KINDS:
        made = 0
        while made < n_per_kind:
            base = crop(band, rng)
            out, mask = {"scratch": scratch, "stain": stain}.get(kind, lambda a, r: foreign(a, r, others))(base, rng)
            if mask.sum() < 6:  # a defect that changed (almost) nothing: draw again
                continue
            save(root / "test" / kind / f"{made:03d}.png", out)
            save(root / "ground_truth" / kind / f"{made:03d}_mask.png", mask.astype(np.uint8) * 255)
            made += 1
        counts[kind] = made
    return counts


def make(name: str, out: Path, seed: int) -> dict:
    img = load(SOURCES[name])
    others = [load(s) for n, s in SOURCES.items() if n != name]
    parts = bands(img)
    rng = np.random.default_rng([seed, list(SOURCES).index(name)])
    for folder in (out / name, out / f"{name}-val"):
        shutil.rmtree(folder, ignore_errors=True)
    train = [crop(parts["train"], rng) for _ in range(300)]
    for root in (out / name, out / f"{name}-val"):
        for i, a in enumerate(train):
            save(root / "train" / "good" / f"{i:03d}.png", a)
    val = write_test(out / f"{name}-val", parts["val"], 40, 20, rng, others)
    test = write_test(out / name, parts["test"], 60, 30, rng, others)
    return {"source": f"skimage.data.{SOURCES[name]}", "shape": list(img.shape), "train": 300, "val": val, "test": test}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--sets", default=",".join(SOURCES))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    manifest = {name: make(name, args.out, args.seed) for name in args.sets.split(",")}
    (args.out / "manifest.json").write_text(json.dumps({"seed": args.seed, "sets": manifest}, indent=1) + "\n")
    print(json.dumps(manifest, indent=1))


if __name__ == "__main__":
    main()
