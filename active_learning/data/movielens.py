"""MovieLens as a preset of the ratings data layer (paper section 4.2.1).

MovieLens is one ratings table among others; its pieces live with the
ratings modules, by job:

* `grouplens`: the GroupLens release files, movie titles, TFDS copies;
* `ratings_reader`: any ratings source into one frame (`load_ratings`);
* `ratings_prep`: the paper's filters, user splits, padded per-user arrays,
  Popular-Entropy scores;
* `ratings_episodes`: the in-graph `EpisodeSampler`.

This module keeps the names MovieLens code has always imported, and the
paper's defaults (`PAPER_DEFAULTS`). The data summary command line is
`python -m trainers.ratings_data`.
"""

from active_learning.data import ratings_reader
from active_learning.data.grouplens import (  # noqa: F401  (re-exported)
    GROUPLENS_URL, MAX_RATING, MIN_RATING, MOVIES_FILES, RATINGS_FILES, MovieLensFormatError,
    load_grouplens, load_movie_titles, load_ratings_tfds, read_ratings_file)
from active_learning.data.ratings_episodes import (  # noqa: F401
    EpisodeSampler, episodes_per_second)
from active_learning.data.ratings_prep import (  # noqa: F401
    MovieLensData, RatingsData, UserRatings, popularity_entropy, prepare)
from active_learning.data.ratings_reader import COLUMNS  # noqa: F401

# Paper 4.2.1: the 4,000 most-rated movies, the 6,000 users with the most
# ratings among them, episodes of 50 support and 10 held-out ratings.
PAPER_DEFAULTS = dict(num_movies=4000, num_users=6000, support_size=50, query_size=10)


def load_ratings(data_dir, download=False, tfds_data_dir=None):
    """All ratings of a GroupLens folder (or file) or of `tfds:movielens/...`.

    `download=True` lets TFDS fetch a `tfds:` data set that is not prepared
    yet. See `grouplens.load_grouplens` for the frame and its errors.
    """
    data_dir = str(data_dir) if not isinstance(data_dir, str) else data_dir
    if data_dir.startswith(ratings_reader.TFDS_PREFIX):
        name = data_dir[len(ratings_reader.TFDS_PREFIX):]
        if download or tfds_data_dir:
            return load_ratings_tfds(name, tfds_data_dir=tfds_data_dir, download=download)
        return load_ratings_tfds(name)
    return load_grouplens(data_dir)
