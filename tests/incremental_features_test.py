"""The selector's item-item features kept up to date label by label
(`layers.incremental_features`) against the reference that recomputes them
from the whole cosine matrix (`selector.similarity_features`): values,
gradients, and a training rollout built on them."""

import functools
import sys

from absl.testing import parameterized
import keras
import numpy as np
import pytest
import tensorflow as tf

from active_learning import policies
from active_learning import rollout
from active_learning.layers import incremental_features as inc
from active_learning.layers import selector as selector_lib
from active_learning.layers.masked import cosine_matrix
from active_learning.model import ActiveMatchingNetwork
from tests import fakes

# (batch, pool, labels, temperatures): a list shorter than the pool, one as
# long as it (labels >= pool - 1, the last selection has one item left), no
# labelled masses, and the 20-way training shape's ratio of labels to pool.
CASES = ((3, 12, 5, (0.1, 0.3)), (2, 6, 6, (0.2,)), (2, 5, 4, ()), (2, 40, 30, (0.1, 0.3)))


def _episode(batch, pool, steps, temperatures, seed):
    rng = np.random.RandomState(seed)
    points = tf.constant(rng.randn(batch, pool, 8), tf.float32)
    picks = tf.constant(np.stack([rng.permutation(pool)[:steps] for _ in range(batch)]),
                        tf.int32)
    return points, picks


def _reference(points, picks, temperatures):
    """`[T, B, P, F]` features and `[T, B, P]` unlabelled masks, step by step."""
    cosine = cosine_matrix(points)
    attention = selector_lib.mass_attention(cosine, temperatures) if temperatures else None
    pool = points.shape[1]
    labeled = tf.zeros(picks.shape[:1] + (pool,), tf.bool)
    out, open_items = [], []
    for t in range(picks.shape[1]):
        out.append(selector_lib.similarity_features(cosine, labeled, temperatures, attention))
        open_items.append(tf.logical_not(labeled))
        labeled = tf.logical_or(labeled, tf.one_hot(picks[:, t], pool, on_value=True,
                                                    off_value=False, dtype=tf.bool))
    return tf.stack(out), tf.stack(open_items)


def _pick_order(points, picks, temperatures):
    cosine = cosine_matrix(points)
    attention = selector_lib.mass_attention(cosine, temperatures) if temperatures else None
    lists = inc.neighbour_lists(cosine, inc.list_depth(picks.shape[1], points.shape[1]))
    return inc.pick_order_features(cosine, picks, lists, attention)


class IncrementalFeaturesTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters(*CASES)
    def test_both_forms_equal_the_reference_on_unlabelled_items(self, batch, pool, steps,
                                                                temperatures):
        points, picks = _episode(batch, pool, steps, temperatures, seed=pool)
        reference, open_items = _reference(points, picks, temperatures)
        cosine = cosine_matrix(points)
        attention = selector_lib.mass_attention(cosine, temperatures) if temperatures else None
        lists = inc.neighbour_lists(cosine, inc.list_depth(steps, pool))
        running = inc.start(cosine, attention)
        labeled = tf.zeros([batch, pool], tf.bool)
        stepwise = []
        for t in range(steps):
            stepwise.append(inc.features(running, lists, labeled))
            running = inc.add(running, cosine, picks[:, t], attention)
            labeled = tf.logical_or(labeled, tf.one_hot(picks[:, t], pool, on_value=True,
                                                        off_value=False, dtype=tf.bool))
        all_steps = _pick_order(points, picks, temperatures)
        width = selector_lib.NUM_SIMILARITY_FEATURES + len(temperatures)
        self.assertEqual(all_steps.shape, (steps, batch, pool, width))
        mask = open_items.numpy()
        for name, got in (("stepwise", tf.stack(stepwise)), ("pick order", all_steps)):
            diff = np.abs(got.numpy() - reference.numpy())[mask]
            # Float sums in another order: measured <= 2.4e-7 on cosines of 8-d points.
            self.assertLess(diff.max(), 2e-6, msg=name)
        # A wrong neighbour list or labelled set would move the extrema by
        # far more: the features vary across items and steps.
        self.assertGreater(np.abs(np.diff(reference.numpy()[..., 0], axis=0)).max(), 1e-2)

    @parameterized.parameters(*CASES)
    def test_gradients_equal_the_reference(self, batch, pool, steps, temperatures):
        points, picks = _episode(batch, pool, steps, temperatures, seed=pool + 1)
        weights = tf.constant(np.random.RandomState(3).randn(
            selector_lib.NUM_SIMILARITY_FEATURES + len(temperatures)), tf.float32)
        grads = []
        for features in (lambda p: _reference(p, picks, temperatures),
                         lambda p: (_pick_order(p, picks, temperatures), None)):
            with tf.GradientTape() as tape:
                tape.watch(points)
                values, _ = features(points)
                # Only unlabelled items' features reach a loss (the selector
                # masks labelled items' logits).
                _, open_items = _reference(points, picks, temperatures)
                loss = tf.reduce_sum(tf.where(open_items, tf.linalg.matvec(values, weights), 0.0))
            grads.append(tape.gradient(loss, points).numpy())
        scale = np.abs(grads[0]).max()
        self.assertGreater(scale, 1e-3)
        self.assertLess(np.abs(grads[0] - grads[1]).max(), 1e-4 * scale)


class IncrementalRolloutTest(tf.test.TestCase, parameterized.TestCase):
    """Training's rollout (deferred selection scores) with the features kept
    up to date against the same rollout recomputing them at every step."""

    @parameterized.parameters((4,), (fakes.P,))
    def test_rollout_scores_and_gradients_equal_the_reference(self, steps):
        keras.utils.set_random_seed(7)
        model = ActiveMatchingNetwork(fakes.small_config("classification"))
        batch = fakes.small_batch("classification", seed=4)
        run = functools.partial(rollout.unroll, model, batch, policies.make_policy("learned"),
                                steps, tf.constant([5, 2]), imitation=True, training=True)
        keys = ("log_probs", "entropies", "values", "imitation_log_probs", "fast_rewards")
        outputs, grads = [], []
        for incremental in (True, False):
            with tf.GradientTape() as tape:
                out = run(incremental=incremental)
                loss = sum(tf.reduce_sum(out[k]) for k in keys)
            outputs.append(out)
            grads.append(tape.gradient(loss, model.trainable_variables))
        fast, reference = outputs
        self.assertAllEqual(fast["actions"], reference["actions"])
        for key in keys:
            self.assertAllClose(fast[key], reference[key], atol=1e-5, rtol=1e-5, msg=key)
        selector_variables = 0
        for variable, a, b in zip(model.trainable_variables, *grads):
            self.assertEqual(a is None, b is None, msg=variable.path)
            if a is None:
                continue
            a, b = tf.convert_to_tensor(a).numpy(), tf.convert_to_tensor(b).numpy()
            scale = np.abs(b).max()
            self.assertLessEqual(np.abs(a - b).max(), 1e-4 * scale + 1e-7, msg=variable.path)
            selector_variables += "selector" in variable.path and scale > 0
        # The selector learns through the deferred pass in both.
        self.assertGreater(selector_variables, 0)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
