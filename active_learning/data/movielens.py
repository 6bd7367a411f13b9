"""MovieLens cold-start episodes: reading, preprocessing and in-graph sampling.

Paper section 4.2.1 (Bachman et al., 2017): keep the most-rated movies and the
users with the most ratings among them, split users into train / validation /
test, and turn each user into episodes of `support_size` ratings the active
learner may ask about plus `query_size` held-out ratings of other movies.

The module has four parts:

* Reading any GroupLens release into one frame (`load_ratings`): `ratings.csv`
  (ML-20M, ML-25M, latest, latest-small), `ratings.dat` (ML-1M, ML-10M),
  `u.data` (ML-100K), or TFDS `movielens/*-ratings` (`load_ratings_tfds`).
  Malformed files fail with the file name and the 1-based line number.
* Preprocessing (`prepare`) into padded per-user arrays (`UserRatings`) over a
  dense movie vocabulary, and the Popular-Entropy score (`popularity_entropy`).
* `EpisodeSampler`, a `tf.Module` that draws batches of episodes entirely in
  the graph from a checkpointable `tf.random.Generator`.
* A command line summary of a data directory:

    python -m active_learning.data.movielens --data_dir=DIR

  whose last output line is one JSON object (counts, latent-factor RMSEs,
  sampler throughput).
"""

import dataclasses
import json
import math
import os
import re
import time
import warnings

from absl import logging

import numpy as np
import pandas as pd
import tensorflow as tf

from active_learning.data import sampling

# Ratings files in the order they are looked for, with the release they come
# from (for error messages).
RATINGS_FILES = ("ratings.csv", "ratings.dat", "u.data")
MOVIES_FILES = ("movies.csv", "movies.dat", "u.item")
_RELEASES = {
    "ratings.csv": "ML-20M/25M/latest/latest-small",
    "ratings.dat": "ML-1M/10M",
    "u.data": "ML-100K",
}
_TFDS_PREFIX = "tfds:"
MIN_RATING = 0.5
MAX_RATING = 5.0
COLUMNS = ("user_id", "movie_id", "rating")

_INT_RE = re.compile(r"^\s*[+-]?\d+\s*$")


class MovieLensFormatError(ValueError):
    """A ratings or movies file does not have the expected GroupLens layout."""


# ---------------------------------------------------------------------------
# Reading.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Layout:
    """How one ratings file is laid out."""

    separator: str
    description: str  # Human-readable row layout for error messages.
    header: tuple = ()  # Expected leading header fields; empty: no header.


_LAYOUTS = {
    "ratings.csv": _Layout(",", "userId,movieId,rating,timestamp",
                           header=("userId", "movieId", "rating")),
    "ratings.dat": _Layout("::", "UserID::MovieID::Rating::Timestamp"),
    "u.data": _Layout("\t", "user id<TAB>item id<TAB>rating<TAB>timestamp"),
}


def _find_file(data_dir, names, what):
    """Path of the first of `names` in `data_dir`, with clear errors."""
    data_dir = os.fspath(data_dir)
    if os.path.isfile(data_dir) and os.path.basename(data_dir) in names:
        return data_dir
    if not os.path.exists(data_dir):
        raise FileNotFoundError(
            f"MovieLens data directory {data_dir!r} does not exist.")
    if not os.path.isdir(data_dir):
        raise NotADirectoryError(
            f"{data_dir!r} is not a directory; expected a MovieLens folder "
            f"holding one of {', '.join(names)}.")
    for name in names:
        path = os.path.join(data_dir, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"No MovieLens {what} file in {data_dir!r}: expected one of "
        + ", ".join(f"{n} ({_RELEASES[n]})" if n in _RELEASES else n
                    for n in names) + ".")


def _row_error(path, line_number, message):
    return MovieLensFormatError(f"{path}, line {line_number}: {message}")


def _is_blank(line):
    return not line.strip()


def _read_header(path, layout):
    """Checks the header of a ratings file; returns its field names."""
    if not layout.header:
        return None
    with open(path, encoding="utf-8-sig") as f:
        first = f.readline().rstrip("\r\n")
    fields = [field.strip() for field in first.split(layout.separator)]
    if tuple(fields[:len(layout.header)]) != layout.header:
        raise _row_error(
            path, 1, f"expected the header {layout.description!r}, found "
            f"{first[:80]!r}.")
    return fields


