"""Reading any ratings table: named columns, scales, ids, and every bad input.

Each test writes its own small table (ratings_fakes) in a temporary folder.
"""

import os
import pathlib
import sys
import tempfile
import unittest
from unittest import mock

import numpy as np
import pandas as pd
import pytest

from active_learning.data import grouplens, ratings_prep, ratings_reader
from tests import ratings_fakes

COLS = dict(user_col="customer", item_col="product", rating_col="stars")


class _Folder(unittest.TestCase):

    def setUp(self):
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        self.dir = folder.name

    def write(self, name, text, mode="w"):
        path = os.path.join(self.dir, name)
        with open(path, mode) as f:
            f.write(text)
        return path


class TableTest(_Folder):

    def test_csv_tsv_and_parquet_read_the_same_ratings(self):
        frame = ratings_fakes.latent_factor_table(num_users=10, num_items=8)
        csv = os.path.join(self.dir, "r.csv")
        frame.to_csv(csv, index=False)
        tsv = os.path.join(self.dir, "r.tsv")
        frame.to_csv(tsv, index=False, sep="\t")
        parquet = os.path.join(self.dir, "r.parquet")
        frame.to_parquet(parquet)
        loaded = [ratings_reader.load_ratings(f"{kind}:{path}", **COLS)
                  for kind, path in (("csv", csv), ("tsv", tsv), ("parquet", parquet))]
        for result in loaded:
            pd.testing.assert_frame_equal(result, loaded[0])
        self.assertEqual(len(loaded[0]), len(frame))
        # Integer user ids stay integers; "sku-0003" item ids stay strings.
        self.assertEqual(loaded[0]["user_id"].dtype, np.int64)
        self.assertTrue(all(isinstance(v, str) for v in loaded[0]["movie_id"]))
        np.testing.assert_array_equal(loaded[0]["rating"], frame["stars"].astype(np.float32))

    def test_integer_looking_ids_keep_leading_zeros_only_as_strings(self):
        path = self.write("r.csv", "customer,product,stars\n1,007,3\n1,7,4\n2,ab,5\n")
        frame = ratings_reader.load_ratings(f"csv:{path}", **COLS)
        # "007" and "7" are two items: the column mixes in "ab", so ids stay text.
        self.assertEqual(sorted(frame["movie_id"]), ["007", "7", "ab"])

    def test_missing_column_names_the_columns_present(self):
        path = self.write("r.csv", "user,item,score\n1,a,3\n")
        with self.assertRaisesRegex(
                ratings_reader.RatingsFormatError,
                rf"{path}: no column 'customer', 'product', 'stars'; the columns are "
                r"'user', 'item', 'score'.*--user_col"):
            ratings_reader.load_ratings(f"csv:{path}", **COLS)

    def test_non_numeric_rating_names_file_and_line(self):
        path = self.write("r.csv", "customer,product,stars\n1,a,3\n1,b,\n2,c,five\n")
        with self.assertRaisesRegex(ratings_reader.RatingsFormatError,
                                    rf"{path}, line 3: rating '' is not a finite number "
                                    r"\(2 such rows\)"):
            ratings_reader.load_ratings(f"csv:{path}", **COLS)

    def test_nan_and_inf_ratings_are_refused(self):
        path = self.write("r.csv", "customer,product,stars\n1,a,3\n1,b,inf\n")
        with self.assertRaisesRegex(ratings_reader.RatingsFormatError, "line 3: rating 'inf'"):
            ratings_reader.load_ratings(f"csv:{path}", **COLS)

    def test_rating_outside_the_given_scale_names_the_line(self):
        path = self.write("r.csv", "customer,product,stars\n1,a,3\n1,b,11\n2,a,0\n")
        with self.assertRaisesRegex(ratings_reader.RatingsFormatError,
                                    rf"{path}, line 3: rating 11 is outside the scale 1..10 "
                                    r"\(2 such rows\).*--rating_min/--rating_max"):
            ratings_reader.load_ratings(f"csv:{path}", rating_min=1, rating_max=10, **COLS)
        # Without a scale the same table reads (the trainer infers 0..11).
        self.assertEqual(len(ratings_reader.load_ratings(f"csv:{path}", **COLS)), 3)

    def test_non_utf8_bytes_name_file_line_and_fix(self):
        path = self.write("r.csv", "customer,product,stars\n1,caf\xe9,3\n2,b,4\n".encode(
            "latin-1"), mode="wb")
        with self.assertRaisesRegex(ratings_reader.RatingsFormatError,
                                    rf"{path}, line 2: byte 0xe9 at column 6 is not valid "
                                    r"utf-8.*--encoding=latin-1"):
            ratings_reader.load_ratings(f"csv:{path}", **COLS)
        frame = ratings_reader.load_ratings(f"csv:{path}", encoding="latin-1", **COLS)
        self.assertIn("caf\xe9", set(frame["movie_id"]))

    def test_non_utf8_bytes_in_a_grouplens_file_name_the_line(self):
        path = self.write("ratings.csv", b"userId,movieId,rating,timestamp\n1,2,3.0,5\n"
                          b"1,3\xff,4.0,6\n", mode="wb")
        with self.assertRaisesRegex(ratings_reader.RatingsFormatError,
                                    rf"{path}, line 3: byte 0xff at column 4"):
            grouplens.load_grouplens(self.dir)

    def test_empty_id_names_the_line(self):
        path = self.write("r.csv", "customer,product,stars\n1,a,3\n,b,4\n")
        with self.assertRaisesRegex(ratings_reader.RatingsFormatError,
                                    rf"{path}, line 3: empty user id"):
            ratings_reader.load_ratings(f"csv:{path}", **COLS)

    def test_blank_lines_are_skipped_and_lines_still_counted(self):
        path = self.write("r.csv", "customer,product,stars\n1,a,3\n\n1,b,x\n")
        with self.assertRaisesRegex(ratings_reader.RatingsFormatError, "line 4: rating 'x'"):
            ratings_reader.load_ratings(f"csv:{path}", **COLS)

    def test_empty_and_header_only_files(self):
        path = self.write("r.csv", "")
        with self.assertRaisesRegex(ratings_reader.RatingsFormatError, f"{path} is empty"):
            ratings_reader.load_ratings(f"csv:{path}", **COLS)
        path = self.write("h.csv", "customer,product,stars\n")
        with self.assertRaisesRegex(ratings_reader.RatingsFormatError, "holds no ratings"):
            ratings_reader.load_ratings(f"csv:{path}", **COLS)

    def test_missing_table(self):
        with self.assertRaisesRegex(FileNotFoundError, "ratings table .*nope.csv"):
            ratings_reader.load_ratings(f"csv:{self.dir}/nope.csv", **COLS)


