"""Evaluate trained models the way the paper reports them (Table 1, Figures 3 and 4).

    python -m trainers.evaluate --model_dir=DIR [--model_dir=DIR2 ...] \\
        --output_dir=OUT [--data_dir=...] [--figure=table1|figure3|figure4] \\
        [--split=test|validation] [--episodes=1000] [--seed=0] [--ways=N --shots=K] \\
        [--heuristic_model_dir=NAME=DIR ...]

--model_dir is a trained model directory (`trainers.omniglot`,
`trainers.movielens`) or an exported SavedModel (`export.saved_model`; its
base directory or one version). The data directory, class split, pool size
and budget default to what the run recorded in `run_config.json`.

- table1 (Omniglot default): accuracy after N*K labels for Matching Net
  (random), Matching Net (balanced), Active MN and Min-Max-Cos, all on the
  first model's weights, beside the paper's Table 1.
- figure3: 20-way accuracy by labels requested (first model) and distinct
  labels found for every --model_dir (e.g. models trained on 5, 10, 15, 20
  classes).
- figure4 (MovieLens default): RMSE by labels requested for Regression,
  Gaussian Process, Popular-Entropy, Min-Max-Cos, Entropy Sampling and Active
  MN. --heuristic_model_dir=min_max_cos=DIR (likewise popular_entropy,
  entropy; for figure3, random) uses a model trained with that policy.
  --baselines_only measures Regression and GP alone (no checkpoint needed);
  --baseline_prior=movie_bias centres them on each movie's latent-factor bias.
- batch: --budget labels asked in rounds of --query_batch=k (Omniglot
  --ways-way, or MovieLens): the learned policy picking k jointly, the top k
  of its sequential ranking, random k, greedy k-centre (batch Min-Max-Cos),
  the oracle, and the same model asked one label at a time.
- cold_start (MovieLens): the classic cold-start baselines (global mean,
  bias model, latent-factor fold-in; random, Popularity and Popular-Entropy
  picks) beside the first --model_dir's learned picks, each
  --heuristic_model_dir (e.g. random=DIR: the same predictor trained with
  random picks) and any further --model_dir; RMSE per user, CIs over users.

Same --seed, same episodes, same numbers. Writes <name>.json, .csv, .png and
.md into --output_dir, and prints the markdown table.
"""

import dataclasses
import os
import time

from absl import app, flags, logging

import active_learning  # noqa: F401  (sets TensorFlow's log level before it loads)
from active_learning import evaluation
from active_learning import run_config as run_configs
from active_learning.data import latent_factors

FIGURES = ("table1", "figure3", "figure4", "batch", "cold_start")


