"""Reading any ratings table into one frame: user, item, rating.

Every source ends as a `pandas.DataFrame` with columns `user_id`,
`movie_id` (the item id; the name comes from MovieLens, the first data set)
and `rating` (float32), one row per (user, item) pair. Ids stay what the
file holds: int64 when every id of a column is an integer, else str, so
string item ids ("B00X4WHP5E", "tt0111161") work end to end.

Sources (`load_ratings(source, ...)`):

* `csv:PATH`, `tsv:PATH`, `parquet:PATH`: any table whose user, item and
  rating (and optional timestamp) columns are named by arguments;
* `tfds:movielens/<variant>-ratings`: TensorFlow Datasets (`download=True`
  lets TFDS fetch it);
* a GroupLens folder or ratings file (`active_learning.data.grouplens`).

Rules, the same for every source:

* a rating that is not a finite number, or (with a given scale) outside
  [rating_min, rating_max], is an error naming the file and the line;
* bytes the file's encoding cannot decode are an error naming the file, the
  line and the byte, with the fix (`--encoding=latin-1`);
* duplicate (user, item) rows: the latest timestamp wins (the last row when
  there is no timestamp, or on equal timestamps); how many rows this
  dropped is kept in `frame.attrs["duplicates_dropped"]` for the summary.
"""

import os
import re

import numpy as np
import pandas as pd

COLUMNS = ("user_id", "movie_id", "rating")
TABLE_KINDS = ("csv", "tsv", "parquet")
TFDS_PREFIX = "tfds:"
_SEPARATORS = {"csv": ",", "tsv": "\t"}
_INT_RE = re.compile(r"^\s*[+-]?\d+\s*$")


class RatingsFormatError(ValueError):
    """A ratings (or titles) file cannot be read as the expected table."""


def row_error(path, line_number, message):
    return RatingsFormatError(f"{path}, line {line_number}: {message}")


def where_error(path, where, message):
    """`where` is "line N" (text files) or "row N" (Parquet, TFDS records)."""
    return RatingsFormatError(f"{path}, {where}: {message}")


def ids_array(values):
    """Ids as int64 when every one is an integer, else as str (numpy '<U').

    Integer-looking strings ("0042") become integers only when all of them
    are; a column mixing "12" and "ab" stays strings, so no id is ever
    silently merged with another.
    """
    values = np.asarray(values)
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    if values.dtype.kind == "f":
        if np.all(np.isfinite(values)) and np.all(np.mod(values, 1) == 0):
            return values.astype(np.int64)
        raise ValueError("ids must be integers or strings, not fractional numbers")
    if values.dtype.kind == "b":
        return values.astype(np.int64)
    text = np.asarray([v.decode("utf-8") if isinstance(v, bytes) else str(v)
                       for v in values.tolist()], dtype=str)
    if text.size and all(_INT_RE.match(v) for v in text.tolist()):
        try:
            return text.astype(np.int64)
        except OverflowError:
            pass
    return text


def as_ids(values):
    """Ids already typed by `ids_array`, back from pandas: int64 or str.

    Unlike `ids_array` this never re-infers the type, so a subset of string
    ids that happen to look like integers stays strings.
    """
    values = np.asarray(values)
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    return values.astype(str)


def check_decodable(path, encoding="utf-8"):
    """Raises a named error at the first line `encoding` cannot decode.

    Read in binary, line by line, so the error gives the 1-based line and
    the byte offset in it, which Python's UnicodeDecodeError does not.
    """
    encoding = encoding or "utf-8"
    with open(path, "rb") as f:
        for line_number, raw in enumerate(f, start=1):
            try:
                raw.decode(encoding)
            except UnicodeDecodeError as e:
                raise row_error(
                    path, line_number,
                    f"byte 0x{raw[e.start]:02x} at column {e.start + 1} is not valid "
                    f"{encoding} ({raw[max(0, e.start - 20):e.start + 20]!r}). Save the "
                    "file as UTF-8, or name its encoding (e.g. --encoding=latin-1)."
                ) from None


def resolve_duplicates(frame, timestamps=None):
    """One row per (user, item): the latest timestamp wins, else the last row.

    Args:
      frame: columns `user_id`, `movie_id`, `rating`, in file order.
      timestamps: optional array aligned with `frame`; ties keep file order.

    Returns:
      the frame without duplicates (file order of the kept rows), with
      `attrs["duplicates_dropped"]` set to the number of rows dropped.
    """
    keys = frame[["user_id", "movie_id"]]
    duplicated = keys.duplicated(keep=False).to_numpy()
    dropped = 0
    if duplicated.any():
        order = np.arange(len(frame))
        if timestamps is not None:
            # A stable sort by timestamp keeps file order among equal ones,
            # so "last" below is the latest timestamp, then the last row.
            order = np.argsort(np.asarray(timestamps), kind="stable")
        ordered = frame.iloc[order]
        keep = ~ordered[["user_id", "movie_id"]].duplicated(keep="last").to_numpy()
        kept_rows = np.sort(order[keep])
        dropped = len(frame) - len(kept_rows)
        frame = frame.iloc[kept_rows].reset_index(drop=True)
    frame.attrs["duplicates_dropped"] = int(dropped)
    return frame


