"""Data flags of the ratings trainers, and a summary of a ratings source.

    python -m trainers.ratings_data --data=csv:ratings.csv --user_col=user \
        --item_col=item --rating_col=stars [--timestamp_col=time]
    python -m trainers.ratings_data --data=../shared/data/movielens/ml-latest-small
    python -m trainers.ratings_data --data=tfds:movielens/latest-small-ratings --download

The summary reads and prepares the data exactly as `trainers.ratings` does
(same flags), fits the latent factors and times the episode sampler; its
last output line is one JSON object.

`--data` takes `csv:PATH`, `tsv:PATH`, `parquet:PATH` (columns named by
`--user_col/--item_col/--rating_col`, optional `--timestamp_col`), a
GroupLens MovieLens folder (https://grouplens.org/datasets/movielens/), or
`tfds:movielens/<variant>-ratings` (`--download` lets TFDS fetch it).
"""

import json
import os
import time

from absl import app, flags

from active_learning.data import grouplens, ratings_reader
from active_learning.data import ratings_episodes, ratings_prep
from active_learning import run_config as run_configs
from trainers import common  # noqa: F401  (defines --data, --data_dir, --download, --seed)

FLAGS = flags.FLAGS

flags.DEFINE_string("user_col", "userId", "User id column of a csv/tsv/parquet table.")
flags.DEFINE_string("item_col", "movieId", "Item id column (integers or strings).")
flags.DEFINE_string("rating_col", "rating", "Rating column (numbers).")
flags.DEFINE_string("timestamp_col", None, "Optional timestamp column (numbers or dates): "
                    "of duplicate (user, item) rows the latest wins; without it the last row.")
flags.DEFINE_string("sep", None, "Field separator of a text table (default: ',' for csv:, "
                    "tab for tsv:).")
flags.DEFINE_string("encoding", "utf-8", "Text encoding of a csv/tsv table.")
flags.DEFINE_float("rating_min", None, "Lowest rating of the scale (default: the data's "
                   "lowest). A rating below it is an error naming its line.")
flags.DEFINE_float("rating_max", None, "Highest rating of the scale (default: the data's "
                   "highest).")
flags.DEFINE_string("tfds_data_dir", None, "tfds: sources: the TFDS data folder (default: "
                    "TFDS's own, ~/tensorflow_datasets).")
flags.DEFINE_integer("num_movies", run_configs.PAPER_RATINGS["num_movies"],
                     "Keep the most-rated items (paper: 4000 movies).")
flags.DEFINE_integer("num_users", run_configs.PAPER_RATINGS["num_users"],
                     "Keep the users with most ratings (paper: 6000).")
flags.DEFINE_integer("support_size", run_configs.PAPER_RATINGS["support_size"],
                     "Items a user can be asked about (paper: 50).")
flags.DEFINE_integer("query_size", run_configs.PAPER_RATINGS["query_size"],
                     "Held-out ratings per episode (paper: 10).")
flags.DEFINE_integer("latent_dim", run_configs.RatingsData.latent_dim,
                     "Width of the latent-factor item embeddings.")
flags.DEFINE_integer("latent_steps", run_configs.RatingsData.latent_steps,
                     "Full-batch Adam steps of the latent-factor fit.")
flags.DEFINE_float("factor_fraction", run_configs.RatingsData.factor_fraction,
                   "Share of the training users whose ratings fit the latent factors; below 1 "
                   "the active learner trains on the other training users only, users the "
                   "factors never saw, as at test time (not in the paper: it uses all).")
flags.DEFINE_integer("split_seed", None, "Seed of the train/validation/test user split "
                     "(default: --seed). Fix it to train several seeds on the same users.",
                     lower_bound=0)

# Paper 4.2.1's user split: a sixth of the users test, a twelfth validation.
VALIDATION_FRACTION = run_configs.VALIDATION_FRACTION
TEST_FRACTION = run_configs.TEST_FRACTION


