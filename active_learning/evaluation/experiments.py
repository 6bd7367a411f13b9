"""The paper's measurements from a trained model (`python -m trainers.evaluate`).

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
  process on the latent-factor embeddings (`rating_baselines`), the
  Popular-Entropy, Min-Max-Cos and Entropy-Sampling heuristics and the
  active policy.
- `run_batch_table`: labels asked in rounds of k (not in the paper).

Each returns a record: a JSON-ready dict whose `rows` the report writers
(`reports.write_outputs`) turn into CSV, JSON, PNG and Markdown.
"""

import dataclasses
import time

from absl import logging

from active_learning.evaluation.paper import (FIGURE4_HEURISTICS,
                                              PAPER_FIGURE4_IMPROVEMENT_PCT, PAPER_TABLE1,
                                              TABLE1_ROWS)
from active_learning.evaluation.rating_baselines import (BASELINE_PRIORS, DEFAULT_GP_GRID,
                                                         DEFAULT_RIDGE_GRID,
                                                         measure_baselines)
from active_learning.evaluation.rows import (BatchRow, Figure3Row, Figure4Row, Series,
                                             Table1Row)
from active_learning.evaluation.runner import evaluate_series


def check_classification(model, ways, labels, episodes, split):
    """Raises unless `model` can be asked `labels` labels of `ways`-way `split` episodes."""
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


