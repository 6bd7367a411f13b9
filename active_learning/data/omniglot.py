"""Omniglot for few-shot active learning: the release reader and its episodes.

The generic stages live in their own modules (decoding.py, cache.py,
splits.py, episodes.py); this one holds what is Omniglot's:

1. `load_omniglot` reads the release of Lake, Salakhutdinov & Tenenbaum
   (Science, 2015) from its original zips (or their unzipped folders, or the
   TFDS `omniglot` data set) into an `OmniglotData`: every character's 20
   drawings, area-averaged from 105x105 to 28x28, ink = 1. Decoding 32,460
   PNGs takes a few seconds, so the result is cached as an `.npz` keyed on the
   source files; later loads read the cache.
2. `split_classes` (splits.py, re-exported here) divides the characters
   into disjoint train / validation / test sets (the Vinyals et al. 1,200 /
   423 split of the full release, the background / evaluation split of Lake
   et al., or whole held-out alphabets for subsets of the release).
3. `EpisodeSampler`, the class sampler of episodes.py over `[C, 20, H, W]`
   drawings: N-way episodes drawn in-graph from a checkpointable
   `tf.random.Generator`, so training resumes on exactly the episodes it
   would have seen.

`summarize` describes a data folder; `python -m trainers.data_summary
--data=DIR` prints it (counts, split sizes, sampler throughput, one JSON
line at the end).
"""

import contextlib
import dataclasses
import os
import re
import zipfile

from absl import logging
import numpy as np
import tensorflow as tf

from active_learning.data import cache
from active_learning.data import decoding
from active_learning.data.paths import resolve_data_dir
from active_learning.data.episodes import ClassEpisodeSampler
# The splits live in splits.py; importers of this module keep finding them here.
from active_learning.data.splits import (  # pylint: disable=unused-import
    FULL_RELEASE_CHARACTERS, VINYALS_TRAIN_CHARACTERS, ClassSplit, split_classes)

IMAGE_SIZE = 28
DRAWINGS_PER_CHARACTER = 20

# Recognised sources, background sets first: that order fixes the character
# order (and so the Vinyals split), and a character found in two sources is
# taken from the first.
SOURCE_NAMES = (
    "images_background",
    "images_background_small1",
    "images_background_small2",
    "images_evaluation",
)

# Bump when the decoded representation changes, so stale caches are ignored.
_CACHE_FORMAT = 1
_CHARACTER_RE = re.compile(r"^character(\d+)$")


@dataclasses.dataclass(frozen=True, eq=False)
class OmniglotData:
    """Decoded Omniglot characters.

    Attributes:
      images: float32 `[C, 20, 28, 28]` in [0, 1], ink = 1, background = 0.
      alphabets: alphabet name of each character.
      characters: "Alphabet/characterNN" of each character (unique).
      background: bool `[C]`, True for characters of the background set
        (`images_background*`), False for the evaluation set.
      sources: file (or folder) names the characters were read from.
    """

    images: np.ndarray
    alphabets: tuple
    characters: tuple
    background: np.ndarray
    sources: tuple

    def __post_init__(self):
        count = self.images.shape[0]
        if (self.images.ndim != 4 or len(self.alphabets) != count
                or len(self.characters) != count
                or self.background.shape != (count,)):
            raise ValueError(
                "inconsistent OmniglotData: images %s, %d alphabets, %d "
                "characters, background %s" % (
                    self.images.shape, len(self.alphabets),
                    len(self.characters), self.background.shape))

    @property
    def num_characters(self):
        return self.images.shape[0]

    @property
    def num_images(self):
        return self.images.shape[0] * self.images.shape[1]

    @property
    def alphabet_names(self):
        """Distinct alphabets in character order (background ones first)."""
        return tuple(dict.fromkeys(self.alphabets))


# --------------------------------------------------------------------------
# Loading.


@dataclasses.dataclass(frozen=True)
class _Source:
    name: str        # e.g. "images_background_small1.zip"
    path: str
    is_zip: bool
    background: bool


def _expected_names():
    return ", ".join(
        "%s.zip (or folder %s/)" % (name, name) for name in SOURCE_NAMES)


