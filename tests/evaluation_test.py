"""Tests of the evaluation helpers: confidence intervals and policy curves."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import active_learning  # noqa: F401,E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from active_learning import evaluation  # noqa: E402
from active_learning.policies import make_policy  # noqa: E402
from tests import fakes  # noqa: E402


class ConfidenceIntervalTest(tf.test.TestCase):

    def test_known_sample(self):
        samples = np.array([1.0, 2.0, 3.0, 4.0])
        mean, half = evaluation.mean_and_ci(samples)
        # std (ddof=1) = sqrt(5/3); half-width = 1.96 * std / sqrt(4)
        self.assertAllClose(mean, 2.5)
        self.assertAllClose(half, 1.959963984540054 * np.sqrt(5.0 / 3.0) / 2.0)

    def test_per_column_and_single_sample(self):
        mean, half = evaluation.mean_and_ci(np.array([[1.0, 5.0], [3.0, 5.0]]))
        self.assertAllClose(mean, [2.0, 5.0])
        self.assertAllClose(half[1], 0.0)
        self.assertGreater(half[0], 0.0)
        _, half_one = evaluation.mean_and_ci(np.array([[7.0, 8.0]]))
        self.assertAllClose(half_one, [0.0, 0.0])


class EvaluatePolicyTest(tf.test.TestCase):

    def test_oracle_finds_every_class_and_curves_are_seeded(self):
        model = fakes.tiny_model()
        policy = make_policy("oracle")
        run = evaluation.make_rollout_fn(model, policy, 3)
        results = []
        for _ in range(2):
            sampler = fakes.tiny_sampler(ways=3, items_per_class=2, seed=5)
            results.append(evaluation.evaluate_policy(
                model, sampler.sample, policy, 3, num_episodes=10, batch_size=4, seed=1,
                rollout_fn=run))
        first = results[0]
        self.assertEqual(first["episodes"], 10)
        self.assertAllClose(first["distinct_labels"], [1.0, 2.0, 3.0])
        self.assertAllClose(first["found_all"], [0.0, 0.0, 1.0])
        self.assertEqual(len(first["metric"]), 3)
        self.assertTrue(all(0.0 <= m <= 1.0 for m in first["metric"]))
        self.assertEqual(results[0], results[1])


if __name__ == "__main__":
    tf.test.main()
