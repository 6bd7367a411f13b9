"""Tests of the MovieLens baseline predictors: metric, ridge, its tuning, the GP."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import active_learning  # noqa: F401,E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from active_learning import baselines  # noqa: E402
from active_learning import evaluation  # noqa: E402


class RmseTest(tf.test.TestCase):

    def test_rmse_per_episode_then_mean_differs_from_pooled(self):
        # Episode 1 is predicted exactly, episode 2 is off by 2 on both items.
        targets = np.array([[3.0, 4.0], [1.0, 5.0]])
        predictions = np.array([[3.0, 4.0], [3.0, 3.0]])
        self.assertAllClose(baselines.rmse_per_episode(predictions, targets), [0.0, 2.0])
        # The paper's metric: mean of per-user RMSEs = (0 + 2) / 2.
        self.assertAllClose(baselines.mean_rmse_per_episode(predictions, targets), 1.0)
        # Pooling every rating first gives sqrt((0 + 0 + 4 + 4) / 4) instead.
        self.assertAllClose(baselines.pooled_rmse(predictions, targets), np.sqrt(2.0))

    def test_mask_ignores_padding(self):
        targets = np.array([[1.0, 9.0]])
        predictions = np.array([[2.0, 0.0]])
        self.assertAllClose(baselines.rmse_per_episode(predictions, targets,
                                                       mask=[[True, False]]), [1.0])
        with self.assertRaisesRegex(ValueError, "no held-out rating"):
            baselines.rmse_per_episode(predictions, targets, mask=[[False, False]])


def _linear_episodes(episodes, ratings, dim, noise, seed, queries=20):
    """Episodes whose ratings are a per-episode linear function of the features."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=[episodes, dim])
    x = rng.normal(size=[episodes, ratings, dim])
    q = rng.normal(size=[episodes, queries, dim])
    y = np.einsum("end,ed->en", x, weights) + 0.5 + noise * rng.normal(size=[episodes, ratings])
    qy = np.einsum("eqd,ed->eq", q, weights) + 0.5 + noise * rng.normal(size=[episodes, queries])
    return x, y, q, qy


class RidgeTest(tf.test.TestCase):

    def test_matches_the_closed_form_in_primal_and_dual_regimes(self):
        rng = np.random.default_rng(0)
        for ratings, dim in ((8, 3), (3, 6)):  # more ratings than features, and fewer
            x = rng.normal(size=[2, ratings, dim])
            y = rng.normal(size=[2, ratings])
            q = rng.normal(size=[2, 4, dim])
            prior = rng.normal(size=[2, ratings])
            query_prior = rng.normal(size=[2, 4])
            got = baselines.RidgeRegression(0.7).fit_predict(x, y, q, prior, query_prior)
            for e in range(2):
                features = np.concatenate([x[e], np.ones([ratings, 1])], 1)
                w = np.linalg.solve(features.T @ features + 0.7 * np.eye(dim + 1),
                                    features.T @ (y[e] - prior[e]))
                expected = np.concatenate([q[e], np.ones([4, 1])], 1) @ w + query_prior[e]
                self.assertAllClose(got[e], expected)

    def test_noise_free_data_picks_the_smallest_regulariser(self):
        x, y, q, qy = _linear_episodes(episodes=20, ratings=10, dim=3, noise=0.0, seed=1)
        grid = [1e-6, 1e-2, 1.0, 100.0]
        best, scores = baselines.tune_regulariser(grid, baselines.RidgeRegression, x, y, q, qy)
        self.assertEqual(best, 1e-6)
        self.assertLess(scores[0], 1e-4)
        self.assertEqual(list(np.argsort(scores)), [0, 1, 2, 3])

    def test_noisy_over_parameterised_data_picks_a_larger_regulariser(self):
        # 4 ratings, 30 features, noise as large as the signal: interpolating
        # the noise (l2 -> 0) generalises badly, shrinkage wins.
        x, y, q, qy = _linear_episodes(episodes=200, ratings=4, dim=30, noise=3.0, seed=2)
        grid = [1e-6, 1e-2, 1.0, 10.0, 100.0]
        best, scores = baselines.tune_regulariser(grid, baselines.RidgeRegression, x, y, q, qy)
        self.assertGreaterEqual(best, 10.0)
        self.assertLess(min(scores), scores[0])

    def test_zero_penalty_is_least_squares_and_negative_is_refused(self):
        x, y, q, _ = _linear_episodes(episodes=3, ratings=6, dim=2, noise=0.0, seed=3)
        predictions = baselines.RidgeRegression(0.0).fit_predict(x, y, x)
        self.assertAllClose(predictions, y, atol=1e-8)
        with self.assertRaisesRegex(ValueError, "l2"):
            baselines.RidgeRegression(-1.0)
        with self.assertRaisesRegex(ValueError, "empty"):
            baselines.tune_regulariser([], baselines.RidgeRegression, x, y, q, y)


class GaussianProcessTest(tf.test.TestCase):

    def test_three_points_equal_the_closed_form(self):
        x = np.array([[[1.0, 0.0], [0.6, 0.8], [0.0, 2.0]]])
        y = np.array([[4.0, 3.0, 1.5]])
        prior = np.array([[3.5, 3.0, 3.2]])
        queries = np.array([[[2.0, 1.0], [-1.0, 0.5]]])
        query_prior = np.array([[3.4, 2.9]])
        noise, signal, bias = 0.2, 1.5, 0.5
        gp = baselines.GaussianProcessRegressor(noise=noise, signal_variance=signal,
                                                bias_variance=bias)
        mean, variance = gp.posterior(x, y, queries, prior, query_prior)

        def unit(v):
            return v / np.linalg.norm(v, axis=-1, keepdims=True)
        k = unit(x[0]) @ unit(x[0]).T + bias                # 3 x 3 cosine + constant
        k_star = unit(queries[0]) @ unit(x[0]).T + bias     # 2 x 3
        inverse = np.linalg.inv(k + noise * np.eye(3))
        expected_mean = query_prior[0] + k_star @ inverse @ (y[0] - prior[0])
        expected_var = signal * (1.0 + bias - np.sum((k_star @ inverse) * k_star, axis=1))
        self.assertAllClose(mean[0], expected_mean)
        self.assertAllClose(variance[0], expected_var)
        self.assertAllClose(gp.fit_predict(x, y, queries, prior, query_prior), mean)

    def test_variance_shrinks_at_observed_items_and_linear_kernel(self):
        x = np.array([[[1.0, 0.0], [0.0, 1.0]]])
        gp = baselines.GaussianProcessRegressor(noise=1e-6)
        _, variance = gp.posterior(x, np.array([[1.0, 2.0]]), x)
        self.assertAllClose(variance, [[0.0, 0.0]], atol=1e-5)
        linear = baselines.GaussianProcessRegressor(noise=1.0, kernel="linear",
                                                    bias_variance=0.0)
        mean, _ = linear.posterior(x * 2, np.array([[1.0, 0.0]]), x[:, :1] * 2)
        self.assertAllClose(mean, [[4.0 / 5.0]])  # k=4: 4 / (4 + 1) * 1
        with self.assertRaisesRegex(ValueError, "kernel"):
            baselines.GaussianProcessRegressor(kernel="rbf")

    def test_gp_variance_orders_never_repeat_and_are_seeded(self):
        rng = np.random.default_rng(4)
        features = rng.normal(size=[5, 8, 3])
        first = evaluation.gp_variance_orders(features, 6, seed=1)
        again = evaluation.gp_variance_orders(features, 6, seed=1)
        self.assertAllEqual(first, again)
        for row in first:
            self.assertLen(set(row.tolist()), 6)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
