"""The contract every selection policy keeps, and each heuristic's own rule.

The contract (parameterised over `policies.POLICY_NAMES` and both tasks): a
choice is one int32 index per episode, never an item already labelled, the
same for the same seed (or the same `noise`), and a whole rollout never
chooses an item twice. Everything runs eagerly on tiny models.
"""

import dataclasses
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
from active_learning.layers.masked import cosine_matrix
from active_learning.model import ActiveMatchingNetwork
from tests import fakes

B, P, Q, N = 2, 6, 3, 3
NUM_ITEMS = 40
TASKS = ("classification", "regression")
ITEM_SCORES = np.random.RandomState(7).uniform(0.0, 5.0, NUM_ITEMS).astype(np.float32)


make_config = fakes.small_config
make_batch = fakes.small_batch


def make_policy(name, task):
    scores = ITEM_SCORES if name == "popular_entropy" else None
    return policies.make_policy(name, task, item_scores=scores)


def random_labeled(rng, n_labeled, batch=B, pool=P):
    labeled = np.zeros((batch, pool), bool)
    for b in range(batch):
        labeled[b, rng.choice(pool, n_labeled, replace=False)] = True
    return tf.constant(labeled)


_BEGIN_CACHE = {}


def make_context(model, batch, labeled, noise=None):
    """The StepContext a rollout would build with `labeled` items known."""
    episode = rollout.episode_from_batch(batch)
    support_labels = tf.cast(episode.support_labels, model.label_dtype)
    key = (id(model), id(batch))
    if key not in _BEGIN_CACHE:  # the eager context encoder is the slow part
        _BEGIN_CACHE[key] = model.begin(episode.support)
    embeddings, state = _BEGIN_CACHE[key]
    unknown = -1 if model.config.task == "classification" else -1.0
    labels = tf.where(labeled, support_labels, tf.cast(unknown, model.label_dtype))
    cosine = model.similarities(embeddings)
    logits = model.select(embeddings, state, labels, labeled, cosine=cosine)
    return policies.StepContext(
        model, embeddings, state, labels, labeled, cosine, logits, episode.support,
        support_labels, episode.queries, tf.cast(episode.query_labels, model.label_dtype),
        noise=noise)


def _contract_cases():
    return [dict(testcase_name=f"{name}_{task}", name=name, task=task)
            for name in policies.POLICY_NAMES for task in TASKS]


