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

import os

from absl import app, flags, logging
import keras

import active_learning  # noqa: F401  (sets TensorFlow's log level before it loads)
from active_learning import checkpoints
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


def build_setup():
    common.check_common_flags()
    budget = FLAGS.budget or 10
    if budget > FLAGS.support_size:
        raise flags.ValidationError(f"label budget {budget} exceeds the pool of "
                                    f"--support_size={FLAGS.support_size} items")
    if budget % FLAGS.query_batch:
        raise flags.ValidationError(f"--query_batch={FLAGS.query_batch} must divide the label "
                                    f"budget {budget} (labels arrive in whole rounds)")
    if FLAGS.support_size < 2 or FLAGS.query_size < 1:
        raise flags.ValidationError("--support_size must be >= 2 and --query_size >= 1")
    reader_config = ratings_data.reader_config_from_flags()
    prep_config = ratings_data.prep_config_from_flags(FLAGS.seed)
    movielens = ratings_data.is_movielens(reader_config)
    # A directory of another task or episode shape is refused before any data
    # is read; the model config is compared once the model is built.
    common.check_model_dir({"task": "movielens" if movielens else "ratings",
                            "dataset": "movielens" if movielens else "ratings",
                            "budget": budget, "support_size": FLAGS.support_size,
                            "query_size": FLAGS.query_size})

    source = reader_config["source"]
    reader_args = {k: v for k, v in reader_config.items() if k not in ("source", "kind")}
    ratings = ratings_reader.load_ratings(source, download=FLAGS.download, **reader_args)
    rating_min, rating_max = ratings_data.rating_scale(ratings, FLAGS.rating_min,
                                                       FLAGS.rating_max)
    duplicates = int(ratings.attrs.get("duplicates_dropped", 0))
    data = ratings_prep.prepare(ratings, **prep_config)
    if data.validation.num_users < 1 or data.train.num_users < 1:
        raise flags.ValidationError(
            f"{data.kept_users} user(s) have the {FLAGS.support_size + FLAGS.query_size} "
            "ratings an episode needs: too few for a train and a validation split; lower "
            "--support_size/--query_size")
    logging.info("ratings from %s: scale %g..%g, %d duplicate (user, item) row(s) dropped "
                 "(latest timestamp wins), %s", source, rating_min, rating_max, duplicates,
                 data.summary())

    factors_path = os.path.join(FLAGS.model_dir, latent_factors.DEFAULT_FILENAME)
    new_factors = not os.path.exists(factors_path)
    if new_factors:
        factors = latent_factors.train_latent_factors(
            data, dim=FLAGS.latent_dim, steps=FLAGS.latent_steps, seed=FLAGS.seed)
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

    train_sampler = ratings_episodes.EpisodeSampler(data.train, FLAGS.support_size,
                                                    FLAGS.query_size, seed=FLAGS.seed)

    def make_eval_sampler():
        return ratings_episodes.EpisodeSampler(data.validation, FLAGS.support_size,
                                               FLAGS.query_size, seed=FLAGS.seed + 1_000_003)

    config = ModelConfig(task="regression", embed_dim=FLAGS.embed_dim, units=FLAGS.units,
                         num_items=data.num_movies, item_table_dim=factors.dim,
                         train_item_table=FLAGS.train_item_table,
                         rating_min=rating_min, rating_max=rating_max,
                         rating_prior=float(factors.global_bias), item_prior=FLAGS.item_prior)
    run_config = {
        "dataset": "movielens" if movielens else "ratings",
        "data_dir": source, "budget": budget,
        "support_size": FLAGS.support_size, "query_size": FLAGS.query_size,
        # What evaluation needs to rebuild the same users and items.
        "reader": reader_config, "prep": prep_config,
        "rating_scale": {"rating_min": rating_min, "rating_max": rating_max,
                         "inferred": [FLAGS.rating_min is None, FLAGS.rating_max is None]},
        "item_id_type": "int64" if data.movie_ids.dtype.kind in "iu" else "str",
        "latent": {"dim": factors.dim, "steps": FLAGS.latent_steps},
        "duplicates_dropped": duplicates,
        "data": data.summary(), "latent_validation_rmse": factors.validation_rmse,
        "query_batch": FLAGS.query_batch}
    setup = dict(
        name="movielens" if movielens else "ratings", train_sampler=train_sampler,
        make_eval_sampler=make_eval_sampler,
        eval_policies=["greedy", "random", "min_max_cos", "popular_entropy"],
        num_steps=budget, higher_is_better=False, metric_name="rmse",
        item_scores=ratings_prep.popularity_entropy(data), run_config=run_config,
        write_files=write_files)
    return config, factors, setup


def main(argv):
    del argv
    common.quiet_logs()
    # First: multi-worker collectives must be set up before any TF op runs.
    strategy = common.make_strategy(FLAGS.strategy)
    try:
        config, factors, kwargs = build_setup()
    except (ValueError, FileNotFoundError) as e:
        # Data errors name the file, line and fix: show them without a traceback.
        raise SystemExit(f"error: {e}") from e
    keras.utils.set_random_seed(FLAGS.seed)  # weight initialisation
    with strategy.scope():
        model = ActiveMatchingNetwork(config, item_embeddings=factors.movie_embeddings,
                                      item_biases=factors.movie_bias)
    setup = common.TaskSetup(model=model, **kwargs)
    common.run_training(setup, common.train_config_from_flags(setup.num_steps), strategy)


def run():
    flags.mark_flags_as_required(["model_dir"])
    app.run(main)


if __name__ == "__main__":
    run()