def source_from_flags():
    """`--data`, or the MovieLens trainer's `--data_dir` (the same thing)."""
    data_dir = FLAGS["data_dir"].value if "data_dir" in FLAGS else None
    if FLAGS.data and data_dir and FLAGS.data != data_dir:
        raise flags.ValidationError(f"--data={FLAGS.data} and --data_dir={data_dir} name two "
                                    "sources; give one")
    source = FLAGS.data or data_dir
    if not source:
        raise flags.ValidationError(
            "--data is required: csv:PATH, tsv:PATH or parquet:PATH (with --user_col, "
            "--item_col, --rating_col), a MovieLens folder from "
            f"{grouplens.GROUPLENS_URL}, or tfds:movielens/latest-small-ratings with "
            "--download")
    return source


def reader_config_from_flags():
    """Everything that decides which ratings are read: recorded in run_config.json."""
    source = source_from_flags()
    kind, _ = ratings_reader.parse_source(source)
    config = {"source": source, "kind": kind, "rating_min": FLAGS.rating_min,
              "rating_max": FLAGS.rating_max}
    if kind in ratings_reader.TABLE_KINDS:
        config.update(user_col=FLAGS.user_col, item_col=FLAGS.item_col,
                      rating_col=FLAGS.rating_col, timestamp_col=FLAGS.timestamp_col,
                      sep=FLAGS.sep, encoding=FLAGS.encoding)
    if kind == "tfds":
        config.update(tfds_data_dir=FLAGS.tfds_data_dir)
    return config


def data_config_from_flags():
    """The run's `RatingsData`: source, columns, scale, filters, latent size."""
    source = source_from_flags()
    return run_configs.RatingsData(
        source=source, kind=ratings_reader.parse_source(source)[0],
        rating_min=FLAGS.rating_min, rating_max=FLAGS.rating_max, user_col=FLAGS.user_col,
        item_col=FLAGS.item_col, rating_col=FLAGS.rating_col,
        timestamp_col=FLAGS.timestamp_col, sep=FLAGS.sep, encoding=FLAGS.encoding,
        tfds_data_dir=FLAGS.tfds_data_dir, num_movies=FLAGS.num_movies,
        num_users=FLAGS.num_users, validation_fraction=VALIDATION_FRACTION,
        test_fraction=TEST_FRACTION, latent_dim=FLAGS.latent_dim,
        latent_steps=FLAGS.latent_steps, factor_fraction=FLAGS.factor_fraction,
        split_seed=FLAGS.split_seed)


def prep_config_from_flags(seed):
    """Everything that decides the filtering and the user split."""
    return {"num_movies": FLAGS.num_movies, "num_users": FLAGS.num_users,
            "support_size": FLAGS.support_size, "query_size": FLAGS.query_size,
            "validation_fraction": VALIDATION_FRACTION, "test_fraction": TEST_FRACTION,
            "seed": data_config_from_flags().user_split_seed(seed)}


def is_movielens(reader_config):
    """`reader_config`: a reader dict or a `RatingsData`."""
    if isinstance(reader_config, run_configs.RatingsData):
        reader_config = {"kind": reader_config.kind, "source": reader_config.source}
    kind = reader_config.get("kind") or ratings_reader.parse_source(reader_config["source"])[0]
    return kind == "grouplens" or (kind == "tfds" and "movielens" in reader_config["source"])


def rating_scale(frame, rating_min=None, rating_max=None):
    """The scale: the given bounds, else the data's lowest and highest rating."""
    values = frame["rating"].to_numpy()
    low = float(values.min()) if rating_min is None else float(rating_min)
    high = float(values.max()) if rating_max is None else float(rating_max)
    if not low < high:
        raise ValueError(
            f"the rating scale {low:g}..{high:g} is empty: every rating is {low:g}. A model "
            "cannot learn from one value; give --rating_min/--rating_max if the scale is wider.")
    return low, high