def define_flags(flag_values=flags.FLAGS):
    """Defines this command's flags on `flag_values`.

    Called only when run as a program (or by tests on their own
    `FlagValues`), so importing this module beside the trainers, which
    define --model_dir and --seed too, does not clash.
    """
    fv = flag_values
    flags.DEFINE_multi_string("model_dir", None, "Trained model directory or exported "
                              "SavedModel; repeat for Figure 3's right panel.", flag_values=fv)
    flags.DEFINE_string("output_dir", None, "Where the CSV/JSON/PNG/markdown go.",
                        flag_values=fv)
    flags.DEFINE_string("data_dir", None, "Dataset directory (default: the run's).",
                        flag_values=fv)
    flags.DEFINE_enum("figure", None, list(FIGURES), "What to measure (default: table1 "
                      "for Omniglot models, figure4 for MovieLens).", flag_values=fv)
    flags.DEFINE_enum("split", "test", ["test", "validation"], "Episodes from this split "
                      "of the run's classes / users.", flag_values=fv)
    flags.DEFINE_integer("episodes", 1000, "Episodes per series.", flag_values=fv)
    flags.DEFINE_integer("tune_episodes", 1000, "Figure 4: validation episodes to tune the "
                         "baselines' regularisers on.", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Seed of the episodes and the policies' draws.",
                         flag_values=fv)
    flags.DEFINE_integer("batch_size", None, "Episodes per rollout batch (default 50; "
                         "25 for figure3).", flag_values=fv)
    flags.DEFINE_integer("ways", None, "N: classes per episode (default: the run's; 20 for "
                         "figure3).", flag_values=fv)
    flags.DEFINE_integer("shots", None, "K: Table 1 requests N*K labels (default: the "
                         "run's).", flag_values=fv)
    flags.DEFINE_enum("episode_classes", "random", list(run_configs.EPISODE_CLASSES),
                      "table1/figure3/batch: draw an episode's N classes at random, or all "
                      "from one alphabet (group), as in Lake et al.'s one-shot protocol.",
                      flag_values=fv)
    flags.DEFINE_integer("items_per_class", None, "table1/figure3/batch: pool items per "
                         "class (default: the run's; 1 with --shots=1 is Lake et al.'s "
                         "one drawing per class, all labelled).", flag_values=fv)
    flags.DEFINE_integer("max_labels", 50, "Figure 3 left: labels requested up to this.",
                         flag_values=fv)
    flags.DEFINE_integer("distinct_max", 30, "Figure 3 right: labels requested up to this.",
                         flag_values=fv)
    flags.DEFINE_integer("budget", None, "Figure 4 and batch: labels requested (default: "
                         "the run's budget; Omniglot batch: --ways).", flag_values=fv)
    flags.DEFINE_integer("query_batch", 5, "batch: labels per round (k); must divide the "
                         "budget.", flag_values=fv)
    flags.DEFINE_multi_string("heuristic_model_dir", [], "NAME=DIR: a model trained with "
                              "heuristic policy NAME (popular_entropy, min_max_cos, "
                              "entropy; random for figure3).", flag_values=fv)
    flags.DEFINE_enum("baseline_prior", "global", ["global", "movie_bias"], "Figure 4: "
                      "Regression and GP predict around the global mean rating (the paper's "
                      "regression on embeddings) or global mean + each movie's latent-factor "
                      "bias (a stronger baseline).", flag_values=fv)
    flags.DEFINE_bool("baselines_only", False, "Figure 4: only the Regression and GP "
                      "series, from the run's users and latent factors; needs no checkpoint "
                      "(e.g. while the model still trains).", flag_values=fv)
    flags.DEFINE_string("latent_factors", None, "Figure 4: latent_factors.npz for the "
                        "baselines (default: the model directory's).", flag_values=fv)
    flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint of a "
                      "model directory.", flag_values=fv)
    flags.DEFINE_string("cache_dir", None, "Omniglot decoded-image cache.", flag_values=fv)
    flags.DEFINE_float("progress_seconds", 30.0, "Seconds between progress lines.",
                       flag_values=fv)


def _heuristic_models(specs, which):
    models = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise flags.ValidationError(f"--heuristic_model_dir expects NAME=DIR, got {spec!r}")
        if name not in evaluation.EVAL_POLICY_NAMES:
            raise flags.ValidationError(f"--heuristic_model_dir: unknown policy {name!r}; "
                                        f"choose from {evaluation.EVAL_POLICY_NAMES}")
        models[name] = evaluation.load_evaluation_model(path, which)
    return models


def _recorded(model, value, flag):
    """`value(run_config)` of `model`'s recorded run, or an error naming `flag`."""
    if model.run_config is None:
        raise flags.ValidationError(f"{model.path} records no run config; pass --{flag}")
    return value(model.run_config)


def _split(model):
    return model.run_config.recorded.get("split") if model.run_config else None


def _check(fv):
    problems = []
    if not fv.model_dir:
        problems.append("--model_dir is required")
    if not fv.output_dir:
        problems.append("--output_dir is required")
    for name in ("episodes", "tune_episodes", "batch_size", "ways", "shots", "max_labels",
                 "distinct_max", "budget", "query_batch"):
        value = getattr(fv, name)
        if value is not None and value < 1:
            problems.append(f"--{name} must be >= 1, got {value}")
    if problems:
        raise flags.ValidationError("; ".join(problems))


def command_line(fv):
    """The command that reproduces this run, from the flags that were set."""
    words = ["python -m trainers.evaluate"]
    for name in sorted(fv):
        flag = fv[name]
        if not flag.present or fv.find_module_defining_flag(name) in ("absl.logging",):
            continue
        values = flag.value if isinstance(flag.value, list) else [flag.value]
        words += [f"--{name}={v}" for v in values]
    return " ".join(words)


