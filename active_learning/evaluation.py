"""Held-out evaluation of selection policies: anytime curves, the paper's tables.

`evaluate_policy` rolls a policy out on a fixed, seeded stream of episodes and
reports, for every label count t = 1..T, the mean held-out metric (accuracy or
RMSE per episode), its 95% confidence interval, the mean number of distinct
labels found and the fraction of episodes in which every label value of the
pool has been found (for classes: all N classes). The same seed gives the same episodes for every
policy, so curves are paired comparisons.

On top of it, this module reproduces the paper's measurements from a trained
model directory (`python -m trainers.evaluate` is the command line):

- `run_table1`: Omniglot N-way K-shot held-out accuracy after N*K labels for
  Matching Net (random) = the random policy, Matching Net (balanced) = a
  class-balanced label set, Active MN = the learned policy (greedy) and
  Min-Max-Cos, all driving the same trained weights, beside the paper's
  Table 1 (`PAPER_TABLE1`).
- `run_figure3`: 20-way accuracy against labels requested (left) and
  distinct labels found against labels requested for one or more models
  (right).
- `run_figure4`: MovieLens RMSE per episode (one test user), averaged over
  episodes, against labels requested for ridge regression and a Gaussian
  process on the latent-factor embeddings (`active_learning.baselines`),
  the Popular-Entropy, Min-Max-Cos and Entropy-Sampling heuristics and the
  active policy.
- `write_outputs`: CSV, JSON, PNG and a markdown table of one such record.

Episodes come from the split the model was trained with (its
`run_config.json`), so test classes / users are never ones it trained on.
"""

import csv
import dataclasses
import json
import math
import os
import platform
import time
from typing import Optional

from absl import logging
import numpy as np
import tensorflow as tf

from active_learning import baselines
from active_learning import checkpoints
from active_learning import policies
from active_learning import rollout
from active_learning import run_config as run_configs
from active_learning.data import paths as data_paths
from active_learning.config import ModelConfig
from active_learning.model import ActiveMatchingNetwork

Z_95 = 1.959963984540054


def mean_and_ci(samples, axis=0):
    """Mean and half-width of the normal 95% CI of the mean along `axis`."""
    samples = np.asarray(samples, np.float64)
    n = samples.shape[axis]
    mean = samples.mean(axis=axis)
    if n < 2:
        return mean, np.zeros_like(mean)
    return mean, Z_95 * samples.std(axis=axis, ddof=1) / math.sqrt(n)


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


# ---------------------------------------------------------------------------
# The paper's numbers.

# Bachman, Sordoni & Trischler (ICML 2017), Table 1: held-out accuracy (%)
# and the +- the table prints beside it, for N-way K-shot Omniglot with N*K
# labels requested (1,200 training / 423 test characters of the full
# release). Keys: (ways, shots), then the policy that plays each row here.
PAPER_TABLE1 = {
    (5, 1): {"random": (69.8, 0.10), "balanced": (97.9, 0.07),
             "greedy": (97.4, 0.11), "min_max_cos": (97.4, 0.11)},
    (5, 2): {"random": (93.1, 0.07), "balanced": (98.9, 0.07),
             "greedy": (99.0, 0.08), "min_max_cos": (99.3, 0.02)},
    (5, 3): {"random": (98.5, 0.04), "balanced": (99.2, 0.06),
             "greedy": (99.3, 0.03), "min_max_cos": (99.4, 0.04)},
    (10, 1): {"random": (67.3, 0.10), "balanced": (96.5, 0.04),
              "greedy": (94.3, 0.24), "min_max_cos": (93.5, 0.11)},
    (10, 2): {"random": (91.2, 0.06), "balanced": (98.3, 0.03),
              "greedy": (98.0, 0.07), "min_max_cos": (98.4, 0.02)},
    (10, 3): {"random": (97.6, 0.06), "balanced": (98.7, 0.05),
              "greedy": (98.5, 0.06), "min_max_cos": (98.8, 0.03)},
}

# Table 1's rows, in the paper's order: (row label, policy that plays it).
TABLE1_ROWS = (
    ("Matching Net (random)", "random"),
    ("Matching Net (balanced)", "balanced"),
    ("Active MN", "greedy"),
    ("Min-Max-Cos", "min_max_cos"),
)

# Section 4.2.3: "After 10 ratings, our model achieves an improvement of
# 2.5% in RMSE against the best baseline" (MovieLens-20M, Figure 4).
PAPER_FIGURE4_IMPROVEMENT_PCT = 2.5

# Figure 4's series; the model-driven heuristics can come from separately
# trained models (--heuristic_model_dir), as in the paper.
FIGURE4_HEURISTICS = (
    ("Popular-Entropy", "popular_entropy"),
    ("Min-Max-Cos", "min_max_cos"),
    ("Entropy Sampling", "entropy"),
)

# Seed of the episode sampler for a split (the same for every policy).
episode_seed = run_configs.episode_seed


# ---------------------------------------------------------------------------
# Policies that exist for evaluation only.


class BalancedPolicy(policies.Policy):
    """Labels a class-balanced set: an item of a class with fewest labels so far.

    The paper's Matching Net (balanced) labels K items of each of the N
    classes; after t labels every class holds floor(t/N) or ceil(t/N). For
    t <= N this is the oracle policy. Ties are broken at random.
    """

    name = "balanced"

    def choose(self, ctx, seed):
        same = tf.equal(ctx.support_labels[:, :, None], ctx.support_labels[:, None, :])
        labeled = tf.cast(ctx.labeled, tf.float32)
        # [B, P]: how many labelled items carry item j's class.
        count = tf.reduce_sum(tf.cast(same, tf.float32) * labeled[:, None, :], axis=-1)
        score = -count + 1e-3 * policies.uniform_noise(ctx, seed)
        score = tf.where(ctx.labeled, tf.constant(-1e9, score.dtype), score)
        return tf.argmax(score, axis=-1, output_type=tf.int32)


EVAL_POLICY_NAMES = policies.POLICY_NAMES + ("balanced",)


def make_eval_policy(name, task="classification", item_scores=None):
    """`policies.make_policy`, plus `balanced` (classification only)."""
    if name == "balanced":
        if task != "classification":
            raise ValueError("the balanced policy needs class labels (classification)")
        return BalancedPolicy()
    return policies.make_policy(name, task, item_scores=item_scores)


# ---------------------------------------------------------------------------
# Models: a trained model directory or an exported SavedModel.


