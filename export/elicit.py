"""Asks a person on the terminal to rate movies, then predicts the rest.

    python -m export.elicit --export_dir=BASE [--version=N] \\
        --movies=PATH/movies.csv [--ratings=PATH/ratings.csv] \\
        [--pool_size=50] [--budget=10] [--batch=1] [--seed=0]
    python -m export.elicit --export_dir=BASE --movies=csv:items.csv \\
        --title_item_col=product --title_col=name     # your own items' titles

Loads an exported ratings model (`python -m export.saved_model`), picks a
pool of movies that its vocabulary knows and `movies.csv` names (the most
rated first when a ratings file is given, else at random; seeded), and asks
for ratings one movie at a time, in the order the learned policy picks:
0.5 to 5 in half stars, `s` to skip a movie you have not seen (it is left
out of the rest of the session), `q` or end of input to stop early. The
budget counts ratings, not skips. With `--batch=k` the model picks k movies
at a time (chosen jointly, each conditioned on the ones before, see
`ActiveSession.query`) and asks about them in a row before it picks the next
k. Finally it prints the predicted rating of every movie of the pool that was
not rated, best first.
"""

import sys

import numpy as np

SKIP = "skip"
QUIT = "quit"


def _key(item_id):
    """An item id as a titles key: int for integer ids, str for string ids."""
    if isinstance(item_id, bytes):
        return item_id.decode("utf-8")
    if isinstance(item_id, (int, np.integer)):
        return int(item_id)
    return str(item_id)


def choose_pool(vocabulary, titles, pool_size=50, seed=0, popularity=None):
    """MovieIds to ask about: known to the model and titled, seeded order.

    Args:
      vocabulary: the model's movieIds.
      titles: {movieId: title}.
      pool_size: how many to pick (fewer when fewer qualify).
      seed: seeds the random choice and order.
      popularity: optional {movieId: number of ratings}: the most rated are
        picked (ties broken at random).

    Returns:
      int64 movieIds in a random order (the model reads the pool as a
      sequence and was trained on shuffled pools).
    """
    rng = np.random.default_rng(seed)
    keys = sorted(k for k in (_key(m) for m in vocabulary) if k in titles)
    candidates = np.asarray(keys, np.int64 if keys and isinstance(keys[0], int) else str)
    if candidates.size == 0:
        raise ValueError("no movie of the model's vocabulary appears in the movies file")
    size = min(int(pool_size), candidates.size)
    if popularity is not None:
        counts = np.asarray([popularity.get(_key(m), 0) for m in candidates])
        order = np.lexsort((rng.random(candidates.size), -counts))
        pool = candidates[order[:size]]
    else:
        pool = rng.choice(candidates, size, replace=False)
    return rng.permutation(pool)


def parse_rating(text, rating_min=0.5, rating_max=5.0):
    """A typed answer as a rating (float), SKIP or QUIT; ValueError if neither."""
    text = text.strip().lower()
    if text in ("s", "skip"):
        return SKIP
    if text in ("q", "quit"):
        return QUIT
    try:
        value = float(text.replace(",", "."))
    except ValueError:
        value = None
    if value is None or not np.isfinite(value) or value * 2 != round(value * 2) \
            or not rating_min <= value <= rating_max:
        raise ValueError(
            f"{text!r} is not a rating: type a number from {rating_min:g} to "
            f"{rating_max:g} in half stars (e.g. 3.5), s to skip a movie you have "
            "not seen, or q to stop.")
    return value


def elicit(session, titles, budget=10, read=input, write=print, batch=1):
    """Runs the question loop on `session` (a ratings `ActiveSession`).

    Args:
      session: its pool is the movieIds `titles` names.
      titles: {movieId: title} for the pool.
      budget: how many ratings to ask for at most.
      read: prompt -> answer; raises EOFError at the end of input.
      write: prints a line.
      batch: movies picked per round (`session.query(batch)`); all of a
        round are asked before the model picks again.

    Returns:
      {movieId: rating} of the movies rated.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    pool = session.pool  # the movieIds, in the session's order
    lo, hi = session.rating_range
    rated = {}
    while len(rated) < budget and session.unlabeled_indices.size:
        k = min(batch, budget - len(rated), session.unlabeled_indices.size)
        for index in session.query(k):
            title = titles[_key(pool[index])]
            while True:
                try:
                    answer = read(f"[{len(rated) + 1}/{budget}] {title} -- your rating "
                                  f"({lo:g}-{hi:g}, s = not seen, q = stop): ")
                except EOFError:
                    write("")
                    return rated
                try:
                    value = parse_rating(answer, lo, hi)
                    break
                except ValueError as e:
                    write(str(e))
            if value == QUIT:
                return rated
            if value == SKIP:
                session.skip(index)
            else:
                session.teach(index, value)
                rated[_key(pool[index])] = value
    return rated


def report(session, titles, write=print):
    """Prints predicted ratings of the pool's unrated movies, best first."""
    pool = session.pool
    predictions = session.predict()
    rated = set(session.labeled_indices.tolist())
    rest = [i for i in range(len(pool)) if i not in rated]
    rest.sort(key=lambda i: (-predictions[i], titles[_key(pool[i])]))
    if not rated:
        write("No ratings given: these predictions are the model's prior.")
    write("Predicted ratings for the movies you did not rate, best first:")
    for i in rest:
        write(f"  {predictions[i]:4.2f}  {titles[_key(pool[i])]}")
    return [(_key(pool[i]), float(predictions[i])) for i in rest]