def run(fv):
    """Runs the evaluation the parsed flags `fv` ask for; returns the record."""
    _check(fv)
    start = time.perf_counter()
    if fv.baselines_only:
        return _finish(fv, _baselines_only(fv), start)
    models = [evaluation.load_evaluation_model(path, fv.checkpoint) for path in fv.model_dir]
    main = models[0]
    for model in models:
        logging.info("model %s (%s, %s): %s", model.path, model.kind, model.dataset,
                     model.source)
    heuristics = _heuristic_models(fv.heuristic_model_dir, fv.checkpoint)
    figure = fv.figure or ("table1" if main.task == "classification" else "figure4")
    data_dir = evaluation.resolve_data_dir(fv.data_dir, main.run_config, main.path)
    common = dict(num_episodes=fv.episodes, seed=fv.seed, split=fv.split,
                  progress_every=fv.progress_seconds)

    if figure == "batch":
        record = _batch(fv, main, data_dir, common)
    elif figure == "cold_start":
        record = _cold_start(fv, models, heuristics, data_dir, common)
    elif figure in ("table1", "figure3"):
        episodes = _class_episodes(fv, main, data_dir)
        logging.info("%s: %s", data_dir or main.run_config.data.source,
                     episodes.classes.describe())
        for other in models[1:]:
            if _split(other) != _split(main):
                logging.warning("%s was trained on another class split than %s; episodes "
                                "come from the first model's %s classes", other.path,
                                main.path, fv.split)
        if figure == "table1":
            if heuristics or len(models) > 1:
                logging.warning("table1 drives the first --model_dir's weights with every "
                                "policy (the paper's Matching Net rows); other models and "
                                "--heuristic_model_dir are not used")
            ways = fv.ways or _recorded(main, lambda r: r.episodes.eval_ways, "ways")
            shots = fv.shots or _recorded(main, lambda r: r.episodes.shots, "shots")
            record = evaluation.run_table1(main, episodes, ways, shots,
                                           batch_size=fv.batch_size or 50, **common)
        else:
            record = evaluation.run_figure3(
                models, episodes, ways=fv.ways or 20, max_labels=fv.max_labels,
                distinct_max=fv.distinct_max, batch_size=fv.batch_size or 25,
                heuristic_models=heuristics, **common)
    else:
        episodes = _movielens_episodes(fv, main, data_dir)
        logging.info("movielens %s: %s", data_dir, episodes.data.summary())
        record = evaluation.run_figure4(
            main, episodes, heuristic_models=heuristics,
            num_steps=fv.budget or _recorded(main, lambda r: r.episodes.budget, "budget"),
            batch_size=fv.batch_size or 50, tune_episodes=fv.tune_episodes,
            baseline_prior=fv.baseline_prior, **common)

    record["data_dir"] = data_dir
    if main.task == "classification":
        record["episode_classes"] = fv.episode_classes
    return _finish(fv, record, start)


def _movielens_episodes(fv, main, data_dir):
    """The users `main` was trained on, with its latent factors (--latent_factors)."""
    factors_path = fv.latent_factors or (
        os.path.join(main.path, latent_factors.DEFAULT_FILENAME)
        if main.kind == "model_dir" else None)
    return evaluation.movielens_episodes(main.run_config, data_dir, vocabulary=main.vocabulary,
                                         latent_factors_path=factors_path)


def _cold_start(fv, models, heuristics, data_dir, common):
    """The classic cold-start baselines and the models, with statistics over users.

    Rows: the first --model_dir driven greedily (the learned policy), each
    --heuristic_model_dir driven by its policy (the same predictor trained
    with that policy), then every further --model_dir driven greedily (e.g.
    the paper-predictor model).
    """
    main = models[0]
    if main.task != "regression":
        raise SystemExit("--figure=cold_start needs a ratings (MovieLens) model")
    episodes = _movielens_episodes(fv, main, data_dir)

    def name(model):
        return ("prior-aware predictor" if model.model.config.rating_predictor == "prior"
                else "paper predictor")

    rows = [("learned", f"Active MN, learned picks ({name(main)})", main, "greedy")]
    rows += [(policy, f"{policy} picks, own model ({name(model)})", model, policy)
             for policy, model in heuristics.items()]
    rows += [(f"model{i}", f"Active MN, learned picks ({name(m)}: {m.short_name()})", m, "greedy")
             for i, m in enumerate(models[1:], 1)]
    return evaluation.run_cold_start(
        rows, episodes,
        num_steps=fv.budget or _recorded(main, lambda r: r.episodes.budget, "budget"),
        batch_size=fv.batch_size or 50, tune_episodes=fv.tune_episodes,
        num_episodes=common["num_episodes"], seed=common["seed"], split=common["split"])