@dataclasses.dataclass
class LoadedModel:
    """A model to evaluate and where it came from.

    `missing` names the variables the source did not hold (a SavedModel
    carries only what its serving signatures use: not the fast predictor's
    temperature or the value head, so the entropy policy, which reads the
    fast prediction, refuses such a model).
    """

    model: ActiveMatchingNetwork
    source: str
    path: str
    run_config: Optional[run_configs.RunConfig]
    kind: str = "model_dir"
    vocabulary: Optional[np.ndarray] = None
    missing: tuple = ()

    @property
    def task(self):
        return self.model.config.task

    @property
    def dataset(self):
        if self.run_config is not None:
            return self.run_config.dataset
        return "omniglot" if self.task == "classification" else "movielens"

    def trained_ways(self):
        """The N (list) the model was trained on, from its run config."""
        return list(getattr(self.run_config and self.run_config.episodes, "ways", ()))

    def trained_policy(self):
        return self.run_config and self.run_config.train_config.policy

    def short_name(self):
        ways = self.trained_ways()
        if not ways:
            return os.path.basename(os.path.normpath(self.path))
        span = f"{min(ways)}-{max(ways)}" if len(ways) > 1 else f"{ways[0]}"
        return f"{span}c"


def is_saved_model(path):
    """True for an exported SavedModel or a base directory of numbered versions."""
    path = os.fspath(path)
    if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        return True
    if tf.io.gfile.exists(os.path.join(path, checkpoints.MODEL_CONFIG)):
        return False
    if not tf.io.gfile.isdir(path):
        return False
    versions = [n.rstrip("/") for n in tf.io.gfile.listdir(path) if n.rstrip("/").isdigit()]
    return any(tf.io.gfile.exists(os.path.join(path, v, "saved_model.pb")) for v in versions)


def _load_saved_model(path):
    """Rebuilds the Keras model of an exported SavedModel (`export.saved_model`).

    The SavedModel's `metadata` signature carries the model config and the
    run config; its variables keep their TensorFlow names, which equal those
    of a freshly built model's variables, so they are copied by name.
    """
    from active_learning.session import resolve_saved_model  # pylint: disable=g-import-not-at-top
    path = resolve_saved_model(path)
    loaded = tf.saved_model.load(path)
    meta = loaded.signatures["metadata"](dummy=tf.constant(0, tf.int32))
    config = ModelConfig.from_json(meta["model_config"].numpy().decode("utf-8"))
    run_config = run_configs.from_record(
        json.loads(meta["training_config"].numpy().decode("utf-8") or "{}"), path, config)
    model = ActiveMatchingNetwork(config)
    saved = {v.name: v for v in getattr(loaded, "model_variables", [])}
    missing = []
    for variable in model.variables:
        name = variable.value.name
        if name in saved and tuple(saved[name].shape) == tuple(variable.shape):
            variable.assign(saved[name])
        else:
            missing.append(variable.path)
    used = {v.value.name for v in model.variables}
    unknown = sorted(set(saved) - used)
    if unknown or not saved:
        raise ValueError(f"{path}: the SavedModel's variables do not match the model its "
                         f"metadata describes (unmatched: {unknown[:5]})")
    vocabulary = loaded.vocabulary.numpy() if hasattr(loaded, "vocabulary") else None
    return LoadedModel(model, path, path, run_config, kind="saved_model",
                       vocabulary=vocabulary, missing=tuple(missing))


def load_evaluation_model(path, which="best"):
    """A `LoadedModel` from a trained model directory or an exported SavedModel."""
    if is_saved_model(path):
        return _load_saved_model(path)
    model, checkpoint = checkpoints.load_model(path, which)
    run_config = run_configs.load_run_config(path, model.config)
    vocabulary = None
    if model.config.task == "regression":
        vocabulary = checkpoints.load_vocabulary(path)
    return LoadedModel(model, checkpoint, path, run_config, vocabulary=vocabulary)


def resolve_data_dir(data_dir, run_config, model_path):
    """`data_dir`, else the run's recorded one (relative paths tried from here, from
    the model directory's parent, and the repository's shipped copy of Omniglot).

    Runs on a user's own data (`run_config.data.source`, trainers.classification)
    record the data spec itself: for them this returns `data_dir` (None keeps
    the recorded spec; a path replaces the spec's path).
    """
    if data_dir:
        return data_dir
    if run_config is not None and run_config.dataset == "classification":
        return None
    recorded = run_config.data_dir if run_config is not None else None
    if not recorded:
        raise ValueError(f"{model_path} records no data_dir; pass --data_dir")
    # A ratings table is recorded as kind:PATH (csv:, tsv:, parquet:); the
    # path part is resolved like a folder.
    kind, sep, rest = recorded.partition(":")
    prefix, path = (kind + sep, rest) if sep and kind in ("csv", "tsv", "parquet") \
        else ("", recorded)
    if recorded.startswith("tfds") or os.path.isabs(path):
        return recorded
    for base in (os.getcwd(), os.path.dirname(os.path.abspath(model_path))):
        candidate = os.path.normpath(os.path.join(base, path))
        if os.path.exists(candidate):
            return prefix + candidate
    shipped = data_paths.resolve_data_dir(path)
    if os.path.exists(shipped):
        return prefix + shipped
    raise FileNotFoundError(
        f"the data_dir {recorded!r} recorded by {model_path} was not found relative to "
        f"{os.getcwd()} or the model directory; pass --data_dir")


# ---------------------------------------------------------------------------
# Episodes of the run's own split.


@dataclasses.dataclass
class ClassEpisodes:
    """The run's classification data (`class_data.ClassData`) and its class split."""

    data: object
    classes: object
    items_per_class: int = 5

    def num_classes(self, split):
        return len(getattr(self.classes, split))

    def make_sampler(self, split, ways, seed):
        """A function returning a freshly seeded sampler (same episodes each time)."""
        from active_learning.data.episodes import ClassEpisodeSampler  # pylint: disable=g-import-not-at-top
        indices = getattr(self.classes, split)

        def make():
            return ClassEpisodeSampler(
                self.data.items, self.data.class_starts, self.data.class_counts, indices,
                ways=ways, items_per_class=self.items_per_class,
                seed=episode_seed(seed, split), class_names=self.data.class_names)
        return make


