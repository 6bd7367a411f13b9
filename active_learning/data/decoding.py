"""Decoding image files into float arrays, and area resampling.

Every image reader goes through here, so every data set gets the same
pixels for the same file: float32 in [0, 1], `[H, W, C]`, resampled by area
averaging (what `tf.image.resize(method="area")` computes; it keeps thin
pen strokes that nearest-neighbour sampling would drop).
"""

import functools
import io

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


@functools.lru_cache(maxsize=None)
def _area_matrix(size_in, size_out):
    """Row i averages input pixels [i*s, (i+1)*s), s = size_in / size_out.

    Pixels cut by a cell boundary count with the fraction inside the cell,
    which is what area (box) resampling means. Upsampling (s < 1) repeats
    the nearest input pixel.
    """
    scale = size_in / size_out
    matrix = np.zeros((size_out, size_in), np.float64)
    for i in range(size_out):
        lo, hi = i * scale, (i + 1) * scale
        for j in range(int(np.floor(lo)), min(int(np.ceil(hi)), size_in)):
            matrix[i, j] = (min(hi, j + 1) - max(lo, j)) / scale
    return matrix.astype(np.float32)


def area_downsample(images, size):
    """Area-averages `[n, h, w]` or `[n, h, w, c]` images to side `size` (float32).

    Non-square images are resampled to a square (each axis on its own).
    """
    images = np.asarray(images, np.float32)
    rows = _area_matrix(images.shape[1], size)
    cols = _area_matrix(images.shape[2], size)
    if images.ndim == 4:
        # Channels last: move them in front so the matmuls see [.., h, w].
        moved = np.moveaxis(images, -1, 1)
        return np.ascontiguousarray(np.moveaxis(rows @ moved @ cols.T, 1, -1))
    # Separable: average rows, then columns (batched matmul; measured faster
    # here than tensordot, which copies its operands).
    return np.ascontiguousarray(rows @ images @ cols.T)


def to_unit(images):
    """Clips in place to [0, 1]: float sums of exact fractions can land at 1.0000002."""
    return np.clip(images, 0.0, 1.0, out=images)


def decode_ink_png(data, where):
    """Ink image (ink = 1) of one Omniglot PNG, float32 `[h, w]` in [0, 1]."""
    from PIL import Image  # pylint: disable=g-import-not-at-top
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.mode == "1":
                # The release's one-bit PNGs: white is True. Reading the
                # bits directly skips a conversion (a third of decode time).
                return (~np.asarray(image)).astype(np.float32)
            pixels = np.asarray(image.convert("L"), np.float32)
    except Exception as err:  # PIL raises many types for a bad file.
        raise ValueError("cannot decode PNG %s: %s" % (where, err)) from err
    # The release draws black ink on white; the models want ink = 1.
    return 1.0 - pixels / 255.0


def image_channels(data, where):
    """1 for grey-scale (or one-bit) files, 3 for colour ones (alpha ignored)."""
    from PIL import Image  # pylint: disable=g-import-not-at-top
    try:
        with Image.open(io.BytesIO(data)) as image:
            return 1 if image.mode in ("1", "L", "I", "I;16", "F", "LA") else 3
    except Exception as err:
        raise ValueError(f"cannot read image {where}: {err}; it is not a "
                         "readable PNG/JPEG/BMP (truncated or another format)") from err


def decode_image(data, where, channels, size, invert=False):
    """One PNG/JPEG/BMP file as float32 `[size, size, channels]` in [0, 1].

    Args:
      data: the file's bytes.
      where: the file's name, for errors.
      channels: 1 (grey, by luminance) or 3 (RGB; grey files are repeated).
      size: side of the output (area resampling, see `area_downsample`).
      invert: 1 - pixel, for dark-on-light drawings whose models want ink = 1.

    Raises:
      ValueError: naming `where`, for a truncated or unreadable file.
    """
    from PIL import Image  # pylint: disable=g-import-not-at-top
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # Truncated files fail here, not later.
            pixels = np.asarray(image.convert("L" if channels == 1 else "RGB"), np.float32)
    except Exception as err:
        raise ValueError(f"cannot decode image {where}: {err}; it is not a "
                         "readable PNG/JPEG/BMP (truncated or another format)") from err
    pixels = pixels / 255.0
    if invert:
        pixels = 1.0 - pixels
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return to_unit(area_downsample(pixels[None], size)[0])
