"""Readers: a user's classification data, in any of the supported forms, as `ClassData`.

    folder:PATH      class subfolders of PNG/JPEG/BMP files (the
                     `keras.utils.image_dataset_from_directory` layout), any
                     size, grey or RGB; or one level more, PATH/GROUP/CLASS/,
                     where groups play the role of Omniglot's alphabets.
    npz:PATH         arrays `images [N, H, W(, C)]` or `features [N, F]`, and
                     `labels [N]`, optional `groups [N]`.
    csv:PATH         a table (.csv, .tsv, .parquet) of numeric feature
                     columns plus a label column (and optionally a group one).
    tfds:NAME[:SPLIT]  any TFDS image-classification data set (`image`,
                     `label` features); `download=True` fetches it.
    omniglot:PATH    the Omniglot release (zips or folders; see omniglot.py).

A bare path is read by what it is: a folder holding the Omniglot zips is
Omniglot, another folder an image folder, a file by its suffix.

Rules, each counted in `ClassData.notes` where it applies: uint8 arrays are
scaled by 1/255; float images must lie in [0, 1]; files that are not
PNG/JPEG/BMP inside class folders are ignored. Everything else that is
wrong (an empty class folder, an unreadable or truncated image, mixed grey
and colour files without `image_channels`, a non-numeric feature, a label
column with one class) is an error naming the file, folder or line.
"""

import os

import numpy as np

from active_learning.data import cache
from active_learning.data import class_data
from active_learning.data import decoding
from active_learning.data.paths import resolve_data_dir

SCHEMES = ("folder", "npz", "csv", "tfds", "omniglot")
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")
_FOLDER_FORMAT = 1  # Bump when the decoded form of a folder changes.


def parse_spec(spec):
    """(scheme, rest) of a data spec; a bare path gets the scheme it looks like."""
    spec = os.fspath(spec)
    head, sep, rest = spec.partition(":")
    if sep and head in SCHEMES:
        return head, rest
    path = resolve_data_dir(spec)
    if os.path.isdir(path):
        from active_learning.data import omniglot  # pylint: disable=g-import-not-at-top
        try:
            omniglot.find_sources(path)
            return "omniglot", path
        except FileNotFoundError:
            return "folder", path
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".npz":
        return "npz", path
    if suffix in TABLE_SUFFIXES:
        return "csv", path
    raise ValueError(
        f"data {spec!r}: not a folder or a .npz/.csv/.tsv/.parquet file; write one of "
        + ", ".join(f"{s}:..." for s in SCHEMES))


def load_class_data(spec, image_size=None, image_channels=None, invert=False,
                    label_col="label", group_col=None, cache_dir=None, download=False):
    """Reads any supported classification data (see the module docstring).

    Args:
      spec: "folder:PATH", "npz:PATH", "csv:PATH", "tfds:NAME[:SPLIT]",
        "omniglot:PATH", or a bare path.
      image_size: side images are resampled to (area averaging); default:
        the data's own size when all images share one square size.
      image_channels: 1 or 3; grey files become RGB by repetition, colour
        ones grey by luminance. Required when a folder mixes both.
      invert: 1 - pixel (dark drawings on light paper, for models that want
        ink = 1 like Omniglot's).
      label_col, group_col: columns of a feature table.
      cache_dir: where decoded folders are cached.
      download: let TFDS download a missing data set.
    """
    scheme, rest = parse_spec(spec)
    if scheme == "omniglot":
        from active_learning.data import omniglot  # pylint: disable=g-import-not-at-top
        return class_data.from_omniglot(omniglot.load_omniglot(rest, cache_dir=cache_dir))
    if scheme == "tfds":
        return read_tfds(rest, image_size, image_channels, download)
    path = resolve_data_dir(rest)
    if not os.path.exists(path):
        raise FileNotFoundError(f"data {spec!r}: {path!r} does not exist")
    if scheme == "folder":
        return read_image_folder(path, image_size, image_channels, invert, cache_dir)
    if scheme == "npz":
        return read_npz(path, image_size, image_channels, invert)
    return read_feature_table(path, label_col, group_col)