class PolicyContractTest(tf.test.TestCase, parameterized.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        keras.utils.set_random_seed(3)
        cls.models = {task: ActiveMatchingNetwork(make_config(task)) for task in TASKS}

    def test_every_policy_has_a_case(self):
        self.assertLen(_contract_cases(), 2 * len(policies.POLICY_NAMES))
        for name in policies.POLICY_NAMES:
            self.assertIsInstance(make_policy(name, "regression"), policies.Policy)

    @parameterized.named_parameters(*_contract_cases())
    def test_contract(self, name, task):
        if name == "popular_entropy" and task == "classification":
            # Its scores are indexed by item id: images have none.
            with self.assertRaisesRegex(ValueError, "regression"):
                make_policy(name, task)
            return
        model, batch = self.models[task], make_batch(task)
        policy = make_policy(name, task)
        rng = np.random.RandomState(5)
        for n_labeled in (0, 2, P - 1):
            labeled = random_labeled(rng, n_labeled)
            ctx = make_context(model, batch, labeled)
            index = policy.choose(ctx, tf.constant([11, 12]))
            self.assertEqual(index.dtype, tf.int32)
            self.assertEqual(index.shape, (B,))
            index = index.numpy()
            self.assertAllInRange(index, 0, P - 1)
            self.assertFalse(labeled.numpy()[np.arange(B), index].any(),
                             msg=f"{name} chose a labelled item: {index} of {labeled.numpy()}")
            self.assertAllEqual(policy.choose(ctx, tf.constant([11, 12])), index)
            # With caller noise, choices come from the noise, not from the seed.
            noise = tf.random.stateless_uniform([B, P], seed=[n_labeled, 1],
                                                minval=1e-7, maxval=1 - 1e-7)
            noisy = dataclasses.replace(ctx, noise=noise)
            first = policy.choose(noisy, tf.constant([1, 2])).numpy()
            self.assertAllEqual(policy.choose(noisy, tf.constant([3, 4])), first)
            self.assertFalse(labeled.numpy()[np.arange(B), first].any())

        # A rollout as long as the pool labels every item exactly once.
        out = rollout.unroll(model, batch, policy, P, tf.constant([1, 2]),
                             slow_every_step=False)
        for actions in out["actions"].numpy():
            self.assertAllEqual(sorted(actions), np.arange(P), msg=f"{name}: {actions}")


class HeuristicTest(tf.test.TestCase, parameterized.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        keras.utils.set_random_seed(4)
        cls.models = {task: ActiveMatchingNetwork(make_config(task)) for task in TASKS}

    @staticmethod
    def _bare_context(cosine, labeled, support_items=None, noise=None):
        labeled = tf.constant(labeled)
        zeros = tf.zeros(labeled.shape)
        return policies.StepContext(None, None, None, zeros, labeled, cosine, zeros,
                                    support_items, None, noise=noise)

    def test_min_max_cos(self):
        emb = tf.constant([[[1.0, 0.0, 0.0],      # 0
                            [0.9, 0.1, 0.0],      # 1: close to 0
                            [0.0, 1.0, 0.0],      # 2: orthogonal to 0
                            [-1.0, 0.1, 0.0],     # 3: opposite to 0
                            [0.0, 0.0, 1.0]]])    # 4: orthogonal to 0 and 3
        cosine = cosine_matrix(emb)
        policy = policies.make_policy("min_max_cos")
        ctx = self._bare_context(cosine, [[True, False, False, False, False]])
        self.assertAllEqual(policy.choose(ctx, tf.constant([0, 1])), [3])
        # Max cosine to {0, 3}: item 1 ~0.99, item 2 ~0.1, item 4 = 0.
        ctx = self._bare_context(cosine, [[True, False, False, True, False]])
        for seed in range(5):
            self.assertAllEqual(policy.choose(ctx, tf.constant([seed, 1])), [4])
        ctx = self._bare_context(cosine, [[True, False, False, True, True]])
        self.assertAllEqual(policy.choose(ctx, tf.constant([0, 1])), [2])

    def test_labelled_mass_finds_the_unlabelled_class_min_max_cos_misses(self):
        # Labelled: a0 and b0. a2 is an odd drawing of class a (far from a0
        # in absolute terms, close to a1); c0, c1 are a tight class with no
        # label. Min-max-cos takes the odd drawing, the labelled mass class c.
        cosine = tf.constant([[
            [1.00, 0.90, 0.05, 0.00, 0.20, 0.20],
            [0.90, 1.00, 0.50, 0.00, 0.10, 0.10],
            [0.05, 0.50, 1.00, 0.00, 0.10, 0.10],
            [0.00, 0.00, 0.00, 1.00, 0.20, 0.20],
            [0.20, 0.10, 0.10, 0.20, 1.00, 0.90],
            [0.20, 0.10, 0.10, 0.20, 0.90, 1.00]]])
        ctx = self._bare_context(cosine, [[True, False, False, True, False, False]])
        for seed in range(5):
            self.assertAllEqual(policies.make_policy("min_max_cos").choose(
                ctx, tf.constant([seed, 1])), [2])
            self.assertIn(int(policies.make_policy("labelled_mass").choose(
                ctx, tf.constant([seed, 1]))[0]), (4, 5))

    def test_gp_posterior_variance_matches_numpy(self):
        rng = np.random.RandomState(0)
        emb = rng.normal(size=(2, 5, 8)).astype(np.float32)
        labeled = np.array([[True, False, True, False, False],
                            [False, True, True, True, False]])
        cosine = cosine_matrix(tf.constant(emb)).numpy()
        noise = 0.1
        got = policies.gp_posterior_variance(tf.constant(cosine), tf.constant(labeled), noise)
        expected = np.zeros((2, 5))
        for b in range(2):
            k = cosine[b].astype(np.float64)
            lab = np.where(labeled[b])[0]
            inv = np.linalg.inv(k[np.ix_(lab, lab)] + noise * np.eye(len(lab)))
            for i in range(5):
                expected[b, i] = k[i, i] - k[i, lab] @ inv @ k[lab, i]
        self.assertAllClose(got, expected, atol=1e-5)
        # With little noise a labelled item has (almost) no variance left,
        # and nothing labelled leaves the prior variance k(x, x) = 1.
        tight = policies.gp_posterior_variance(tf.constant(cosine), tf.constant(labeled), 1e-4)
        self.assertAllClose(tight.numpy()[labeled], np.zeros(labeled.sum()), atol=1e-3)
        self.assertAllGreater(tight.numpy()[~labeled], 1e-2)
        prior = policies.gp_posterior_variance(tf.constant(cosine), tf.zeros([2, 5], tf.bool))
        self.assertAllClose(prior, np.ones((2, 5)), atol=1e-5)

    def test_popular_entropy_picks_highest_scored_unlabelled(self):
        scores = np.array([0.1, 4.0, 2.0, 3.0, 0.5, 1.0, 3.5], np.float32)
        policy = policies.make_policy("popular_entropy", "regression", item_scores=scores)
        items = tf.constant([[0, 1, 2, 3, 4], [6, 5, 4, 2, 0]])
        ctx = self._bare_context(None, [[False, True, False, False, False],
                                        [True, False, False, False, False]], items)
        for seed in range(3):  # item 3 (score 3.0) and item 2 (score 2.0)
            self.assertAllEqual(policy.choose(ctx, tf.constant([seed, 0])), [3, 3])

    @parameterized.parameters(*TASKS)
    def test_entropy_policy(self, task):
        model, batch = self.models[task], make_batch(task, seed=1)
        # Nothing labelled: every fast prediction is the prior, uniform over
        # classes or over the 10 half-star levels.
        ctx = make_context(model, batch, tf.zeros([B, P], tf.bool))
        levels = 5 if task == "classification" else 10
        self.assertAllClose(policies.prediction_entropy(ctx), np.full((B, P), np.log(levels)),
                            atol=1e-4)
        policy = policies.make_policy("entropy", task)
        rng = np.random.RandomState(2)
        for trial in range(12):
            labeled = random_labeled(rng, 1 + trial % (P - 1))
            ctx = make_context(model, batch, labeled)
            entropy = policies.prediction_entropy(ctx).numpy()
            self.assertTrue(np.isfinite(entropy).all())
            self.assertAllGreaterEqual(entropy, -1e-6)
            index = policy.choose(ctx, tf.constant([trial, 9])).numpy()
            self.assertFalse(labeled.numpy()[np.arange(B), index].any())

    def test_sampler_is_categorical_and_masked(self):
        # Gumbel-max over caller noise: frequencies follow softmax(logits)
        # restricted to the unlabelled items.
        draws = 4000
        logits = tf.math.log(tf.constant([[0.1, 0.5, 0.2, 0.6, 0.7]] * draws))
        labeled = tf.constant([[False, True, False, False, False]] * draws)
        noise = tf.random.stateless_uniform([draws, 5], seed=[4, 2], minval=1e-7,
                                            maxval=1 - 1e-7)
        ctx = policies.StepContext(None, None, None, None, labeled, None, logits, None, None,
                                   noise=noise)
        counts = np.bincount(policies.LearnedPolicy().choose(ctx, None).numpy(), minlength=5)
        self.assertEqual(counts[1], 0)
        expected = np.array([0.1, 0.0, 0.2, 0.6, 0.7]) / 1.6
        self.assertAllClose(counts / draws, expected, atol=0.03)
        counts = np.bincount(policies.RandomPolicy().choose(ctx, None).numpy(), minlength=5)
        self.assertAllClose(counts / draws, [0.25, 0.0, 0.25, 0.25, 0.25], atol=0.03)

    def test_greedy_is_argmax(self):
        model, batch = self.models["classification"], make_batch("classification")
        labeled = tf.constant([[True] + [False] * (P - 1)] * B)
        ctx = make_context(model, batch, labeled)
        self.assertAllEqual(policies.make_policy("greedy").choose(ctx, None),
                            np.argmax(ctx.logits.numpy(), -1))

    def test_unseen_class_mask(self):
        support = tf.constant([[0, 1, 0, 2, 1, 2]])
        labeled = tf.constant([[True, False, False, False, True, False]])
        got = policies.unseen_class_mask(None, labeled, support)
        self.assertAllEqual(got, [[False, False, False, True, False, True]])

    def test_classification_oracle_labels_every_class_first(self):
        model = self.models["classification"]
        rng = np.random.RandomState(3)
        # 3 episodes of 4 classes x 2 items, in shuffled orders.
        labels = np.stack([rng.permutation(np.arange(8) % 4) for _ in range(3)])
        batch = {"support": tf.constant(rng.rand(3, 8, 28, 28, 1), tf.float32),
                 "support_labels": tf.constant(labels, tf.int32),
                 "queries": tf.constant(rng.rand(3, Q, 28, 28, 1), tf.float32),
                 "query_labels": tf.constant(rng.randint(0, 4, (3, Q)), tf.int32)}
        policy = policies.make_policy("oracle", "classification")
        for seed in range(2):
            out = rollout.unroll(model, batch, policy, 4, tf.constant([seed, 5]),
                                 slow_every_step=False)
            actions = out["actions"].numpy()
            for b in range(3):
                self.assertAllEqual(sorted(labels[b, actions[b]]), [0, 1, 2, 3])
            self.assertAllEqual(out["distinct_labels"], np.tile([1, 2, 3, 4], (3, 1)))

    def test_rating_oracle_minimises_held_out_error(self):
        model = self.models["regression"]
        batch = make_batch("regression", seed=4)
        oracle = policies.make_policy("oracle", "regression")
        self.assertTrue(oracle.needs_queries)
        ratings = batch["support_labels"]
        for labeled in (tf.zeros([B, P], tf.bool),
                        tf.constant([[True, False, False, True, False, False],
                                     [False, True, False, False, False, True]])):
            ctx = make_context(model, batch, labeled)
            errors = np.full((B, P), np.inf)
            for i in range(P):  # brute force: label i next, then predict
                index = tf.fill([B], i)
                state, labels, now = model.observe(ctx.embeddings, ctx.state, ctx.labels,
                                                   labeled, index, ratings[:, i])
                pred = model.predict(ctx.embeddings, state, labels, now, ctx.queries)
                error = tf.reduce_mean(tf.square(pred - batch["query_labels"]), -1).numpy()
                errors[:, i] = np.where(labeled.numpy()[:, i], np.inf, error)
            scores = policies.rating_oracle_scores(ctx).numpy()
            lab = labeled.numpy()
            self.assertAllClose(-scores[~lab], errors[~lab], atol=1e-5)
            choice = oracle.choose(ctx, tf.constant([0, 0])).numpy()
            self.assertAllEqual(choice, errors.argmin(-1))
            self.assertAllEqual(oracle.target_mask(ctx), np.eye(P, dtype=bool)[choice])

    def test_closed_form_rating_oracle(self):
        model = self.models["regression"]
        batch = make_batch("regression", seed=4)
        # Nothing labelled: one rating is the whole prediction either way, so
        # the closed form equals the exact scores.
        ctx = make_context(model, batch, tf.zeros([B, P], tf.bool))
        self.assertAllClose(policies.rating_oracle_scores(ctx, "closed_form"),
                            policies.rating_oracle_scores(ctx, "exact"), atol=1e-5)
        expected = -np.mean(np.square(batch["support_labels"].numpy()[:, :, None]
                                      - batch["query_labels"].numpy()[:, None, :]), -1)
        self.assertAllClose(policies.rating_oracle_scores(ctx, "closed_form"), expected,
                            atol=1e-5)
        # Later it blends the candidate into the current slow prediction.
        labeled = tf.constant([[True, False, False, True, False, False],
                               [False, True, False, False, False, True]])
        ctx = make_context(model, batch, labeled)
        scores = policies.rating_oracle_scores(ctx, "closed_form").numpy()
        self.assertTrue(np.all(np.isfinite(scores)))
        self.assertNotAllClose(scores, policies.rating_oracle_scores(ctx, "exact"))
        oracle = policies.OraclePolicy("regression", rating_oracle="closed_form")
        choice = oracle.choose(ctx, tf.constant([0, 0])).numpy()
        self.assertAllEqual(choice, np.where(labeled.numpy(), -np.inf, scores).argmax(-1))
        with self.assertRaisesRegex(ValueError, "rating_oracle must be one of"):
            policies.OraclePolicy("regression", rating_oracle="fast")

    def test_make_policy_errors(self):
        with self.assertRaisesRegex(ValueError, "unknown policy 'best'"):
            policies.make_policy("best")
        with self.assertRaisesRegex(ValueError, "per-item scores"):
            policies.make_policy("popular_entropy", "regression")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