def _parse_ratings_slowly(path, layout, num_fields):
    """Line-by-line parser: the authority on what is malformed, and where.

    Only runs when the fast pandas reader found something wrong (or could not
    read the file), so its speed does not matter; what matters is that it
    names the first bad line exactly.
    """
    users, movies, ratings = [], [], []
    skip = 1 if layout.header else 0
    sep_name = {"\t": "tab", ",": "','", "::": "'::'"}[layout.separator]
    with open(path, encoding="utf-8-sig") as f:
        for line_number, line in enumerate(f, start=1):
            if line_number <= skip or _is_blank(line):
                continue
            fields = line.rstrip("\r\n").split(layout.separator)
            if len(fields) != num_fields:
                raise _row_error(
                    path, line_number,
                    f"expected {num_fields} fields separated by {sep_name} "
                    f"({layout.description}), found {len(fields)}: "
                    f"{line.strip()[:80]!r}.")
            for field, what in ((fields[0], "user id"),
                                (fields[1], "movie id")):
                if not _INT_RE.match(field):
                    raise _row_error(
                        path, line_number,
                        f"{what} {field!r} is not an integer.")
            try:
                rating = float(fields[2])
            except ValueError:
                raise _row_error(
                    path, line_number,
                    f"rating {fields[2]!r} is not a number.") from None
            if not math.isfinite(rating):
                raise _row_error(
                    path, line_number,
                    f"rating {fields[2]!r} is not a number.")
            if not MIN_RATING <= rating <= MAX_RATING:
                raise _row_error(
                    path, line_number,
                    f"rating {rating:g} is outside {MIN_RATING:g}.."
                    f"{MAX_RATING:g}.")
            users.append(int(fields[0]))
            movies.append(int(fields[1]))
            ratings.append(rating)
    return users, movies, ratings


def _parse_ratings_fast(path, layout, header_fields):
    """Vectorised pandas reader; returns None whenever anything looks off.

    Returning None (instead of raising) hands the file to the line-by-line
    parser, which finds and names the offending line.
    """
    # Every field is read (no `usecols`): with `usecols` pandas silently
    # ignores extra fields, and the field count is part of the format.
    if layout.separator == "::":
        # A one-character separator keeps pandas on its C engine (a
        # multi-character one falls back to the slow Python engine). Each
        # "::" then yields an empty field, which must stay empty (NaN).
        sep, num_fields = ":", 7
        roles = {0: "user", 2: "movie", 4: "rating"}
        empty = [1, 3, 5]
    else:
        sep = layout.separator
        num_fields = len(header_fields) if header_fields is not None else 4
        roles = {0: "user", 1: "movie", 2: "rating"}
        empty = []
    dtype = {i: np.float64 for i in range(num_fields)}
    dtype.update({i: np.float32 for i in empty})  # Only checked for NaN.
    dtype.update({i: np.int64 for i, role in roles.items()
                  if role != "rating"})
    try:
        with warnings.catch_warnings():
            # pandas only warns (and drops data) when every row has more
            # fields than named; treat that as malformed too.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(
                path, sep=sep, header=None, names=list(range(num_fields)),
                index_col=False, dtype=dtype, skiprows=1 if layout.header
                else 0, engine="c", encoding="utf-8-sig")
    except (ValueError, pd.errors.ParserError, pd.errors.ParserWarning,
            pd.errors.EmptyDataError, UnicodeDecodeError):
        return None
    user, movie, rating = (frame[i].to_numpy() for i in roles)
    others = frame.drop(columns=[i for i, role in roles.items()
                                 if role != "rating"] + empty)
    if (others.isna().to_numpy().any()
            or not frame[empty].isna().to_numpy().all()
            or (rating < MIN_RATING).any() or (rating > MAX_RATING).any()):
        return None
    return user, movie, rating


def _ratings_frame(users, movies, ratings):
    return pd.DataFrame({
        "user_id": np.asarray(users, dtype=np.int64),
        "movie_id": np.asarray(movies, dtype=np.int64),
        "rating": np.asarray(ratings, dtype=np.float32),
    })