def ratings_frame(users, items, ratings, infer=True):
    """The common frame; `infer=False` keeps the ids' type (see `as_ids`)."""
    ids = ids_array if infer else as_ids
    return pd.DataFrame({
        "user_id": ids(users),
        "movie_id": ids(items),
        "rating": np.asarray(ratings, dtype=np.float32),
    })


def check_scale(path, ratings, rating_min, rating_max, where_of):
    """Errors on the first rating outside [rating_min, rating_max].

    `where_of(i)` names row i of `ratings` ("line 7", "row 7").
    """
    ratings = np.asarray(ratings, np.float64)
    bad = np.zeros(ratings.shape, bool)
    if rating_min is not None:
        bad |= ratings < rating_min
    if rating_max is not None:
        bad |= ratings > rating_max
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        low = "-inf" if rating_min is None else f"{rating_min:g}"
        high = "inf" if rating_max is None else f"{rating_max:g}"
        raise where_error(
            path, where_of(i),
            f"rating {ratings[i]:g} is outside the scale {low}..{high} "
            f"({int(bad.sum())} such rows); fix the rows or give the real scale "
            "(--rating_min/--rating_max).")


def _read_table_frame(path, kind, columns, sep, encoding):
    """The raw table (all columns as read) and a row -> file line function."""
    if kind == "parquet":
        try:
            frame = pd.read_parquet(path)
        except ImportError as e:
            raise ImportError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow), "
                              "or save the table as CSV and pass csv:PATH.") from e
        except Exception as e:  # pyarrow raises several unrelated types.
            raise RatingsFormatError(f"{path}: not a readable Parquet file ({e}).") from e
        return frame, lambda i: f"row {i + 1}"
    check_decodable(path, encoding)
    sep = sep or _SEPARATORS[kind]
    try:
        # Everything as text: ids keep their exact spelling ("007"), and a
        # bad rating is found and named below instead of turning the whole
        # column into objects or NaN silently.
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False,
                            encoding=encoding or "utf-8", engine="c",
                            skip_blank_lines=False)
    except pd.errors.EmptyDataError:
        raise RatingsFormatError(
            f"{path} is empty; expected a header line naming the columns "
            f"{', '.join(columns)}.") from None
    except pd.errors.ParserError as e:
        raise RatingsFormatError(f"{path}: {e}") from e
    frame.columns = [str(c).strip() for c in frame.columns]
    blank = (frame == "").all(axis=1).to_numpy()
    lines = np.arange(len(frame)) + 2  # 1-based, after the header line.
    if blank.any():
        frame, lines = frame[~blank].reset_index(drop=True), lines[~blank]
    return frame, lambda i: f"line {int(lines[i])}"


def _numbers(path, values, what, where_of):
    """Column as float64; the first non-number is an error naming its line."""
    numbers = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(numbers)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise where_error(
            path, where_of(i), f"{what} {values[i]!r} is not a finite number "
            f"({int(bad.sum())} such rows); fix or remove those rows.")
    return numbers


