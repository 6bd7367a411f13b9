"""GroupLens MovieLens releases: ratings files, movie titles, TFDS copies.

* `ratings.csv` (ML-20M, ML-25M, latest, latest-small), `ratings.dat`
  (ML-1M, ML-10M), `u.data` (ML-100K): `load_grouplens(folder_or_file)`;
* TFDS `movielens/*-ratings`: `load_ratings_tfds(name, download=...)`;
* titles from `movies.csv`, `movies.dat` or `u.item`: `load_movie_titles`.

GroupLens's terms forbid redistributing the files, so nothing here ships
with the package: download them from https://grouplens.org/datasets/movielens/
or let TFDS fetch them (`tfds:movielens/latest-small-ratings` with
`download=True`, `--download` on the command line). Malformed files fail with
the file name and the 1-based line number; duplicate (user, movie) rows
follow `ratings_reader.resolve_duplicates` (the latest timestamp wins).
"""

import dataclasses
import math
import os
import warnings

from absl import logging
import numpy as np
import pandas as pd
import tensorflow as tf

from active_learning.data import ratings_reader
from active_learning.data.ratings_reader import RatingsFormatError

GROUPLENS_URL = "https://grouplens.org/datasets/movielens/"
# Ratings files in the order they are looked for, with the release they come
# from (for error messages).
RATINGS_FILES = ("ratings.csv", "ratings.dat", "u.data")
MOVIES_FILES = ("movies.csv", "movies.dat", "u.item")
_RELEASES = {
    "ratings.csv": "ML-20M/25M/latest/latest-small",
    "ratings.dat": "ML-1M/10M",
    "u.data": "ML-100K",
}
MIN_RATING = 0.5
MAX_RATING = 5.0
_INT_RE = ratings_reader._INT_RE  # pylint: disable=protected-access
# Both ways to get the data, for every "not found" message.
HOW_TO_GET = (f"download a release from {GROUPLENS_URL} and point --data_dir at its "
              "folder, or use --data_dir=tfds:movielens/latest-small-ratings (or "
              "another TFDS movielens/*-ratings config) with --download")

MovieLensFormatError = RatingsFormatError


def _row_error(path, line_number, message):
    return ratings_reader.row_error(path, line_number, message)


def _is_blank(line):
    return not line.strip()


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
            f"MovieLens data directory {data_dir!r} does not exist: {HOW_TO_GET}.")
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
                    for n in names) + f". To get MovieLens, {HOW_TO_GET}.")


def _read_header(path, layout):
    """Checks the header of a ratings file; returns its field names."""
    if not layout.header:
        return None
    try:
        with open(path, encoding="utf-8-sig") as f:
            first = f.readline().rstrip("\r\n")
    except UnicodeDecodeError:
        ratings_reader.check_decodable(path, "utf-8-sig")
        raise
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
    # The fast reader fails on undecodable bytes without saying where.
    ratings_reader.check_decodable(path, "utf-8-sig")
    users, movies, ratings, timestamps = [], [], [], []
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
            timestamps.append(_timestamp(fields, 3))
    return users, movies, ratings, timestamps


def _timestamp(fields, index):
    """The timestamp field as a float; -inf when absent or unreadable.

    Only duplicates read it (the latest wins), so an odd timestamp is not an
    error: the row then counts as the oldest.
    """
    try:
        value = float(fields[index])
    except (IndexError, ValueError):
        return -math.inf
    return value if math.isfinite(value) else -math.inf


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
        time_field = 6
    else:
        sep = layout.separator
        num_fields = len(header_fields) if header_fields is not None else 4
        roles = {0: "user", 1: "movie", 2: "rating"}
        empty = []
        time_field = 3 if num_fields > 3 else None
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
    timestamps = (frame[time_field].to_numpy(np.float64) if time_field is not None
                  else np.full(len(frame), -np.inf))
    return user, movie, rating, timestamps