def read_ratings_file(path):
    """Parses one GroupLens ratings file, chosen by its base name."""
    path = os.fspath(path)
    name = os.path.basename(path)
    if name not in _LAYOUTS:
        raise ValueError(
            f"{path}: unrecognised ratings file name; expected one of "
            f"{', '.join(RATINGS_FILES)}.")
    layout = _LAYOUTS[name]
    with open(path, encoding="utf-8-sig") as f:
        # Stops at the first non-blank line, so a large file is not read twice.
        empty = all(_is_blank(line) for line in f)
    if empty:
        raise MovieLensFormatError(
            f"{path} is empty; expected rows {layout.description!r}.")
    header_fields = _read_header(path, layout)
    num_fields = len(header_fields) if header_fields else 4
    parsed = _parse_ratings_fast(path, layout, header_fields)
    if parsed is None:
        parsed = _parse_ratings_slowly(path, layout, num_fields)
    frame = _ratings_frame(*parsed)
    if frame.empty:
        raise MovieLensFormatError(
            f"{path} holds no ratings (only a header); expected rows "
            f"{layout.description!r}.")
    return frame


def load_ratings(data_dir, drop_unlisted=True):
    """All ratings of a MovieLens release as a frame.

    GroupLens lists every rated movie in the movies file beside the ratings;
    a rating of a movie that file does not list cannot be shown to a person
    or checked, and means the ratings file was altered. With
    `drop_unlisted` (the default) such rows are dropped with a warning that
    names them; the count is kept in `frame.attrs["dropped_unlisted"]`.

    Args:
      data_dir: a folder holding `ratings.csv`, `ratings.dat` or `u.data`
        (looked for in that order), the path of one such file, or
        `"tfds:<dataset name>"` (e.g. `"tfds:movielens/20m-ratings"`) to read
        an already prepared TensorFlow Datasets copy.

    Returns:
      `pandas.DataFrame` with columns `user_id` (int64), `movie_id` (int64)
      and `rating` (float32), in file order.

    Raises:
      FileNotFoundError: no such folder, or no recognised ratings file in it.
      MovieLensFormatError: an empty file or a malformed row (the message
        names the file and the 1-based line).
    """
    if isinstance(data_dir, str) and data_dir.startswith(_TFDS_PREFIX):
        return load_ratings_tfds(data_dir[len(_TFDS_PREFIX):])
    path = _find_file(data_dir, RATINGS_FILES, "ratings")
    frame = read_ratings_file(path)
    frame.attrs["dropped_unlisted"] = None
    if not drop_unlisted:
        return frame
    try:
        listed = np.fromiter(load_movie_titles(os.path.dirname(path)), np.int64)
    except (OSError, ValueError):
        return frame  # no movies file: nothing to check against
    unlisted = ~frame["movie_id"].isin(listed)
    count = int(unlisted.sum())
    if count:
        odd = frame[unlisted]
        lines = (np.flatnonzero(unlisted.to_numpy())[:3] + 2).tolist()  # 1-based + header
        logging.warning(
            "%s: dropped %d rating(s) of %d movie(s) missing from the movies file "
            "(e.g. user %d rated movie %d, data row(s) near line(s) %s); the file "
            "looks altered", path, count, odd["movie_id"].nunique(),
            int(odd["user_id"].iloc[0]), int(odd["movie_id"].iloc[0]), lines)
        frame = frame[~unlisted].reset_index(drop=True)
    frame.attrs["dropped_unlisted"] = count
    return frame


def load_ratings_tfds(name="movielens/latest-small-ratings",
                      tfds_data_dir=None, download=False):
    """Reads a TFDS `movielens/*-ratings` data set into `load_ratings`' frame.

    TFDS stores ids as strings (`user_id`, `movie_id`) and the rating as
    `user_rating`; they are converted in the graph, in large batches.
    `download=False` by default so that nothing is fetched behind the user's
    back; a data set that is not prepared yet raises with a hint.
    """
    import tensorflow_datasets as tfds  # Heavy import, only needed here.

    if not name.startswith("movielens/") or not name.endswith("-ratings"):
        raise ValueError(
            f"Expected a TFDS name 'movielens/<variant>-ratings', got "
            f"{name!r}.")
    try:
        ds = tfds.load(name, split="train", data_dir=tfds_data_dir,
                       download=download)
    except AssertionError as e:
        # TFDS signals a missing, not yet prepared data set this way.
        raise FileNotFoundError(
            f"TFDS data set {name!r} is not prepared in "
            f"{tfds_data_dir or 'the default TFDS folder'}; pass "
            f"download=True or prepare it with `tfds build`. ({e})") from e

    def convert(example):
        return (tf.strings.to_number(example["user_id"], tf.int64),
                tf.strings.to_number(example["movie_id"], tf.int64),
                tf.cast(example["user_rating"], tf.float32))

    parts = ([], [], [])
    for batch in ds.batch(1 << 16).map(convert).as_numpy_iterator():
        for part, values in zip(parts, batch):
            part.append(values)
    if not parts[0]:
        raise MovieLensFormatError(f"TFDS data set {name!r} holds no ratings.")
    return _ratings_frame(*(np.concatenate(p) for p in parts))