def read_table(path, user_col, item_col, rating_col, timestamp_col=None,
               kind=None, sep=None, encoding="utf-8", rating_min=None, rating_max=None):
    """Reads a CSV, TSV or Parquet ratings table with named columns.

    Args:
      path: the file.
      user_col, item_col, rating_col: column names in the header.
      timestamp_col: optional; numbers or dates. Decides duplicates.
      kind: "csv", "tsv" or "parquet"; default from the file extension.
      sep: field separator of a text table (default: ',' for csv, tab for tsv).
      encoding: of a text table.
      rating_min, rating_max: the scale; a rating outside it is an error.
        None: no bound (the trainer then infers the scale from the data).

    Returns:
      the frame of `resolve_duplicates`, with `attrs["raw_rows"]`.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ratings table {path!r} does not exist.")
    if kind is None:
        ext = os.path.splitext(path)[1].lower().lstrip(".")
        kind = {"tab": "tsv", "txt": "tsv", "pq": "parquet"}.get(ext, ext)
    if kind not in TABLE_KINDS:
        raise ValueError(f"{path}: unknown table kind {kind!r}; expected one of "
                         f"{', '.join(TABLE_KINDS)} (write it as csv:PATH, tsv:PATH or "
                         "parquet:PATH).")
    wanted = [c for c in (user_col, item_col, rating_col, timestamp_col) if c]
    frame, line_of = _read_table_frame(path, kind, wanted, sep, encoding)
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise RatingsFormatError(
            f"{path}: no column {', '.join(repr(c) for c in missing)}; the columns are "
            f"{', '.join(repr(str(c)) for c in frame.columns)}. Name them with "
            "--user_col, --item_col, --rating_col (and --timestamp_col).")
    if frame.empty:
        raise RatingsFormatError(f"{path} holds no ratings (only a header).")
    for column, what in ((user_col, "user id"), (item_col, "item id")):
        values = frame[column]
        empty = (values.isna() | (values.astype(str).str.strip() == "")).to_numpy()
        if empty.any():
            i = int(np.flatnonzero(empty)[0])
            raise where_error(path, line_of(i), f"empty {what} (column {column!r}).")
    ratings = _numbers(path, frame[rating_col].to_numpy(), "rating", line_of)
    check_scale(path, ratings, rating_min, rating_max, line_of)
    timestamps = None
    if timestamp_col:
        raw = frame[timestamp_col]
        numeric = pd.to_numeric(raw, errors="coerce")
        if numeric.notna().all():
            timestamps = numeric.to_numpy(np.float64)
        else:
            dates = pd.to_datetime(raw, errors="coerce", utc=True)
            bad = dates.isna().to_numpy()
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise where_error(path, line_of(i),
                                  f"timestamp {raw.iloc[i]!r} is neither a number nor a date.")
            timestamps = dates.astype("int64").to_numpy()
    users = [str(v).strip() for v in frame[user_col].tolist()] \
        if frame[user_col].dtype == object else frame[user_col].to_numpy()
    items = [str(v).strip() for v in frame[item_col].tolist()] \
        if frame[item_col].dtype == object else frame[item_col].to_numpy()
    result = resolve_duplicates(ratings_frame(users, items, ratings), timestamps)
    result.attrs["raw_rows"] = len(frame)
    return result


def parse_source(source):
    """`kind:PATH` -> (kind, path); a bare path is a GroupLens folder or file."""
    source = os.fspath(source)
    kind, sep, rest = source.partition(":")
    if sep and kind in TABLE_KINDS + ("tfds", "grouplens"):
        return kind, rest
    return "grouplens", source


def load_ratings(source, user_col="userId", item_col="movieId", rating_col="rating",
                 timestamp_col=None, sep=None, encoding="utf-8", rating_min=None,
                 rating_max=None, download=False, tfds_data_dir=None):
    """All ratings of `source` as one frame (see the module docstring).

    Column names, separator and encoding apply to `csv:`/`tsv:`/`parquet:`
    tables; a GroupLens folder has its own fixed layouts; `download` applies
    to `tfds:`.
    """
    from active_learning.data import grouplens  # Imports this module.
    kind, path = parse_source(source)
    if kind == "tfds":
        frame = grouplens.load_ratings_tfds(path, tfds_data_dir=tfds_data_dir,
                                            download=download)
        check_scale(source, frame["rating"].to_numpy(), rating_min, rating_max,
                    lambda i: f"record {i + 1}")
        return frame
    if kind == "grouplens":
        frame = grouplens.load_grouplens(path)
        check_scale(path, frame["rating"].to_numpy(), rating_min, rating_max,
                    lambda i: f"row {i + 1}")
        return frame
    return read_table(path, user_col, item_col, rating_col, timestamp_col=timestamp_col,
                      kind=kind, sep=sep, encoding=encoding, rating_min=rating_min,
                      rating_max=rating_max)


def item_counts(source, item_col, sep=None, encoding="utf-8"):
    """{item id: number of rows} of a table or GroupLens source (popularity)."""
    from active_learning.data import grouplens  # Imports this module.
    kind, path = parse_source(source)
    if kind == "grouplens":
        ids = grouplens.read_ratings_file(path)["movie_id"].to_numpy() \
            if os.path.isfile(path) else grouplens.load_grouplens(path)["movie_id"].to_numpy()
    elif kind in TABLE_KINDS:
        frame, _ = _read_table_frame(path, kind, [item_col], sep, encoding)
        if item_col not in frame.columns:
            raise RatingsFormatError(
                f"{path}: no column {item_col!r}; the columns are "
                f"{', '.join(repr(str(c)) for c in frame.columns)}.")
        ids = ids_array([str(v).strip() for v in frame[item_col].tolist()])
    else:
        raise ValueError(f"item counts come from a table or a GroupLens file, not {source!r}")
    values, counts = np.unique(ids, return_counts=True)
    return dict(zip(values.tolist(), counts.tolist()))


def read_item_titles(path, item_col, title_col, sep=None, encoding="utf-8"):
    """Item id -> title from a CSV/TSV/Parquet table (for the demo and sessions)."""
    from active_learning.data import grouplens  # Imports this module.
    kind, path = parse_source(path)
    if kind == "grouplens":
        return grouplens.load_movie_titles(path)
    if kind not in TABLE_KINDS:
        raise ValueError(f"titles come from a csv:, tsv: or parquet: table, not {kind!r}")
    frame, _ = _read_table_frame(path, kind, [item_col, title_col], sep, encoding)
    missing = [c for c in (item_col, title_col) if c not in frame.columns]
    if missing:
        raise RatingsFormatError(
            f"{path}: no column {', '.join(repr(c) for c in missing)}; the columns are "
            f"{', '.join(repr(str(c)) for c in frame.columns)}.")
    ids = ids_array([str(v).strip() for v in frame[item_col].tolist()])
    return dict(zip(ids.tolist(), frame[title_col].astype(str).tolist()))