def class_episodes(run_config, data_dir=None, cache_dir=None):
    """Loads the run's data and rebuilds the class split recorded in `run_config`.

    Omniglot runs read the release in `data_dir`; runs on other data re-read
    the recorded `data` spec with the recorded options (`data_dir`, when
    given, replaces the spec's path). Raises if the data gives other split
    sizes than the run recorded (other data than it was trained on).
    """
    from active_learning.data import class_data  # pylint: disable=g-import-not-at-top
    from active_learning.data import omniglot  # pylint: disable=g-import-not-at-top
    from active_learning.data import readers  # pylint: disable=g-import-not-at-top
    from active_learning.data import splits  # pylint: disable=g-import-not-at-top
    if run_config.dataset == "classification":
        spec = run_config.data.source
        if data_dir:
            spec = f"{readers.parse_spec(spec)[0]}:{data_dir}"
        data = readers.load_class_data(spec, cache_dir=cache_dir,
                                       **run_config.data.reader_kwargs())
        data_dir = spec
    else:
        data = class_data.from_omniglot(omniglot.load_omniglot(data_dir, cache_dir=cache_dir))
    recorded = run_config.recorded.get("split") or {}
    name = recorded.get("split", run_config.data.split if run_config.data else "auto")
    kwargs = {}
    if name == "alphabets":
        kwargs = dict(test_alphabets=recorded.get("test_alphabets"),
                      validation_alphabets=recorded.get("validation_alphabets"))
    elif name == "lake":
        kwargs = dict(validation_alphabets=recorded.get("validation_alphabets"))
    elif name == "vinyals" and "validation_characters" in recorded:
        kwargs = dict(validation_characters=recorded["validation_characters"])
    classes = splits.split_classes(data, split=name, seed=run_config.seed, **kwargs)
    described = classes.describe()
    for key in ("train_characters", "validation_characters", "test_characters"):
        if key in recorded and recorded[key] != described[key]:
            raise ValueError(
                f"the class split rebuilt from {data_dir} ({described}) differs from the one "
                f"the model was trained with ({recorded}): pass the run's --data_dir")
    return ClassEpisodes(data, classes, run_config.episodes.items_per_class)


@dataclasses.dataclass
class MovieLensEpisodes:
    """Prepared ratings, latent factors (may be None) and Popular-Entropy scores."""

    data: object
    factors: object
    item_scores: np.ndarray

    def make_sampler(self, split, seed):
        from active_learning.data import ratings_episodes  # pylint: disable=g-import-not-at-top
        users = self.data.split(split)

        def make():
            return ratings_episodes.EpisodeSampler(users, self.data.support_size,
                                            self.data.query_size,
                                            seed=episode_seed(seed, split))
        return make


def movielens_episodes(run_config, data_dir, vocabulary=None, latent_factors_path=None):
    """Re-prepares the run's users (same source, columns, filters, user split).

    Works for every ratings run: `run_config.data` (a `RatingsData`) gives the
    columns, scale and filters (`run_configs.load_run_config` fills them
    for runs that predate it). The item
    vocabulary must equal the model's (`vocabulary.npz`): that is the check
    that the data and the filtering are the ones it was trained on.
    """
    from active_learning.data import latent_factors  # pylint: disable=g-import-not-at-top
    from active_learning.data import ratings_prep  # pylint: disable=g-import-not-at-top
    from active_learning.data import ratings_reader  # pylint: disable=g-import-not-at-top
    options = run_config.data
    kind = options.kind
    if kind in ratings_reader.TABLE_KINDS and ratings_reader.parse_source(data_dir)[0] != kind:
        data_dir = f"{kind}:{data_dir}"  # --data_dir=PATH for a run trained on kind:PATH
    ratings = ratings_reader.load_ratings(data_dir, **options.reader_kwargs())
    data = ratings_prep.prepare(ratings, **options.prep_kwargs(run_config.episodes,
                                                                run_config.seed))
    if vocabulary is not None and not np.array_equal(np.asarray(vocabulary), data.movie_ids):
        raise ValueError(
            f"the items kept from {data_dir} ({data.num_movies}) are not the model's "
            f"vocabulary ({len(vocabulary)} items): other data or filtering than the run "
            "was trained with")
    factors = None
    if latent_factors_path and os.path.exists(latent_factors_path):
        factors = latent_factors.load_latent_factors(latent_factors_path,
                                                     movie_ids=data.movie_ids)
    return MovieLensEpisodes(data, factors, ratings_prep.popularity_entropy(data))


# ---------------------------------------------------------------------------
# Progress.


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


def _evaluate_rows(rows, make_sampler, num_steps, num_episodes, batch_size, seed,
                   item_scores=None, progress_every=30.0, log=None, keep_episodes=False):
    """Runs each (model, policy) row once on the same episodes; {key: result}."""
    done, results = {}, {}
    for row in rows:
        model = row["model"]
        query_batch = row.get("query_batch", 1)
        key = (model.source, row["policy"], query_batch)
        if key not in done:
            if row["policy"] == "entropy" and any(
                    p.startswith("fast_predictor/") for p in model.missing):
                raise ValueError(
                    f"{model.path} lacks the fast predictor's weights (a SavedModel carries "
                    "only its serving signatures); the entropy policy needs them: pass the "
                    "trained model directory instead")
            policy = make_eval_policy(row["policy"], model.task, item_scores=item_scores)
            start = time.perf_counter()
            # Held in a variable: a tf.function method keeps only a weak
            # reference to its sampler, which must outlive the evaluation.
            sampler = make_sampler()
            result = evaluate_policy(
                model.model, sampler.sample, policy, num_steps, num_episodes,
                batch_size, seed=seed, keep_episodes=keep_episodes, query_batch=query_batch,
                progress=ProgressLog(f"{row['label']} ({row['policy']})", progress_every, log))
            result["seconds"] = round(time.perf_counter() - start, 1)
            done[key] = result
        results[row["key"]] = done[key]
    return results


def _row_record(row, result):
    return {"key": row["key"], "label": row["label"], "policy": row["policy"],
            "model": row["model"].source, "note": row.get("note", ""),
            "seconds": result.get("seconds")}


# ---------------------------------------------------------------------------
# Table 1.