def load_movie_titles(data_dir):
    """Movie id -> title, from `movies.csv`, `movies.dat` or `u.item`.

    `movies.dat` and `u.item` come from releases written in Latin-1;
    `movies.csv` is UTF-8 and quotes titles that contain commas.
    """
    if isinstance(data_dir, str) and data_dir.startswith(_TFDS_PREFIX):
        raise ValueError(
            "Movie titles are read from a GroupLens folder (movies.csv, "
            f"movies.dat or u.item), not from TFDS ({data_dir!r}).")
    path = _find_file(data_dir, MOVIES_FILES, "movies")
    name = os.path.basename(path)
    if name == "movies.csv":
        try:
            frame = pd.read_csv(path, usecols=["movieId", "title"],
                                dtype={"movieId": np.int64, "title": str},
                                keep_default_na=False, encoding="utf-8-sig")
        except (ValueError, pd.errors.ParserError) as e:
            raise MovieLensFormatError(
                f"{path}: expected CSV rows 'movieId,title,genres' with a "
                f"header ({e}).") from e
        except pd.errors.EmptyDataError:
            raise MovieLensFormatError(
                f"{path} is empty; expected 'movieId,title,genres'.") from None
        return dict(zip(frame["movieId"].tolist(), frame["title"].tolist()))
    separator, layout = (("::", "MovieID::Title::Genres")
                         if name == "movies.dat" else
                         ("|", "movie id|title|release date|..."))
    titles = {}
    with open(path, encoding="latin-1") as f:
        for line_number, line in enumerate(f, start=1):
            if _is_blank(line):
                continue
            fields = line.rstrip("\r\n").split(separator)
            if len(fields) < 2 or not _INT_RE.match(fields[0]):
                raise _row_error(path, line_number,
                                 f"expected {layout!r}, found "
                                 f"{line.strip()[:80]!r}.")
            titles[int(fields[0])] = fields[1]
    if not titles:
        raise MovieLensFormatError(f"{path} is empty; expected {layout!r}.")
    return titles


# ---------------------------------------------------------------------------
# Preprocessing.
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class UserRatings:
    """The ratings of one split's users, padded to a rectangle.

    Row `u` holds user `user_ids[u]`'s `counts[u]` ratings in its first
    `counts[u]` columns, sorted by movie index; the rest is padding (0).
    """

    user_ids: np.ndarray  # [U] int64, original MovieLens user ids.
    items: np.ndarray  # [U, R_max] int32, dense movie indices.
    ratings: np.ndarray  # [U, R_max] float32.
    counts: np.ndarray  # [U] int32.

    @property
    def num_users(self):
        return int(self.user_ids.shape[0])

    @property
    def num_ratings(self):
        return int(self.counts.sum())

    def valid_mask(self):
        """[U, R_max] bool: True on real ratings, False on padding."""
        width = self.items.shape[1]
        return np.arange(width)[None, :] < self.counts[:, None]

    def to_frame(self, movie_ids):
        """Back to a `load_ratings`-style frame (for checks and baselines)."""
        mask = self.valid_mask()
        rows = np.nonzero(mask)[0]
        return _ratings_frame(self.user_ids[rows],
                              movie_ids[self.items[mask]],
                              self.ratings[mask])


