"""Preparing ratings for episodes: paper 4.2.1 filters, user splits, arrays.

`prepare(frame, ...)` keeps the most-rated items and the users with the most
ratings among them, drops users who cannot fill one episode, splits users
at random into train / validation / test and pads each split into per-user
arrays (`UserRatings`) over a dense item vocabulary (`RatingsData.movie_ids`,
int64 or str ids, sorted). `popularity_entropy` scores items for the
Popular-Entropy baseline. Nothing here reads files (`ratings_reader`) or
draws episodes (`ratings_episodes`).
"""

import dataclasses

import numpy as np
import pandas as pd

from active_learning.data.ratings_reader import COLUMNS, as_ids, ids_array, ratings_frame


@dataclasses.dataclass
class UserRatings:
    """The ratings of one split's users, padded to a rectangle.

    Row `u` holds user `user_ids[u]`'s `counts[u]` ratings in its first
    `counts[u]` columns, sorted by movie index; the rest is padding (0).
    """

    user_ids: np.ndarray  # [U] int64 or str, the data set's user ids.
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

    def take(self, rows):
        """The users at `rows` (an index array), in that order."""
        rows = np.asarray(rows, np.int64)
        return UserRatings(self.user_ids[rows], self.items[rows], self.ratings[rows],
                           self.counts[rows])

    def split(self, fraction, seed):
        """(a random `fraction` of the users, the others), seeded; each part
        keeps at least one user."""
        if self.num_users < 2:
            raise ValueError(f"cannot split {self.num_users} user(s) in two")
        order = np.random.default_rng(seed).permutation(self.num_users)
        first = min(max(int(round(fraction * self.num_users)), 1), self.num_users - 1)
        return self.take(np.sort(order[:first])), self.take(np.sort(order[first:]))

    def to_frame(self, movie_ids):
        """Back to a `load_ratings`-style frame (for checks and baselines)."""
        mask = self.valid_mask()
        rows = np.nonzero(mask)[0]
        return ratings_frame(self.user_ids[rows], np.asarray(movie_ids)[self.items[mask]],
                             self.ratings[mask], infer=False)


@dataclasses.dataclass
class RatingsData:
    """Filtered, split ratings over a dense item vocabulary (movie_ids: item ids)."""

    movie_ids: np.ndarray  # [M] int64 or str item ids; dense index = position, sorted.
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
    row = np.searchsorted(user_ids, as_ids(frame["user_id"].to_numpy()))
    counts = np.bincount(row, minlength=len(user_ids)).astype(np.int32)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    column = np.arange(len(frame)) - starts[row]
    width = int(counts.max())
    items = np.zeros([len(user_ids), width], np.int32)
    ratings = np.zeros([len(user_ids), width], np.float32)
    items[row, column] = frame["item"].to_numpy()
    ratings[row, column] = frame["rating"].to_numpy()
    return UserRatings(user_ids=as_ids(user_ids), items=items,
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
      `RatingsData`.

    Raises:
      ValueError: no user, or too few users for the splits, can fill an
        episode; the message says how many ratings an episode needs and
        how many the best-provided user has.
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
        "user_id": ids_array(ratings["user_id"].to_numpy()),
        "movie_id": ids_array(ratings["movie_id"].to_numpy()),
        "rating": ratings["rating"].to_numpy(np.float32),
    })
    raw = dict(raw_ratings=len(frame),
               raw_users=int(frame["user_id"].nunique()),
               raw_movies=int(frame["movie_id"].nunique()))
    frame = frame.drop_duplicates(["user_id", "movie_id"], keep="last")

    top_movies = _top_by_count(as_ids(frame["movie_id"].to_numpy()), num_movies)
    frame = frame[frame["movie_id"].isin(top_movies)]
    top_users = _top_by_count(as_ids(frame["user_id"].to_numpy()), num_users)
    frame = frame[frame["user_id"].isin(top_users)]
    episode_size = support_size + query_size
    user_counts = frame["user_id"].value_counts()
    enough = user_counts.index[user_counts >= episode_size].to_numpy()
    if len(enough) == 0:
        best = user_counts.index[0] if len(user_counts) else None
        raise ValueError(
            f"no user can fill an episode: episodes of support_size {support_size} + "
            f"query_size {query_size} need {episode_size} ratings per user among the "
            f"{len(top_movies)} most-rated items, and the user with the most, user "
            f"{best}, has {int(user_counts.max()) if best is not None else 0}. Lower "
            "--support_size / --query_size, or raise --num_movies.")
    frame = frame[frame["user_id"].isin(enough)]
    movie_ids = np.unique(as_ids(frame["movie_id"].to_numpy()))
    frame = frame.assign(item=np.searchsorted(
        movie_ids, as_ids(frame["movie_id"].to_numpy())).astype(np.int32))
    frame = frame.sort_values(["user_id", "item"], kind="stable")

    users = np.unique(as_ids(frame["user_id"].to_numpy()))
    order = np.random.default_rng(seed).permutation(len(users))
    num_validation = int(round(len(users) * validation_fraction))
    num_test = int(round(len(users) * test_fraction))
    if num_validation + num_test >= len(users):
        raise ValueError(
            f"only {len(users)} users have at least support_size + query_size = "
            f"{episode_size} ratings: too few for a validation split of "
            f"{num_validation} and a test split of {num_test} with training users "
            "left. Lower --support_size / --query_size, or use data with more users.")
    # Sorted within each split, so a split's row order does not depend on
    # the random permutation beyond its membership.
    validation_users = np.sort(users[order[:num_validation]])
    test_users = np.sort(users[order[num_validation:num_validation
                                     + num_test]])
    train_users = np.sort(users[order[num_validation + num_test:]])

    def split(split_users):
        part = frame[frame["user_id"].isin(split_users)]
        return _user_ratings(split_users, part)

    return RatingsData(
        movie_ids=movie_ids,
        train=split(train_users),
        validation=split(validation_users),
        test=split(test_users),
        rating_values=np.unique(frame["rating"].to_numpy()).astype(np.float32),
        support_size=support_size,
        query_size=query_size,
        kept_ratings=len(frame),
        **raw)


def training_counts(data):
    """`[M]` float32: how many training users rated each movie (Popularity picks)."""
    users = data.train
    return np.bincount(users.items[users.valid_mask()],
                       minlength=data.num_movies).astype(np.float32)


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



MovieLensData = RatingsData