def run_table1(model, episodes, ways, shots, num_episodes=1000, batch_size=50, seed=0,
               split="test", progress_every=30.0, log=None):
    """Omniglot N-way K-shot accuracy after N*K labels, four rows (paper Table 1).

    Every row drives the same weights (`model`, a `LoadedModel`): the paper's
    Matching Net rows are its slow predictor on a random / class-balanced
    label set. Accuracies are in percent.
    """
    labels = ways * shots
    _check_classification(model, ways, labels, episodes, split)
    rows = [{"key": policy, "label": label, "policy": policy, "model": model}
            for label, policy in TABLE1_ROWS]
    start = time.perf_counter()
    results = _evaluate_rows(rows, episodes.make_sampler(split, ways, seed), labels,
                             num_episodes, batch_size, seed, progress_every=progress_every,
                             log=log)
    # The paper's numbers are Omniglot's: none beside a user's own data.
    omniglot = model.dataset == "omniglot"
    paper = PAPER_TABLE1.get((ways, shots), {}) if omniglot else {}
    out_rows = []
    for row in rows:
        result = results[row["key"]]
        record = _row_record(row, result)
        record.update(
            accuracy=100.0 * result["metric"][-1], ci=100.0 * result["metric_ci"][-1],
            distinct_labels=result["distinct_labels"][-1], found_all=result["found_all"][-1],
            curve=[100.0 * m for m in result["metric"]],
            curve_ci=[100.0 * c for c in result["metric_ci"]],
            paper_accuracy=paper.get(row["policy"], (None, None))[0],
            paper_ci=paper.get(row["policy"], (None, None))[1])
        out_rows.append(record)
    return {"figure": "table1", "task": "omniglot" if omniglot else "classification",
            "data": "Omniglot" if omniglot else (model.run_config.data.source
                                                 if model.run_config and model.run_config.data
                                                 else "data"),
            "split": split, "ways": ways,
            "shots": shots, "labels": labels, "episodes": num_episodes, "seed": seed,
            "batch_size": batch_size, "model": model.source, "rows": out_rows,
            "paper_available": bool(paper),
            "seconds": round(time.perf_counter() - start, 1)}


def _check_classification(model, ways, labels, episodes, split):
    if model.task != "classification":
        raise ValueError(f"{model.path} is a {model.task} model; Table 1 and Figure 3 need "
                         "an Omniglot (classification) model")
    if ways > model.model.config.max_classes:
        raise ValueError(f"{ways}-way episodes exceed the model's max_classes="
                         f"{model.model.config.max_classes}")
    pool = ways * episodes.items_per_class
    if labels > pool:
        raise ValueError(f"{labels} labels exceed the pool of {ways} x "
                         f"{episodes.items_per_class} = {pool} items")
    if ways > episodes.num_classes(split):
        raise ValueError(f"{ways}-way episodes need {ways} classes; the {split} split has "
                         f"{episodes.num_classes(split)}")


# ---------------------------------------------------------------------------
# Batch queries.

# The rows of a batch-query table: (label, policy, asked in rounds of k?).
# Every row drives the same weights through the same round rollout; the last
# is the same model asked one label at a time, the reference a batch should
# match.
BATCH_ROWS = (
    ("Learned, k picked jointly", "greedy", True),
    ("Top k of the sequential ranking", "top_k", True),
    ("Random k", "random", True),
    ("Greedy k-centre (batch Min-Max-Cos)", "min_max_cos", True),
    ("Oracle", "oracle", True),
    ("Learned, one label at a time", "greedy", False),
)


def run_batch_table(model, make_sampler, num_steps, query_batch, num_episodes=1000,
                    batch_size=50, seed=0, split="test", ways=None, item_scores=None,
                    progress_every=30.0, log=None):
    """Held-out metric after `num_steps` labels asked in rounds of `query_batch`.

    `model` is a `LoadedModel`, `make_sampler` a fresh seeded episode sampler
    factory (every row sees the same episodes). Rows: `BATCH_ROWS`; the
    oracle is the class-balanced one on Omniglot (any item of a class neither
    labelled nor picked earlier in the round) and, on MovieLens, the item
    whose rating most improves the held-out prediction given the labelled
    and pending ratings. Accuracies in percent; RMSE as is.
    """
    if num_steps % query_batch:
        raise ValueError(f"query_batch={query_batch} must divide the {num_steps} labels")
    classification = model.task == "classification"
    rows = []
    for label, policy, batched in BATCH_ROWS:
        if policy == "oracle" and classification:
            policy = "balanced"
        rows.append({"key": f"{policy}_k{query_batch if batched else 1}", "label": label,
                     "policy": policy, "model": model,
                     "query_batch": query_batch if batched else 1})
    start = time.perf_counter()
    results = _evaluate_rows(rows, make_sampler, num_steps, num_episodes, batch_size, seed,
                             item_scores=item_scores, progress_every=progress_every,
                             log=log)
    scale = 100.0 if classification else 1.0
    out_rows = []
    for row in rows:
        result = results[row["key"]]
        record = _row_record(row, result)
        record.update(
            query_batch=row["query_batch"], labels=result["labels"],
            metric=scale * result["metric"][-1], ci=scale * result["metric_ci"][-1],
            curve=[scale * m for m in result["metric"]],
            curve_ci=[scale * c for c in result["metric_ci"]],
            distinct_labels=result["distinct_labels"][-1] if classification else None,
            found_all=result["found_all"][-1] if classification else None,
            distinct_curve=result["distinct_labels"] if classification else None)
        out_rows.append(record)
    return {"figure": "batch", "task": "omniglot" if classification else "movielens",
            "metric": "accuracy_pct" if classification else "rmse", "split": split,
            "ways": ways, "labels": num_steps, "query_batch": query_batch,
            "rounds": num_steps // query_batch, "episodes": num_episodes, "seed": seed,
            "batch_size": batch_size, "model": model.source, "rows": out_rows,
            "trained_query_batch": (model.run_config.train_config.query_batch
                                    if model.run_config else 1),
            "seconds": round(time.perf_counter() - start, 1)}


# ---------------------------------------------------------------------------
# Figure 3.