@dataclasses.dataclass
class MovieLensData:
    """Filtered, split MovieLens ratings over a dense movie vocabulary."""

    movie_ids: np.ndarray  # [M] int64; dense index = position, sorted by id.
    train: UserRatings
    validation: UserRatings
    test: UserRatings
    rating_values: np.ndarray  # Sorted unique kept ratings, float32.
    support_size: int
    query_size: int
    # Counts for the summary: the raw frame, then after filtering.
    raw_ratings: int
    raw_users: int
    raw_movies: int
    kept_ratings: int

    @property
    def num_movies(self):
        return int(self.movie_ids.shape[0])

    @property
    def kept_users(self):
        return (self.train.num_users + self.validation.num_users
                + self.test.num_users)

    def split(self, name):
        """The `UserRatings` of split `name` (train, validation or test)."""
        if name not in ("train", "validation", "test"):
            raise ValueError(
                f"Unknown split {name!r}; expected train, validation or test.")
        return getattr(self, name)

    def summary(self):
        """Counts as a JSON-ready dict."""
        return {
            "kept_movies": self.num_movies,
            "kept_users": self.kept_users,
            "kept_ratings": self.kept_ratings,
            "train_users": self.train.num_users,
            "validation_users": self.validation.num_users,
            "test_users": self.test.num_users,
            "kept_rating_values": [float(v) for v in self.rating_values],
        }


def _top_by_count(ids, limit):
    """The `limit` most frequent values of `ids`, ties broken by smaller id."""
    values, counts = np.unique(ids, return_counts=True)
    # lexsort sorts by the last key first: count descending, then id.
    order = np.lexsort((values, -counts))
    return values[order[:limit]]


def _user_ratings(user_ids, frame):
    """Pads `frame` (user_id, item, rating; sorted by user, item)."""
    if frame.empty:
        return UserRatings(
            user_ids=np.zeros([0], np.int64),
            items=np.zeros([0, 0], np.int32),
            ratings=np.zeros([0, 0], np.float32),
            counts=np.zeros([0], np.int32))
    row = np.searchsorted(user_ids, frame["user_id"].to_numpy())
    counts = np.bincount(row, minlength=len(user_ids)).astype(np.int32)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    column = np.arange(len(frame)) - starts[row]
    width = int(counts.max())
    items = np.zeros([len(user_ids), width], np.int32)
    ratings = np.zeros([len(user_ids), width], np.float32)
    items[row, column] = frame["item"].to_numpy()
    ratings[row, column] = frame["rating"].to_numpy()
    return UserRatings(user_ids=np.asarray(user_ids, np.int64), items=items,
                       ratings=ratings, counts=counts)


