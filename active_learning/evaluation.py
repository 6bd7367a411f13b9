"""Held-out evaluation of selection policies: anytime curves with error bars.

`evaluate_policy` rolls a policy out on a fixed, seeded stream of episodes and
reports, for every label count t = 1..T, the mean held-out metric (accuracy or
RMSE per episode), its 95% confidence interval, the mean number of distinct
labels found and the fraction of episodes in which every label value of the
pool has been found (for classes: all N classes). The same seed gives the same episodes for every
policy, so curves are paired comparisons.
"""

import math

import numpy as np
import tensorflow as tf

from active_learning import rollout

Z_95 = 1.959963984540054


def mean_and_ci(samples, axis=0):
    """Mean and half-width of the normal 95% CI of the mean along `axis`."""
    samples = np.asarray(samples, np.float64)
    n = samples.shape[axis]
    mean = samples.mean(axis=axis)
    if n < 2:
        return mean, np.zeros_like(mean)
    return mean, Z_95 * samples.std(axis=axis, ddof=1) / math.sqrt(n)


def make_rollout_fn(model, policy, num_steps):
    """A compiled rollout returning just what evaluation reads."""

    @tf.function(reduce_retracing=True)
    def run(batch, seed):
        out = rollout.unroll(model, batch, policy, num_steps, seed, slow_every_step=True)
        labels = rollout.episode_from_batch(batch).support_labels
        every = rollout.distinct_labels(labels, tf.ones(tf.shape(labels), tf.bool))
        return {"query_metric": out["query_metric"],
                "distinct_labels": out["distinct_labels"],
                "found_all": tf.cast(out["distinct_labels"] >= every[:, None], tf.float32)}

    return run


def evaluate_policy(model, sample_batch, policy, num_steps, num_episodes, batch_size,
                    seed=0, rollout_fn=None):
    """Evaluates `policy` on `num_episodes` episodes from `sample_batch(batch_size)`.

    `sample_batch` must be a fresh seeded sampler's `sample` so that every
    policy sees the same episodes. Returns a dict of per-step lists:
    `metric`, `metric_ci`, `distinct_labels`, `found_all`, plus `episodes`.
    """
    run = rollout_fn or make_rollout_fn(model, policy, num_steps)
    metrics, distinct, found_all = [], [], []
    batches = max(1, math.ceil(num_episodes / batch_size))
    for i in range(batches):
        batch = sample_batch(batch_size)
        out = run(batch, tf.constant([seed, i], tf.int32))
        metrics.append(out["query_metric"].numpy())
        distinct.append(out["distinct_labels"].numpy())
        found_all.append(out["found_all"].numpy())
    metrics = np.concatenate(metrics)[:num_episodes]
    distinct = np.concatenate(distinct)[:num_episodes]
    found_all = np.concatenate(found_all)[:num_episodes]
    mean, ci = mean_and_ci(metrics)
    return {"metric": mean.tolist(), "metric_ci": ci.tolist(),
            "distinct_labels": distinct.mean(axis=0).tolist(),
            "found_all": found_all.mean(axis=0).tolist(),
            "episodes": int(metrics.shape[0])}