def find_sources(data_dir):
    """The recognised Omniglot zips or folders in `data_dir`, in load order.

    A zip is preferred over an unzipped folder of the same name.

    Raises:
      FileNotFoundError: `data_dir` is missing or holds no recognised source.
    """
    data_dir = resolve_data_dir(data_dir)
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(
            "Omniglot data directory %r does not exist (or is not a "
            "directory); expected a directory holding any of: %s"
            % (data_dir, _expected_names()))
    sources = []
    for name in SOURCE_NAMES:
        zip_path = os.path.join(data_dir, name + ".zip")
        dir_path = os.path.join(data_dir, name)
        background = name.startswith("images_background")
        if os.path.isfile(zip_path):
            sources.append(_Source(name + ".zip", zip_path, True, background))
        elif os.path.isdir(dir_path):
            sources.append(_Source(name, dir_path, False, background))
    if not sources:
        raise FileNotFoundError(
            "no Omniglot data found in %r (it holds %s); expected any of: %s"
            % (data_dir, sorted(os.listdir(data_dir))[:10] or "nothing",
               _expected_names()))
    return sources


def _character_sort_key(key):
    alphabet, character = key
    match = _CHARACTER_RE.match(character)
    # "characterNN" sorts numerically (character2 before character10);
    # anything else after them, by name.
    return (alphabet, 0 if match else 1, int(match.group(1)) if match else 0,
            character)


def _split_member(parts):
    """(alphabet, character) for a PNG path split into parts, else None."""
    if not parts or not parts[-1].lower().endswith(".png"):
        return None
    # Skip macOS resource forks and hidden files that zip tools add.
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return None
    if len(parts) < 3:
        return None
    return parts[-3], parts[-2]


def _list_source(source):
    """{(alphabet, character): sorted member paths} of one source."""
    listing = {}
    if source.is_zip:
        try:
            with zipfile.ZipFile(source.path) as archive:
                names = [info.filename for info in archive.infolist()
                         if not info.is_dir()]
        except (zipfile.BadZipFile, OSError) as err:
            raise ValueError(
                "%s is not a readable zip file (%s); expected an Omniglot "
                "zip holding <set>/<Alphabet>/characterNN/*.png"
                % (source.path, err)) from err
        for name in names:
            key = _split_member(name.split("/"))
            if key is not None:
                listing.setdefault(key, []).append(name)
    else:
        for root, dirs, files in os.walk(source.path):
            dirs.sort()
            for file_name in files:
                path = os.path.join(root, file_name)
                rel = os.path.relpath(path, source.path)
                key = _split_member(rel.split(os.sep))
                if key is not None:
                    listing.setdefault(key, []).append(path)
    for members in listing.values():
        # File names are <id>_<drawer>.png: sorting orders drawings by drawer.
        members.sort(key=lambda m: (os.path.basename(m), m))
    return listing


def area_downsample(ink, size=IMAGE_SIZE):
    """Area-averages `[n, h, w]` ink images to `[n, size, size]` (float32)."""
    return decoding.area_downsample(ink, size)


def _decode_character(members, read, where):
    """`[20, 28, 28]` ink images of one character's members."""
    pixels = []
    for member in members:
        pixels.append(decoding.decode_ink_png(read(member), where(member)))
    shapes = {p.shape for p in pixels}
    if len(shapes) != 1:
        raise ValueError("drawings of different sizes %s in %s" % (
            sorted(shapes), where(members[0])))
    return decoding.to_unit(area_downsample(np.stack(pixels)))


def _decode_sources(sources):
    """Reads and decodes every character of `sources` (no cache).

    Returns:
      (images, alphabets, characters, background) as in `OmniglotData`.
    """
    owner = {}      # (alphabet, character) -> (source, members)
    for source in sources:
        for key, members in _list_source(source).items():
            if key in owner:
                continue  # small1 and small2 share Greek and Latin.
            if len(members) != DRAWINGS_PER_CHARACTER:
                raise ValueError(
                    "character %s/%s in %s has %d drawings; expected %d" % (
                        key[0], key[1], source.path, len(members),
                        DRAWINGS_PER_CHARACTER))
            owner[key] = (source, members)
    if not owner:
        raise ValueError(
            "no character drawings found in %s; expected PNGs at "
            "<set>/<Alphabet>/characterNN/*.png"
            % ", ".join(s.path for s in sources))
    keys = sorted(owner, key=lambda k: (not owner[k][0].background,)
                  + _character_sort_key(k))
    index = {key: i for i, key in enumerate(keys)}
    images = np.zeros(
        (len(keys), DRAWINGS_PER_CHARACTER, IMAGE_SIZE, IMAGE_SIZE),
        np.float32)
    for source in sources:
        mine = [k for k in keys if owner[k][0] is source]
        if not mine:
            continue
        with contextlib.ExitStack() as stack:
            if source.is_zip:
                archive = stack.enter_context(zipfile.ZipFile(source.path))

                def read(member, archive=archive, source=source):
                    try:
                        return archive.read(member)
                    except (zipfile.BadZipFile, OSError, EOFError) as err:
                        raise ValueError("cannot read %s in %s: %s" % (
                            member, source.path, err)) from err

                def where(member, source=source):
                    return "%s in %s" % (member, source.path)
            else:
                def read(member):
                    with open(member, "rb") as f:
                        return f.read()

                def where(member):
                    return member
            for key in mine:
                images[index[key]] = _decode_character(
                    owner[key][1], read, where)
    alphabets = tuple(k[0] for k in keys)
    characters = tuple("%s/%s" % k for k in keys)
    background = np.array([owner[k][0].background for k in keys], bool)
    return images, alphabets, characters, background