def prepare(ratings, num_movies=4000, num_users=6000, support_size=50,
            query_size=10, validation_fraction=1 / 12, test_fraction=1 / 6,
            seed=0):
    """Filters and splits ratings as in paper section 4.2.1.

    1. Keeps the `num_movies` most-rated movies (ties: smaller movie id).
    2. Among their ratings, keeps the `num_users` users with the most ratings
       (ties: smaller user id; fewer if the data has fewer).
    3. Drops users with fewer than `support_size + query_size` of those
       ratings: they cannot fill an episode.
    4. The vocabulary is the kept movies that still have a rating from a kept
       user (a movie only dropped users rated could never enter an episode
       and would get an untrained embedding), sorted by movie id.
    5. Splits users at random (numpy, seeded) into validation
       (`round(U * validation_fraction)`), test (`round(U * test_fraction)`)
       and train (the rest). The paper's 5000 / 1000 train / test split of
       6000 users is test_fraction=1/6; validation comes out of train.

    Duplicate (user, movie) rows, which no GroupLens release has, keep the
    last one, so that an episode never shows one movie twice.

    Returns:
      `MovieLensData`.
    """
    missing = [c for c in COLUMNS if c not in ratings.columns]
    if missing:
        raise ValueError(f"ratings frame lacks columns {missing}; expected "
                         f"{list(COLUMNS)} (see load_ratings).")
    for value, what in ((num_movies, "num_movies"), (num_users, "num_users"),
                        (support_size, "support_size"),
                        (query_size, "query_size")):
        if int(value) != value or value < 1:
            raise ValueError(
                f"{what} must be a positive integer, got {value}.")
    for value, what in ((validation_fraction, "validation_fraction"),
                        (test_fraction, "test_fraction")):
        if not 0 <= value < 1:
            raise ValueError(f"{what} must lie in [0, 1), got {value}.")
    if validation_fraction + test_fraction >= 1:
        raise ValueError(
            "validation_fraction + test_fraction must be below 1 (training "
            f"users are the rest), got {validation_fraction + test_fraction}.")
    if ratings.empty:
        raise ValueError("ratings frame is empty.")
    num_movies, num_users = int(num_movies), int(num_users)
    support_size, query_size = int(support_size), int(query_size)

    frame = pd.DataFrame({
        "user_id": ratings["user_id"].to_numpy(np.int64),
        "movie_id": ratings["movie_id"].to_numpy(np.int64),
        "rating": ratings["rating"].to_numpy(np.float32),
    })
    raw = dict(raw_ratings=len(frame),
               raw_users=int(frame["user_id"].nunique()),
               raw_movies=int(frame["movie_id"].nunique()))
    frame = frame.drop_duplicates(["user_id", "movie_id"], keep="last")

    top_movies = _top_by_count(frame["movie_id"].to_numpy(), num_movies)
    frame = frame[frame["movie_id"].isin(top_movies)]
    top_users = _top_by_count(frame["user_id"].to_numpy(), num_users)
    frame = frame[frame["user_id"].isin(top_users)]
    episode_size = support_size + query_size
    user_counts = frame["user_id"].value_counts()
    enough = user_counts.index[user_counts >= episode_size].to_numpy()
    frame = frame[frame["user_id"].isin(enough)]
    if frame.empty:
        raise ValueError(
            f"No user has at least support_size + query_size = "
            f"{episode_size} ratings among the {len(top_movies)} most-rated "
            "movies; lower support_size / query_size or raise num_movies.")

    movie_ids = np.unique(frame["movie_id"].to_numpy()).astype(np.int64)
    frame = frame.assign(item=np.searchsorted(
        movie_ids, frame["movie_id"].to_numpy()).astype(np.int32))
    frame = frame.sort_values(["user_id", "item"], kind="stable")

    users = np.unique(frame["user_id"].to_numpy())
    order = np.random.default_rng(seed).permutation(len(users))
    num_validation = int(round(len(users) * validation_fraction))
    num_test = int(round(len(users) * test_fraction))
    if num_validation + num_test >= len(users):
        raise ValueError(
            f"Only {len(users)} users remain: too few for a validation split "
            f"of {num_validation} and a test split of {num_test} with any "
            "training users left.")
    # Sorted within each split, so a split's row order does not depend on
    # the random permutation beyond its membership.
    validation_users = np.sort(users[order[:num_validation]])
    test_users = np.sort(users[order[num_validation:num_validation
                                     + num_test]])
    train_users = np.sort(users[order[num_validation + num_test:]])

    def split(split_users):
        part = frame[frame["user_id"].isin(split_users)]
        return _user_ratings(split_users, part)

    return MovieLensData(
        movie_ids=movie_ids,
        train=split(train_users),
        validation=split(validation_users),
        test=split(test_users),
        rating_values=np.unique(frame["rating"].to_numpy()).astype(np.float32),
        support_size=support_size,
        query_size=query_size,
        kept_ratings=len(frame),
        **raw)


def popularity_entropy(data):
    """Popular-Entropy score of every movie, from training users only.

    log(1 + n_m) * H_m, with n_m the number of training ratings of movie m and
    H_m the entropy (nats) of its rating histogram over `data.rating_values`
    (Rashid et al., 2002): high for movies many people rate and disagree on,
    which is what makes a first question informative. Movies no training
    user rated score 0.

    Returns:
      float32 array [M].
    """
    users = data.train
    mask = users.valid_mask()
    items = users.items[mask]
    values = np.searchsorted(data.rating_values, users.ratings[mask])
    num_values = len(data.rating_values)
    histogram = np.bincount(items * num_values + values,
                            minlength=data.num_movies * num_values)
    histogram = histogram.reshape(data.num_movies, num_values).astype(
        np.float64)
    totals = histogram.sum(axis=1)
    p = histogram / np.maximum(totals, 1)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    return (np.log1p(totals) * entropy).astype(np.float32)


# ---------------------------------------------------------------------------
# Episodes.
# ---------------------------------------------------------------------------


