"""Running a selection policy on held-out episodes: anytime curves.

`evaluate_policy` rolls a policy out on a fixed, seeded stream of episodes and
reports, for every label count t = 1..T, the mean held-out metric (accuracy or
RMSE per episode), its 95% confidence interval, the mean number of distinct
labels found and the fraction of episodes in which every label value of the
pool has been found (for classes: all N classes). The same seed gives the
same episodes for every policy, so curves are paired comparisons.
`evaluate_series` runs each `Series` of an experiment once on the same
episodes, logging progress (`ProgressLog`).
"""

import math
import time

from absl import logging
import numpy as np
import tensorflow as tf

from active_learning import rollout
from active_learning.evaluation.metrics import mean_and_ci
from active_learning.policies import make_eval_policy


def make_rollout_fn(model, policy, num_steps, query_batch=1):
    """A compiled rollout returning just what evaluation reads.

    With `query_batch` K > 1 labels arrive in rounds of K and the curves have
    one entry per round (after K, 2K, ... labels).
    """

    @tf.function(reduce_retracing=True)
    def run(batch, seed):
        out = rollout.unroll(model, batch, policy, num_steps, seed, slow_every_step=True,
                             query_batch=query_batch)
        labels = rollout.episode_from_batch(batch).support_labels
        every = rollout.distinct_labels(labels, tf.ones(tf.shape(labels), tf.bool))
        return {"query_metric": out["query_metric"],
                "distinct_labels": out["distinct_labels"],
                "found_all": tf.cast(out["distinct_labels"] >= every[:, None], tf.float32),
                "actions": out["actions"]}

    return run


def evaluate_policy(model, sample_batch, policy, num_steps, num_episodes, batch_size,
                    seed=0, rollout_fn=None, progress=None, keep_episodes=False,
                    query_batch=1):
    """Evaluates `policy` on `num_episodes` episodes from `sample_batch(batch_size)`.

    `sample_batch` must be a fresh seeded sampler's `sample` so that every
    policy sees the same episodes. Returns a dict of per-step lists:
    `metric`, `metric_ci`, `distinct_labels`, `found_all`, plus `episodes`
    and `labels` (the label count of each entry: 1..T, or K, 2K, ..., T with
    `query_batch` K, labels arriving in rounds of K).

    `progress(done, total)`, if given, is called after every batch (long
    runs log from it). With `keep_episodes`, the result also holds
    `per_episode`: numpy `metric`, `distinct_labels` and `actions`, `[E, T]`.
    """
    run = rollout_fn or make_rollout_fn(model, policy, num_steps, query_batch)
    metrics, distinct, found_all, actions = [], [], [], []
    batches = max(1, math.ceil(num_episodes / batch_size))
    for i in range(batches):
        batch = sample_batch(batch_size)
        out = run(batch, tf.constant([seed, i], tf.int32))
        metrics.append(out["query_metric"].numpy())
        distinct.append(out["distinct_labels"].numpy())
        found_all.append(out["found_all"].numpy())
        if keep_episodes:
            actions.append(out["actions"].numpy())
        if progress is not None:
            progress(min((i + 1) * batch_size, num_episodes), num_episodes)
    metrics = np.concatenate(metrics)[:num_episodes]
    distinct = np.concatenate(distinct)[:num_episodes]
    found_all = np.concatenate(found_all)[:num_episodes]
    mean, ci = mean_and_ci(metrics)
    result = {"metric": mean.tolist(), "metric_ci": ci.tolist(),
              "distinct_labels": distinct.mean(axis=0).tolist(),
              "found_all": found_all.mean(axis=0).tolist(),
              "episodes": int(metrics.shape[0]),
              "labels": list(range(query_batch, num_steps + 1, query_batch))}
    if keep_episodes:
        result["per_episode"] = {"metric": metrics, "distinct_labels": distinct,
                                 "actions": np.concatenate(actions)[:num_episodes]}
    return result


class ProgressLog:
    """Logs episodes done, rate and ETA at most every `every` seconds."""

    def __init__(self, what, every=30.0, log=None):
        self.what = what
        self.every = float(every)
        self.log = log or logging.info
        self.start = time.perf_counter()
        self.last = self.start

    def __call__(self, done, total):
        now = time.perf_counter()
        if now - self.last < self.every and done < total:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        self.log("%s: %d/%d episodes, %.1f episodes/s, ETA %.0f s", self.what, done, total,
                 rate, (total - done) / max(rate, 1e-9))


def evaluate_series(series, make_sampler, num_steps, num_episodes, batch_size, seed,
                    item_scores=None, progress_every=30.0, log=None, keep_episodes=False):
    """Runs each `Series` once on the same episodes; {series key: result}.

    Series that drive the same weights with the same policy and round size
    share one run. Each result also holds `seconds`, its wall time.
    """
    done, results = {}, {}
    for row in series:
        model = row.model
        key = (model.source, row.policy, row.query_batch)
        if key not in done:
            if row.policy == "entropy" and any(
                    p.startswith("fast_predictor/") for p in model.missing):
                raise ValueError(
                    f"{model.path} lacks the fast predictor's weights (a SavedModel carries "
                    "only its serving signatures); the entropy policy needs them: pass the "
                    "trained model directory instead")
            policy = make_eval_policy(row.policy, model.task, item_scores=item_scores)
            start = time.perf_counter()
            # Held in a variable: a tf.function method keeps only a weak
            # reference to its sampler, which must outlive the evaluation.
            sampler = make_sampler()
            result = evaluate_policy(
                model.model, sampler.sample, policy, num_steps, num_episodes,
                batch_size, seed=seed, keep_episodes=keep_episodes,
                query_batch=row.query_batch,
                progress=ProgressLog(f"{row.label} ({row.policy})", progress_every, log))
            result["seconds"] = round(time.perf_counter() - start, 1)
            done[key] = result
        results[row.key] = done[key]
    return results