class DuplicatesTest(_Folder):

    def test_latest_timestamp_wins_whatever_the_row_order(self):
        path = self.write("r.csv", "customer,product,stars,when\n"
                          "1,a,9,2020-05-01\n"   # latest: wins although it comes first
                          "1,a,2,2020-01-01\n"
                          "1,b,4,2020-01-01\n"
                          "1,a,5,2020-02-01\n")
        frame = ratings_reader.load_ratings(f"csv:{path}", timestamp_col="when", **COLS)
        self.assertEqual(frame.attrs["duplicates_dropped"], 2)
        self.assertEqual(dict(zip(frame["movie_id"], frame["rating"])), {"a": 9.0, "b": 4.0})

    def test_without_timestamps_the_last_row_wins(self):
        path = self.write("r.csv", "customer,product,stars\n1,a,9\n1,b,4\n1,a,2\n")
        frame = ratings_reader.load_ratings(f"csv:{path}", **COLS)
        self.assertEqual(frame.attrs["duplicates_dropped"], 1)
        self.assertEqual(dict(zip(frame["movie_id"], frame["rating"])), {"a": 2.0, "b": 4.0})

    def test_equal_timestamps_fall_back_to_the_last_row(self):
        path = self.write("r.csv", "customer,product,stars,when\n1,a,9,5\n1,a,2,5\n")
        frame = ratings_reader.load_ratings(f"csv:{path}", timestamp_col="when", **COLS)
        self.assertEqual(frame["rating"].tolist(), [2.0])

    def test_grouplens_duplicates_follow_the_same_rule(self):
        self.write("ratings.csv", "userId,movieId,rating,timestamp\n"
                   "1,10,5.0,300\n1,10,1.0,100\n1,11,3.0,100\n")
        frame = grouplens.load_grouplens(self.dir)
        self.assertEqual(frame.attrs["duplicates_dropped"], 1)
        self.assertEqual(dict(zip(frame["movie_id"], frame["rating"])), {10: 5.0, 11: 3.0})

    def test_generated_duplicates_are_resolved_to_the_later_rating(self):
        frame = ratings_fakes.latent_factor_table(num_users=10, num_items=8, duplicates=5)
        path = os.path.join(self.dir, "r.csv")
        frame.to_csv(path, index=False)
        loaded = ratings_reader.load_ratings(f"csv:{path}", timestamp_col="when", **COLS)
        self.assertEqual(loaded.attrs["duplicates_dropped"], 5)
        latest = frame.sort_values("when").drop_duplicates(["customer", "product"], keep="last")
        expected = dict(zip(zip(latest["customer"], latest["product"]), latest["stars"]))
        got = dict(zip(zip(loaded["user_id"], loaded["movie_id"]), loaded["rating"]))
        self.assertEqual(got, {k: float(v) for k, v in expected.items()})