class EpisodeSampler(tf.Module):
    """Draws batches of cold-start episodes in the graph.

    An episode is one user (uniform over the split's users, with
    replacement) and a fresh random choice of `support_size + query_size`
    distinct movies that user rated: the first `support_size` form the pool
    the learner may query, the rest the held-out set, so the two never share
    a movie. Randomness comes from `self.rng`, a `tf.random.Generator` whose
    state a `tf.train.Checkpoint` of this module saves and restores.

    `sample(batch_size)` (a `tf.function`) returns one batch as a dict, see
    `_sample`; `dataset(batch_size)` streams them.
    """

    def __init__(self, user_ratings, support_size=50, query_size=10, seed=0,
                 name=None):
        super().__init__(name=name)
        for value, what in ((support_size, "support_size"),
                            (query_size, "query_size")):
            if int(value) != value or value < 1:
                raise ValueError(
                    f"{what} must be a positive integer, got {value}.")
        if user_ratings.num_users == 0:
            raise ValueError("EpisodeSampler needs at least one user.")
        self.support_size = int(support_size)
        self.query_size = int(query_size)
        episode_size = self.support_size + self.query_size
        short = np.nonzero(user_ratings.counts < episode_size)[0]
        if short.size:
            raise ValueError(
                f"{short.size} user(s) have fewer than support_size + "
                f"query_size = {episode_size} ratings (e.g. user "
                f"{user_ratings.user_ids[short[0]]} with "
                f"{user_ratings.counts[short[0]]}); filter them with "
                "prepare(support_size=..., query_size=...).")
        self.num_users = user_ratings.num_users
        self._width = int(user_ratings.items.shape[1])
        self._items = tf.constant(user_ratings.items, tf.int32)
        self._ratings = tf.constant(user_ratings.ratings, tf.float32)
        self._counts = tf.constant(user_ratings.counts, tf.int32)
        self.rng = sampling.make_generator(seed)
        # Built per instance, not with @tf.function on the class: a
        # decorated method only keeps a weak reference to its instance, so
        # `EpisodeSampler(...).sample(8)` on a temporary would fail.
        self.sample = tf.function(self._sample)

    def _sample(self, batch_size):
        """A batch of episodes (`self.sample` is this as a `tf.function`).

        Returns:
          the episode dict of `active_learning.data.schema`: `support` int32
          [B, support_size] (movie indices), `support_labels` float32
          [B, support_size] (ratings), `queries` int32 [B, query_size],
          `query_labels` float32 [B, query_size], and `user_index` int32 [B]
          (row of the split's `UserRatings`).
        """
        if isinstance(batch_size, int) and batch_size < 1:
            raise ValueError(
                f"batch_size must be a positive integer, got {batch_size}.")
        episode_size = self.support_size + self.query_size
        user_index = self.rng.uniform([batch_size], minval=0,
                                      maxval=self.num_users, dtype=tf.int32)
        counts = tf.gather(self._counts, user_index)
        # Padding columns are invalid, so only the user's real ratings can be
        # drawn; every user has at least episode_size of them.
        valid = tf.range(self._width)[None, :] < counts[:, None]
        columns = sampling.sample_without_replacement(
            self.rng, [batch_size], self._width, episode_size, valid=valid)
        items = tf.gather(tf.gather(self._items, user_index), columns,
                          batch_dims=1)
        ratings = tf.gather(tf.gather(self._ratings, user_index), columns,
                            batch_dims=1)
        s = self.support_size
        return {
            "support": items[:, :s],
            "support_labels": ratings[:, :s],
            "queries": items[:, s:],
            "query_labels": ratings[:, s:],
            "user_index": user_index,
        }

    def dataset(self, batch_size):
        """An infinite `tf.data.Dataset` of `sample(batch_size)` dicts.

        The map runs sequentially, so the episodes come in the generator's
        order and a restored generator replays them.
        """
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(
                f"batch_size must be a positive integer, got {batch_size}.")
        batch_size = int(batch_size)
        return tf.data.Dataset.from_tensors(0).repeat().map(
            lambda _: self._sample(batch_size))


def episodes_per_second(sampler, batch_size=32, seconds=1.0):
    """Measured throughput of `sampler.sample(batch_size)`, in episodes/s.

    Note: this advances the sampler's generator.
    """
    tf.nest.map_structure(lambda t: t.numpy(), sampler.sample(batch_size))
    batches, start = 0, time.perf_counter()
    while True:
        tf.nest.map_structure(lambda t: t.numpy(), sampler.sample(batch_size))
        batches += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return batches * batch_size / elapsed


# ---------------------------------------------------------------------------
# Command line summary.
# ---------------------------------------------------------------------------


