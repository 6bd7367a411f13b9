"""Tests of the batched rollout (Algorithm 1) and its metrics.

Rollouts run eagerly on tiny models; one test traces `unroll` under
`tf.function` (as training does) and checks it against the eager run.
"""

import functools
import sys

from absl.testing import parameterized
import keras
import numpy as np
import pytest
import tensorflow as tf

from active_learning import policies
from active_learning import rollout
from active_learning.config import ModelConfig
from active_learning.model import ActiveMatchingNetwork
from tests import fakes

B, P, Q, N, T = 2, 6, 3, 3, 4
NUM_ITEMS = 40
TASKS = ("classification", "regression")
KEYS = ("actions", "log_probs", "entropies", "values", "fast_rewards", "slow_rewards",
        "query_metric", "distinct_labels", "imitation_log_probs")


make_config = fakes.small_config
make_batch = fakes.small_batch


def learned():
    return policies.make_policy("learned")


class RolloutTest(tf.test.TestCase, parameterized.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        keras.utils.set_random_seed(5)
        cls.models = {task: ActiveMatchingNetwork(make_config(task)) for task in TASKS}

    @parameterized.parameters(*TASKS)
    def test_outputs_replay_the_episode(self, task):
        model, batch = self.models[task], make_batch(task)
        out = rollout.unroll(model, batch, learned(), T, tf.constant([1, 2]), imitation=True)
        self.assertSameElements(out.keys(), KEYS + ("final_predictions", "final_state", "embeddings"))
        for key in KEYS:
            self.assertEqual(out[key].shape, (B, T), msg=key)
        self.assertEqual(out["actions"].dtype, tf.int32)
        self.assertEqual(out["final_state"].shape, (B, 32))
        self.assertEqual(out["final_predictions"].shape,
                         (B, Q, 5) if task == "classification" else (B, Q))

        # Replay the chosen actions step by step with the model's own methods.
        episode = rollout.episode_from_batch(batch)
        support_labels = tf.cast(episode.support_labels, model.label_dtype)
        query_labels = tf.cast(episode.query_labels, model.label_dtype)
        emb, state = model.begin(episode.support)
        labels = tf.zeros_like(support_labels)
        labeled = tf.zeros([B, P], tf.bool)
        actions = out["actions"].numpy()
        for t in range(T):
            index = actions[:, t]
            self.assertFalse(labeled.numpy()[np.arange(B), index].any())
            logits = model.select(emb, state, labels, labeled)
            log_p = tf.nn.log_softmax(logits).numpy()
            self.assertAllClose(out["log_probs"][:, t], log_p[np.arange(B), index], atol=1e-5)
            probs = np.exp(log_p)
            entropy = -np.sum(np.where(labeled.numpy(), 0.0, probs * log_p), -1)
            self.assertAllClose(out["entropies"][:, t], entropy, atol=1e-5)
            self.assertAllInRange(out["entropies"][:, t], -1e-6, np.log(P - t) + 1e-5)
            self.assertAllClose(out["values"][:, t], model.value(state), atol=1e-5)
            state, labels, labeled = model.observe(
                emb, state, labels, labeled, index, tf.gather(support_labels, index,
                                                              batch_dims=1))
            unlabeled = ~labeled.numpy()
            fast_ll = model.log_likelihood(model.fast_predict(emb, state, labels, labeled),
                                           support_labels).numpy()
            self.assertAllClose(out["fast_rewards"][:, t],
                                (fast_ll * unlabeled).sum(-1) / unlabeled.sum(-1), atol=1e-5)
            slow = model.predict(emb, state, labels, labeled, episode.queries)
            self.assertAllClose(out["slow_rewards"][:, t],
                                tf.reduce_mean(model.log_likelihood(slow, query_labels), -1),
                                atol=1e-5)
            self.assertAllClose(out["query_metric"][:, t],
                                rollout.query_metric(task, slow, query_labels), atol=1e-5)
            self.assertAllEqual(out["distinct_labels"][:, t],
                                [len(set(support_labels.numpy()[b, actions[b, :t + 1]]))
                                 for b in range(B)])
        self.assertAllClose(out["final_predictions"], slow, atol=1e-5)
        self.assertAllClose(out["final_state"], state, atol=1e-5)
        self.assertAllLessEqual(out["imitation_log_probs"], 1e-6)
        self.assertAllLessEqual(out["log_probs"], 1e-6)

    @parameterized.parameters(*TASKS)
    def test_gradients_reach_every_trainable_variable(self, task):
        model, batch = self.models[task], make_batch(task)
        if task == "regression":
            self.assertIn(model.encoder.table.path,
                          [v.path for v in model.trainable_variables])
        with tf.GradientTape() as tape:
            out = rollout.unroll(model, batch, learned(), T, tf.constant([3, 4]),
                                 imitation=True, training=True)
            loss = tf.reduce_sum(out["fast_rewards"] + out["slow_rewards"]
                                 + 0.3 * out["log_probs"] + out["values"]
                                 + out["imitation_log_probs"])
        grads = tape.gradient(loss, model.trainable_variables)
        dead = []
        for variable, grad in zip(model.trainable_variables, grads):
            if grad is None:
                dead.append(f"{variable.path} (None)")
                continue
            grad = tf.convert_to_tensor(grad).numpy()
            if not np.isfinite(grad).all():
                dead.append(f"{variable.path} (non-finite)")
            elif np.abs(grad).max() < 1e-6:  # rounding noise is not a gradient
                dead.append(f"{variable.path} (max |g| = {np.abs(grad).max():.1e})")
        self.assertEmpty(dead, msg="no useful gradient reaches: " + ", ".join(dead))

    @parameterized.parameters(*TASKS)
    def test_seeds(self, task):
        model, batch = self.models[task], make_batch(task)
        first = rollout.unroll(model, batch, learned(), T, tf.constant([7, 8]))
        again = rollout.unroll(model, batch, learned(), T, tf.constant([7, 8]))
        for key in KEYS:
            self.assertAllEqual(again[key], first[key], msg=key)
        other = rollout.unroll(model, batch, learned(), T, tf.constant([9, 8]))
        self.assertNotAllEqual(other["actions"], first["actions"])

    def test_selection_noise_is_per_episode(self):
        # With `selection_noise`, an episode's rollout is the same whether it
        # runs in a batch or alone (as on another replica), whatever the seed.
        model = self.models["regression"]
        batch = dict(make_batch("regression"))
        batch["selection_noise"] = tf.random.stateless_uniform(
            [B, T, P], seed=[5, 6], minval=1e-7, maxval=1 - 1e-7)
        together = rollout.unroll(model, batch, learned(), T, tf.constant([1, 1]))
        alone = rollout.unroll(model, {k: v[1:] for k, v in batch.items()}, learned(), T,
                               tf.constant([2, 2]))
        self.assertAllEqual(alone["actions"][0], together["actions"][1])
        self.assertAllClose(alone["fast_rewards"][0], together["fast_rewards"][1], atol=1e-5)

    def test_slow_prediction_only_at_the_end(self):
        model, batch = self.models["regression"], make_batch("regression")
        every = rollout.unroll(model, batch, learned(), T, tf.constant([1, 2]))
        last = rollout.unroll(model, batch, learned(), T, tf.constant([1, 2]),
                              slow_every_step=False)
        self.assertAllEqual(last["actions"], every["actions"])
        self.assertAllEqual(last["slow_rewards"][:, :-1], np.zeros((B, T - 1)))
        self.assertTrue(np.isnan(last["query_metric"][:, :-1].numpy()).all())
        self.assertAllClose(last["slow_rewards"][:, -1], every["slow_rewards"][:, -1])
        self.assertAllClose(last["final_predictions"], every["final_predictions"])
        self.assertTrue(np.isfinite(every["query_metric"].numpy()).all())
        # Without imitation the term is zero.
        self.assertAllEqual(every["imitation_log_probs"], np.zeros((B, T)))

    @parameterized.parameters(("classification", 1, True), ("regression", 2, True))
    def test_deferred_rewards_equal_per_step_rewards(self, task, query_batch, slow_every_step):
        # Training computes every step's rewards after the loop, with the
        # steps stacked into the batch; evaluation computes them in the loop.
        model, batch = self.models[task], make_batch(task, seed=2)
        run = functools.partial(rollout.unroll, model, batch, learned(), T, tf.constant([3, 1]),
                                imitation=True, query_batch=query_batch,
                                slow_every_step=slow_every_step)
        deferred, in_loop = run(defer_rewards=True), run(defer_rewards=False)
        self.assertSameElements(deferred.keys(), in_loop.keys())
        self.assertAllEqual(deferred["actions"], in_loop["actions"])
        for key in KEYS:
            self.assertEqual(deferred[key].shape, in_loop[key].shape, msg=key)
            self.assertAllClose(deferred[key], in_loop[key], atol=1e-5, rtol=1e-4, msg=key)
        # ... and the gradients through them agree.
        grads = []
        for defer in (True, False):
            with tf.GradientTape() as tape:
                out = run(defer_rewards=defer)
                loss = tf.reduce_sum(out["fast_rewards"]) + tf.reduce_sum(out["slow_rewards"])
            grads.append(tape.gradient(loss, model.trainable_variables))
        for variable, a, b in zip(model.trainable_variables, *grads):
            if a is None or b is None:
                self.assertIs(a, b, msg=variable.path)
                continue
            # Within 1e-3 of each gradient's scale (float sums in another
            # order; log-likelihoods near 0 amplify them).
            a, b = tf.convert_to_tensor(a).numpy(), tf.convert_to_tensor(b).numpy()
            scale = np.abs(b).max()
            self.assertLessEqual(np.abs(a - b).max(), 1e-3 * scale + 1e-7, msg=variable.path)

    def test_traced_rollout_matches_eager(self):
        model, batch = self.models["regression"], make_batch("regression", seed=1)
        policy = learned()
        steps = 3
        traced = tf.function(lambda b, s: rollout.unroll(model, b, policy, steps, s,
                                                         imitation=True))
        graph = traced(batch, tf.constant([4, 2]))
        eager = rollout.unroll(model, batch, policy, steps, tf.constant([4, 2]),
                               imitation=True)
        self.assertAllEqual(graph["actions"], eager["actions"])
        for key in ("log_probs", "fast_rewards", "slow_rewards", "imitation_log_probs"):
            self.assertAllClose(graph[key], eager[key], atol=1e-4, msg=key)


class MetricTest(tf.test.TestCase):

    def test_distinct_labels(self):
        support = tf.constant([[0, 1, 0, 2, 1, 2],
                               [3, 3, 3, 3, 3, 3],
                               [4, 0, 1, 2, 3, 4]])
        labeled = tf.constant([[True, False, True, False, True, True],   # {0, 1, 2}
                               [True, True, False, False, True, False],  # {3}
                               [False, False, False, False, False, False]])
        self.assertAllEqual(rollout.distinct_labels(support, labeled), [3, 1, 0])
        ratings = tf.constant([[4.0, 4.5, 4.0, 0.5]])
        self.assertAllEqual(rollout.distinct_labels(ratings, tf.constant([[True] * 4])), [3])
        self.assertAllEqual(
            rollout.distinct_labels(ratings, tf.constant([[True, False, True, False]])), [1])

    def test_query_metric(self):
        probs = tf.constant([[[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.6, 0.1]],
                             [[0.2, 0.5, 0.3], [0.9, 0.05, 0.05], [0.0, 0.0, 1.0]]])
        targets = tf.constant([[0, 2, 0], [1, 1, 1]])
        self.assertAllClose(rollout.query_metric("classification", probs, targets),
                            [2 / 3, 1 / 3])
        ratings = tf.constant([[3.0, 4.0, 1.0, 5.0]])
        truth = tf.constant([[4.0, 4.0, 3.0, 5.0]])
        self.assertAllClose(rollout.query_metric("regression", ratings, truth),
                            [np.sqrt((1 + 0 + 4 + 0) / 4)])

    def test_episode_from_batch(self):
        episode = rollout.episode_from_batch(
            {"support": 1, "support_labels": 2, "queries": 3, "query_labels": 4})
        self.assertEqual(tuple(episode), (1, 2, 3, 4))
        with self.assertRaisesRegex(ValueError, "missing \\['support', 'support_labels'"):
            rollout.episode_from_batch({"images": 0, "queries": 3, "query_labels": 4})


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