class PrepareTest(_Folder):

    def test_string_item_ids_prepare_into_a_sorted_vocabulary(self):
        frame = ratings_fakes.latent_factor_table(num_users=30, num_items=20)
        path = os.path.join(self.dir, "r.csv")
        frame.to_csv(path, index=False)
        ratings = ratings_reader.load_ratings(f"csv:{path}", **COLS)
        data = ratings_prep.prepare(ratings, num_movies=20, support_size=8, query_size=2,
                                    validation_fraction=0.2, test_fraction=0.2)
        self.assertEqual(data.movie_ids.dtype.kind, "U")
        self.assertEqual(list(data.movie_ids), sorted(data.movie_ids))
        # Round trip: the padded arrays give back exactly the kept ratings.
        back = data.train.to_frame(data.movie_ids)
        source = {(u, m): r for u, m, r in zip(ratings["user_id"], ratings["movie_id"],
                                              ratings["rating"])}
        for u, m, r in zip(back["user_id"], back["movie_id"], back["rating"]):
            self.assertEqual(source[(u, m)], r)

    def test_a_split_of_the_training_users_is_a_seeded_partition(self):
        path = os.path.join(self.dir, "r.csv")
        ratings_fakes.latent_factor_table(num_users=30, num_items=20).to_csv(path, index=False)
        train = ratings_prep.prepare(ratings_reader.load_ratings(f"csv:{path}", **COLS),
                                     num_movies=20, support_size=8, query_size=2,
                                     validation_fraction=0.2, test_fraction=0.2).train
        first, rest = train.split(0.25, seed=3)
        self.assertEqual(first.num_users, round(0.25 * train.num_users))
        self.assertEqual(sorted(np.concatenate([first.user_ids, rest.user_ids])),
                         sorted(train.user_ids))
        # Each user keeps its own ratings.
        rows = {u: i for i, u in enumerate(train.user_ids)}
        for part in (first, rest):
            for i, user in enumerate(part.user_ids):
                np.testing.assert_array_equal(part.ratings[i], train.ratings[rows[user]])
                self.assertEqual(part.counts[i], train.counts[rows[user]])
        np.testing.assert_array_equal(train.split(0.25, seed=3)[0].user_ids, first.user_ids)
        self.assertFalse(np.array_equal(train.split(0.25, seed=4)[0].user_ids, first.user_ids))
        # Either part keeps at least one user.
        self.assertEqual(train.split(0.001, seed=3)[0].num_users, 1)
        self.assertEqual(train.split(1.0, seed=3)[1].num_users, 1)

    def test_string_user_ids_that_look_like_numbers_in_one_split_stay_strings(self):
        rows = [(u, f"i{k}", 3.0) for u in ("7", "8", "x") for k in range(4)]
        frame = ratings_reader.ratings_frame(*zip(*rows))
        data = ratings_prep.prepare(frame, support_size=3, query_size=1,
                                    validation_fraction=0.34, test_fraction=0)
        users = set(data.train.user_ids) | set(data.validation.user_ids)
        self.assertEqual(users, {"7", "8", "x"})

    def test_too_few_ratings_for_the_episode_shape_say_what_is_needed(self):
        rows = [(u, k, 3.0) for u in range(5) for k in range(12)]
        frame = ratings_reader.ratings_frame(*zip(*rows))
        with self.assertRaisesRegex(ValueError, r"episodes of support_size 50 \+ query_size 10 "
                                    r"need 60 ratings per user.*has 12"):
            ratings_prep.prepare(frame, support_size=50, query_size=10)

    def test_too_few_qualifying_users_for_the_splits(self):
        rows = [(u, k, 3.0) for u in range(2) for k in range(12)]
        frame = ratings_reader.ratings_frame(*zip(*rows))
        with self.assertRaisesRegex(ValueError, r"only 2 users have at least support_size \+ "
                                    r"query_size = 12 ratings"):
            ratings_prep.prepare(frame, support_size=10, query_size=2,
                                 validation_fraction=0.5, test_fraction=0.4)


class MovieLensSourcesTest(_Folder):

    def test_missing_folder_names_both_ways(self):
        with self.assertRaisesRegex(
                FileNotFoundError, r"does not exist: download a release from "
                r"https://grouplens.org/datasets/movielens/.*"
                r"--data_dir=tfds:movielens/latest-small-ratings.*--download"):
            ratings_reader.load_ratings(os.path.join(self.dir, "ml-nope"))

    def test_tfds_source_passes_the_download_flag(self):
        frame = ratings_reader.ratings_frame([1, 2], [3, 4], [4.0, 5.0])
        with mock.patch.object(grouplens, "load_ratings_tfds", return_value=frame) as reader:
            result = ratings_reader.load_ratings("tfds:movielens/latest-small-ratings",
                                                 download=True, tfds_data_dir="/t")
        reader.assert_called_once_with("movielens/latest-small-ratings", tfds_data_dir="/t",
                                       download=True)
        self.assertIs(result, frame)

    def test_tfds_not_prepared_names_download_and_grouplens(self):
        with mock.patch("tensorflow_datasets.load", side_effect=AssertionError("not found")):
            with self.assertRaisesRegex(FileNotFoundError,
                                        r"not prepared.*--download.*grouplens.org"):
                grouplens.load_ratings_tfds("movielens/100k-ratings")

    def test_item_titles_from_a_table(self):
        path = self.write("t.csv", "product,name\nsku-0001,Kettle\nsku-0002,\"Mug, blue\"\n")
        self.assertEqual(ratings_reader.read_item_titles(f"csv:{path}", "product", "name"),
                         {"sku-0001": "Kettle", "sku-0002": "Mug, blue"})


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
