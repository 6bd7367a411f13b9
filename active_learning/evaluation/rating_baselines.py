"""Figure 4's Regression and Gaussian Process series (paper 4.2.3).

The predictors themselves (`RidgeRegression`, `GaussianProcessRegressor`,
`tune_regulariser`) live in `active_learning.baselines`; here is how the
evaluation measures them: the order in which each baseline observes a test
user's ratings (random for Regression, `policies.GPVariancePolicy` on the
GP's own kernel for the GP), the regulariser tuned per label count on
validation episodes, and the RMSE per episode on the very episodes the
policies see (`measure_baselines`).
"""

import math
import time

from absl import logging
import numpy as np
import tensorflow as tf

from active_learning import baselines
from active_learning import policies
from active_learning.evaluation.metrics import mean_and_ci
from active_learning.evaluation.rows import BaselineRow

# Log-spaced regulariser grids: ridge penalty on the user's weights, GP
# noise-to-signal ratio. Tuned per label count on validation episodes.
DEFAULT_RIDGE_GRID = (1e-3, 1e-2, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 1000.0)
DEFAULT_GP_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)

BASELINE_PRIORS = ("global", "movie_bias")


def collect_rating_episodes(make_sampler, num_episodes, batch_size, keys=()):
    """The episodes `evaluate_policy` sees from `make_sampler()`, as numpy arrays
    (and the extra episode fields `keys`, e.g. "user_index")."""
    sampler = make_sampler()
    keys = ("support", "support_labels", "queries", "query_labels") + tuple(keys)
    parts = {k: [] for k in keys}
    for _ in range(max(1, math.ceil(num_episodes / batch_size))):
        batch = sampler.sample(batch_size)
        for k in keys:
            parts[k].append(batch[k].numpy())
    return {k: np.concatenate(v)[:num_episodes] for k, v in parts.items()}


def random_orders(num_episodes, pool, seed):
    """[E, P]: each episode's pool in a seeded random order (the Regression baseline)."""
    rng = np.random.default_rng([int(seed), 17])
    return np.argsort(rng.random((num_episodes, pool)), axis=1).astype(np.int32)


def gp_variance_orders(features, num_steps, seed, noise=0.1, bias_variance=1.0):
    """[E, T]: items chosen by `policies.GPVariancePolicy` on the GP's own kernel.

    The policy samples the next item in proportion to the GP posterior
    variance given the items chosen so far; here its kernel is the one the
    GP predictor uses (cosine of the latent-factor embeddings plus the
    constant user-offset term), so selection and prediction belong to one
    Gaussian process (the paper's GP baseline). The posterior variance does
    not depend on the ratings, so the order is fixed before any is seen.
    """
    features = np.asarray(features, np.float64)
    count, pool = features.shape[:2]
    cosine = tf.constant(baselines.kernel_matrix(features, features, "cosine",
                                                 bias_variance), tf.float32)
    policy = policies.GPVariancePolicy(noise)
    rng = np.random.default_rng([int(seed), 29])
    labeled = np.zeros((count, pool), bool)
    orders = np.zeros((count, num_steps), np.int32)
    for t in range(num_steps):
        noise_t = rng.uniform(1e-7, 1.0 - 1e-7, (count, pool)).astype(np.float32)
        ctx = policies.StepContext(
            model=None, embeddings=None, state=None, labels=None,
            labeled=tf.constant(labeled), cosine=cosine,
            logits=tf.zeros((count, pool)), support_items=None, support_labels=None,
            noise=tf.constant(noise_t))
        chosen = policy.choose(ctx, None).numpy()
        orders[:, t] = chosen
        labeled[np.arange(count), chosen] = True
    return orders


def _rating_prefix(episodes, orders, t, factors, prior="global"):
    """Features, ratings and prior means of the first `t` chosen items and the queries.

    The prior mean is the latent-factor model's global bias, plus with
    `prior="movie_bias"` each movie's bias (both fitted on training users).
    """
    chosen = np.take_along_axis(episodes["support"], orders[:, :t], axis=1)
    ratings = np.take_along_axis(episodes["support_labels"], orders[:, :t], axis=1)
    queries = episodes["queries"]
    if prior not in BASELINE_PRIORS:
        raise ValueError(f"prior must be one of {BASELINE_PRIORS}, got {prior!r}")
    embed = factors.movie_embeddings
    bias = factors.movie_bias if prior == "movie_bias" else np.zeros_like(factors.movie_bias)
    return dict(x=embed[chosen], y=ratings, queries=embed[queries],
                prior=factors.global_bias + bias[chosen],
                query_prior=factors.global_bias + bias[queries])