def run_table1(model, episodes, ways, shots, num_episodes=1000, batch_size=50, seed=0,
               split="test", progress_every=30.0, log=None):
    """Omniglot N-way K-shot accuracy after N*K labels, four rows (paper Table 1).

    Every row drives the same weights (`model`, a `LoadedModel`): the paper's
    Matching Net rows are its slow predictor on a random / class-balanced
    label set. Accuracies are in percent.
    """
    labels = ways * shots
    check_classification(model, ways, labels, episodes, split)
    series = [Series(policy, label, policy, model) for label, policy in TABLE1_ROWS]
    start = time.perf_counter()
    results = evaluate_series(series, episodes.make_sampler(split, ways, seed), labels,
                              num_episodes, batch_size, seed, progress_every=progress_every,
                              log=log)
    # The paper's numbers are Omniglot's: none beside a user's own data.
    omniglot = model.dataset == "omniglot"
    paper = PAPER_TABLE1.get((ways, shots), {}) if omniglot else {}
    rows = []
    for row in series:
        result = results[row.key]
        paper_accuracy, paper_ci = paper.get(row.policy, (None, None))
        rows.append(Table1Row.of(
            row, result,
            accuracy=100.0 * result["metric"][-1], ci=100.0 * result["metric_ci"][-1],
            distinct_labels=result["distinct_labels"][-1], found_all=result["found_all"][-1],
            curve=[100.0 * m for m in result["metric"]],
            curve_ci=[100.0 * c for c in result["metric_ci"]],
            paper_accuracy=paper_accuracy, paper_ci=paper_ci))
    return {"figure": "table1", "task": "omniglot" if omniglot else "classification",
            "data": "Omniglot" if omniglot else (model.run_config.data.source
                                                 if model.run_config and model.run_config.data
                                                 else "data"),
            "split": split, "ways": ways,
            "shots": shots, "labels": labels, "episodes": num_episodes, "seed": seed,
            "batch_size": batch_size, "model": model.source,
            "rows": [dataclasses.asdict(r) for r in rows],
            "paper_available": bool(paper),
            "seconds": round(time.perf_counter() - start, 1)}


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
    series = []
    for label, policy, batched in BATCH_ROWS:
        if policy == "oracle" and classification:
            policy = "balanced"
        k = query_batch if batched else 1
        series.append(Series(f"{policy}_k{k}", label, policy, model, query_batch=k))
    start = time.perf_counter()
    results = evaluate_series(series, make_sampler, num_steps, num_episodes, batch_size,
                              seed, item_scores=item_scores, progress_every=progress_every,
                              log=log)
    scale = 100.0 if classification else 1.0
    rows = []
    for row in series:
        result = results[row.key]
        rows.append(BatchRow.of(
            row, result,
            query_batch=row.query_batch, labels=result["labels"],
            metric=scale * result["metric"][-1], ci=scale * result["metric_ci"][-1],
            curve=[scale * m for m in result["metric"]],
            curve_ci=[scale * c for c in result["metric_ci"]],
            distinct_labels=result["distinct_labels"][-1] if classification else None,
            found_all=result["found_all"][-1] if classification else None,
            distinct_curve=result["distinct_labels"] if classification else None))
    return {"figure": "batch", "task": "omniglot" if classification else "movielens",
            "metric": "accuracy_pct" if classification else "rmse", "split": split,
            "ways": ways, "labels": num_steps, "query_batch": query_batch,
            "rounds": num_steps // query_batch, "episodes": num_episodes, "seed": seed,
            "batch_size": batch_size, "model": model.source,
            "rows": [dataclasses.asdict(r) for r in rows],
            "trained_query_batch": (model.run_config.train_config.query_batch
                                    if model.run_config else 1),
            "seconds": round(time.perf_counter() - start, 1)}


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
        check_classification(model, ways, steps, episodes, split)
    mn_random = heuristic_models.get("random", main)
    series = [
        Series("balanced", "MN balanced", "balanced", main),
        Series("mn_random", "MN random", "random", mn_random,
               note=("a model trained with random labels" if mn_random is not main else
                     "no random-label model given: the random policy on the active model's "
                     "weights, so this equals the Random policy curve")),
        Series("random", "Random policy", "random", main),
    ]
    for i, model in enumerate(models):
        series.append(Series(f"active_{i}", f"Active policy ({model.short_name()})",
                             "greedy", model))
    start = time.perf_counter()
    results = evaluate_series(series, episodes.make_sampler(split, ways, seed), steps,
                              num_episodes, batch_size, seed, progress_every=progress_every,
                              log=log)
    records = {}
    for row in series:
        result = results[row.key]
        records[row.key] = Figure3Row.of(
            row, result, accuracy=[100.0 * m for m in result["metric"]],
            ci=[100.0 * c for c in result["metric_ci"]],
            distinct_labels=result["distinct_labels"], found_all=result["found_all"])
    balanced = records["balanced"]
    points = []
    for shots in (1, 2):
        t = ways * shots
        if t <= steps:
            points.append({"label": f"MN balanced ({shots}-shot)", "labels": t,
                           "accuracy": balanced.accuracy[t - 1],
                           "ci": balanced.ci[t - 1]})
    left = [records["mn_random"], records["random"], records["active_0"]]
    right = [dataclasses.replace(records["balanced"], label="Oracle policy"),
             dataclasses.replace(records["random"], label="Random policy")]
    right += [records[f"active_{i}"] for i in range(len(models))]
    return {"figure": "figure3", "task": "omniglot", "split": split, "ways": ways,
            "max_labels": max_labels, "distinct_max": distinct_max,
            "labels": list(range(1, steps + 1)), "episodes": num_episodes, "seed": seed,
            "batch_size": batch_size, "model": main.source,
            "models": [m.source for m in models],
            "left": {"rows": [dataclasses.asdict(r) for r in left], "points": points},
            "right": {"rows": [dataclasses.asdict(r) for r in right]},
            "balanced": dataclasses.asdict(balanced),
            "seconds": round(time.perf_counter() - start, 1)}


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
    series = []
    # model=None: the baselines alone (they need no trained weights, only the
    # run's users and latent factors), e.g. while the model still trains.
    for label, policy in (heuristics if model is not None else ()):
        own = heuristic_models.get(policy)
        note = (f"a model trained with the {policy} policy" if own is not None else
                "no model trained with this heuristic given: the heuristic drives the "
                "active model's weights")
        if own is not None and own.trained_policy() not in (None, policy):
            note += f" (warning: its run config says it was trained with {own.trained_policy()!r})"
        series.append(Series(policy, label, policy, own or model, note=note,
                             kind="heuristic"))
    if model is not None:
        series.append(Series("greedy", "Active MN", "greedy", model, kind="active"))
    if include_random and model is not None:
        series.append(Series("random", "Random policy (not in the paper)", "random", model,
                             kind="reference"))
    start = time.perf_counter()
    make_test = episodes.make_sampler(split, seed)
    results = evaluate_series(series, make_test, num_steps, num_episodes, batch_size, seed,
                              item_scores=episodes.item_scores,
                              progress_every=progress_every, log=log)
    records = {}
    for row in series:
        result = results[row.key]
        records[row.key] = Figure4Row.of(row, result, kind=row.kind, rmse=result["metric"],
                                         ci=result["metric_ci"])
    baseline_rows, tuning = measure_baselines(
        episodes, make_test, num_steps, num_episodes, batch_size, seed, split,
        tune_episodes, ridge_grid, gp_grid, baseline_prior, log)
    rows = [dataclasses.asdict(r) for r in baseline_rows + [
        records[k] for k in ("popular_entropy", "min_max_cos", "entropy", "greedy", "random")
        if k in records]]
    return {"figure": "figure4", "task": "movielens", "split": split,
            "labels": list(range(1, num_steps + 1)), "episodes": num_episodes,
            "seed": seed, "batch_size": batch_size,
            "model": model.source if model is not None else "(baselines only)",
            "baselines_only": model is None,
            "support_size": support, "query_size": episodes.data.query_size,
            "rows": rows, "tuning": tuning, "improvement": _improvement(rows, num_steps),
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

