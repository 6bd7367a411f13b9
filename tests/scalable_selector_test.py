"""Tests of the scalable selector features (`layers/selection_index.py`).

The exact selector (`selector.similarity_features`, the full cosine matrix)
is the reference: the scalable features must equal it wherever they claim to
be exact, everywhere when the neighbour lists hold the whole pool, and a
model built with `selector_features="scalable"` must select as the exact
model with the same weights does.
"""

import dataclasses
import json
import sys
import tempfile
from unittest import mock

from absl.testing import parameterized
import keras
import numpy as np
import pytest
import tensorflow as tf

from active_learning import policies
from active_learning import rollout
from active_learning.config import ModelConfig
from active_learning.layers import clustered_index
from active_learning.layers import masked
from active_learning.layers import selection_index as index_lib
from active_learning.layers import selector as selector_lib
from active_learning.model import ActiveMatchingNetwork
from tests import fakes

TEMPERATURES = (0.1, 0.3)
# Float32 error of the exact parts, measured on pools like these (P <= 300,
# D = 8, full lists): at most 1.5e-6 (the labelled masses, a softmax
# re-associated as exp(cos / t - log Z)); 1e-5 leaves a margin without
# hiding a wrong term, whose error would be of the order of a cosine / P or
# of one item's mass. (The mean to the uncovered items cancelled to 8e-6 at
# P = 300 before the index kept its sum of units in float64.)
ATOL = 1e-5
# Feature columns: max/mean/min to covered, max/mean/min to uncovered, masses.
EXACT_COLUMNS = [0, 1, 2, 4, 6, 7]
MAX_OPEN, MIN_OPEN = 3, 5


def _embeddings(batch, pool, dim=8, seed=0):
    return tf.constant(np.random.default_rng(seed).normal(size=(batch, pool, dim)),
                       tf.float32)


def _masks(batch, pool, seed=0):
    """Named masks [B, P]: empty, random, all but one, all, one labelled."""
    rng = np.random.default_rng(seed)
    all_but_one = np.ones((batch, pool), bool)
    all_but_one[np.arange(batch), rng.integers(0, pool, batch)] = False
    one = np.zeros((batch, pool), bool)
    one[np.arange(batch), rng.integers(0, pool, batch)] = True
    # Episodes of one batch with different counts (the covered-item gather pads).
    mixed = np.stack([rng.random(pool) < p for p in np.linspace(0.1, 0.9, batch)])
    return {"empty": np.zeros((batch, pool), bool), "random": rng.random((batch, pool)) < 0.4,
            "mixed": mixed, "all_but_one": all_but_one, "all": np.ones((batch, pool), bool),
            "one": one}


def _both(embeddings, covered, neighbours, chunk=5):
    exact = selector_lib.similarity_features(masked.cosine_matrix(embeddings),
                                             tf.constant(covered), TEMPERATURES)
    index = index_lib.selection_index(embeddings, TEMPERATURES, neighbours=neighbours,
                                      chunk=chunk)
    scalable = index_lib.scalable_similarity_features(embeddings, index,
                                                      tf.constant(covered), TEMPERATURES)
    return exact.numpy(), scalable.numpy(), index


class FeaturesTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters("empty", "random", "mixed", "all_but_one", "all", "one")
    def test_exact_parts_equal_the_exact_path(self, mask):
        embeddings = _embeddings(3, 23, seed=1)
        covered = _masks(3, 23, seed=2)[mask]
        exact, scalable, index = _both(embeddings, covered, neighbours=3)
        self.assertEqual(scalable.shape, exact.shape)
        self.assertAllClose(scalable[..., EXACT_COLUMNS], exact[..., EXACT_COLUMNS],
                            atol=ATOL, rtol=0)
        # Max (min) to the uncovered items: exact wherever the top (bottom)
        # list holds an uncovered item; otherwise a bound on the true value.
        for column, lists, bound in ((MAX_OPEN, index.top_indices, np.greater_equal),
                                     (MIN_OPEN, index.bottom_indices, np.less_equal)):
            lists = lists.numpy()
            listed_open = ~np.take_along_axis(covered[:, None, :].repeat(23, 1), lists, 2)
            found = listed_open.any(-1)
            self.assertAllClose(scalable[..., column][found], exact[..., column][found],
                                atol=ATOL, rtol=0)
            has_open = (~covered).sum(-1, keepdims=True) - ~covered > 0
            approximated = ~found & has_open
            self.assertTrue(np.all(bound(scalable[..., column][approximated],
                                         exact[..., column][approximated]
                                         + (-ATOL if bound is np.greater_equal else ATOL))))
            self.assertAllEqual(scalable[..., column][~has_open],
                                np.zeros(np.sum(~has_open)))
        if mask == "random":
            # The lists are short enough that some items use the bound.
            self.assertNotAllClose(scalable[..., MAX_OPEN], exact[..., MAX_OPEN])

    @parameterized.parameters((12, 13), (13, 60), (60, 100))
    def test_full_lists_give_every_feature_exactly(self, pool, neighbours):
        embeddings = _embeddings(2, pool + 1 if pool == 60 else pool, seed=pool)
        pool = embeddings.shape[1]
        for name, covered in _masks(2, pool, seed=pool).items():
            exact, scalable, _ = _both(embeddings, covered, neighbours=neighbours)
            self.assertAllClose(scalable, exact, atol=ATOL, rtol=0, msg=name)

    def test_a_pool_of_one_item(self):
        # Every feature is over an empty set: 0. (A labelled single item has
        # nothing to select; there the exact path's softmax over no other
        # item degenerates to the item itself.)
        embeddings = _embeddings(2, 1)
        exact, scalable, _ = _both(embeddings, np.array([[False], [False]]), neighbours=4)
        self.assertAllEqual(scalable, np.zeros_like(scalable))
        self.assertAllClose(scalable, exact, atol=ATOL, rtol=0)

    def test_chunked_index_equals_unchunked(self):
        embeddings = _embeddings(2, 29, seed=3)
        whole = index_lib.selection_index(embeddings, TEMPERATURES, neighbours=6, chunk=64)
        for chunk in (1, 4, 7):  # 29 is a multiple of none of them
            chunked = index_lib.selection_index(embeddings, TEMPERATURES, neighbours=6,
                                                chunk=chunk)
            self.assertAllEqual(chunked.top_indices, whole.top_indices, msg=chunk)
            self.assertAllEqual(chunked.bottom_indices, whole.bottom_indices, msg=chunk)
            self.assertAllClose(chunked.log_normalisers, whole.log_normalisers, atol=ATOL)
        self.assertEqual(whole.top_indices.shape, (2, 29, 6))
        self.assertEqual(whole.log_normalisers.shape, (2, 29, 2))
        # No item is its own neighbour, and the lists are ordered by cosine.
        positions = np.arange(29)[None, :, None]
        self.assertFalse(np.any(whole.top_indices.numpy() == positions))
        self.assertFalse(np.any(whole.bottom_indices.numpy() == positions))
        cosine = masked.cosine_matrix(embeddings).numpy()
        top = np.take_along_axis(cosine, whole.top_indices.numpy(), 2)
        self.assertTrue(np.all(np.diff(top, axis=-1) <= 0))

    def test_normaliser_is_stable_at_a_low_temperature(self):
        # exp(cos / 0.001) overflows float32; the index keeps log Z instead.
        embeddings = _embeddings(1, 9, seed=4)
        covered = np.array([[True, False, True, False, False, False, False, False, False]])
        exact = selector_lib.similarity_features(masked.cosine_matrix(embeddings),
                                                 tf.constant(covered), (0.001,))
        index = index_lib.selection_index(embeddings, (0.001,), neighbours=8, chunk=4)
        scalable = index_lib.scalable_similarity_features(embeddings, index,
                                                          tf.constant(covered), (0.001,))
        self.assertTrue(np.all(np.isfinite(scalable.numpy())))
        self.assertAllClose(scalable, exact, atol=1e-4, rtol=0)

    def test_one_episode_and_a_batch_give_the_same_features(self):
        # One episode's products take `plain_matmul`, a batch's the batched
        # matmul (`_dot_rows`): both must give the exact path's features.
        embeddings = _embeddings(3, 23, seed=4)
        covered = _masks(3, 23, seed=6)["mixed"]
        _, batched, _ = _both(embeddings, covered, neighbours=22)
        for b in range(3):
            exact, alone, _ = _both(embeddings[b:b + 1], covered[b:b + 1], neighbours=22)
            self.assertAllClose(alone, exact, atol=ATOL, rtol=0)
            self.assertAllClose(alone[0], batched[b], atol=ATOL, rtol=0)

    @parameterized.parameters(1, 2)
    def test_gradient_equals_the_exact_paths(self, batch):
        # Without labelled masses (whose log Z is held constant) and with
        # full lists, the features differentiate as the exact ones do.
        embeddings = _embeddings(batch, 11, seed=6)
        covered = tf.constant(_masks(batch, 11, seed=6)["random"])
        weights = tf.constant(np.random.default_rng(7).normal(size=6), tf.float32)
        index = index_lib.selection_index(embeddings, neighbours=10, chunk=4)
        gradients = []
        for features in (
                lambda e: selector_lib.similarity_features(masked.cosine_matrix(e), covered),
                lambda e: index_lib.scalable_similarity_features(e, index, covered)):
            with tf.GradientTape() as tape:
                tape.watch(embeddings)
                total = tf.reduce_sum(features(embeddings) * weights)
            gradients.append(tape.gradient(total, embeddings))
        self.assertGreater(float(tf.reduce_max(tf.abs(gradients[0]))), 0.1)
        self.assertAllClose(gradients[1], gradients[0], atol=1e-4)

    def test_bad_arguments_name_the_fix(self):
        with self.assertRaisesRegex(ValueError, "neighbours and chunk must be >= 1"):
            index_lib.selection_index(_embeddings(1, 3), chunk=0)
        with self.assertRaisesRegex(ValueError, "features must be one of"):
            selector_lib.Selector(8, 8, features="fast")
        layer = selector_lib.Selector(8, 8, features="scalable")
        with self.assertRaisesRegex(ValueError, "needs the episode's selection index"):
            layer(_embeddings(1, 3), tf.zeros([1, 8]), None, tf.constant([[True, False, False]]))