# ---------------------------------------------------------------- folders
def _visible_entries(folder):
    return sorted(e for e in os.listdir(folder) if not e.startswith((".", "__MACOSX")))


def list_image_folder(root):
    """[(group, class name, [image paths])] of a class-folder tree, and ignored files."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder {root!r} does not exist")
    classes, ignored = [], 0

    def images_in(folder):
        nonlocal ignored
        files = [os.path.join(folder, e) for e in _visible_entries(folder)
                 if os.path.isfile(os.path.join(folder, e))]
        kept = [f for f in files if f.lower().endswith(decoding.IMAGE_SUFFIXES)]
        ignored += len(files) - len(kept)
        return kept

    top = [e for e in _visible_entries(root) if os.path.isdir(os.path.join(root, e))]
    if not top:
        raise ValueError(f"image folder {root!r} has no subfolders; expected "
                         "ROOT/CLASS/*.png (or ROOT/GROUP/CLASS/*.png), one folder per class")
    for name in top:
        folder = os.path.join(root, name)
        subfolders = [e for e in _visible_entries(folder)
                      if os.path.isdir(os.path.join(folder, e))]
        files = images_in(folder)
        if subfolders and files:
            raise ValueError(f"{folder!r} holds both images and subfolders; a folder is "
                             "either a class (images) or a group (class folders)")
        if subfolders:
            for sub in subfolders:
                classes.append((name, f"{name}/{sub}", images_in(os.path.join(folder, sub))))
        else:
            classes.append((name, name, files))
    grouped = any(group != name for group, name, _ in classes)
    if grouped and any(group == name for group, name, _ in classes):
        raise ValueError(f"image folder {root!r} mixes class folders and group folders at "
                         "its top level; use ROOT/CLASS/ or ROOT/GROUP/CLASS/ throughout")
    empty = [name for _, name, files in classes if not files]
    if empty:
        raise ValueError(f"empty class folder(s) in {root!r}: {empty[:5]} hold no "
                         "PNG/JPEG/BMP file; remove them or add images")
    if not grouped:
        classes = [(name, name, files) for _, name, files in classes]
    return classes, ignored


def read_image_folder(root, image_size=None, image_channels=None, invert=False,
                      cache_dir=None):
    """A `ClassData` of a class-folder tree (decoded once, then cached)."""
    from PIL import Image  # pylint: disable=g-import-not-at-top
    classes, ignored = list_image_folder(root)
    paths = [p for _, _, files in classes for p in files]
    # Headers first (cheap): sizes and channels decide the output shape
    # before anything is decoded, and every bad file is named at once.
    sizes, channels, bad = {}, {}, []
    for path in paths:
        try:
            with Image.open(path) as image:
                sizes.setdefault(image.size, path)
                channels.setdefault(1 if image.mode in ("1", "L", "I", "I;16", "F", "LA")
                                    else 3, path)
        except Exception as err:  # PIL raises many types for a bad file.
            bad.append(f"{path} ({err})")
    if bad:
        raise ValueError(f"{len(bad)} unreadable image file(s) in {root!r}: "
                         + "; ".join(bad[:5]) + "; fix or remove them")
    if image_channels is None:
        if len(channels) > 1:
            raise ValueError(
                f"{root!r} mixes grey-scale ({channels[1]}) and colour ({channels[3]}) "
                "images; pass --image_channels=1 or 3 to convert them all")
        image_channels = next(iter(channels))
    if image_channels not in (1, 3):
        raise ValueError(f"image_channels must be 1 or 3, got {image_channels}")
    if image_size is None:
        if len(sizes) != 1 or len(set(next(iter(sizes)))) != 1:
            examples = ", ".join(f"{w}x{h} ({p})" for (w, h), p in list(sizes.items())[:3])
            raise ValueError(f"{root!r} holds images of several or non-square sizes "
                             f"({examples}); pass --image_size to resample them all")
        image_size = next(iter(sizes))[0]
    notes = {}
    if ignored:
        notes["ignored non-image files"] = ignored
    key = cache.source_key([root], extra=("folder", _FOLDER_FORMAT, image_size,
                                          image_channels, bool(invert)))
    cache_path = os.path.join(cache_dir or cache.default_cache_dir("folders"),
                              f"folder-{key}.npz")
    arrays = cache.read_arrays(cache_path, "image folder cache")
    if arrays is None or arrays["items"].shape != (len(paths), image_size, image_size,
                                                   image_channels):
        items = np.zeros((len(paths), image_size, image_size, image_channels), np.float32)
        errors, converted = [], 0
        for i, path in enumerate(paths):
            with open(path, "rb") as f:
                data = f.read()
            try:
                items[i] = decoding.decode_image(data, path, image_channels, image_size, invert)
                converted += decoding.image_channels(data, path) != image_channels
            except ValueError as err:
                errors.append(str(err))
        if errors:
            raise ValueError(f"{len(errors)} image file(s) in {root!r} could not be "
                             "decoded: " + "; ".join(errors[:5]))
        arrays = {"items": items, "converted": np.int64(converted)}
        cache.write_arrays(cache_path, arrays, "image folder cache")
    if int(arrays["converted"]):
        notes[f"images converted to {image_channels} channel(s)"] = int(arrays["converted"])
    labels = np.concatenate([np.full(len(files), c) for c, (_, _, files) in enumerate(classes)])
    groups = np.concatenate([np.full(len(files), g, dtype=object)
                             for g, _, files in classes])
    data = class_data.from_labels(arrays["items"], labels, "image", groups=groups,
                                  source=f"folder:{root}", ink=bool(invert), notes=notes,
                                  where=root)
    # from_labels names classes by their index; give them their folder names.
    return class_data.ClassData(
        items=data.items, class_starts=data.class_starts, class_counts=data.class_counts,
        class_names=tuple(name for _, name, _ in classes), groups=data.groups,
        kind="image", source=data.source, ink=data.ink, notes=data.notes)


# ---------------------------------------------------------------- arrays
def _checked_images(images, where, image_size, image_channels, invert, notes):
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"{where}: images must be [N, H, W] or [N, H, W, C] with C = 1 "
                         f"or 3, got shape {images.shape}")
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
        notes["uint8 images scaled by 1/255"] = len(images)
    images = np.asarray(images, np.float32)
    if not np.isfinite(images).all():
        bad = np.flatnonzero(~np.isfinite(images).reshape(len(images), -1).all(1))
        raise ValueError(f"{where}: images {bad[:5].tolist()} hold NaN or Inf values")
    if images.min() < 0 or images.max() > 1:
        raise ValueError(f"{where}: float images must lie in [0, 1], got [{images.min():g}, "
                         f"{images.max():g}]; divide 0-255 data by 255 (or store uint8)")
    if invert:
        images = 1.0 - images
    if image_channels and image_channels != images.shape[-1]:
        if image_channels == 3:
            images = np.repeat(images, 3, axis=-1)
        else:
            images = images @ np.array([[0.299], [0.587], [0.114]], np.float32)
        notes[f"images converted to {image_channels} channel(s)"] = len(images)
    if image_size and (images.shape[1], images.shape[2]) != (image_size, image_size):
        images = decoding.to_unit(decoding.area_downsample(images, image_size))
    elif images.shape[1] != images.shape[2]:
        raise ValueError(f"{where}: images are {images.shape[1]}x{images.shape[2]}; pass "
                         "--image_size to resample them to a square")
    return images


def read_npz(path, image_size=None, image_channels=None, invert=False):
    """A `ClassData` of an `.npz` with `images` or `features`, `labels`, optional `groups`."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            values = {k: arrays[k] for k in arrays.files}
    except Exception as err:
        raise ValueError(f"{path}: not a readable .npz file ({err})") from err
    if "labels" not in values or ("images" in values) == ("features" in values):
        raise ValueError(f"{path}: expected arrays `labels` and one of `images` / "
                         f"`features`; it holds {sorted(values)}")
    notes = {}
    if "images" in values:
        items = _checked_images(values["images"], f"{path} `images`", image_size,
                                image_channels, invert, notes)
        kind = "image"
    else:
        items = np.asarray(values["features"])
        if items.ndim != 2 or not np.issubdtype(items.dtype, np.number):
            raise ValueError(f"{path} `features` must be a numeric [N, F] array, got "
                             f"{items.dtype} {items.shape}")
        items = items.astype(np.float32)
        bad = np.flatnonzero(~np.isfinite(items).all(1))
        if bad.size:
            raise ValueError(f"{path} `features`: rows {bad[:5].tolist()} hold NaN or Inf")
        kind = "features"
    return class_data.from_labels(items, values["labels"], kind, groups=values.get("groups"),
                                  source=f"npz:{path}", ink=bool(invert), notes=notes,
                                  where=f"{path} `labels`")