def run_figure3(models, episodes, ways=20, max_labels=50, distinct_max=30,
                num_episodes=1000, batch_size=25, seed=0, split="test",
                heuristic_models=None, progress_every=30.0, log=None):
    """Omniglot 20-way: accuracy (left) and distinct labels (right) per label count.

    Left: MN balanced after N and 2N labels (points), MN random (a model
    trained with random labels when `heuristic_models['random']` is given,
    else the random policy on the first model, and then the two curves are
    the same run), the random policy and the active policy of `models[0]`.
    Right: distinct labels for the oracle (balanced), random and the active
    policy of every model in `models` (e.g. trained on 5, 10, 15, 20 classes).
    Accuracies are in percent.
    """
    heuristic_models = heuristic_models or {}
    main = models[0]
    steps = max(max_labels, distinct_max)
    for model in models:
        _check_classification(model, ways, steps, episodes, split)
    mn_random = heuristic_models.get("random", main)
    rows = [
        {"key": "balanced", "label": "MN balanced", "policy": "balanced", "model": main},
        {"key": "mn_random", "label": "MN random", "policy": "random", "model": mn_random,
         "note": ("a model trained with random labels" if mn_random is not main else
                  "no random-label model given: the random policy on the active model's "
                  "weights, so this equals the Random policy curve")},
        {"key": "random", "label": "Random policy", "policy": "random", "model": main},
    ]
    for i, model in enumerate(models):
        rows.append({"key": f"active_{i}", "label": f"Active policy ({model.short_name()})",
                     "policy": "greedy", "model": model})
    start = time.perf_counter()
    results = _evaluate_rows(rows, episodes.make_sampler(split, ways, seed), steps,
                             num_episodes, batch_size, seed, progress_every=progress_every,
                             log=log)
    records = {}
    for row in rows:
        result = results[row["key"]]
        record = _row_record(row, result)
        record.update(accuracy=[100.0 * m for m in result["metric"]],
                      ci=[100.0 * c for c in result["metric_ci"]],
                      distinct_labels=result["distinct_labels"],
                      found_all=result["found_all"])
        records[row["key"]] = record
    balanced = records["balanced"]
    points = []
    for shots in (1, 2):
        t = ways * shots
        if t <= steps:
            points.append({"label": f"MN balanced ({shots}-shot)", "labels": t,
                           "accuracy": balanced["accuracy"][t - 1],
                           "ci": balanced["ci"][t - 1]})
    left = [records["mn_random"], records["random"], records["active_0"]]
    right = [dict(records["balanced"], label="Oracle policy"),
             dict(records["random"], label="Random policy")]
    right += [records[f"active_{i}"] for i in range(len(models))]
    return {"figure": "figure3", "task": "omniglot", "split": split, "ways": ways,
            "max_labels": max_labels, "distinct_max": distinct_max,
            "labels": list(range(1, steps + 1)), "episodes": num_episodes, "seed": seed,
            "batch_size": batch_size, "model": main.source,
            "models": [m.source for m in models],
            "left": {"rows": left, "points": points}, "right": {"rows": right},
            "balanced": balanced, "seconds": round(time.perf_counter() - start, 1)}


# ---------------------------------------------------------------------------
# Figure 4.

# Log-spaced regulariser grids: ridge penalty on the user's weights, GP
# noise-to-signal ratio. Tuned per label count on validation episodes.
DEFAULT_RIDGE_GRID = (1e-3, 1e-2, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 1000.0)
DEFAULT_GP_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


def collect_rating_episodes(make_sampler, num_episodes, batch_size):
    """The episodes `evaluate_policy` sees from `make_sampler()`, as numpy arrays."""
    sampler = make_sampler()
    keys = ("support", "support_labels", "queries", "query_labels")
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


