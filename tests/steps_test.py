"""The serving steps are written once, and both callers run them alike.

`active_learning.steps` holds begin/select/observe/predict/metadata:
`export.serving.ServingModule` traces them behind its input checks, and the
in-memory backend of `ActiveSession` calls them eagerly. Here: the two give
the same answers on one episode (a joint batch select included), one
`ItemVocabulary` maps item ids in both, and the library imports neither the
entry points (trainers/) nor the export package.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import active_learning  # noqa: F401,E402  (first: quiets TensorFlow's start-up)

import ast  # noqa: E402
import glob  # noqa: E402
import sys  # noqa: E402

from absl.testing import parameterized  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from active_learning import steps  # noqa: E402
from active_learning.backends import ModelBackend  # noqa: E402
from export.serving import ServingModule  # noqa: E402
from tests import fakes  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_ITEMS = 12
# String ids: the in-memory session had no test with them before the map
# was shared with the SavedModel.
STRING_IDS = np.asarray([f"item-{i * 7}" for i in range(NUM_ITEMS)])
POOL = 6


class ItemVocabularyTest(tf.test.TestCase):

    def test_maps_ids_to_their_index_and_unknown_ones_to_minus_one(self):
        numbers = steps.ItemVocabulary(np.arange(5) * 10 + 3, 5)
        self.assertEqual(numbers.dtype, tf.int64)
        self.assertAllEqual(numbers.lookup(tf.constant([[43, 3, 44]], tf.int64)),
                            [[4, 0, -1]])
        # Other integer dtypes are cast, strings are unknown to a number map.
        self.assertAllEqual(numbers.lookup(tf.constant([13], tf.int32)), [1])
        self.assertAllEqual(numbers.lookup(tf.constant(["13"])), [-1])
        strings = steps.ItemVocabulary(STRING_IDS, NUM_ITEMS)
        self.assertEqual(strings.dtype, tf.string)
        self.assertAllEqual(strings.lookup(tf.constant([["item-14", "item-15"]])),
                            [[2, -1]])
        self.assertAllEqual(strings.lookup(tf.constant([14], tf.int64)), [-1])

    def test_refuses_a_vocabulary_that_does_not_fit(self):
        with self.assertRaisesRegex(ValueError, r"holds \(4,\) item ids but the model has "
                                    "num_items=5"):
            steps.ItemVocabulary(np.arange(4), 5)
        with self.assertRaisesRegex(ValueError, "repeats an item id"):
            steps.ItemVocabulary([1, 2, 2], 3)
        vocabulary = steps.ItemVocabulary(np.arange(3), 3)
        self.assertIs(steps.ItemVocabulary.of(vocabulary, 3), vocabulary)
        with self.assertRaisesRegex(ValueError, "holds 3 item ids but the model has "
                                    "num_items=4"):
            steps.ItemVocabulary.of(vocabulary, 4)


class StepsTest(tf.test.TestCase, parameterized.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        keras.utils.set_random_seed(4)
        cls.vocabulary = steps.ItemVocabulary(STRING_IDS, NUM_ITEMS)
        cls.models = {"classification": fakes.tiny_model(max_classes=4),
                      "regression": fakes.tiny_model(task="regression",
                                                     num_items=NUM_ITEMS)}
        cls.modules = {"classification": ServingModule(cls.models["classification"]),
                       "regression": ServingModule(cls.models["regression"],
                                                   vocabulary=cls.vocabulary)}
        rng = np.random.default_rng(0)
        cls.items = {
            # 35x35 images: both callers area-resize them to the model's 28.
            "classification": ((rng.random((1, POOL + 2, 35, 35, 1)) > 0.85)
                               .astype(np.float32)),
            "regression": rng.permutation(STRING_IDS)[None, :POOL + 2],
        }

    def backend(self, task):
        vocabulary = self.vocabulary if task == "regression" else None
        return ModelBackend(self.models[task], vocabulary=vocabulary)

    def assert_same(self, eager, traced):
        traced = {key: value.numpy() for key, value in traced.items()}
        self.assertEqual(set(eager), set(traced))
        for key, value in eager.items():
            self.assertEqual(value.dtype, traced[key].dtype, key)
            if value.dtype.kind in "iub":
                self.assertAllEqual(value, traced[key], msg=key)
            else:
                self.assertAllClose(value, traced[key], atol=1e-5, rtol=0, msg=key)

    @parameterized.parameters("classification", "regression")
    def test_eager_steps_answer_as_the_serving_module(self, task):
        backend, module = self.backend(task), self.modules[task]
        pool, queries = self.items[task][:, :POOL], self.items[task][:, POOL:]
        out = backend.call("begin", {"support": pool})
        self.assert_same(out, module.begin(tf.constant(pool)))
        episode = {"embeddings": out["embeddings"], "state": out["state"],
                   "labels": (np.full([1, POOL], -1, np.int32) if task == "classification"
                              else np.zeros([1, POOL], np.float32)),
                   "labeled": np.zeros([1, POOL], np.int32)}
        label = np.array([2], np.int32) if task == "classification" else np.array([4.5],
                                                                                  np.float32)
        for _ in range(2):
            tensors = {key: tf.constant(value) for key, value in episode.items()}
            for k in (1, 3):  # the stepwise argmax and a joint batch
                chosen = backend.call("select", dict(episode, k=np.int32(k)))
                self.assert_same(chosen, module.select(**tensors, k=tf.constant(k)))
                self.assertEqual(chosen["top_k"].shape, (1, k))
                self.assertEqual(len(set(chosen["top_k"][0].tolist())), k)
            index = chosen["index"]
            observed = backend.call("observe", dict(episode, index=index, label=label))
            self.assert_same(observed, module.observe(**tensors, index=tf.constant(index),
                                                      label=tf.constant(label)))
            self.assertEqual(observed["labeled"][0, index[0]], 1)
            episode.update(state=observed["state"], labels=observed["labels"],
                           labeled=observed["labeled"])
        tensors = {key: tf.constant(value) for key, value in episode.items()}
        self.assert_same(backend.call("predict", dict(episode, queries=queries)),
                         module.predict(**tensors, queries=tf.constant(queries)))

    @parameterized.parameters("classification", "regression")
    def test_metadata_describes_the_model_alike(self, task):
        eager = steps.scalars(self.backend(task).call("metadata", {"dummy": 0}))
        served = steps.scalars(self.modules[task].metadata())
        self.assertEqual(set(eager), set(served))
        export_only = {"input_spec", "training_config", "checkpoint", "export_version"}
        for key in set(eager) - export_only:
            self.assertEqual(eager[key], served[key], key)
        self.assertEqual(eager["task"], task)
        self.assertLen(eager["fingerprint"], 32)

    def test_unknown_ids_are_refused_by_both_callers(self):
        pool = np.array([["item-7", "item-8"]])
        with self.assertRaisesRegex(ValueError, r"unknown to the model's vocabulary: "
                                    r"\['item-8'\]"):
            self.backend("regression").call("begin", {"support": pool})
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                    "begin: input `support` holds item ids unknown"):
            self.modules["regression"].begin(tf.constant(pool))


def imported_modules(path):
    """Every module a file imports, at any depth (function-level imports too)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module


def test_the_library_imports_neither_trainers_nor_export():
    offending = []
    for path in glob.glob(os.path.join(REPO, "active_learning", "**", "*.py"),
                          recursive=True):
        offending += [f"{os.path.relpath(path, REPO)}: {name}"
                      for name in imported_modules(path)
                      if name.split(".")[0] in ("trainers", "export")]
    assert not offending, offending


def test_the_import_check_sees_imports_inside_functions(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from export.client import RestClient\n")
    assert list(imported_modules(str(path))) == ["export.client"]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