def summarize(reader_config, prep_config, latent_dim=64, latent_steps=None, output_dir=None,
              download=False, log=print):
    """Loads, prepares, fits latent factors and times the sampler.

    Prints a readable summary through `log` and returns the JSON-ready dict
    the command line prints last.
    """
    from active_learning.data import latent_factors as latent_lib  # Heavy (Keras).

    start = time.perf_counter()
    source = reader_config["source"]
    reader_args = {k: v for k, v in reader_config.items() if k not in ("source", "kind")}
    ratings = ratings_reader.load_ratings(source, download=download, **reader_args)
    load_seconds = time.perf_counter() - start
    scale = rating_scale(ratings, reader_config.get("rating_min"),
                         reader_config.get("rating_max"))
    data = ratings_prep.prepare(ratings, **prep_config)
    raw_values = sorted(set(ratings["rating"].tolist()))
    duplicates = ratings.attrs.get("duplicates_dropped", 0)
    log(f"Ratings from {source} (read in {load_seconds:.2f} s)")
    log(f"  raw:      {data.raw_ratings:,} ratings, {data.raw_users:,} users,"
        f" {data.raw_movies:,} items, {len(raw_values)} rating values "
        f"({raw_values[0]:g}..{raw_values[-1]:g}); scale {scale[0]:g}..{scale[1]:g}"
        f"{' (inferred)' if reader_config.get('rating_min') is None else ''}")
    log(f"  duplicates: {duplicates:,} (user, item) row(s) dropped (the latest timestamp "
        "wins; without timestamps the last row)")
    log(f"  filtered: {data.kept_ratings:,} ratings, {data.kept_users:,} "
        f"users, {data.num_movies:,} items (top {prep_config['num_movies']} items, top "
        f"{prep_config['num_users']} users, >= "
        f"{prep_config['support_size'] + prep_config['query_size']} ratings each)")
    unlisted = ratings.attrs.get("dropped_unlisted")
    if unlisted:
        log(f"  WARNING: dropped {unlisted:,} rating(s) of movies missing from the "
            "movies file (see the warning above)")
    log(f"  users:    {data.train.num_users} train, "
        f"{data.validation.num_users} validation, {data.test.num_users} test")

    kwargs = {} if latent_steps is None else {"steps": latent_steps}
    start = time.perf_counter()
    factors = latent_lib.train_latent_factors(data, dim=latent_dim,
                                              seed=prep_config["seed"], **kwargs)
    latent_seconds = time.perf_counter() - start
    log(f"  latent factors (dim {latent_dim}, {latent_seconds:.1f} s): "
        f"train RMSE {factors.train_rmse:.4f}, validation RMSE "
        f"{factors.validation_rmse:.4f} (global mean baseline "
        f"{factors.baseline_rmse:.4f})")
    path = None
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        path = os.path.join(output_dir, latent_lib.DEFAULT_FILENAME)
        factors.save(path)
        log(f"  saved latent factors to {path}")

    sampler = ratings_episodes.EpisodeSampler(
        data.train, prep_config["support_size"], prep_config["query_size"],
        seed=prep_config["seed"])
    throughput = ratings_episodes.episodes_per_second(sampler, batch_size=32)
    log(f"  episode sampler: {throughput:,.0f} episodes/s at batch 32")

    result = {
        "ratings": data.raw_ratings,
        "users": data.raw_users,
        "movies": data.raw_movies,
        "rating_values": int(len(raw_values)),
        "rating_min": scale[0],
        "rating_max": scale[1],
        "duplicates_dropped": int(duplicates),
        "dropped_unlisted_ratings": unlisted,
    }
    result.update(data.summary())
    result.update({
        "latent_dim": latent_dim,
        "latent_train_rmse": round(factors.train_rmse, 4),
        "latent_validation_rmse": round(factors.validation_rmse, 4),
        "latent_baseline_rmse": round(factors.baseline_rmse, 4),
        "latent_seconds": round(latent_seconds, 2),
        "latent_factors_path": path,
        "episodes_per_second": round(throughput, 1),
    })
    return result


def main(argv=None):
    """CLI: `python -m trainers.ratings_data --data=SOURCE`."""
    # --data, --data_dir (the MovieLens trainer's name for --data), --download
    # and --seed come from trainers.common, shared with the trainers.
    flags.DEFINE_string("output_dir", None, "If set, save the latent factors here.")

    def run(unused_argv):
        result = summarize(reader_config_from_flags(), prep_config_from_flags(FLAGS.seed),
                           latent_dim=FLAGS.latent_dim, latent_steps=FLAGS.latent_steps,
                           output_dir=FLAGS.output_dir, download=FLAGS.download)
        print(json.dumps(result), flush=True)

    app.run(run, argv=argv)


if __name__ == "__main__":
    main()