def read_feature_table(path, label_col="label", group_col=None):
    """A `ClassData` of feature vectors from a CSV/TSV/Parquet table."""
    import pandas as pd  # pylint: disable=g-import-not-at-top
    suffix = os.path.splitext(path)[1].lower()
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",",
                                encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err}); save it as UTF-8") from err
    except Exception as err:
        raise ValueError(f"{path}: cannot read the table ({err})") from err
    for col, flag in ((label_col, "--label_col"), (group_col, "--group_col")):
        if col is not None and col not in frame.columns:
            raise ValueError(f"{path}: no column {col!r} ({flag}); columns are "
                             f"{list(frame.columns)}")
    features = frame.drop(columns=[c for c in (label_col, group_col) if c])
    if features.shape[1] == 0:
        raise ValueError(f"{path}: no feature columns besides {label_col!r}")
    for col in features.columns:
        numeric = pd.to_numeric(features[col], errors="coerce")
        bad = np.flatnonzero(numeric.isna().to_numpy() | ~np.isfinite(
            numeric.fillna(0).to_numpy(np.float64)))
        if bad.size:
            row = int(bad[0])
            raise ValueError(
                f"{path} line {row + 2}: column {col!r} holds {features[col].iloc[row]!r}, "
                "not a finite number; feature columns must be numeric (name the label "
                "column with --label_col and a group column with --group_col)")
        features[col] = numeric
    labels = frame[label_col].astype(str).to_numpy()
    groups = frame[group_col].astype(str).to_numpy() if group_col else None
    return class_data.from_labels(features.to_numpy(np.float32), labels, "features",
                                  groups=groups, source=f"csv:{path}",
                                  where=f"{path} column {label_col!r}")


