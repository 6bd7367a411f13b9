"""Train the active learner for cold-start rating elicitation on any ratings table.

    python -m trainers.ratings --data=csv:PATH --user_col=user --item_col=item \
        --rating_col=stars [--timestamp_col=time] [--rating_min=1 --rating_max=10] \
        --model_dir=runs/mine
    python -m trainers.movielens --flagfile=trainers/configs/movielens.cfg   # the preset

The data flags (`trainers.ratings_data`) name the source and its columns;
the rating scale is `--rating_min/--rating_max` or the data's own range. The
item embeddings come from a latent-factor model fitted on training users only
(paper 4.2.2), saved in --model_dir so a resumed run reuses them. Everything
that decides the data (source, columns, scale, filters, split seed, latent
size) is recorded in run_config.json, so evaluation rebuilds the same users.
"""

import dataclasses
import os

from absl import app, flags, logging
import keras

import active_learning  # noqa: F401  (sets TensorFlow's log level before it loads)
from active_learning import checkpoints
from active_learning import run_config as run_configs
from active_learning.config import ModelConfig
from active_learning.data import latent_factors, ratings_episodes, ratings_prep, ratings_reader
from active_learning.model import ActiveMatchingNetwork
from trainers import common
from trainers import ratings_data

FLAGS = flags.FLAGS

flags.DEFINE_bool("train_item_table", True, "Keep training the item embedding table.")
flags.DEFINE_bool("item_prior", False, "Give the slow predictor each held-out item's own "
                  "prior rating (global mean + a learned item bias, started from the "
                  "latent-factor fit) and an attention slot on it (not in the paper): "
                  "lower RMSE at every label count, but the learned selection then gains "
                  "nothing over random selection (docs/results.md, Figure 4).")
flags.DEFINE_enum("rating_predictor", "paper", ["paper", "prior"],
                  "paper: the paper's predictors, a convex combination of the observed "
                  "ratings. prior: each item's prior rating (global mean + learned item "
                  "bias) moved by a learned ridge fold-in of the user's residuals on the "
                  "latent factors and a gated attention correction (not in the paper; "
                  "active_learning/layers/prior_predictor.py, docs/results.md Figure 4).")


def run_config_from_flags():
    """The run's `RunConfig` from the flags, checked before any data is read."""
    common.check_common_flags()
    budget = FLAGS.budget or run_configs.RATINGS_BUDGET
    if budget > FLAGS.support_size:
        raise flags.ValidationError(f"label budget {budget} exceeds the pool of "
                                    f"--support_size={FLAGS.support_size} items")
    if budget % FLAGS.query_batch:
        raise flags.ValidationError(f"--query_batch={FLAGS.query_batch} must divide the label "
                                    f"budget {budget} (labels arrive in whole rounds)")
    if FLAGS.support_size < 2 or FLAGS.query_size < 1:
        raise flags.ValidationError("--support_size must be >= 2 and --query_size >= 1")
    try:
        data = ratings_data.data_config_from_flags()
        episodes = run_configs.RatingsEpisodeConfig(
            support_size=FLAGS.support_size, query_size=FLAGS.query_size, budget=budget)
    except ValueError as e:
        raise flags.ValidationError(str(e)) from None
    task = "movielens" if ratings_data.is_movielens(data) else "ratings"
    return common.run_config_from_flags(task, episodes, data)


def model_options_from_flags():
    """The ModelConfig fields the flags set (the data set the rest)."""
    return dict(embed_dim=FLAGS.embed_dim, units=FLAGS.units,
                train_item_table=FLAGS.train_item_table, item_prior=FLAGS.item_prior,
                rating_predictor=FLAGS.rating_predictor)