def _ratings_frame(users, movies, ratings):
    return pd.DataFrame({
        "user_id": np.asarray(users, dtype=np.int64),
        "movie_id": np.asarray(movies, dtype=np.int64),
        "rating": np.asarray(ratings, dtype=np.float32),
    })


def read_ratings_file(path):
    """Parses one GroupLens ratings file, chosen by its base name.

    Duplicate (user, movie) rows (no GroupLens release has any) keep the
    latest timestamp; `frame.attrs["duplicates_dropped"]` counts the rest.
    """
    path = os.fspath(path)
    name = os.path.basename(path)
    if name not in _LAYOUTS:
        raise ValueError(
            f"{path}: unrecognised ratings file name; expected one of "
            f"{', '.join(RATINGS_FILES)}.")
    layout = _LAYOUTS[name]
    with open(path, "rb") as f:
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
    frame = _ratings_frame(*parsed[:3])
    if frame.empty:
        raise MovieLensFormatError(
            f"{path} holds no ratings (only a header); expected rows "
            f"{layout.description!r}.")
    return ratings_reader.resolve_duplicates(frame, parsed[3])


def load_grouplens(data_dir, drop_unlisted=True):
    """All ratings of a MovieLens release as a frame.

    GroupLens lists every rated movie in the movies file beside the ratings;
    a rating of a movie that file does not list cannot be shown to a person
    or checked, and means the ratings file was altered. With
    `drop_unlisted` (the default) such rows are dropped with a warning that
    names them; the count is kept in `frame.attrs["dropped_unlisted"]`.

    Args:
      data_dir: a folder holding `ratings.csv`, `ratings.dat` or `u.data`
        (looked for in that order), or the path of one such file.

    Returns:
      `pandas.DataFrame` with columns `user_id` (int64), `movie_id` (int64)
      and `rating` (float32), in file order.

    Raises:
      FileNotFoundError: no such folder, or no recognised ratings file in it.
      MovieLensFormatError: an empty file or a malformed row (the message
        names the file and the 1-based line).
    """
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
        duplicates = frame.attrs.get("duplicates_dropped", 0)
        frame = frame[~unlisted].reset_index(drop=True)
        frame.attrs["duplicates_dropped"] = duplicates
    frame.attrs["dropped_unlisted"] = count
    return frame


def load_ratings_tfds(name="movielens/latest-small-ratings",
                      tfds_data_dir=None, download=False):
    """Reads a TFDS `movielens/*-ratings` data set into `load_grouplens`' frame.

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
            f"{tfds_data_dir or 'the default TFDS folder'}: add --download "
            "(download=True) on a machine with internet, or `tfds build "
            f"{name}`; or download the GroupLens files from {GROUPLENS_URL} "
            f"and pass their folder as --data_dir. ({e})") from e

    def convert(example):
        return (tf.strings.to_number(example["user_id"], tf.int64),
                tf.strings.to_number(example["movie_id"], tf.int64),
                tf.cast(example["user_rating"], tf.float32),
                tf.cast(example.get("timestamp", tf.zeros_like(example["user_rating"])),
                        tf.float64))

    parts = ([], [], [], [])
    for batch in ds.batch(1 << 16).map(convert).as_numpy_iterator():
        for part, values in zip(parts, batch):
            part.append(values)
    if not parts[0]:
        raise MovieLensFormatError(f"TFDS data set {name!r} holds no ratings.")
    columns = [np.concatenate(p) for p in parts]
    return ratings_reader.resolve_duplicates(_ratings_frame(*columns[:3]), columns[3])


def load_movie_titles(data_dir):
    """Movie id -> title, from `movies.csv`, `movies.dat` or `u.item`.

    `movies.dat` and `u.item` come from releases written in Latin-1;
    `movies.csv` is UTF-8 and quotes titles that contain commas.
    """
    if isinstance(data_dir, str) and data_dir.startswith(ratings_reader.TFDS_PREFIX):
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
            if isinstance(e, UnicodeDecodeError):
                ratings_reader.check_decodable(path, "utf-8-sig")
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


