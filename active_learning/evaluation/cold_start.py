"""Cold-start ratings against the classic baselines, with statistics over users.

Figure 4 compares the active learner with the paper's baselines (Regression
and GP on the latent-factor embeddings around the global mean). A team
choosing an elicitation tool compares first against the classic cold-start
predictors a recommender already has, fitted on the training users only:

- global mean: every rating predicted as the latent-factor model's beta;
- bias model: beta + the movie's bias + the user's mean offset on the movies
  rated so far (item mean + user offset);
- latent-factor fold-in: the 4.2.2 model's movie vectors and biases fixed,
  the new user's vector and offset fitted by ridge on the observed ratings
  (`baselines.RidgeRegression` around the movie-bias prior), its penalty
  tuned per label count on validation episodes as the paper tunes its
  Regression;

each with ratings asked in a random order, and the bias model and fold-in
also with Popularity and Popular-Entropy picks (the most-rated movies first;
`ratings_prep.popularity_entropy` first). Model rows are the given models
driven by their policies on the same episodes.

Statistics are over users, not episodes (the paper's "RMSE per user, then
averaged"): each test user's RMSE pools the squared errors of all of that
user's episodes, and the 95% CI is over the test users.
"""

import time

from absl import logging
import numpy as np

from active_learning import baselines
from active_learning.data import ratings_prep
from active_learning.evaluation.metrics import mean_and_ci
from active_learning.evaluation.rating_baselines import (DEFAULT_RIDGE_GRID,
                                                         collect_rating_episodes,
                                                         evaluate_rating_baseline,
                                                         random_orders)
from active_learning.evaluation.runner import evaluate_policy
from active_learning.policies import make_eval_policy


def per_user(squared, users):
    """`[U, T]` RMSE per user from per-episode mean squared errors `[E, T]`."""
    ids = np.unique(users)
    return np.stack([np.sqrt(squared[users == u].mean(axis=0)) for u in ids]), ids


def score_orders(scores, support):
    """`[E, P]`: each episode's pool, highest item score first (ties by position)."""
    values = np.asarray(scores)[support]
    return np.argsort(-values, axis=1, kind="stable").astype(np.int32)


def bias_model(episodes, orders, t, factors):
    """beta + movie bias + the user's mean residual on the first `t` picks `[E, Q]`."""
    chosen = np.take_along_axis(episodes["support"], orders[:, :t], axis=1)
    ratings = np.take_along_axis(episodes["support_labels"], orders[:, :t], axis=1)
    prior = factors.global_bias + factors.movie_bias
    offset = (ratings - prior[chosen]).mean(axis=1, keepdims=True) if t else 0.0
    return prior[episodes["queries"]] + offset


def _episode_mse(predictions, targets):
    return np.square(baselines.rmse_per_episode(predictions, targets))


def fold_in_curve(validation, validation_orders, test, test_orders, factors, num_steps,
                  grid=DEFAULT_RIDGE_GRID):
    """Per-episode MSE `[E, T]` of the ridge fold-in, l2 tuned per t on validation,
    and the chosen l2 per t."""
    result = evaluate_rating_baseline(baselines.RidgeRegression, grid, validation,
                                      validation_orders, test, test_orders, factors,
                                      num_steps, prior="movie_bias")
    return np.square(result["per_episode"]), result["best"]