def evaluate_rating_baseline(make_predictor, grid, validation, validation_orders, test,
                             test_orders, factors, num_steps, prior="global"):
    """Tunes the regulariser per label count on validation, scores on test.

    Returns a dict: `rmse`, `ci` (per label count, mean per-episode RMSE on
    test and its 95% CI), `best` (chosen grid value per label count),
    `scores` (validation RMSE of every grid value, per label count) and
    `per_episode` (`[E, T]` numpy RMSE of every test episode).
    """
    rmse, ci, best, scores, per_episode = [], [], [], [], []
    for t in range(1, num_steps + 1):
        tune = _rating_prefix(validation, validation_orders, t, factors, prior)
        value, table = baselines.tune_regulariser(
            grid, make_predictor, tune["x"], tune["y"], tune["queries"],
            validation["query_labels"], tune["prior"], tune["query_prior"])
        held = _rating_prefix(test, test_orders, t, factors, prior)
        predictions = make_predictor(value).fit_predict(
            held["x"], held["y"], held["queries"], held["prior"], held["query_prior"])
        episode_rmse = baselines.rmse_per_episode(predictions, test["query_labels"])
        mean, half = mean_and_ci(episode_rmse)
        per_episode.append(episode_rmse)
        rmse.append(float(mean))
        ci.append(float(half))
        best.append(value)
        scores.append(table)
    return {"rmse": rmse, "ci": ci, "best": best, "scores": scores, "grid": list(grid),
            "per_episode": np.stack(per_episode, 1)}


def measure_baselines(episodes, make_test, num_steps, num_episodes, batch_size, seed,
                      split, tune_episodes, ridge_grid, gp_grid, baseline_prior, log=None):
    """Figure 4's Regression and GP rows and how they were tuned: (rows, tuning).

    `make_test` is the test episode sampler factory the policies use; the
    regularisers are tuned on `tune_episodes` episodes of the other split.
    Without the run's latent factors (`episodes.factors` None) both rows say
    they were not measured and `tuning` is empty.
    """
    log = log or logging.info
    if episodes.factors is None:
        return [BaselineRow(key=key, label=label, policy=key, model="", kind="baseline",
                            rmse=None, ci=None,
                            note="not measured: the run's latent_factors.npz was "
                                 "not found (pass --latent_factors)")
                for key, label in (("regression", "Regression"),
                                   ("gp", "Gaussian Process"))], {}
    factors = episodes.factors
    support = episodes.data.support_size
    tune_split = "validation" if split == "test" else "test"
    log("baselines: collecting %d test and %d validation episodes", num_episodes,
        tune_episodes)
    test = collect_rating_episodes(make_test, num_episodes, batch_size)
    validation = collect_rating_episodes(episodes.make_sampler(tune_split, seed),
                                         tune_episodes, batch_size)
    tic = time.perf_counter()
    ridge = evaluate_rating_baseline(
        baselines.RidgeRegression, ridge_grid, validation,
        random_orders(len(validation["support"]), support, seed + 1), test,
        random_orders(num_episodes, support, seed), factors, num_steps, baseline_prior)
    ridge_seconds = time.perf_counter() - tic
    tic = time.perf_counter()
    gp = evaluate_rating_baseline(
        baselines.GaussianProcessRegressor, gp_grid, validation,
        gp_variance_orders(factors.movie_embeddings[validation["support"]],
                           num_steps, seed + 1),
        test, gp_variance_orders(factors.movie_embeddings[test["support"]],
                                 num_steps, seed),
        factors, num_steps, baseline_prior)
    gp_seconds = time.perf_counter() - tic
    tuning = {"ridge": {k: ridge[k] for k in ("grid", "best", "scores")},
              "gp": {k: gp[k] for k in ("grid", "best", "scores")},
              "tune_split": tune_split, "tune_episodes": tune_episodes,
              "baseline_prior": baseline_prior}
    around = ("the global mean rating" if baseline_prior == "global" else
              "the global mean + each movie's bias")
    rows = [
        BaselineRow(
            key="regression", label="Regression", policy="random order",
            model="ridge regression on latent-factor embeddings", kind="baseline",
            rmse=ridge["rmse"], ci=ridge["ci"], seconds=round(ridge_seconds, 1),
            note="ratings observed in random order; ridge on the latent-factor "
                 f"embeddings around {around}; l2 tuned per label count on "
                 "validation episodes"),
        BaselineRow(
            key="gp", label="Gaussian Process", policy="gp_variance",
            model="GP (cosine kernel) on latent-factor embeddings", kind="baseline",
            rmse=gp["rmse"], ci=gp["ci"], seconds=round(gp_seconds, 1),
            note="next movie sampled in proportion to the GP posterior variance "
                 "(kernel: cosine of the latent-factor embeddings + a constant user "
                 f"offset) around {around}; noise tuned per label count on "
                 "validation episodes"),
    ]
    return rows, tuning