class ModelTest(tf.test.TestCase, parameterized.TestCase):

    def _pair(self, task, **overrides):
        keras.utils.set_random_seed(3)
        exact = ActiveMatchingNetwork(fakes.small_config(task, **overrides))
        scalable = ActiveMatchingNetwork(dataclasses.replace(
            exact.config, selector_features="scalable", selector_neighbours=fakes.P,
            selection_chunk=4))
        scalable.set_weights(exact.get_weights())
        return exact, scalable

    @parameterized.parameters(("classification", TEMPERATURES), ("regression", ()))
    def test_same_logits_and_gradients_reach_every_selector_variable(self, task, temps):
        exact, scalable = self._pair(task, labelled_mass_temperatures=temps)
        support, _, _, _ = fakes.small_episode(task)
        embeddings, state = exact.begin(support)
        labels = tf.zeros(embeddings.shape[:2], exact.label_dtype)
        covered = _masks(fakes.B, fakes.P, seed=5)
        pending = tf.constant([[False] * (fakes.P - 1) + [True]] * fakes.B)
        for name, labeled in covered.items():
            labeled = tf.constant(labeled)
            if name == "all":
                continue  # nothing left to select
            for extra in ({}, {"pending": tf.logical_and(pending, tf.logical_not(labeled))}):
                want = exact.select(embeddings, state, labels, labeled, **extra)
                index = scalable.selection_index(embeddings)
                got = scalable.select(embeddings, state, labels, labeled, index=index, **extra)
                self.assertAllClose(got, want, atol=1e-4, rtol=1e-5, msg=name)
                # The index is computed when not given.
                self.assertAllClose(scalable.select(embeddings, state, labels, labeled,
                                                    **extra), got, atol=1e-6, msg=name)
        self.assertIsNone(exact.selection_index(embeddings))

        labeled = tf.constant(covered["random"])
        with tf.GradientTape() as tape:
            embeddings, state = scalable.begin(support)
            logits = scalable.select(embeddings, state, labels, labeled)
            loss = tf.reduce_sum(tf.where(labeled, 0.0, tf.nn.log_softmax(logits)))
        variables = scalable.selector.trainable_variables + scalable.encoder.trainable_variables
        gradients = [tf.convert_to_tensor(g) if g is not None else None
                     for g in tape.gradient(loss, variables)]
        for variable, gradient in zip(variables, gradients):
            self.assertIsNotNone(gradient, msg=variable.path)
            self.assertTrue(np.all(np.isfinite(gradient.numpy())), msg=variable.path)
        for variable, gradient in zip(scalable.selector.trainable_variables, gradients):
            self.assertGreater(float(tf.reduce_max(tf.abs(gradient))), 0.0, msg=variable.path)

    def test_rounds_and_rollouts_pick_as_the_exact_model(self):
        exact, scalable = self._pair("classification")
        batch = fakes.small_batch("classification")
        for query_batch in (1, 2):
            outs = [rollout.unroll(m, batch, policies.make_policy("greedy"), 4,
                                   tf.constant([1, 2]), query_batch=query_batch)
                    for m in (exact, scalable)]
            self.assertAllEqual(outs[1]["actions"], outs[0]["actions"])
            self.assertAllClose(outs[1]["log_probs"], outs[0]["log_probs"], atol=1e-4)
        traced = tf.function(lambda b, s: rollout.unroll(
            scalable, b, policies.make_policy("greedy"), 4, s))
        eager = rollout.unroll(exact, batch, policies.make_policy("greedy"), 4,
                               tf.constant([1, 2]))
        self.assertAllEqual(traced(batch, tf.constant([1, 2]))["actions"], eager["actions"])

    def test_serving_signatures(self):
        # `select` rebuilds the index at each call; `selection_index` +
        # `select_indexed` build it once. All three answer as the in-memory
        # model, through a saved and loaded SavedModel too.
        from active_learning import steps  # noqa: PLC0415
        from export.serving import (  # noqa: PLC0415
            EXTRA_SIGNATURES, SCALABLE_SIGNATURES, ServingModule)
        exact, scalable = self._pair("classification")
        with self.assertRaisesRegex(ValueError, "selector_features='scalable'"):
            ServingModule(exact).selection_index(tf.zeros([1, 3, 16]))
        module = ServingModule(scalable)
        support, labels, _, _ = fakes.small_episode("classification")
        support = tf.cast(support > 0.8, tf.float32)  # ink drawings, as served
        begun = module.begin(support)
        self.assertSameElements(begun.keys(), ("embeddings", "state"))
        labeled = np.zeros((fakes.B, fakes.P), np.int32)
        labeled[:, 0] = 1
        known = np.where(labeled == 1, labels.numpy(), -1).astype(np.int32)
        episode = (begun["embeddings"], begun["state"], tf.constant(known),
                   tf.constant(labeled), tf.constant(2))
        eager = steps.select(scalable, *episode)
        index = module.selection_index(begun["embeddings"])
        self.assertEqual(index["top"].shape, (fakes.B, fakes.P, fakes.P - 1))
        path = tempfile.mkdtemp(dir=self.get_temp_dir())
        tf.saved_model.save(module, path, signatures=module.signatures())
        loaded = tf.saved_model.load(path).signatures
        self.assertSameElements(loaded.keys(), ("begin", "select", "observe", "predict",
                                                "metadata") + EXTRA_SIGNATURES
                                + SCALABLE_SIGNATURES)
        names = ("embeddings", "state", "labels", "labeled", "k")
        loaded_index = loaded["selection_index"](embeddings=begun["embeddings"])
        for answer in (module.select(*episode), module.select_indexed(*episode, *index.values()),
                       loaded["select_indexed"](**dict(zip(names, episode)), **loaded_index)):
            self.assertAllClose(answer["probabilities"], eager["probabilities"], atol=1e-6)
            self.assertAllEqual(answer["top_k"], eager["top_k"])
        # `begin_compiled`: the context encoder under XLA, `begin` up to
        # float rounding (measured 3e-7 here; 1.1e-6 over 20,000 Omniglot
        # drawings with trained weights), behind the same input checks.
        with self.assertRaisesRegex(ValueError, "selector_features='scalable'"):
            ServingModule(exact).begin_compiled(support)
        compiled = loaded["begin_compiled"](support=support)
        for key in ("embeddings", "state"):
            self.assertAllClose(compiled[key], begun[key], atol=1e-5)
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                    "begin_compiled: input `support` holds NaN"):
            loaded["begin_compiled"](support=support * np.nan)
        for name, bad, message in (
                ("top", index["top"] + fakes.P, "`top` must hold item positions in 0..pool-1"),
                ("bottom", index["bottom"][:, :, :2], "`bottom` must be \\[batch, pool, k\\]"),
                ("log_normalisers", index["log_normalisers"] * np.nan,
                 "`log_normalisers` holds NaN")):
            with self.assertRaisesRegex(tf.errors.InvalidArgumentError, message):
                module.select_indexed(*episode, **{**index, name: bad})
        # `observe_select`: `observe`, then `select` with k = 1 on the new
        # state, in one call: the two steps' answers, the same pick.
        with self.assertRaisesRegex(ValueError, "selection index .* for a scalable model"):
            ServingModule(exact).observe_select(*episode[:4], [1] * fakes.B, [0] * fakes.B,
                                                *index.values())
        item = tf.constant([1] * fakes.B)
        label = tf.constant(labels.numpy()[:, 1].astype(np.int32))
        observed = steps.observe(scalable, *episode[:4], item, label)
        following = steps.select(scalable, begun["embeddings"], observed["state"],
                                 observed["labels"], observed["labeled"], tf.constant(1))
        inputs = dict(zip(names, episode[:4]), index=item, label=label)
        for answer in (module.observe_select(*episode[:4], item, label, *index.values()),
                       loaded["observe_select"](**inputs, **loaded_index)):
            self.assertSameElements(answer.keys(), ("state", "labels", "labeled",
                                                    "probabilities", "index"))
            self.assertAllClose(answer["state"], observed["state"], atol=1e-5)
            for key in ("labels", "labeled", "index"):
                expected = observed[key] if key != "index" else following["index"]
                self.assertAllEqual(answer[key], expected)
            self.assertAllClose(answer["probabilities"], following["probabilities"],
                                atol=1e-5)
        full = np.ones_like(labeled)
        full[:, 1] = 0
        for bad, message in (
                (dict(index=tf.constant([0] * fakes.B)), "observe_select: input `index` names "
                 "an item that is already labelled"),
                (dict(labeled=tf.constant(full), labels=tf.constant(np.where(
                    full == 1, labels.numpy(), -1).astype(np.int32))),
                 "observe_select: every episode must keep an unlabelled item"),
                (dict(top=loaded_index["top"] - fakes.P), "observe_select: input `top` must "
                 "hold item positions")):
            with self.assertRaisesRegex(tf.errors.InvalidArgumentError, message):
                loaded["observe_select"](**{**inputs, **loaded_index, **bad})

    def test_config(self):
        for values, message in ((dict(selector_features="fast"), "selector_features must be"),
                                (dict(selector_neighbours=0), "selector_neighbours must be"),
                                (dict(selection_chunk=0), "selection_chunk must be")):
            with self.assertRaisesRegex(ValueError, message):
                ModelConfig(**values)
        # A model that does not use the fields keeps its JSON (and with it its
        # fingerprint and the exported model_config) as before they existed.
        self.assertNotIn("selector_features", json.loads(ModelConfig().to_json()))
        self.assertNotIn("selection_chunk", json.loads(ModelConfig().to_json()))
        scalable = ModelConfig(selector_features="scalable", selector_neighbours=8)
        values = json.loads(scalable.to_json())
        self.assertEqual((values["selector_features"], values["selector_neighbours"]),
                         ("scalable", 8))
        self.assertEqual(ModelConfig.from_json(scalable.to_json()), scalable)


