"""Tests of the Omniglot loader, class splits and in-graph episode sampler.

Unit tests write their own tiny data in the release's real format (zips of
105x105 one-bit PNGs at <set>/<Alphabet>/characterNN/NNNN_MM.png, plus an
unzipped folder) with known ink patterns, so a fresh clone needs no download.
One integration test reads ../shared/data when it is present.
"""

import io
import json
import os
import random
import shutil
import sys
import tempfile
import zipfile
from unittest import mock

from absl.testing import parameterized
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from active_learning.data import omniglot
from active_learning.data import omniglot_summary

SIZE = 105

# small1 and small2 share "Latin" (same characters, same drawings), as the
# real small sets share Greek and Latin.
SMALL1 = {"Alpha": 3, "Beta": 3, "Gamma": 3, "Latin": 3}
SMALL2 = {"Latin": 3, "Delta": 2}
EVALUATION = {"Omega": 2}


def _ink(char_id, drawer):
    """Known bool ink pattern, unique per (character, drawer), asymmetric."""
    ink = np.zeros((SIZE, SIZE), bool)
    # 15 px = exactly 4 cells of 3.75 px: these cells must read 1.
    ink[0:15, 0:15] = True
    ink[30:30 + 3 * (drawer + 1), 60:75] = True
    ink[80:95, 78:78 + char_id + 1] = True
    return ink


def _png(ink):
    """One-bit PNG bytes of `ink`, black ink on white like the release."""
    buffer = io.BytesIO()
    Image.fromarray(~ink).convert("1").save(buffer, format="PNG")
    return buffer.getvalue()


def _char_ids(alphabets):
    """Global ids: an alphabet keeps the same ids in every set (Latin)."""
    ids, next_id = {}, 0
    for name in sorted(set(SMALL1) | set(SMALL2) | set(EVALUATION)):
        count = max(d.get(name, 0) for d in (SMALL1, SMALL2, EVALUATION))
        for c in range(count):
            ids[(name, c)] = next_id
            next_id += 1
    return {k: v for k, v in ids.items() if k[0] in alphabets}


def _members(top, alphabets, drawings=20):
    """[(path, png bytes)] of a set, in a shuffled (non-sorted) order."""
    members = []
    for (alphabet, c), char_id in _char_ids(alphabets).items():
        if c >= alphabets[alphabet]:
            continue
        for drawer in range(drawings):
            path = "%s/%s/character%02d/%04d_%02d.png" % (
                top, alphabet, c + 1, char_id + 1, drawer + 1)
            members.append((path, _png(_ink(char_id, drawer))))
    random.Random(0).shuffle(members)
    return members


def write_zip(path, top, alphabets, drawings=20, extra=()):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in list(_members(top, alphabets, drawings)) + list(
                extra):
            archive.writestr(name, data)


def write_folder(root, top, alphabets):
    for name, data in _members(top, alphabets):
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def area_reference(inks):
    """TF's area resize of bool `[..., 105, 105]` inks to `[..., 28, 28]`."""
    flat = inks.reshape(-1, SIZE, SIZE, 1).astype(np.float32)
    small = tf.image.resize(flat, (28, 28), method="area").numpy()
    return small.reshape(inks.shape[:-2] + (28, 28))


def expected_images(keys):
    """Reference [C, 20, 28, 28] of (alphabet, character index) keys."""
    ids = _char_ids({k[0]: 1 for k in keys})
    return area_reference(np.stack([
        np.stack([_ink(ids[key], d) for d in range(20)]) for key in keys]))


def mkdtemp(test):
    """A fresh folder under the test's temp dir.

    (absl's create_tempdir needs parsed flags, which pytest does not do.)
    """
    return tempfile.mkdtemp(dir=test.get_temp_dir())