def _class_episodes(fv, main, data_dir):
    """The run's classes, drawn as --episode_classes and --items_per_class say."""
    episodes = evaluation.class_episodes(main.run_config, data_dir, fv.cache_dir)
    if fv.items_per_class is not None and fv.items_per_class < 1:
        raise SystemExit(f"--items_per_class must be >= 1, got {fv.items_per_class}")
    return dataclasses.replace(
        episodes, within_group=fv.episode_classes == "within_alphabet",
        items_per_class=fv.items_per_class or episodes.items_per_class)


def _batch(fv, main, data_dir, common):
    """The batch-query table of the first --model_dir."""
    split = common["split"]
    if main.task == "classification":
        episodes = _class_episodes(fv, main, data_dir)
        ways = fv.ways or _recorded(main, lambda r: r.episodes.eval_ways, "ways")
        budget = fv.budget or ways
        evaluation.check_classification(main, ways, budget, episodes, split)
        make_sampler = episodes.make_sampler(split, ways, fv.seed)
        item_scores = None
    else:
        episodes = evaluation.movielens_episodes(main.run_config, data_dir,
                                                 vocabulary=main.vocabulary)
        ways = None
        budget = fv.budget or _recorded(main, lambda r: r.episodes.budget, "budget")
        make_sampler = episodes.make_sampler(split, fv.seed)
        item_scores = episodes.item_scores
    if budget % fv.query_batch:
        raise flags.ValidationError(f"--query_batch={fv.query_batch} must divide the "
                                    f"budget {budget}")
    return evaluation.run_batch_table(
        main, make_sampler, budget, fv.query_batch, batch_size=fv.batch_size or 50,
        ways=ways, item_scores=item_scores, **common)


def _baselines_only(fv):
    """Figure 4's Regression and GP series from a MovieLens model directory's
    run config, vocabulary and latent factors, without loading a checkpoint."""
    from active_learning import checkpoints  # pylint: disable=g-import-not-at-top
    if fv.figure not in (None, "figure4"):
        raise flags.ValidationError("--baselines_only applies to --figure=figure4")
    model_dir = fv.model_dir[0]
    run_config = run_configs.load_run_config(model_dir)
    if run_config is None or run_config.task not in run_configs.RATINGS_TASKS:
        raise flags.ValidationError(f"--baselines_only needs a ratings run; {model_dir} "
                                    f"is {run_config and run_config.dataset!r}")
    data_dir = evaluation.resolve_data_dir(fv.data_dir, run_config, model_dir)
    factors_path = fv.latent_factors or os.path.join(model_dir,
                                                     latent_factors.DEFAULT_FILENAME)
    if not os.path.exists(factors_path):
        raise FileNotFoundError(f"{factors_path} not found: the baselines need the run's "
                                "latent factors (pass --latent_factors)")
    episodes = evaluation.movielens_episodes(
        run_config, data_dir, vocabulary=checkpoints.load_vocabulary(model_dir),
        latent_factors_path=factors_path)
    record = evaluation.run_figure4(
        None, episodes, num_steps=fv.budget or run_config.episodes.budget,
        num_episodes=fv.episodes, batch_size=fv.batch_size or 50, seed=fv.seed,
        split=fv.split, tune_episodes=fv.tune_episodes, baseline_prior=fv.baseline_prior,
        progress_every=fv.progress_seconds)
    record["data_dir"] = data_dir
    return record


def _finish(fv, record, start):
    """Stamps the record with how it was made, writes the outputs, prints the table."""
    record["command"] = command_line(fv)
    record["machine"] = evaluation.machine_description()
    record["wall_seconds"] = round(time.perf_counter() - start, 1)
    paths = evaluation.write_outputs(fv.output_dir, record)
    record["outputs"] = paths
    with open(paths["md"], encoding="utf-8") as f:
        print(f.read())
    logging.info("wrote %s in %.1f s", ", ".join(paths.values()), record["wall_seconds"])
    return record


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # Not trainers.common.quiet_logs: importing that module defines the
    # trainers' --model_dir and --seed, which this command defines its own way.
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.get_logger().setLevel("ERROR")
    logging.set_verbosity(logging.INFO)
    run(flags.FLAGS)


if __name__ == "__main__":
    define_flags()
    flags.mark_flags_as_required(["model_dir", "output_dir"])
    app.run(main)