def summarize(data_dir, num_movies=4000, num_users=6000, support_size=50,
              query_size=10, seed=0, latent_dim=64, latent_steps=None,
              output_dir=None, log=print):
    """Loads, prepares, fits latent factors and times the sampler.

    Prints a readable summary through `log` and returns the JSON-ready dict
    the command line prints last.
    """
    # Imported here: latent_factors imports this module.
    from active_learning.data import latent_factors as latent_lib

    start = time.perf_counter()
    ratings = load_ratings(data_dir)
    load_seconds = time.perf_counter() - start
    data = prepare(ratings, num_movies=num_movies, num_users=num_users,
                   support_size=support_size, query_size=query_size,
                   seed=seed)
    raw_values = np.unique(ratings["rating"].to_numpy())
    log(f"MovieLens ratings from {data_dir} (read in {load_seconds:.2f} s)")
    log(f"  raw:      {data.raw_ratings:,} ratings, {data.raw_users:,} users,"
        f" {data.raw_movies:,} movies, {len(raw_values)} rating values "
        f"({raw_values.min():g}..{raw_values.max():g})")
    log(f"  filtered: {data.kept_ratings:,} ratings, {data.kept_users:,} "
        f"users, {data.num_movies:,} movies (top {num_movies} movies, top "
        f"{num_users} users, >= {support_size + query_size} ratings each)")
    unlisted = ratings.attrs.get("dropped_unlisted")
    if unlisted:
        log(f"  WARNING: dropped {unlisted:,} rating(s) of movies missing from the "
            "movies file (see the warning above)")
    log(f"  users:    {data.train.num_users} train, "
        f"{data.validation.num_users} validation, {data.test.num_users} test")

    kwargs = {} if latent_steps is None else {"steps": latent_steps}
    start = time.perf_counter()
    factors = latent_lib.train_latent_factors(data, dim=latent_dim,
                                              seed=seed, **kwargs)
    latent_seconds = time.perf_counter() - start
    log(f"  latent factors (dim {latent_dim}, {latent_seconds:.1f} s): "
        f"train RMSE {factors.train_rmse:.4f}, validation RMSE "
        f"{factors.validation_rmse:.4f} (global mean baseline "
        f"{factors.baseline_rmse:.4f})")
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        path = os.path.join(output_dir, latent_lib.DEFAULT_FILENAME)
        factors.save(path)
        log(f"  saved latent factors to {path}")
    else:
        path = None

    sampler = EpisodeSampler(data.train, support_size, query_size, seed=seed)
    throughput = episodes_per_second(sampler, batch_size=32)
    log(f"  episode sampler: {throughput:,.0f} episodes/s at batch 32")

    result = {
        "ratings": data.raw_ratings,
        "users": data.raw_users,
        "movies": data.raw_movies,
        "rating_values": int(len(raw_values)),
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
    """CLI: `python -m active_learning.data.movielens --data_dir=DIR`."""
    from absl import app, flags

    flags.DEFINE_string(
        "data_dir", None,
        "MovieLens folder (ratings.csv / ratings.dat / u.data) or "
        "tfds:movielens/<variant>-ratings.")
    flags.DEFINE_integer("num_movies", 4000, "Most-rated movies to keep.")
    flags.DEFINE_integer("num_users", 6000, "Most-active users to keep.")
    flags.DEFINE_integer("support_size", 50, "Support ratings per episode.")
    flags.DEFINE_integer("query_size", 10, "Held-out ratings per episode.")
    flags.DEFINE_integer("seed", 0, "Split, latent-factor and sampler seed.")
    flags.DEFINE_integer("latent_dim", 64, "Latent-factor dimension.")
    flags.DEFINE_integer("latent_steps", None,
                         "Latent-factor Adam steps (default: the library's).")
    flags.DEFINE_string("output_dir", None,
                        "If set, save the latent factors here.")
    flags.mark_flag_as_required("data_dir")
    FLAGS = flags.FLAGS

    def run(unused_argv):
        result = summarize(
            FLAGS.data_dir, num_movies=FLAGS.num_movies,
            num_users=FLAGS.num_users, support_size=FLAGS.support_size,
            query_size=FLAGS.query_size, seed=FLAGS.seed,
            latent_dim=FLAGS.latent_dim, latent_steps=FLAGS.latent_steps,
            output_dir=FLAGS.output_dir)
        print(json.dumps(result), flush=True)

    app.run(run, argv=argv)


if __name__ == "__main__":
    main()
