"""Train the active learner on MovieLens (paper 4.2): a preset of `trainers.ratings`.

    python -m trainers.movielens --flagfile=trainers/configs/movielens.cfg

`--data_dir` is a GroupLens release folder (ml-latest-small, ml-20m, ml-1m,
ml-100k; https://grouplens.org/datasets/movielens/) or a TFDS config,
`--data_dir=tfds:movielens/latest-small-ratings --download`. Every flag of
`trainers.ratings` applies; the paper's sizes are the defaults.
"""

from trainers import ratings
from trainers.ratings import build_setup, main, setup_from_flags  # noqa: F401  (same trainer)

if __name__ == "__main__":
    ratings.run()