BASELINE_PRIORS = ("global", "movie_bias")


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
    test and its 95% CI), `best` (chosen grid value per label count) and
    `scores` (validation RMSE of every grid value, per label count).
    """
    rmse, ci, best, scores = [], [], [], []
    for t in range(1, num_steps + 1):
        tune = _rating_prefix(validation, validation_orders, t, factors, prior)
        value, table = baselines.tune_regulariser(
            grid, make_predictor, tune["x"], tune["y"], tune["queries"],
            validation["query_labels"], tune["prior"], tune["query_prior"])
        held = _rating_prefix(test, test_orders, t, factors, prior)
        predictions = make_predictor(value).fit_predict(
            held["x"], held["y"], held["queries"], held["prior"], held["query_prior"])
        mean, half = mean_and_ci(baselines.rmse_per_episode(predictions,
                                                            test["query_labels"]))
        rmse.append(float(mean))
        ci.append(float(half))
        best.append(value)
        scores.append(table)
    return {"rmse": rmse, "ci": ci, "best": best, "scores": scores, "grid": list(grid)}


def run_figure4(model, episodes, heuristic_models=None, num_steps=10, num_episodes=1000,
                batch_size=50, seed=0, split="test", tune_episodes=1000,
                ridge_grid=DEFAULT_RIDGE_GRID, gp_grid=DEFAULT_GP_GRID,
                progress_every=30.0, log=None, include_random=True,
                baseline_prior="global", heuristics=FIGURE4_HEURISTICS):
    """MovieLens RMSE per label count for the baselines and the active policy.

    `model` (a `LoadedModel`) may be None: then only Regression and Gaussian
    Process are measured, which need no trained weights.

    RMSE is computed per episode (one test user's held-out ratings), then
    averaged over episodes (paper 4.2.1). Popular-Entropy, Min-Max-Cos and
    Entropy Sampling drive `heuristic_models[policy]` when given (the paper
    trains one model per heuristic) and otherwise the active model's
    weights, which each row's `note` says. Regression and Gaussian Process
    need the run's latent factors (`episodes.factors`). `include_random` adds
    the random policy on the active model, a reference the paper does not plot;
    `heuristics` lists the (label, policy) heuristic series.
    `baseline_prior`: the baselines predict ratings around the global mean
    rating ("global", the paper's description: regression on the embeddings
    alone) or around global + per-movie bias ("movie_bias", a stronger
    baseline that uses more of the latent-factor model than the paper says).
    """
    log = log or logging.info
    heuristic_models = heuristic_models or {}
    if baseline_prior not in BASELINE_PRIORS:
        raise ValueError(f"baseline_prior must be one of {BASELINE_PRIORS}, "
                         f"got {baseline_prior!r}")
    if model is not None and model.task != "regression":
        raise ValueError(f"{model.path} is a {model.task} model; Figure 4 needs a "
                         "MovieLens (ratings) model")
    support = episodes.data.support_size
    if num_steps > support:
        raise ValueError(f"{num_steps} labels exceed the pool of {support} movies")
    rows = []
    # model=None: the baselines alone (they need no trained weights, only the
    # run's users and latent factors), e.g. while the model still trains.
    for label, policy in (heuristics if model is not None else ()):
        own = heuristic_models.get(policy)
        note = (f"a model trained with the {policy} policy" if own is not None else
                "no model trained with this heuristic given: the heuristic drives the "
                "active model's weights")
        if own is not None and own.trained_policy() not in (None, policy):
            note += f" (warning: its run config says it was trained with {own.trained_policy()!r})"
        rows.append({"key": policy, "label": label, "policy": policy,
                     "model": own or model, "note": note, "kind": "heuristic"})
    if model is not None:
        rows.append({"key": "greedy", "label": "Active MN", "policy": "greedy",
                     "model": model, "kind": "active"})
    if include_random and model is not None:
        rows.append({"key": "random", "label": "Random policy (not in the paper)",
                     "policy": "random", "model": model, "kind": "reference"})
    start = time.perf_counter()
    make_test = episodes.make_sampler(split, seed)
    results = _evaluate_rows(rows, make_test, num_steps, num_episodes, batch_size, seed,
                             item_scores=episodes.item_scores, progress_every=progress_every,
                             log=log)
    records = {}
    for row in rows:
        result = results[row["key"]]
        record = _row_record(row, result)
        record.update(kind=row["kind"], rmse=result["metric"], ci=result["metric_ci"])
        records[row["key"]] = record

    tuning = {}
    baseline_rows = []
    if episodes.factors is None:
        for key, label in (("regression", "Regression"), ("gp", "Gaussian Process")):
            baseline_rows.append({"key": key, "label": label, "policy": key, "model": "",
                                  "kind": "baseline", "rmse": None, "ci": None,
                                  "note": "not measured: the run's latent_factors.npz was "
                                          "not found (pass --latent_factors)"})
    else:
        factors = episodes.factors
        log("baselines: collecting %d test and %d validation episodes", num_episodes,
            tune_episodes)
        test = collect_rating_episodes(make_test, num_episodes, batch_size)
        validation = collect_rating_episodes(
            episodes.make_sampler("validation" if split == "test" else "test", seed),
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
                  "tune_split": "validation" if split == "test" else "test",
                  "tune_episodes": tune_episodes, "baseline_prior": baseline_prior}
        around = ("the global mean rating" if baseline_prior == "global" else
                  "the global mean + each movie's bias")
        baseline_rows.append({
            "key": "regression", "label": "Regression", "policy": "random order",
            "model": "ridge regression on latent-factor embeddings", "kind": "baseline",
            "rmse": ridge["rmse"], "ci": ridge["ci"], "seconds": round(ridge_seconds, 1),
            "note": "ratings observed in random order; ridge on the latent-factor "
                    f"embeddings around {around}; l2 tuned per label count on "
                    "validation episodes"})
        baseline_rows.append({
            "key": "gp", "label": "Gaussian Process", "policy": "gp_variance",
            "model": "GP (cosine kernel) on latent-factor embeddings", "kind": "baseline",
            "rmse": gp["rmse"], "ci": gp["ci"], "seconds": round(gp_seconds, 1),
            "note": "next movie sampled in proportion to the GP posterior variance "
                    "(kernel: cosine of the latent-factor embeddings + a constant user "
                    f"offset) around {around}; noise tuned per label count on "
                    "validation episodes"})
    out_rows = baseline_rows + [records[k] for k in
                                ("popular_entropy", "min_max_cos", "entropy", "greedy",
                                 "random") if k in records]
    improvement = _improvement(out_rows, num_steps)
    return {"figure": "figure4", "task": "movielens", "split": split,
            "labels": list(range(1, num_steps + 1)), "episodes": num_episodes,
            "seed": seed, "batch_size": batch_size,
            "model": model.source if model is not None else "(baselines only)",
            "baselines_only": model is None,
            "support_size": support, "query_size": episodes.data.query_size,
            "rows": out_rows, "tuning": tuning, "improvement": improvement,
            "paper_improvement_pct": PAPER_FIGURE4_IMPROVEMENT_PCT,
            "seconds": round(time.perf_counter() - start, 1)}


def _improvement(rows, num_steps):
    """Relative RMSE improvement of Active MN over the best paper baseline at T labels."""
    active = next((r for r in rows if r["key"] == "greedy"), None)
    if active is None:
        return None
    candidates = [r for r in rows if r["kind"] in ("baseline", "heuristic")
                  and r["rmse"] is not None]
    if not candidates:
        return None
    best = min(candidates, key=lambda r: r["rmse"][num_steps - 1])
    best_rmse = best["rmse"][num_steps - 1]
    ours = active["rmse"][num_steps - 1]
    return {"labels": num_steps, "active_rmse": ours, "best_baseline": best["label"],
            "best_baseline_rmse": best_rmse,
            "improvement_pct": 100.0 * (best_rmse - ours) / best_rmse}


# ---------------------------------------------------------------------------
# Output: markdown, CSV, JSON, PNG.


def machine_description():
    """Where a measurement ran, for the record."""
    return {"platform": platform.platform(), "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "tensorflow": tf.__version__,
            "gpus": len(tf.config.list_physical_devices("GPU"))}


def _pct(value, ci=None, digits=1):
    if value is None:
        return "—"
    text = f"{value:.{digits}f}%"
    return text if ci is None else f"{text} ± {ci:.{max(digits, 2)}f}"


def _rmse_text(value, ci):
    return "—" if value is None else f"{value:.4f} ± {ci:.4f}"


def _ticks(first, last, step):
    ticks = list(range(first, last + 1, step))
    return ticks if ticks and ticks[-1] == last else ticks + [last]


def _header(record):
    return (f"{record['episodes']} {record['split']} episodes, seed {record['seed']}, "
            f"batch {record['batch_size']}; model `{record['model']}`")


def table1_markdown(record):
    """Table 1 as markdown: every row, ours beside the paper's."""
    n, k = record["ways"], record["shots"]
    # Records written before other data were Omniglot's.
    omniglot = record.get("task", "omniglot") == "omniglot"
    paper_head = "paper (Table 1) | " if omniglot else ""
    lines = [f"**{record.get('data', 'Omniglot')} {n}-way {k}-shot ({record['labels']} labels "
             "requested)**: " + _header(record), "",
             f"| Model | policy | ours: accuracy ± 95% CI | {paper_head}"
             f"distinct labels | all {n} classes found |",
             "| --- | --- | ---: |" + (" ---: |" if omniglot else "") + " ---: | ---: |"]
    for row in record["rows"]:
        paper = ""
        if omniglot:
            paper = (_pct(row["paper_accuracy"], row["paper_ci"])
                     if row["paper_accuracy"] is not None else "— (not in the paper)") + " | "
        lines.append(f"| {row['label']} | `{row['policy']}` | "
                     f"{_pct(row['accuracy'], row['ci'])} | {paper}"
                     f"{row['distinct_labels']:.2f} | {100 * row['found_all']:.1f}% |")
    lines.append("")
    lines.append("Accuracy after each label (ours, %):")
    lines.append("")
    labels = list(range(1, record["labels"] + 1))
    lines.append("| Model | " + " | ".join(str(t) for t in labels) + " |")
    lines.append("| --- |" + " ---: |" * len(labels))
    for row in record["rows"]:
        lines.append(f"| {row['label']} | " + " | ".join(f"{v:.1f}" for v in row["curve"])
                     + " |")
    return "\n".join(lines) + "\n"


def figure3_markdown(record):
    ways = record["ways"]
    left_ticks = _ticks(ways, record["max_labels"], 5) if record["max_labels"] >= ways else \
        _ticks(1, record["max_labels"], 5)
    right_ticks = _ticks(5, record["distinct_max"], 5) if record["distinct_max"] >= 5 else \
        list(range(1, record["distinct_max"] + 1))
    lines = [f"**Omniglot {ways}-way, Figure 3**: " + _header(record), "",
             "Left: held-out accuracy (%) by labels requested.", "",
             "| Series | " + " | ".join(str(t) for t in left_ticks) + " |",
             "| --- |" + " ---: |" * len(left_ticks)]
    for row in record["left"]["rows"]:
        lines.append(f"| {row['label']} | " + " | ".join(
            f"{row['accuracy'][t - 1]:.1f} ± {row['ci'][t - 1]:.1f}" for t in left_ticks)
            + " |")
    for point in record["left"]["points"]:
        cells = [f"{point['accuracy']:.1f} ± {point['ci']:.1f}" if t == point["labels"]
                 else "" for t in left_ticks]
        lines.append(f"| {point['label']} | " + " | ".join(cells) + " |")
    lines += ["", f"Right: distinct labels among those requested ({ways}-way test episodes).",
              "", "| Series | model | " + " | ".join(str(t) for t in right_ticks) + " |",
              "| --- | --- |" + " ---: |" * len(right_ticks)]
    for row in record["right"]["rows"]:
        lines.append(f"| {row['label']} | `{row['model']}` | " + " | ".join(
            f"{row['distinct_labels'][t - 1]:.2f}" for t in right_ticks) + " |")
    notes = [f"- {r['label']}: {r['note']}" for r in record["left"]["rows"] if r.get("note")]
    if notes:
        lines += ["", "Notes:"] + notes
    return "\n".join(lines) + "\n"


def figure4_markdown(record):
    labels = record["labels"]
    lines = [f"**MovieLens, Figure 4** (pool {record['support_size']} movies, "
             f"{record['query_size']} held-out ratings; RMSE per episode, then the mean): "
             + _header(record), "",
             "| Series | " + " | ".join(str(t) for t in labels) + " |",
             "| --- |" + " ---: |" * len(labels)]
    for row in record["rows"]:
        if row["rmse"] is None:
            lines.append(f"| {row['label']} | " + " | ".join("—" for _ in labels) + " |")
            continue
        lines.append(f"| {row['label']} | " + " | ".join(
            _rmse_text(row["rmse"][t - 1], row["ci"][t - 1]) for t in labels) + " |")
    improvement = record.get("improvement")
    lines.append("")
    if improvement:
        lines.append(
            f"After {improvement['labels']} labels: Active MN {improvement['active_rmse']:.4f} "
            f"vs best baseline {improvement['best_baseline']} "
            f"{improvement['best_baseline_rmse']:.4f}: improvement "
            f"{improvement['improvement_pct']:+.2f}% (paper, MovieLens-20M: "
            f"{record['paper_improvement_pct']:+.1f}%).")
    tuning = record.get("tuning") or {}
    for key, name in (("ridge", "ridge l2"), ("gp", "GP noise ratio")):
        if key in tuning:
            lines.append(f"Tuned {name} per label count on {tuning['tune_episodes']} "
                         f"{tuning['tune_split']} episodes: "
                         + ", ".join(f"{v:g}" for v in tuning[key]["best"]) + ".")
    notes = [f"- {r['label']}: {r['note']}" for r in record["rows"] if r.get("note")]
    if notes:
        lines += ["", "Notes:"] + notes
    return "\n".join(lines) + "\n"


def batch_markdown(record):
    """A batch-query table: every row's final metric, distinct classes, curve."""
    classification = record["task"] == "omniglot"
    what = (f"Omniglot {record['ways']}-way" if classification else "MovieLens")
    k, rounds = record["query_batch"], record["rounds"]
    metric = "accuracy ± 95% CI" if classification else "RMSE ± 95% CI"
    lines = [f"**{what}, {record['labels']} labels as {rounds} round"
             f"{'s' if rounds > 1 else ''} of {k}** (model trained with K = "
             f"{record['trained_query_batch']}): " + _header(record), "",
             f"| Policy | k | {metric} |" + (" distinct classes | all found |"
                                            if classification else ""),
             "| --- | ---: | ---: |" + (" ---: | ---: |" if classification else "")]
    for row in record["rows"]:
        value = (_pct(row["metric"], row["ci"]) if classification
                 else _rmse_text(row["metric"], row["ci"]))
        extra = (f" {row['distinct_labels']:.2f} | {100 * row['found_all']:.1f}% |"
                 if classification else "")
        lines.append(f"| {row['label']} | {row['query_batch']} | {value} |{extra}")
    return "\n".join(lines) + "\n"


MARKDOWN = {"table1": table1_markdown, "figure3": figure3_markdown,
            "figure4": figure4_markdown, "batch": batch_markdown}


def csv_rows(record):
    """Long-format rows (one per series and label count) of a record."""
    out = []
    figure = record["figure"]

    def add(panel, row, metric, values, cis=None, paper_at=None):
        for t, value in enumerate(values, 1):
            item = {"figure": figure, "panel": panel, "row": row["key"],
                    "label": row["label"], "policy": row["policy"], "model": row["model"],
                    "labels_requested": t, "metric": metric, "value": value,
                    "ci": None if cis is None else cis[t - 1],
                    "paper_value": None, "paper_ci": None}
            if paper_at == t:
                item["paper_value"] = row.get("paper_accuracy")
                item["paper_ci"] = row.get("paper_ci")
            out.append(item)

    if figure == "table1":
        for row in record["rows"]:
            add("table", row, "accuracy_pct", row["curve"], row["curve_ci"],
                paper_at=record["labels"])
    elif figure == "figure3":
        for row in record["left"]["rows"]:
            add("left", row, "accuracy_pct", row["accuracy"], row["ci"])
        for point in record["left"]["points"]:
            out.append({"figure": figure, "panel": "left_points", "row": "balanced",
                        "label": point["label"], "policy": "balanced",
                        "model": record["model"], "labels_requested": point["labels"],
                        "metric": "accuracy_pct", "value": point["accuracy"],
                        "ci": point["ci"], "paper_value": None, "paper_ci": None})
        for row in record["right"]["rows"]:
            add("right", row, "distinct_labels", row["distinct_labels"])
    elif figure == "figure4":
        for row in record["rows"]:
            if row["rmse"] is not None:
                add("curve", row, "rmse", row["rmse"], row["ci"])
    elif figure == "batch":
        for row in record["rows"]:
            for t, value, ci in zip(row["labels"], row["curve"], row["curve_ci"]):
                out.append({"figure": figure, "panel": f"k{row['query_batch']}",
                            "row": row["key"], "label": row["label"],
                            "policy": row["policy"], "model": row["model"],
                            "labels_requested": t, "metric": record["metric"],
                            "value": value, "ci": ci, "paper_value": None,
                            "paper_ci": None})
    else:
        raise ValueError(f"unknown figure {figure!r}")
    return out


def _new_figure(width, height):
    # The object API draws off-screen with the Agg canvas and touches no
    # global pyplot state, so it works headless and inside tests.
    from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
    return Figure(figsize=(width, height), dpi=80, layout="constrained")


def _band(axes, x, mean, ci, label, **style):
    mean, ci = np.asarray(mean), np.asarray(ci)
    line, = axes.plot(x, mean, label=label, **style)
    axes.fill_between(x, mean - ci, mean + ci, color=line.get_color(), alpha=0.2, lw=0)
    return line.get_color()


def _integer_ticks(*axes_list):
    from matplotlib.ticker import MaxNLocator  # pylint: disable=g-import-not-at-top
    for axes in axes_list:
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        if axes.get_ylabel() == "distinct labels":
            axes.yaxis.set_major_locator(MaxNLocator(integer=True))


def plot_record(record, path):
    """Draws a record's figure as a small PNG at `path`."""
    figure = record["figure"]
    if figure == "table1":
        fig = _new_figure(5.0, 3.4)
        axes = fig.add_subplot()
        x = np.arange(1, record["labels"] + 1)
        for row in record["rows"]:
            color = _band(axes, x, row["curve"], row["curve_ci"], row["label"], marker=".")
            if row["paper_accuracy"] is not None:
                axes.plot([record["labels"]], [row["paper_accuracy"]], "x", color=color,
                          ms=7, mew=2)
        _integer_ticks(axes)
        axes.set_xlabel("labels requested")
        axes.set_ylabel("held-out accuracy (%)")
        axes.set_title(f"Omniglot {record['ways']}-way {record['shots']}-shot "
                       f"({record['episodes']} {record['split']} episodes; x = paper)",
                       fontsize=9)
        axes.legend(fontsize=7)
    elif figure == "figure3":
        fig = _new_figure(9.0, 3.4)
        left, right = fig.subplots(1, 2)
        ways = record["ways"]
        x = np.arange(1, len(record["labels"]) + 1)
        lo = ways if record["max_labels"] >= ways else 1
        keep = (x >= lo) & (x <= record["max_labels"])
        for row in record["left"]["rows"]:
            # MN random may be the very same run as the random policy: dashed,
            # so that the curve under it stays visible.
            style = {"linestyle": "--"} if row["key"] == "mn_random" else {}
            _band(left, x[keep], np.asarray(row["accuracy"])[keep],
                  np.asarray(row["ci"])[keep], row["label"], **style)
        for point in record["left"]["points"]:
            left.errorbar([point["labels"]], [point["accuracy"]], yerr=[point["ci"]],
                          fmt="o", label=point["label"])
        left.set_xlabel("labels requested")
        left.set_ylabel("accuracy (%)")
        left.set_title(f"{ways}-way, {record['episodes']} {record['split']} episodes",
                       fontsize=9)
        left.legend(fontsize=7)
        keep = x <= record["distinct_max"]
        for row in record["right"]["rows"]:
            right.plot(x[keep], np.asarray(row["distinct_labels"])[keep], label=row["label"])
        right.set_xlabel("labels requested")
        right.set_ylabel("distinct labels")
        right.set_title(f"tested {ways}-way", fontsize=9)
        _integer_ticks(left, right)
        right.legend(fontsize=7)
    elif figure == "figure4":
        fig = _new_figure(5.0, 3.6)
        axes = fig.add_subplot()
        x = np.asarray(record["labels"])
        for row in record["rows"]:
            if row["rmse"] is not None:
                axes.errorbar(x, row["rmse"], yerr=row["ci"], label=row["label"],
                              marker=".", capsize=2)
        axes.set_xlabel("number of labels requested")
        _integer_ticks(axes)
        axes.set_ylabel("RMSE (per user, averaged)")
        axes.set_title(f"MovieLens, {record['episodes']} {record['split']} episodes",
                       fontsize=9)
        axes.legend(fontsize=7)
    elif figure == "batch":
        fig = _new_figure(5.0, 3.4)
        axes = fig.add_subplot()
        for row in record["rows"]:
            axes.errorbar(row["labels"], row["curve"], yerr=row["curve_ci"],
                          label=f"{row['label']} (k={row['query_batch']})", marker=".",
                          capsize=2)
        axes.set_xlabel("labels requested")
        _integer_ticks(axes)
        axes.set_ylabel("held-out accuracy (%)" if record["task"] == "omniglot"
                        else "RMSE (per user, averaged)")
        axes.set_title(f"{record['labels']} labels in rounds of {record['query_batch']}, "
                       f"{record['episodes']} {record['split']} episodes", fontsize=9)
        axes.legend(fontsize=6)
    else:
        raise ValueError(f"unknown figure {figure!r}")
    fig.savefig(path)


def _json_ready(value):
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return value


def output_name(record):
    """File stem for a record: table1_5way1shot, figure3_20way, figure4."""
    if record["figure"] == "table1":
        return f"table1_{record['ways']}way{record['shots']}shot"
    if record["figure"] == "figure3":
        return f"figure3_{record['ways']}way"
    if record["figure"] == "batch":
        what = f"{record['ways']}way" if record["task"] == "omniglot" else "movielens"
        return f"batch_{what}_{record['rounds']}x{record['query_batch']}"
    prior = (record.get("tuning") or {}).get("baseline_prior", "global")
    name = record["figure"] if prior == "global" else f"{record['figure']}_{prior}"
    return name + ("_baselines" if record.get("baselines_only") else "")


def write_outputs(output_dir, record, name=None):
    """Writes `<name>.json`, `.csv`, `.png` and `.md` into `output_dir`; their paths."""
    tf.io.gfile.makedirs(output_dir)
    name = name or output_name(record)
    paths = {ext: os.path.join(output_dir, f"{name}.{ext}")
             for ext in ("json", "csv", "png", "md")}
    checkpoints.write_json_atomic(paths["json"], _json_ready(record))
    rows = csv_rows(record)
    with open(paths["csv"], "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["figure"])
        writer.writeheader()
        writer.writerows(rows)
    plot_record(record, paths["png"])
    with open(paths["md"], "w", encoding="utf-8") as f:
        f.write(MARKDOWN[record["figure"]](record))
    return paths