def _clustered_pool(pool, centres=40, dim=16, noise=0.05, seed=0):
    """Unit vectors `[1, P, D]` around `centres` well-separated directions."""
    rng = np.random.default_rng(seed)
    middle = rng.normal(size=(centres, dim))
    x = middle[rng.integers(0, centres, pool)] + noise * rng.normal(size=(pool, dim))
    return index_lib.unit_vectors(tf.constant(x[None], tf.float32))


class ClusteredIndexTest(tf.test.TestCase):
    """The clustered approximation of large pools (`layers/clustered_index.py`)."""

    def _both(self, units, **kwargs):
        got = clustered_index.clustered_selection_index(units, TEMPERATURES, 8, **kwargs)
        want = index_lib.exact_selection_index(units, TEMPERATURES, 8, chunk=256)
        return [t.numpy()[0] for t in got], [t.numpy()[0] for t in want]

    def test_lists_are_valid_and_close_to_the_exact_ones(self):
        pool = 1500
        units = _clustered_pool(pool)
        (log_z, top, bottom), (want_z, want_top, want_bottom) = self._both(
            units, block_size=32, probes=8, representatives=4)
        u = units.numpy()[0]
        for lists in (top, bottom):
            self.assertEqual(lists.shape, (pool, 8))
            self.assertTrue(np.all((lists >= 0) & (lists < pool)))
            self.assertFalse(np.any(lists == np.arange(pool)[:, None]))  # never itself
        cos_top = np.einsum("pd,pkd->pk", u, u[top])
        cos_bottom = np.einsum("pd,pkd->pk", u, u[bottom])
        self.assertTrue(np.all(np.diff(cos_top, axis=1) <= 1e-6))      # most similar first
        self.assertTrue(np.all(np.diff(cos_bottom, axis=1) >= -1e-6))  # least similar first
        # The nearest neighbour found is within 0.01 of the true one's cosine
        # for nearly every item (seeds 0-2: 99.7-99.9%; the true one itself
        # 87-92%: the rest are near-ties inside a cluster). The few misses
        # are items cut off from their cluster by a block boundary.
        gap = np.einsum("pd,pd->p", u, u[want_top[:, 0]]) - cos_top[:, 0]
        self.assertGreater(np.mean(gap < 0.01), 0.99)
        self.assertGreater(np.mean(gap <= 1e-6), 0.8)
        worst = np.einsum("pd,pd->p", u, u[want_bottom[:, 0]])
        self.assertLess(np.median(cos_bottom[:, 0] - worst), 0.05)
        # The normalisers: stratified samples of the far blocks (median error
        # 0.010-0.012 at t = 0.3, 0.001 at t = 0.1).
        self.assertLess(np.median(np.abs(log_z - want_z)), 0.05)
        self.assertTrue(np.all(np.isfinite(log_z)))

    def test_large_pools_get_the_clustered_index(self):
        units = _clustered_pool(600)
        small = index_lib.selection_index(units, TEMPERATURES, neighbours=8)
        exact = index_lib.exact_selection_index(units, TEMPERATURES, neighbours=8)
        self.assertAllEqual(small.top_indices, exact.top_indices)
        with mock.patch.object(index_lib, "EXACT_MAX_POOL", 500):
            def index(u):
                return index_lib.selection_index(u, TEMPERATURES, neighbours=8)

            # Eager (static pool size) and traced for any size (in-graph cond).
            for fn in (index, tf.function(index, input_signature=[
                    tf.TensorSpec([None, None, 16])])):
                got = fn(units)
                want = clustered_index.clustered_selection_index(units, TEMPERATURES, 8)
                # Traced and eager cosines may order near-ties differently:
                # the lists' cosines agree.
                u = units.numpy()[0]
                for lists, wanted in ((got.top_indices, want[1]),
                                      (got.bottom_indices, want[2])):
                    self.assertAllClose(np.einsum("pd,pkd->pk", u, u[lists.numpy()[0]]),
                                        np.einsum("pd,pkd->pk", u, u[wanted.numpy()[0]]),
                                        atol=1e-5)
                self.assertAllClose(got.log_normalisers, want[0], atol=1e-4)

    def test_begin_encodes_large_pools_in_chunks_as_at_once(self):
        from active_learning import model as model_lib  # noqa: PLC0415
        model = ActiveMatchingNetwork(fakes.small_config("classification"))
        support, _, _, _ = fakes.small_episode("classification")
        whole = model.begin(support)
        with mock.patch.object(model_lib, "ENCODE_CHUNK", 3):
            chunked = model.begin(support)
            traced = tf.function(model.begin, input_signature=[
                tf.TensorSpec([None, None] + support.shape[2:].as_list())])(support)
        for got in (chunked, traced):
            self.assertAllClose(got[0], whole[0], atol=1e-5)
            self.assertAllClose(got[1], whole[1], atol=1e-5)


