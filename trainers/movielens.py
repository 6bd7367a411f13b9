"""Train the active learner for cold-start rating elicitation (paper 4.2).

    python -m trainers.movielens --flagfile=trainers/configs/movielens.cfg

Works with any GroupLens release in --data_dir (ml-latest-small, ml-20m,
ml-1m, ml-100k) or TFDS (`--data_dir=tfds:movielens/20m-ratings`). The movie
embeddings come from a latent-factor model fitted on training users only
(paper 4.2.2), saved in --model_dir so a resumed run reuses them.
"""

import os

from absl import app, flags, logging
import keras

import active_learning  # noqa: F401  (quiet TensorFlow start-up)
from active_learning import checkpoints
from active_learning.config import ModelConfig
from active_learning.data import latent_factors, movielens
from active_learning.model import ActiveMatchingNetwork
from trainers import common

FLAGS = flags.FLAGS

flags.DEFINE_integer("num_movies", 4000, "Keep the most-rated movies (paper: 4000).")
flags.DEFINE_integer("num_users", 6000, "Keep the users with most ratings (paper: 6000).")
flags.DEFINE_integer("support_size", 50, "Movies a user can be asked about (paper: 50).")
flags.DEFINE_integer("query_size", 10, "Held-out ratings per episode (paper: 10).")
flags.DEFINE_integer("latent_dim", 64, "Width of the latent-factor movie embeddings.")
flags.DEFINE_integer("latent_steps", 1000, "Full-batch Adam steps of the latent-factor fit.")
flags.DEFINE_bool("train_item_table", True, "Keep training the movie embedding table.")
flags.DEFINE_bool("item_prior", False, "Give the slow predictor each held-out movie's own "
                  "prior rating (global mean + a learned movie bias, started from the "
                  "latent-factor fit) and an attention slot on it (not in the paper): "
                  "lower RMSE at every label count, but the learned selection then gains "
                  "nothing over random selection (docs/results.md, Figure 4).")


def build_setup():
    common.check_common_flags()
    if not FLAGS.data_dir:
        raise flags.ValidationError("--data_dir is required: a folder with ratings.csv "
                                    "(or ratings.dat / u.data), or tfds:movielens/...")
    budget = FLAGS.budget or 10
    if budget > FLAGS.support_size:
        raise flags.ValidationError(f"label budget {budget} exceeds the pool of "
                                    f"--support_size={FLAGS.support_size} movies")
    if budget % FLAGS.query_batch:
        raise flags.ValidationError(f"--query_batch={FLAGS.query_batch} must divide the label "
                                    f"budget {budget} (labels arrive in whole rounds)")
    if FLAGS.support_size < 2 or FLAGS.query_size < 1:
        raise flags.ValidationError("--support_size must be >= 2 and --query_size >= 1")

    ratings = movielens.load_ratings(FLAGS.data_dir)
    data = movielens.prepare(ratings, num_movies=FLAGS.num_movies, num_users=FLAGS.num_users,
                             support_size=FLAGS.support_size, query_size=FLAGS.query_size,
                             seed=FLAGS.seed)
    if data.validation.num_users < 1 or data.train.num_users < 1:
        raise flags.ValidationError("too few users with enough ratings for a train and "
                                    "validation split; lower --support_size/--query_size")
    logging.info("movielens: %s", data.summary())

    model_dir = FLAGS.model_dir
    os.makedirs(model_dir, exist_ok=True)
    factors_path = os.path.join(model_dir, latent_factors.DEFAULT_FILENAME)
    if os.path.exists(factors_path):
        factors = latent_factors.load_latent_factors(factors_path, movie_ids=data.movie_ids)
    else:
        factors = latent_factors.train_latent_factors(
            data, dim=FLAGS.latent_dim, steps=FLAGS.latent_steps, seed=FLAGS.seed)
        factors.save(factors_path)
    logging.info("latent factors: train RMSE %.4f, validation RMSE %.4f (mean baseline %.4f)",
                 factors.train_rmse, factors.validation_rmse, factors.baseline_rmse)
    checkpoints.save_vocabulary(model_dir, data.movie_ids)

    train_sampler = movielens.EpisodeSampler(data.train, FLAGS.support_size,
                                             FLAGS.query_size, seed=FLAGS.seed)

    def make_eval_sampler():
        return movielens.EpisodeSampler(data.validation, FLAGS.support_size,
                                        FLAGS.query_size, seed=FLAGS.seed + 1_000_003)

    values = data.rating_values
    config = ModelConfig(task="regression", embed_dim=FLAGS.embed_dim, units=FLAGS.units,
                         num_items=data.num_movies, item_table_dim=factors.dim,
                         train_item_table=FLAGS.train_item_table,
                         rating_min=float(min(values)), rating_max=float(max(values)),
                         rating_prior=float(factors.global_bias), item_prior=FLAGS.item_prior)
    run_config = {"dataset": "movielens", "data_dir": FLAGS.data_dir, "budget": budget,
                  "support_size": FLAGS.support_size, "query_size": FLAGS.query_size,
                  "data": data.summary(), "latent_validation_rmse": factors.validation_rmse,
                  "query_batch": FLAGS.query_batch}
    setup = dict(
        name="movielens", train_sampler=train_sampler, make_eval_sampler=make_eval_sampler,
        eval_policies=["greedy", "random", "min_max_cos", "popular_entropy"],
        num_steps=budget, higher_is_better=False, metric_name="rmse",
        item_scores=movielens.popularity_entropy(data), run_config=run_config)
    return config, factors, setup


def main(argv):
    del argv
    common.quiet_logs()
    config, factors, kwargs = build_setup()
    strategy = common.make_strategy(FLAGS.strategy)
    keras.utils.set_random_seed(FLAGS.seed)  # weight initialisation
    with strategy.scope():
        model = ActiveMatchingNetwork(config, item_embeddings=factors.movie_embeddings,
                                      item_biases=factors.movie_bias)
    setup = common.TaskSetup(model=model, **kwargs)
    common.run_training(setup, common.train_config_from_flags(setup.num_steps), strategy)


if __name__ == "__main__":
    flags.mark_flags_as_required(["data_dir", "model_dir"])
    app.run(main)