def build_setup(run, model_options, download=False):
    """The model config, latent factors and `TaskSetup` fields of `run`.

    Reads no flags: `model_options` are ModelConfig fields, `download` lets
    TFDS fetch a missing data set.
    """
    options, episodes = run.data, run.episodes
    # A directory of another task or episode shape is refused before any data
    # is read; the model config is compared once the model is built.
    common.check_model_dir(run)

    source = options.source
    ratings = ratings_reader.load_ratings(source, download=download, **options.reader_kwargs())
    rating_min, rating_max = ratings_data.rating_scale(ratings, options.rating_min,
                                                       options.rating_max)
    duplicates = int(ratings.attrs.get("duplicates_dropped", 0))
    data = ratings_prep.prepare(ratings, **options.prep_kwargs(episodes, run.seed))
    if data.validation.num_users < 1 or data.train.num_users < 1:
        raise flags.ValidationError(
            f"{data.kept_users} user(s) have the {episodes.support_size + episodes.query_size} "
            "ratings an episode needs: too few for a train and a validation split; lower "
            "--support_size/--query_size")
    logging.info("ratings from %s: scale %g..%g, %d duplicate (user, item) row(s) dropped "
                 "(latest timestamp wins), %s", source, rating_min, rating_max, duplicates,
                 data.summary())

    learner_users = data.train
    factor_data = data
    if options.factor_fraction < 1:
        factor_users, learner_users = data.train.split(
            options.factor_fraction, run_configs.split_seed(run.seed, "factor_users"))
        factor_data = dataclasses.replace(data, train=factor_users)
        logging.info("latent factors fitted on %d training users, the active learner trained "
                     "on the other %d", factor_users.num_users, learner_users.num_users)
    factors_path = os.path.join(run.loop.model_dir, latent_factors.DEFAULT_FILENAME)
    new_factors = not os.path.exists(factors_path)
    if new_factors:
        factors = latent_factors.train_latent_factors(
            factor_data, dim=options.latent_dim, steps=options.latent_steps, seed=run.seed)
    else:
        factors = latent_factors.load_latent_factors(factors_path, movie_ids=data.movie_ids)
    logging.info("latent factors: train RMSE %.4f, validation RMSE %.4f (mean baseline %.4f)",
                 factors.train_rmse, factors.validation_rmse, factors.baseline_rmse)

    def write_files(directory):
        # Written by the training loop once the directory is known to be
        # this run's (or new): a refused run leaves it untouched.
        if new_factors:
            factors.save(os.path.join(directory, latent_factors.DEFAULT_FILENAME))
        checkpoints.save_vocabulary(directory, data.movie_ids)

    def sampler(users, purpose):
        return ratings_episodes.EpisodeSampler(users, episodes.support_size,
                                               episodes.query_size,
                                               seed=run_configs.episode_seed(run.seed, purpose))

    train_sampler = sampler(learner_users, "train")
    config = ModelConfig(task="regression", num_items=data.num_movies,
                         item_table_dim=factors.dim, rating_min=rating_min,
                         rating_max=rating_max, rating_prior=float(factors.global_bias),
                         **model_options)
    recorded = {
        "rating_scale": {"rating_min": rating_min, "rating_max": rating_max,
                         "inferred": [options.rating_min is None, options.rating_max is None]},
        "item_id_type": "int64" if data.movie_ids.dtype.kind in "iu" else "str",
        "duplicates_dropped": duplicates,
        "data": data.summary(), "latent_validation_rmse": factors.validation_rmse,
        "factor_users": factor_data.train.num_users, "learner_users": learner_users.num_users}
    setup = dict(
        name=run.task, train_sampler=train_sampler,
        make_eval_sampler=lambda: sampler(data.validation, "selection"),
        eval_policies=["greedy", "random", "min_max_cos", "popular_entropy"],
        num_steps=episodes.budget, higher_is_better=False, metric_name="rmse",
        item_scores=ratings_prep.popularity_entropy(data), recorded=recorded,
        write_files=write_files)
    return config, factors, setup


def setup_from_flags():
    """`main()`'s reading of the flags: the RunConfig, model config, latent
    factors and setup."""
    run = run_config_from_flags()
    return (run,) + build_setup(run, model_options_from_flags(), download=FLAGS.download)


def main(argv):
    del argv
    common.quiet_logs()
    # First: multi-worker collectives must be set up before any TF op runs.
    strategy = common.make_strategy(FLAGS.strategy)
    try:
        run, config, factors, kwargs = setup_from_flags()
    except (ValueError, FileNotFoundError) as e:
        # Data errors name the file, line and fix: show them without a traceback.
        raise SystemExit(f"error: {e}") from e
    keras.utils.set_random_seed(run.seed)  # weight initialisation
    with strategy.scope():
        model = ActiveMatchingNetwork(config, item_embeddings=factors.movie_embeddings,
                                      item_biases=factors.movie_bias)
    setup = common.TaskSetup(model=model, **kwargs)
    common.run_training(setup, run, strategy)


def run():
    flags.mark_flags_as_required(["model_dir"])
    app.run(main)


if __name__ == "__main__":
    run()
