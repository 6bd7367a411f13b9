"""Small generated data sets in every supported form, for the own-data tests and docs.

Each class is a random prototype plus per-item noise, so episodes are
learnable in a few dozen steps; everything is seeded.
"""

import os

import numpy as np


def prototypes(num_classes, size, channels, seed):
    rng = np.random.RandomState(seed)
    return (rng.rand(num_classes, size, size, channels) > 0.7).astype(np.float32)


def class_images(num_classes=40, per_class=8, size=32, channels=3, seed=0):
    """float32 `[K, M, size, size, channels]` in [0, 1]."""
    rng = np.random.RandomState(seed + 1)
    base = prototypes(num_classes, size, channels, seed)[:, None]
    noise = rng.rand(num_classes, per_class, size, size, channels) < 0.1
    return np.abs(base - noise).astype(np.float32)


def write_image_folder(root, num_classes=40, per_class=8, size=32, channels=3, seed=0,
                       groups=None, suffix=".png"):
    """ROOT/CLASS/*.png (or ROOT/GROUP/CLASS/ with `groups` groups); returns ROOT."""
    from PIL import Image  # pylint: disable=g-import-not-at-top
    images = class_images(num_classes, per_class, size, channels, seed)
    for k in range(num_classes):
        folder = os.path.join(root, f"class{k:03d}")
        if groups:
            folder = os.path.join(root, f"group{k % groups}", f"class{k:03d}")
        os.makedirs(folder, exist_ok=True)
        for m in range(per_class):
            pixels = np.round(images[k, m] * 255).astype(np.uint8)
            mode = "L" if channels == 1 else "RGB"
            Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode).save(
                os.path.join(folder, f"{m:03d}{suffix}"))
    return root


def write_features_csv(path, num_classes=30, per_class=8, width=16, seed=0):
    """A CSV of `width` numeric columns f0.. and a `species` label column."""
    rng = np.random.RandomState(seed)
    centres = rng.randn(num_classes, width) * 3.0
    rows = []
    for k in range(num_classes):
        for _ in range(per_class):
            rows.append(list(centres[k] + rng.randn(width)) + [f"sp{k}"])
    with open(path, "w", encoding="utf-8") as f:
        f.write(",".join([f"f{i}" for i in range(width)] + ["species"]) + "\n")
        for row in rows:
            f.write(",".join(f"{v:.5f}" for v in row[:-1]) + f",{row[-1]}\n")
    return path


def write_examples(out):
    """Every supported form in `out` (used by docs/own_data.md); returns the paths."""
    os.makedirs(out, exist_ok=True)
    paths = {
        "folder": write_image_folder(os.path.join(out, "rgb_folder"), 40, 8, 32, 3),
        "grouped": write_image_folder(os.path.join(out, "grey_groups"), 48, 8, 28, 1,
                                      groups=8),
        "features": write_features_csv(os.path.join(out, "features.csv"), 30, 8, 16),
    }
    images = class_images(30, 8, 20, 1, seed=5)
    paths["npz"] = os.path.join(out, "arrays.npz")
    np.savez(paths["npz"], images=(images.reshape(240, 20, 20) * 255).astype(np.uint8),
             labels=np.repeat([f"c{k}" for k in range(30)], 8),
             groups=np.repeat([f"g{k % 5}" for k in range(30)], 8))
    return paths


if __name__ == "__main__":
    import sys  # pylint: disable=g-import-not-at-top
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m tests.own_data OUT_DIR")
    for kind, path in write_examples(sys.argv[1]).items():
        print(f"{kind}: {path}")