def _scalable_session_inputs(seed):
    """(a small scalable model, its ink-image pool `[P, ...]`, labels `[1, P]`)."""
    keras.utils.set_random_seed(seed)
    config = dataclasses.replace(fakes.small_config("classification"),
                                 selector_features="scalable", selector_neighbours=4)
    support, labels, _, _ = fakes.small_episode("classification")
    return (ActiveMatchingNetwork(config), tf.cast(support[0] > 0.8, tf.float32).numpy(),
            labels)


class SessionTest(tf.test.TestCase):

    def test_a_session_builds_the_index_once_and_picks_as_plain_select(self):
        from active_learning.backends import ModelBackend  # noqa: PLC0415
        from active_learning.session import ActiveSession  # noqa: PLC0415
        model, pool, labels = _scalable_session_inputs(seed=3)
        calls = []

        class Counting(ModelBackend):
            def call(self, name, inputs):
                calls.append(name)
                return super().call(name, inputs)

        indexed = ActiveSession(Counting(model), pool, seed=1)
        plain_backend = ModelBackend(model)
        self.assertTrue(plain_backend.scalable)
        plain_backend.scalable = False  # `select`, which rebuilds the index each call
        plain = ActiveSession(plain_backend, pool, seed=1)
        for step in range(4):
            picks = [s.query(k=1 + step % 2) for s in (indexed, plain)]
            self.assertAllEqual(picks[0], picks[1])
            for s in (indexed, plain):
                s.teach(picks[0], labels.numpy()[0][picks[0]])
        # A teach ends with `observe_select` (the label and the next pick in
        # one call) while an item is left to ask, so a single query
        # after it needs no call; k = 2 queries still `select_indexed`. The
        # last teach labels the sixth and last item: plain `observe`.
        self.assertEqual(len(pool), 6)
        self.assertEqual(calls.count("selection_index"), 1)
        self.assertEqual(calls.count("select"), 0)
        self.assertEqual(calls.count("select_indexed"), 3)
        self.assertEqual((calls.count("observe_select"), calls.count("observe")), (3, 3))

    def test_a_saved_model_session_uses_the_index_and_asks_as_in_memory(self):
        from active_learning.session import ActiveSession  # noqa: PLC0415
        from export.saved_model import export_saved_model  # noqa: PLC0415
        model, pool, labels = _scalable_session_inputs(seed=4)
        path = export_saved_model(model, self.get_temp_dir(), version=1)
        sessions = [ActiveSession(model, pool, seed=2), ActiveSession(path, pool, seed=2)]
        self.assertTrue(all(s._backend.scalable for s in sessions))
        for _ in range(3):
            picks = [s.query() for s in sessions]
            self.assertAllEqual(picks[1], picks[0])
            for s in sessions:
                s.teach(picks[0], labels.numpy()[0][picks[0]])
        self.assertAllClose(sessions[1].probabilities(), sessions[0].probabilities(), atol=1e-5)
        self.assertIsNotNone(sessions[1]._index)

    def test_large_pools_begin_compiled_in_process_and_ask_as_plain_begin(self):
        from active_learning import session as session_lib  # noqa: PLC0415
        from active_learning.backends import SavedModelBackend  # noqa: PLC0415
        from export.saved_model import export_saved_model  # noqa: PLC0415
        model, pool, labels = _scalable_session_inputs(seed=5)
        path = export_saved_model(model, self.get_temp_dir(), version=1)
        calls = []

        class Counting(SavedModelBackend):
            def call(self, name, inputs):
                calls.append(name)
                return super().call(name, inputs)

        plain = session_lib.ActiveSession(Counting(path), pool, seed=2)
        self.assertEqual(calls.count("begin"), 1)
        with mock.patch.object(session_lib, "COMPILED_BEGIN_MIN_POOL", len(pool)):
            compiled = [session_lib.ActiveSession(model, pool, seed=2),
                        session_lib.ActiveSession(Counting(path), pool, seed=2)]
        self.assertEqual((calls.count("begin"), calls.count("begin_compiled")), (1, 1))
        for session in compiled:
            self.assertTrue(session._backend.compiled_begin)
            self.assertAllClose(session._embeddings, plain._embeddings, atol=1e-5)
        sessions = [plain] + compiled
        for _ in range(3):
            picks = [s.query() for s in sessions]
            for pick in picks[1:]:
                self.assertAllEqual(pick, picks[0])
            for s in sessions:
                s.teach(picks[0], labels.numpy()[0][picks[0]])


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