class LoaderTest(tf.test.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.root = tempfile.mkdtemp()
        cls.small = os.path.join(cls.root, "small")
        os.makedirs(cls.small)
        write_zip(os.path.join(cls.small, "images_background_small1.zip"),
                  "images_background_small1", SMALL1)
        write_zip(os.path.join(cls.small, "images_background_small2.zip"),
                  "images_background_small2", SMALL2)
        # A background zip plus an unzipped evaluation folder.
        cls.mixed = os.path.join(cls.root, "mixed")
        os.makedirs(cls.mixed)
        shutil.copy(os.path.join(cls.small, "images_background_small1.zip"),
                    cls.mixed)
        write_folder(cls.mixed, "images_evaluation", EVALUATION)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root, ignore_errors=True)
        super().tearDownClass()

    def load(self, data_dir=None, **kwargs):
        cache_dir = kwargs.pop("cache_dir", None) or mkdtemp(self)
        return omniglot.load_omniglot(data_dir or self.small,
                                      cache_dir=cache_dir, **kwargs)

    def test_counts_order_and_dedupe(self):
        data = self.load()
        self.assertEqual(data.images.shape, (14, 20, 28, 28))
        self.assertEqual(data.images.dtype, np.float32)
        self.assertEqual(data.num_images, 280)
        self.assertEqual(data.alphabet_names,
                         ("Alpha", "Beta", "Delta", "Gamma", "Latin"))
        self.assertEqual(data.characters[:4], (
            "Alpha/character01", "Alpha/character02", "Alpha/character03",
            "Beta/character01"))
        self.assertLen(set(data.characters), 14)
        self.assertEqual(data.characters.count("Latin/character01"), 1)
        self.assertEqual(data.sources, ("images_background_small1.zip",
                                        "images_background_small2.zip"))
        self.assertTrue(data.background.all())

    def test_pixels_ink_and_drawing_order(self):
        data = self.load()
        keys = [tuple(c.split("/")) for c in data.characters]
        keys = [(a, int(c[len("character"):]) - 1) for a, c in keys]
        # Drawings sorted by file name even though the zip is shuffled.
        self.assertAllClose(data.images, expected_images(keys), atol=1e-5)
        self.assertGreaterEqual(data.images.min(), 0.0)
        self.assertLessEqual(data.images.max(), 1.0)
        self.assertAllClose(data.images[:, :, 0:4, 0:4],
                            np.ones((14, 20, 4, 4)))
        self.assertAllClose(data.images[:, :, 26:, 0:10],
                            np.zeros((14, 20, 2, 10)))

    def test_area_downsample(self):
        constant = np.full((3, SIZE, SIZE), 0.3, np.float32)
        self.assertAllClose(omniglot.area_downsample(constant),
                            np.full((3, 28, 28), 0.3), atol=1e-6)
        noise = np.random.RandomState(0).rand(4, SIZE, SIZE).astype(
            np.float32)
        reference = tf.image.resize(noise[..., None], (28, 28),
                                    method="area").numpy()[..., 0]
        self.assertAllClose(omniglot.area_downsample(noise), reference,
                            atol=1e-5)

    def test_folder_source_and_evaluation_order(self):
        data = self.load(self.mixed)
        self.assertEqual(data.sources, ("images_background_small1.zip",
                                        "images_evaluation"))
        self.assertEqual(data.num_characters, 14)
        self.assertEqual(data.characters[-2:], ("Omega/character01",
                                                "Omega/character02"))
        self.assertAllEqual(data.background, [True] * 12 + [False] * 2)

    def test_cache_is_written_and_reused(self):
        cache_dir = mkdtemp(self)
        first = self.load(cache_dir=cache_dir)
        files = os.listdir(cache_dir)
        self.assertLen(files, 1)
        self.assertTrue(files[0].endswith(".npz"))
        with mock.patch.object(omniglot, "_decode_sources",
                               side_effect=AssertionError("decoded")):
            second = self.load(cache_dir=cache_dir)
        self.assertAllEqual(first.images, second.images)
        self.assertEqual(first.characters, second.characters)
        self.assertEqual(first.alphabets, second.alphabets)
        self.assertEqual(first.sources, second.sources)
        self.assertAllEqual(first.background, second.background)

    def test_corrupt_cache_is_rebuilt(self):
        cache_dir = mkdtemp(self)
        first = self.load(cache_dir=cache_dir)
        path = os.path.join(cache_dir, os.listdir(cache_dir)[0])
        with open(path, "wb") as f:
            f.write(b"not an npz")
        decode = mock.Mock(wraps=omniglot._decode_sources)
        with mock.patch.object(omniglot, "_decode_sources", decode):
            again = self.load(cache_dir=cache_dir)
        decode.assert_called_once()
        self.assertAllEqual(first.images, again.images)
        # Rebuilt in place, and no temporary file left behind.
        self.assertEqual(os.listdir(cache_dir), [os.path.basename(path)])
        self.assertIsNotNone(omniglot._read_cache(path))

    def test_changed_source_changes_cache_key(self):
        data_dir = mkdtemp(self)
        zip_path = os.path.join(data_dir, "images_background_small2.zip")
        shutil.copy(os.path.join(self.small, "images_background_small2.zip"),
                    zip_path)
        cache_dir = mkdtemp(self)
        self.load(data_dir, cache_dir=cache_dir)
        stat = os.stat(zip_path)
        os.utime(zip_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        self.load(data_dir, cache_dir=cache_dir)
        self.assertLen(os.listdir(cache_dir), 2)

    def test_missing_directory(self):
        missing = os.path.join(self.root, "nope")
        with self.assertRaisesRegex(FileNotFoundError, "nope"):
            self.load(missing)

    def test_directory_without_sources(self):
        empty = mkdtemp(self)
        with self.assertRaisesRegex(FileNotFoundError,
                                    "images_background.zip.*"
                                    "images_evaluation.zip"):
            self.load(empty)

    def test_corrupt_zip(self):
        data_dir = mkdtemp(self)
        with open(os.path.join(data_dir, "images_evaluation.zip"), "wb") as f:
            f.write(b"PK\x03\x04 truncated")
        with self.assertRaisesRegex(ValueError,
                                    "images_evaluation.zip.*not a readable"):
            self.load(data_dir)

    def test_unreadable_png(self):
        data_dir = mkdtemp(self)
        bad = "images_background/Zeta/character01/0099_07.png"
        members = _members("images_background", {"Alpha": 1})
        members += [("images_background/Zeta/character01/0099_%02d.png" % d,
                     _png(_ink(0, d))) for d in range(1, 21) if d != 7]
        with zipfile.ZipFile(os.path.join(data_dir, "images_background.zip"),
                             "w") as archive:
            for name, data in members:
                archive.writestr(name, data)
            archive.writestr(bad, b"\x89PNG garbage")
        with self.assertRaisesRegex(
                ValueError, "0099_07.png in .*images_background.zip"):
            self.load(data_dir)

    def test_wrong_number_of_drawings(self):
        data_dir = mkdtemp(self)
        write_zip(os.path.join(data_dir, "images_background.zip"),
                  "images_background", {"Alpha": 2}, drawings=19)
        with self.assertRaisesRegex(
                ValueError, "Alpha/character01 .* 19 drawings; expected 20"):
            self.load(data_dir)


def fake_data(alphabet_sizes, background_count=None):
    """An OmniglotData index with placeholder images (for splits)."""
    alphabets = []
    for name, size in alphabet_sizes:
        alphabets += [name] * size
    count = len(alphabets)
    characters, seen = [], {}
    for name in alphabets:
        seen[name] = seen.get(name, 0) + 1
        characters.append("%s/character%02d" % (name, seen[name]))
    background = np.zeros(count, bool)
    background[:count if background_count is None else background_count] = 1
    return omniglot.OmniglotData(
        images=np.zeros((count, 1, 1, 1), np.float32),
        alphabets=tuple(alphabets), characters=tuple(characters),
        background=background, sources=("fake",))


def full_release_index():
    """1,623 characters: 30 background alphabets (964), 20 evaluation (659)."""
    sizes = [("B%02d" % i, 32 + (i < 4)) for i in range(30)]
    sizes += [("E%02d" % i, 32 + (i < 19)) for i in range(20)]
    return fake_data(sizes, background_count=964)


class SplitTest(tf.test.TestCase, parameterized.TestCase):

    def assert_partition(self, split, count):
        parts = [split.train, split.validation, split.test]
        everything = np.concatenate(parts)
        self.assertLen(everything, count)
        self.assertLen(np.unique(everything), count)
        for part in parts:
            self.assertTrue((part >= 0).all() and (part < count).all())

    def test_vinyals_sizes(self):
        data = full_release_index()
        self.assertEqual(sum(data.background), 964)
        split = omniglot.split_classes(data)
        self.assertEqual(split.name, "vinyals")
        self.assert_partition(split, 1623)
        self.assertAllEqual(split.train, np.arange(1100))
        self.assertAllEqual(split.validation, np.arange(1100, 1200))
        self.assertAllEqual(split.test, np.arange(1200, 1623))
        described = omniglot.split_classes(
            data, "vinyals", validation_characters=200).describe()
        self.assertEqual(
            (described["train_characters"], described["validation_characters"],
             described["test_characters"]), (1000, 200, 423))

    def test_vinyals_needs_full_release(self):
        with self.assertRaisesRegex(ValueError, "1623 characters"):
            omniglot.split_classes(fake_data([("A", 30)] * 1), "vinyals")

    def test_lake(self):
        data = full_release_index()
        split = omniglot.split_classes(data, "lake", validation_characters=100,
                                       seed=3)
        self.assert_partition(split, 1623)
        self.assertAllEqual(split.test, np.arange(964, 1623))
        self.assertGreaterEqual(len(split.validation), 100)
        self.assertTrue(data.background[split.validation].all())
        # Validation alphabets are whole and absent from train.
        train_alphabets = {data.alphabets[i] for i in split.train}
        self.assertEmpty(train_alphabets & set(split.validation_alphabets))
        self.assertLen(split.train, 964 - len(split.validation))
        again = omniglot.split_classes(data, "lake", seed=3)
        self.assertAllEqual(split.validation, again.validation)

    @parameterized.parameters(0, 1, 7)
    def test_alphabets_auto(self, seed):
        sizes = [("A%02d" % i, 10 + i) for i in range(12)]
        data = fake_data(sizes)
        count = data.num_characters
        split = omniglot.split_classes(data, seed=seed)
        self.assertEqual(split.name, "alphabets")
        self.assert_partition(split, count)
        self.assertGreaterEqual(len(split.test), max(20, 0.2 * count))
        self.assertGreaterEqual(len(split.validation), max(20, 0.1 * count))
        train_alphabets = {data.alphabets[i] for i in split.train}
        self.assertEmpty(train_alphabets & set(split.test_alphabets))
        self.assertEmpty(train_alphabets & set(split.validation_alphabets))
        self.assertEmpty(set(split.test_alphabets)
                         & set(split.validation_alphabets))
        again = omniglot.split_classes(data, seed=seed)
        self.assertAllEqual(split.test, again.test)
        self.assertAllEqual(split.validation, again.validation)
        self.assertEqual(split.describe()["test_alphabets"],
                         list(split.test_alphabets))

    def test_alphabets_seeds_differ(self):
        data = fake_data([("A%02d" % i, 10) for i in range(20)])
        tests = {tuple(omniglot.split_classes(data, seed=s).test_alphabets)
                 for s in range(5)}
        self.assertGreater(len(tests), 1)

    def test_alphabets_tiny_leaves_train(self):
        data = fake_data([("A", 3), ("B", 3), ("C", 3), ("D", 3)])
        split = omniglot.split_classes(data)
        self.assert_partition(split, 12)
        self.assertNotEmpty(split.train)
        self.assertNotEmpty(split.validation)
        with self.assertRaisesRegex(ValueError, "at least 3 alphabets"):
            omniglot.split_classes(fake_data([("A", 3), ("B", 3)]))

    def test_named_alphabets(self):
        data = fake_data([("A", 5), ("B", 6), ("C", 7), ("D", 8)])
        split = omniglot.split_classes(data, test_alphabets="B,D",
                                       validation_alphabets=["A"])
        self.assertEqual(split.test_alphabets, ("B", "D"))
        self.assertEqual(split.validation_alphabets, ("A",))
        self.assertAllEqual(split.validation, np.arange(5))
        self.assertAllEqual(split.train, np.arange(11, 18))

    def test_unknown_alphabet(self):
        data = fake_data([("A", 5), ("B", 6), ("C", 7)])
        with self.assertRaisesRegex(ValueError, "Klingon.*known.*A, B, C"):
            omniglot.split_classes(data, test_alphabets=["Klingon"])

    def test_unknown_split(self):
        with self.assertRaisesRegex(ValueError, "unknown split"):
            omniglot.split_classes(fake_data([("A", 5)]), "random")


def identity_images(characters=10, drawings=20, size=6):
    """Image (c, d) is constant c * drawings + d: identity from any pixel."""
    ids = np.arange(characters * drawings, dtype=np.float32)
    return np.broadcast_to(ids.reshape(characters, drawings, 1, 1),
                           (characters, drawings, size, size)).copy()


class SamplerTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters((5, 3, 2), (3, 1, 4), (10, 5, 1))
    def test_episode_structure(self, ways, items, queries):
        images = identity_images()
        pool = np.array([0, 2, 3, 5, 6, 7, 8, 9, 1, 4])[:max(ways + 1, 6)]
        sampler = omniglot.EpisodeSampler(images, pool, ways, items, queries,
                                          seed=1)
        batch = {k: v.numpy() for k, v in sampler.sample(8).items()}
        self.assertEqual(batch["support"].shape,
                         (8, ways * items, 6, 6, 1))
        self.assertEqual(batch["queries"].shape,
                         (8, ways * queries, 6, 6, 1))
        self.assertEqual(batch["support_labels"].shape, (8, ways * items))
        self.assertEqual(batch["query_labels"].shape, (8, ways * queries))
        self.assertEqual(batch["support"].dtype, np.float32)
        self.assertEqual(batch["support_labels"].dtype, np.int32)
        self.assertEqual(batch["query_labels"].dtype, np.int32)
        for b in range(8):
            support = batch["support"][b, :, 0, 0, 0].astype(int)
            query = batch["queries"][b, :, 0, 0, 0].astype(int)
            s_labels = batch["support_labels"][b]
            q_labels = batch["query_labels"][b]
            self.assertAllEqual(np.bincount(s_labels, minlength=ways),
                                [items] * ways)
            self.assertAllEqual(np.bincount(q_labels, minlength=ways),
                                [queries] * ways)
            # All drawings distinct: support and queries disjoint.
            both = np.concatenate([support, query])
            self.assertLen(np.unique(both), len(both))
            # One character per label, the same in support and queries,
            # distinct across labels, from the pool.
            char_of = {}
            for image_id, label in zip(both, np.concatenate(
                    [s_labels, q_labels])):
                char_of.setdefault(label, set()).add(image_id // 20)
            self.assertTrue(all(len(c) == 1 for c in char_of.values()))
            chars = [c.pop() for c in char_of.values()]
            self.assertLen(set(chars), ways)
            self.assertContainsSubset(chars, pool)

    def test_labels_and_order_are_random(self):
        sampler = omniglot.EpisodeSampler(identity_images(), np.arange(10), 5,
                                          seed=0)
        batch = sampler.sample(16)
        # Support is shuffled (not grouped by label) in some episode, and the
        # label of the smallest character varies across episodes.
        labels = batch["support_labels"].numpy()
        self.assertFalse(all((np.diff(row) >= 0).all() for row in labels))
        ids = batch["support"].numpy()[:, :, 0, 0, 0]
        first_label = [row_labels[np.argmin(row_ids)]
                       for row_ids, row_labels in zip(ids, labels)]
        self.assertGreater(len(set(first_label)), 1)

    def test_ways_override_and_tensors(self):
        sampler = omniglot.EpisodeSampler(identity_images(), np.arange(10), 5,
                                          items_per_class=2)
        batch = sampler.sample(3, ways=7)
        self.assertEqual(batch["support"].shape, (3, 14, 6, 6, 1))
        batch = sampler.sample(tf.constant(2), tf.constant(4))
        self.assertEqual(batch["support_labels"].shape, (2, 8))
        self.assertLess(int(tf.reduce_max(batch["support_labels"])), 4)
        with self.assertRaisesRegex(ValueError, "ways = 11 exceeds"):
            sampler.sample(2, ways=11)

    def test_graph_mode(self):
        sampler = omniglot.EpisodeSampler(identity_images(), np.arange(10), 5)
        concrete = sampler.sample.get_concrete_function(
            tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32))
        op_types = {op.type for op in concrete.graph.get_operations()}
        self.assertEmpty(op_types & {"PyFunc", "EagerPyFunc",
                                     "PyFuncStateless"})
        batch = concrete(tf.constant(4), tf.constant(6))
        self.assertEqual(batch["queries"].shape, (4, 6, 6, 6, 1))

    def test_seeds(self):
        def draw(seed):
            sampler = omniglot.EpisodeSampler(identity_images(),
                                              np.arange(10), 5, seed=seed)
            return sampler.sample(4)["support"].numpy()
        self.assertAllEqual(draw(3), draw(3))
        self.assertNotAllEqual(draw(3), draw(4))

    def test_checkpoint_restores_stream(self):
        sampler = omniglot.EpisodeSampler(identity_images(), np.arange(10), 5,
                                          seed=2)
        sampler.sample(4)
        checkpoint = tf.train.Checkpoint(sampler=sampler)
        path = checkpoint.save(os.path.join(self.get_temp_dir(), "ckpt"))
        expected = sampler.sample(4)
        sampler.sample(4)
        checkpoint.restore(path).assert_consumed()
        again = sampler.sample(4)
        for key in expected:
            self.assertAllEqual(expected[key], again[key])

    def test_dataset(self):
        sampler = omniglot.EpisodeSampler(identity_images(), np.arange(10), 5)
        batches = list(sampler.dataset(3).take(2))
        self.assertLen(batches, 2)
        self.assertEqual(batches[0]["support"].shape,
                         (3, 25, 6, 6, 1))
        self.assertNotAllEqual(batches[0]["support"],
                               batches[1]["support"])

    def test_rotation(self):
        rng = np.random.RandomState(0)
        images = (rng.rand(3, 20, 28, 28) > 0.8).astype(np.float32)
        images[:, :, 0:4, 0:4] = 1.0  # Asymmetric, as in real characters.
        # 3 characters x 4 turns = 12 classes, enough for 10 ways.
        sampler = omniglot.EpisodeSampler(images, np.arange(3), 10,
                                          items_per_class=2, rotate=True)
        batch = sampler.sample(6)
        support = batch["support"].numpy()[..., 0]
        labels = batch["support_labels"].numpy()
        rotated = {k: np.rot90(images, k, axes=(2, 3)) for k in range(4)}
        turns_seen = set()
        for b in range(6):
            class_of = {}
            for image, label in zip(support[b], labels[b]):
                matches = [(c, k) for k in range(4) for c in range(3)
                           if (rotated[k][c] == image).all(-1).all(-1).any()]
                self.assertLen(matches, 1)
                class_of.setdefault(label, set()).add(matches[0])
            self.assertTrue(all(len(v) == 1 for v in class_of.values()))
            classes = [v.pop() for v in class_of.values()]
            self.assertLen(set(classes), 10)
            turns_seen |= {k for _, k in classes}
        self.assertEqual(turns_seen, {0, 1, 2, 3})

    def test_rotation_of_loaded_characters(self):
        root = mkdtemp(self)
        write_zip(os.path.join(root, "images_background.zip"),
                  "images_background", {"Alpha": 2})
        data = omniglot.load_omniglot(
            root, cache_dir=mkdtemp(self))
        sampler = omniglot.EpisodeSampler(data, [0, 1], 8, items_per_class=1,
                                          queries_per_class=0, rotate=True)
        support = sampler.sample(1)["support"].numpy()[0, ..., 0]
        # The known ink block of every character sits in one corner per turn.
        corners = sorted(
            int(np.argmax([img[:4, :4].mean(), img[:4, -4:].mean(),
                           img[-4:, -4:].mean(), img[-4:, :4].mean()]))
            for img in support)
        self.assertEqual(corners, [0, 0, 1, 1, 2, 2, 3, 3])
        self.assertAllClose(support[:, :, :].max(axis=(1, 2)),
                            np.ones(8))

    @parameterized.named_parameters(
        ("one_way", dict(ways=1), "ways must be >= 2"),
        ("too_many_ways", dict(ways=11), "exceeds the 10 classes"),
        ("too_many_drawings", dict(ways=5, items_per_class=15,
                                   queries_per_class=6), "exceeds the 20"),
        ("no_items", dict(ways=5, items_per_class=0), "items_per_class"),
        ("bad_index", dict(ways=2, class_indices=[0, 10]), r"\[0, 10\)"),
    )
    def test_invalid_arguments(self, kwargs, message):
        kwargs = dict(kwargs)
        class_indices = kwargs.pop("class_indices", np.arange(10))
        with self.assertRaisesRegex(ValueError, message):
            omniglot.EpisodeSampler(identity_images(), class_indices, **kwargs)

    def test_rotation_multiplies_classes(self):
        sampler = omniglot.EpisodeSampler(identity_images(), np.arange(10), 40,
                                          rotate=True)
        self.assertEqual(sampler.num_classes, 40)
        self.assertEqual(sampler.sample(1)["support_labels"].shape, (1, 200))


class TfdsTest(tf.test.TestCase):

    def test_mock_tfds(self):
        tfds = pytest.importorskip("tensorflow_datasets")
        # alphabet index -> characters; train = background, test = evaluation.
        layout = {"train": {3: 2, 1: 1}, "test": {7: 1}}

        def as_dataset(self, split, **kwargs):
            del self, kwargs
            images, alphabet, char_id = [], [], []
            for a, chars in layout[split].items():
                for c in range(chars):
                    for d in range(20):
                        ink = _ink(c + 3 * a, d)
                        pixels = np.where(ink, 0, 255).astype(np.uint8)
                        images.append(np.repeat(pixels[..., None], 3, -1))
                        alphabet.append(a)
                        char_id.append(c)
            order = np.random.RandomState(0).permutation(len(images))
            return tf.data.Dataset.from_tensor_slices({
                "image": np.stack(images)[order],
                "alphabet": np.array(alphabet, np.int64)[order],
                "alphabet_char_id": np.array(char_id, np.int64)[order],
                "label": np.zeros(len(images), np.int64),
            })

        with tfds.testing.mock_data(as_dataset_fn=as_dataset):
            data = omniglot.load_omniglot_tfds(self.get_temp_dir())
            again = omniglot.load_omniglot("tfds:" + self.get_temp_dir())
        # Without prepared metadata the mock names alphabets by index.
        self.assertEqual(data.characters, (
            "1/character01", "3/character01", "3/character02",
            "7/character01"))
        self.assertEqual(data.alphabets, ("1", "3", "3", "7"))
        self.assertAllEqual(data.background, [True, True, True, False])
        self.assertEqual(data.images.shape, (4, 20, 28, 28))
        self.assertAllClose(data.images, again.images)
        # TFDS keeps no file names, so compare each character's drawings as
        # a set, ordered by amount of ink (unique per drawer here).
        for i, char_id in enumerate([3, 9, 10, 21]):
            expected = area_reference(
                np.stack([_ink(char_id, d) for d in range(20)]))
            by_ink = lambda x: x[np.argsort(x.sum(axis=(1, 2)))]
            self.assertAllClose(by_ink(data.images[i]), by_ink(expected),
                                atol=1e-5)


    def test_unprepared_tfds(self):
        pytest.importorskip("tensorflow_datasets")
        with self.assertRaisesRegex(FileNotFoundError,
                                    "TFDS omniglot is not prepared"):
            omniglot.load_omniglot("tfds:" + mkdtemp(self))


class SummaryTest(tf.test.TestCase):

    def test_summarize(self):
        root = mkdtemp(self)
        write_zip(os.path.join(root, "images_background_small1.zip"),
                  "images_background_small1", SMALL1)
        lines, record = omniglot_summary.summarize(
            root, cache_dir=mkdtemp(self),
            benchmark_seconds=0.05)
        self.assertIn("characters: 12", "\n".join(lines))
        json.dumps(record)
        for key in ("alphabets", "characters", "images", "split",
                    "train_characters", "validation_characters",
                    "test_characters", "episodes_per_second"):
            self.assertIn(key, record)
        self.assertEqual((record["alphabets"], record["characters"],
                          record["images"]), (4, 12, 240))
        self.assertEqual(record["train_characters"]
                         + record["validation_characters"]
                         + record["test_characters"], 12)
        self.assertGreater(record["episodes_per_second"], 0)
        # Background characters only: no lake split, and vinyals needs 1,623.
        self.assertEqual(record["other_splits"], {})

    def test_summary_lists_the_other_named_split(self):
        root = mkdtemp(self)
        write_zip(os.path.join(root, "images_background.zip"),
                  "images_background", SMALL1)
        write_zip(os.path.join(root, "images_evaluation.zip"),
                  "images_evaluation", EVALUATION)
        lines, record = omniglot_summary.summarize(
            root, split="alphabets", cache_dir=mkdtemp(self),
            validation_characters=1, benchmark_seconds=0.05)
        lake = record["other_splits"]["lake"]
        data = omniglot.load_omniglot(root, cache_dir=mkdtemp(self))
        self.assertEqual(lake["test_characters"],
                         int(np.sum(~np.asarray(data.background))))
        self.assertEqual(sum(lake.values()), record["characters"])
        self.assertIn("split lake (--split=lake): train %d"
                      % lake["train_characters"], "\n".join(lines))
        self.assertNotIn("vinyals", record["other_splits"])


def test_shipped_small_sets(shipped_data, tmp_path):
    """The real small1 + small2 zips: 8 alphabets, 242 characters, 4,840.

    Decodes 4,840 PNGs once (a few seconds) into a throwaway cache.
    """
    data_dir = shipped_data / "omniglot"
    data = omniglot.load_omniglot(data_dir, cache_dir=tmp_path)
    assert len(data.alphabet_names) == 8
    assert data.num_characters == 242
    assert data.num_images == 4840
    assert data.images.shape == (242, 20, 28, 28)
    assert 0.0 <= data.images.min() and data.images.max() <= 1.0
    # Ink is sparse: most of a drawing is background (0).
    assert 0.02 < data.images.mean() < 0.3
    split = omniglot.split_classes(data)
    assert split.name == "alphabets"
    assert (len(split.train) + len(split.validation) + len(split.test)
            == 242)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