def run_cold_start(models, episodes, num_steps=10, num_episodes=1000, batch_size=50, seed=0,
                   split="test", tune_episodes=1000, log=None):
    """The cold-start table: classic baselines and `models`, per user.

    Args:
      models: list of (key, label, LoadedModel, policy name) model rows.
      episodes: `rebuild.MovieLensEpisodes` with the run's latent factors.

    Returns a record (`figure="cold_start"`) whose rows hold per-user mean
    RMSE and CI after each label count, plus `checks`: the first model row
    against the best classic baseline and against the same predictor with
    random picks (the row keyed "random", if any).
    """
    log = log or logging.info
    if episodes.factors is None:
        raise ValueError("the cold-start baselines need the run's latent_factors.npz "
                         "(pass --latent_factors)")
    start = time.perf_counter()
    factors = episodes.factors
    make_test = episodes.make_sampler(split, seed)
    test = collect_rating_episodes(make_test, num_episodes, batch_size,
                                   keys=("user_index",))
    tune_split = "validation" if split == "test" else "test"
    validation = collect_rating_episodes(episodes.make_sampler(tune_split, seed),
                                         tune_episodes, batch_size)
    pool = test["support"].shape[1]
    users = test["user_index"]
    random_test = random_orders(num_episodes, pool, seed)
    popular = score_orders(ratings_prep.training_counts(episodes.data), test["support"])
    entropy = score_orders(episodes.item_scores, test["support"])
    curves = {}  # key -> (label, kind, policy, model, [E, T] squared errors, note)
    global_mse = _episode_mse(np.full(test["query_labels"].shape, factors.global_bias),
                              test["query_labels"])
    curves["global_mean"] = ("Global mean", "baseline", "none", "beta",
                             np.repeat(global_mse[:, None], num_steps, 1),
                             "the training users' mean rating, whatever is asked")
    for key, name, orders in (("random", "random order", random_test),
                              ("popularity", "Popularity", popular),
                              ("popular_entropy", "Popular-Entropy", entropy)):
        mse = np.stack([_episode_mse(bias_model(test, orders, t, factors),
                                     test["query_labels"]) for t in range(1, num_steps + 1)], 1)
        curves[f"bias_{key}"] = (f"Bias model, {name}", "baseline", key,
                                 "item mean + user offset", mse,
                                 "beta + movie bias (latent-factor fit) + the user's mean "
                                 "residual on the movies asked")
    tuned = {}
    for key, name, orders, tune_orders in (
            ("random", "random order", random_test,
             random_orders(len(validation["support"]), pool, seed + 1)),
            ("popular_entropy", "Popular-Entropy", entropy,
             score_orders(episodes.item_scores, validation["support"]))):
        mse, tuned[key] = fold_in_curve(validation, tune_orders, test, orders, factors,
                                        num_steps)
        curves[f"fold_in_{key}"] = (f"Latent-factor fold-in, {name}", "baseline", key,
                                    "ridge fold-in", mse,
                                    "movie vectors and biases fixed; user vector and offset "
                                    "by ridge, l2 tuned per label count on validation")
    for key, label, model, policy in models:
        log("cold start: %s (%s) on %d episodes", label, policy, num_episodes)
        result = evaluate_policy(model.model, make_test().sample,
                                 make_eval_policy(policy, model.task,
                                                  item_scores=episodes.item_scores),
                                 num_steps, num_episodes, batch_size, seed=seed,
                                 keep_episodes=True)
        rmse = np.asarray(result["per_episode"]["metric"], np.float64)
        curves[key] = (label, "model", policy, model.source, np.square(rmse), "")
    rows = []
    per_user_values = {}
    for key, (label, kind, policy, model, squared, note) in curves.items():
        values, _ = per_user(squared, users)
        per_user_values[key] = values
        mean, ci = mean_and_ci(values)
        episode_mean, _ = mean_and_ci(np.sqrt(squared))
        rows.append({"key": key, "label": label, "kind": kind, "policy": policy,
                     "model": model, "rmse": mean.tolist(), "ci": ci.tolist(),
                     "episode_rmse": episode_mean.tolist(), "note": note})
    record = {"figure": "cold_start", "task": "movielens", "split": split,
              "labels": list(range(1, num_steps + 1)), "episodes": num_episodes,
              "users": int(len(np.unique(users))), "seed": seed, "batch_size": batch_size,
              "support_size": pool, "query_size": int(test["queries"].shape[1]),
              "tune_split": tune_split, "tune_episodes": tune_episodes,
              "fold_in_l2": tuned, "rows": rows,
              "model": models[0][2].source if models else "(baselines only)",
              "seconds": round(time.perf_counter() - start, 1)}
    if models:
        record["checks"] = _checks(rows, per_user_values, models[0][0], num_steps)
    return record


def _checks(rows, values, learned, num_steps):
    """The learned row against the best classic baseline and its random-pick twin."""
    by_key = {r["key"]: r for r in rows}
    classic = [r for r in rows if r["kind"] == "baseline"]
    best = min(classic, key=lambda r: r["rmse"][num_steps - 1])
    ours = by_key[learned]
    checks = {"labels": num_steps, "learned": ours["label"],
              "best_baseline": best["label"],
              "ratio_to_best_baseline": ours["rmse"][-1] / best["rmse"][-1]}
    if "random" in by_key and learned != "random":
        twin = by_key["random"]
        gains = {}
        for t in (5, num_steps):
            if t > num_steps:
                continue
            i = t - 1
            diff = values["random"][:, i] - values[learned][:, i]
            gains[t] = {"gain_pct": 100.0 * (twin["rmse"][i] - ours["rmse"][i]) / twin["rmse"][i],
                        "cis_overlap": bool(ours["rmse"][i] + ours["ci"][i]
                                            >= twin["rmse"][i] - twin["ci"][i]),
                        "paired_diff": float(diff.mean()),
                        "paired_ci": float(mean_and_ci(diff)[1])}
        checks["versus_random_picks"] = gains
    return checks


def cold_start_markdown(record):
    """The cold-start table as Markdown: per-user RMSE ± CI at 1, 2, 5 and T labels."""
    labels = [t for t in (1, 2, 5, 10, record["labels"][-1]) if t <= record["labels"][-1]]
    labels = sorted(set(labels))
    lines = [f"**Cold-start ratings** ({record['split']}: {record['episodes']} episodes of "
             f"{record['users']} users; pool {record['support_size']}, "
             f"{record['query_size']} held-out ratings; RMSE per user over all of that "
             "user's episodes, then the mean over users, ± 95% CI over users; seed "
             f"{record['seed']})", "",
             "| Series | kind | " + " | ".join(str(t) for t in labels) + " |",
             "| --- | --- |" + " ---: |" * len(labels)]
    for row in record["rows"]:
        lines.append(f"| {row['label']} | {row['kind']} | " + " | ".join(
            f"{row['rmse'][t - 1]:.4f} ± {row['ci'][t - 1]:.4f}" for t in labels) + " |")
    checks = record.get("checks")
    if checks:
        lines += ["", f"After {checks['labels']} labels, {checks['learned']} / best classic "
                      f"baseline ({checks['best_baseline']}) = "
                      f"{checks['ratio_to_best_baseline']:.4f}."]
        for t, gain in (checks.get("versus_random_picks") or {}).items():
            lines.append(f"At {t} labels, against random picks with the same predictor: "
                         f"{gain['gain_pct']:+.2f}% RMSE; CIs over users "
                         f"{'overlap' if gain['cis_overlap'] else 'do not overlap'}; paired "
                         f"difference per user {gain['paired_diff']:+.4f} ± "
                         f"{gain['paired_ci']:.4f}.")
    notes = [f"- {r['label']}: {r['note']}" for r in record["rows"] if r.get("note")]
    if notes:
        lines += ["", "Notes:"] + notes
    return "\n".join(lines) + "\n"