def prepare(export_dir, movies, version=None, ratings=None, pool_size=50, seed=0,
            title_item_col="movieId", title_col="title", ratings_item_col="movieId"):
    """Loads the model and chooses the pool: (path, loaded, titles, pool).

    Raises OSError or ValueError with a message for the person at the
    terminal (missing files, a model that is not a ratings model, ...).
    """
    import os

    import active_learning  # noqa: F401  (sets TensorFlow's log level before it loads)
    import tensorflow as tf

    from active_learning.data import movielens, ratings_reader
    from active_learning.session import resolve_saved_model

    if int(pool_size) < 1:
        raise ValueError(f"--pool_size must be >= 1 (movies to choose from), got {pool_size}")
    path = os.path.join(export_dir, str(version)) if version is not None else export_dir
    path = resolve_saved_model(path)
    loaded = tf.saved_model.load(path)
    if not hasattr(loaded, "vocabulary"):
        raise ValueError(f"{path} is not a ratings model (it has no movieId vocabulary)")
    if ratings_reader.parse_source(movies)[0] in ratings_reader.TABLE_KINDS:
        # A user's own item table: csv:/tsv:/parquet: with named columns.
        titles = ratings_reader.read_item_titles(movies, title_item_col, title_col)
    else:
        titles = movielens.load_movie_titles(movies)
    popularity = None
    if ratings:
        counts = ratings_reader.item_counts(ratings, ratings_item_col)
        popularity = {_key(k): int(v) for k, v in counts.items()}
    pool = choose_pool(loaded.vocabulary.numpy(), titles, pool_size, seed, popularity)
    return path, loaded, titles, pool


def main(argv=None):
    """Entry point: `python -m export.elicit --export_dir=BASE --movies=...`."""
    from absl import app, flags

    flags.DEFINE_string("export_dir", None, "Base directory of exported versions (or "
                        "one version directory).")
    flags.DEFINE_integer("version", None, "Version to load; default: the highest.")
    flags.DEFINE_string("movies", None, "movies.csv (or movies.dat / u.item): titles; or "
                        "csv:PATH / tsv:PATH / parquet:PATH, a table of your items' titles.")
    flags.DEFINE_string("title_item_col", "movieId", "Item id column of a titles table.")
    flags.DEFINE_string("title_col", "title", "Title column of a titles table.")
    flags.DEFINE_string("ratings_item_col", "movieId", "Item id column of a --ratings table "
                        "(csv:/tsv:/parquet:).")
    flags.DEFINE_string("ratings", None, "Optional ratings.csv (or csv:/tsv:/parquet: table): "
                        "ask about the most rated items first.")
    flags.DEFINE_integer("pool_size", 50, "How many movies to choose from.")
    flags.DEFINE_integer("budget", 10, "How many ratings to ask for at most.")
    flags.DEFINE_integer("batch", 1, "Movies the model picks at a time (jointly); all of "
                         "them are asked before it picks again.")
    flags.DEFINE_integer("seed", 0, "Seeds the pool and the session.")
    flags.mark_flags_as_required(["export_dir", "movies"])
    FLAGS = flags.FLAGS

    def run(unused_argv):
        if FLAGS.budget < 1:
            print(f"elicit: --budget must be >= 1 (ratings to ask for), got {FLAGS.budget}",
                  file=sys.stderr, flush=True)
            return 1
        try:
            path, loaded, titles, pool = prepare(
                FLAGS.export_dir, FLAGS.movies, version=FLAGS.version,
                ratings=FLAGS.ratings, pool_size=FLAGS.pool_size, seed=FLAGS.seed,
                title_item_col=FLAGS.title_item_col, title_col=FLAGS.title_col,
                ratings_item_col=FLAGS.ratings_item_col)
        except (OSError, ValueError) as e:
            print(f"elicit: {e}", file=sys.stderr, flush=True)
            return 1
        from active_learning.session import ActiveSession

        session = ActiveSession(loaded, pool, seed=FLAGS.seed)
        print(f"Model {path}: {len(pool)} movies in the pool. Rate up to "
              f"{FLAGS.budget} of them; the model picks the order.", flush=True)
        elicit(session, titles, FLAGS.budget, write=lambda line: print(line, flush=True),
               batch=FLAGS.batch)
        report(session, titles, write=lambda line: print(line, flush=True))
        return 0

    app.run(run, argv=argv)


if __name__ == "__main__":
    main()