def default_cache_dir():
    """`$XDG_CACHE_HOME/active_learning/omniglot` (or under `~/.cache`)."""
    return cache.default_cache_dir("omniglot")


def _cache_key(sources):
    """Hash of the sources' names, sizes and mtimes (and the format)."""
    return cache.source_key([s.path for s in sources],
                            extra=("format", _CACHE_FORMAT, IMAGE_SIZE))


def _read_cache(path):
    """OmniglotData from a cache file, or None when missing or unusable."""
    arrays = cache.read_arrays(path, "Omniglot cache")
    if arrays is None:
        return None
    try:
        data = OmniglotData(
            images=arrays["images"].astype(np.float32, copy=False),
            alphabets=tuple(str(a) for a in arrays["alphabets"]),
            characters=tuple(str(c) for c in arrays["characters"]),
            background=arrays["background"].astype(bool),
            sources=tuple(str(s) for s in arrays["sources"]))
        if data.images.shape[1:] != (DRAWINGS_PER_CHARACTER, IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError("images of shape %s" % (data.images.shape,))
        return data
    except (KeyError, ValueError) as err:
        logging.warning("ignoring unusable Omniglot cache %s (%s); rebuilding it", path, err)
        return None


def _write_cache(path, data):
    cache.write_arrays(path, dict(
        images=data.images, alphabets=np.array(data.alphabets, dtype=str),
        characters=np.array(data.characters, dtype=str), background=data.background,
        sources=np.array(data.sources, dtype=str)), "Omniglot cache")


def load_omniglot(data_dir, cache_dir=None):
    """Loads Omniglot characters from a folder of release zips, or TFDS.

    Args:
      data_dir: a directory holding any of `images_background.zip`,
        `images_evaluation.zip`, `images_background_small1.zip`,
        `images_background_small2.zip` or their unzipped folders
        (`images_background/<Alphabet>/characterNN/*.png`); or `"tfds"` /
        `"tfds:/path"` to read the TFDS `omniglot` data set (see
        `load_omniglot_tfds`).
      cache_dir: where decoded arrays are cached (default
        `default_cache_dir()`); ignored for TFDS.

    Returns:
      An `OmniglotData`. Characters are ordered background sources first,
      then evaluation; within each by alphabet name, then character number.
      A character present in two sources (small1 and small2 share Greek and
      Latin) appears once. Drawings are in file-name order.

    Raises:
      FileNotFoundError: missing directory, or no recognised source in it.
      ValueError: a corrupt zip, an undecodable PNG, or a character without
        exactly 20 drawings.
    """
    data_dir = os.fspath(data_dir)
    if data_dir == "tfds" or data_dir.startswith("tfds:"):
        return load_omniglot_tfds(data_dir[len("tfds:"):] or None)
    sources = find_sources(data_dir)
    cache_dir = cache_dir or default_cache_dir()
    path = os.path.join(cache_dir, "omniglot-%s.npz" % _cache_key(sources))
    data = _read_cache(path)
    if data is not None:
        return data
    images, alphabets, characters, background = _decode_sources(sources)
    data = OmniglotData(images, alphabets, characters, background,
                        tuple(s.name for s in sources))
    _write_cache(path, data)
    return data


def load_omniglot_tfds(tfds_data_dir=None, download=False):
    """Builds `OmniglotData` from the TFDS `omniglot` data set.

    Split `train` holds the background set and `test` the evaluation set;
    the result matches `load_omniglot` on the two release zips, except that
    TFDS keeps no drawing file names, so a character's drawings come in the
    (deterministic) order TFDS stores them.

    Args:
      tfds_data_dir: the TFDS data directory (default: TFDS's own).
      download: download and prepare the data set first when missing.
    """
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    builder = tfds.builder("omniglot", data_dir=tfds_data_dir)
    if download:
        builder.download_and_prepare()
    alphabet_feature = builder.info.features["alphabet"]
    groups = {}     # (is_evaluation, alphabet, char_id) -> [ink images]
    for split, background in (("train", True), ("test", False)):
        try:
            dataset = builder.as_dataset(split=split, shuffle_files=False)
        except AssertionError as err:  # TFDS's "dataset not prepared".
            raise FileNotFoundError(
                "TFDS omniglot is not prepared in %s (%s); pass "
                "download=True or point tfds_data_dir at a prepared copy"
                % (tfds_data_dir or "the default TFDS data dir", err)) from err
        for example in dataset.as_numpy_iterator():
            alphabet = alphabet_feature.int2str(int(example["alphabet"]))
            key = (not background, alphabet, int(example["alphabet_char_id"]))
            image = np.asarray(example["image"], np.float32)
            if image.ndim == 3:
                image = image.mean(axis=-1)
            groups.setdefault(key, []).append(1.0 - image / 255.0)
    if not groups:
        raise ValueError("TFDS omniglot in %s has no examples" % (
            tfds_data_dir or "the default TFDS data dir"))
    keys = sorted(groups)
    images = np.zeros(
        (len(keys), DRAWINGS_PER_CHARACTER, IMAGE_SIZE, IMAGE_SIZE),
        np.float32)
    for i, key in enumerate(keys):
        drawings = groups[key]
        if len(drawings) != DRAWINGS_PER_CHARACTER:
            raise ValueError(
                "TFDS omniglot character %s/character%02d has %d drawings; "
                "expected %d" % (key[1], key[2] + 1, len(drawings),
                                 DRAWINGS_PER_CHARACTER))
        images[i] = decoding.to_unit(area_downsample(np.stack(drawings)))
    return OmniglotData(
        images=images,
        alphabets=tuple(k[1] for k in keys),
        # TFDS counts characters from 0; the release folders from 1.
        characters=tuple("%s/character%02d" % (k[1], k[2] + 1) for k in keys),
        background=np.array([not k[0] for k in keys], bool),
        sources=("tfds:omniglot/train", "tfds:omniglot/test"))


# --------------------------------------------------------------------------
# Episodes.


class EpisodeSampler(ClassEpisodeSampler):
    """N-way Omniglot episodes: `ClassEpisodeSampler` over `[C, D, H, W]` drawings."""

    def __init__(self, images, class_indices, ways, items_per_class=5,
                 queries_per_class=1, rotate=False, seed=0, name=None):
        """Holds the drawings of `class_indices` and a seeded generator.

        Args:
          images: `[C, D, H, W]` images (D drawings per character), or an
            `OmniglotData`.
          class_indices: characters this sampler draws from (a split).
          ways: default number of classes per episode (>= 2).
          items_per_class: support drawings per class (>= 1).
          queries_per_class: query drawings per class (>= 0); with the
            support ones at most D.
          rotate: multiply the classes by the four 90-degree rotations.
          seed: seed of the generator.
          name: module name.
        """
        names = None
        if isinstance(images, OmniglotData):
            names = images.characters
            images = images.images
        images = np.asarray(images, np.float32)
        if images.ndim != 4:
            raise ValueError("images must be [characters, drawings, height, "
                             "width], got shape %s" % (images.shape,))
        if items_per_class + queries_per_class > images.shape[1]:
            raise ValueError(
                "items_per_class + queries_per_class = %d exceeds the %d "
                "drawings of each character" % (
                    items_per_class + queries_per_class, images.shape[1]))
        count, drawings = images.shape[:2]
        super().__init__(
            images.reshape((count * drawings,) + images.shape[2:] + (1,)),
            np.arange(count) * drawings, np.full(count, drawings), class_indices,
            ways, items_per_class=items_per_class, queries_per_class=queries_per_class,
            rotate=rotate, seed=seed, class_names=names, name=name)