# ---------------------------------------------------------------- TFDS
def read_tfds(name_and_split, image_size=None, image_channels=None, download=False,
              data_dir=None):
    """A `ClassData` of a TFDS image-classification data set (`image`, `label`)."""
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    name, _, split = name_and_split.partition(":")
    split = split or "train"
    builder = tfds.builder(name, data_dir=data_dir)
    if download:
        builder.download_and_prepare()
    try:
        dataset = builder.as_dataset(split=split, shuffle_files=False)
    except AssertionError as err:  # TFDS's "dataset not prepared".
        raise FileNotFoundError(
            f"TFDS {name} is not prepared ({err}); pass --download on a machine with "
            "internet, or point TFDS_DATA_DIR at a prepared copy") from err
    features = builder.info.features
    if "image" not in features or "label" not in features:
        raise ValueError(f"TFDS {name} has features {list(features)}; an image-"
                         "classification data set needs `image` and `label`")
    images, labels = [], []
    for example in dataset.as_numpy_iterator():
        images.append(example["image"])
        labels.append(example["label"])
    label_feature = features["label"]
    names = np.array([label_feature.int2str(int(l)) if hasattr(label_feature, "int2str")
                      else str(l) for l in labels])
    notes = {}
    items = _checked_images(np.stack(images).astype(np.uint8), f"TFDS {name}", image_size,
                            image_channels, False, notes)
    return class_data.from_labels(items, names, "image", source=f"tfds:{name}:{split}",
                                  notes=notes, where=f"TFDS {name} labels")
