"""Tests for MovieLens reading, preprocessing, episodes and latent factors.

Everything but the last test builds its own small data in the real GroupLens
formats: 40 users x 80 movies drawn from a rank-2 model, so the latent factor
model has structure to find.
"""

import json
import os
import pathlib
import subprocess
import sys
import tempfile
from unittest import mock

from absl.testing import parameterized
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from active_learning.data import latent_factors
from active_learning.data import movielens

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SUPPORT, QUERY = 10, 5


def synthetic_ratings(num_users=40, num_movies=80, rank=2, seed=0):
    """A low-rank rating frame with sparse ids and skewed movie popularity."""
    rng = np.random.default_rng(seed)
    user_factors = rng.normal(size=[num_users, rank])
    movie_factors = rng.normal(size=[num_movies, rank])
    movie_bias = rng.normal(0.0, 0.5, size=num_movies)
    scores = (3.0 + 0.7 * user_factors @ movie_factors.T + movie_bias
              + rng.normal(0.0, 0.2, size=[num_users, num_movies]))
    values = np.clip(np.round(scores * 2) / 2, 0.5, 5.0)
    # Lower-numbered movies are rated more often.
    probability = np.linspace(0.95, 0.35, num_movies)
    rated = rng.random([num_users, num_movies]) < probability[None, :]
    users, movies = np.nonzero(rated)
    order = rng.permutation(len(users))  # Files are not sorted by user.
    users, movies = users[order], movies[order]
    return pd.DataFrame({
        "user_id": (1 + 3 * users).astype(np.int64),
        "movie_id": (1000 + 7 * movies).astype(np.int64),
        "rating": values[users, movies].astype(np.float32),
    })


def _lines(frame, name):
    """Rows of `frame` in the layout of GroupLens file `name`."""
    rows = zip(frame["user_id"], frame["movie_id"], frame["rating"],
               range(964982703, 964982703 + len(frame)))
    if name == "ratings.csv":
        return (["userId,movieId,rating,timestamp"]
                + [f"{u},{m},{r:.1f},{t}" for u, m, r, t in rows])
    separator = "::" if name == "ratings.dat" else "\t"
    return [separator.join([str(u), str(m), f"{r:g}", str(t)])
            for u, m, r, t in rows]


def write_ratings(folder, frame, name):
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        f.write("\n".join(_lines(frame, name)) + "\n")
    return path


def source_lookup(frame):
    return {(u, m): r for u, m, r in zip(frame["user_id"], frame["movie_id"],
                                         frame["rating"])}


class _TempDirTestCase(tf.test.TestCase, parameterized.TestCase):

    def make_dir(self):
        # tempfile rather than create_tempdir: absl flags are not parsed
        # under pytest.
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        return folder.name


class ReadingTest(_TempDirTestCase):

    def test_three_formats_parse_to_the_same_frame(self):
        frame = synthetic_ratings()
        loaded = []
        for name in movielens.RATINGS_FILES:
            folder = self.make_dir()
            write_ratings(folder, frame, name)
            loaded.append(movielens.load_ratings(folder))
        for result in loaded:
            self.assertEqual(list(result.columns),
                             ["user_id", "movie_id", "rating"])
            self.assertEqual(result["user_id"].dtype, np.int64)
            self.assertEqual(result["movie_id"].dtype, np.int64)
            self.assertEqual(result["rating"].dtype, np.float32)
            pd.testing.assert_frame_equal(result, frame)

    def test_a_ratings_file_path_also_works(self):
        frame = synthetic_ratings()
        path = write_ratings(self.make_dir(), frame, "u.data")
        pd.testing.assert_frame_equal(movielens.load_ratings(path), frame)

    def test_blank_lines_are_skipped(self):
        frame = synthetic_ratings().head(5)
        folder = self.make_dir()
        lines = _lines(frame, "ratings.csv")
        with open(os.path.join(folder, "ratings.csv"), "w") as f:
            f.write("\n".join(lines[:3] + [""] + lines[3:]) + "\n\n")
        pd.testing.assert_frame_equal(movielens.load_ratings(folder), frame)

    @parameterized.product(
        name=["ratings.csv", "ratings.dat", "u.data"],
        case=["too_many_fields", "too_few_fields", "user_not_int",
              "movie_not_int", "rating_not_number", "rating_too_high",
              "rating_zero", "rating_missing"])
    def test_malformed_row_names_file_and_line(self, name, case):
        lines = _lines(synthetic_ratings().head(6), name)
        sep = {"ratings.csv": ",", "ratings.dat": "::", "u.data": "\t"}[name]
        bad_index = 4  # 0-based among lines (after the header, if any).
        fields = lines[bad_index].split(sep)
        if case == "too_many_fields":
            fields.append("7")
        elif case == "too_few_fields":
            fields = fields[:3]
        elif case == "user_not_int":
            fields[0] = "alice"
        elif case == "movie_not_int":
            fields[1] = "12.5"
        elif case == "rating_not_number":
            fields[2] = "four"
        elif case == "rating_too_high":
            fields[2] = "5.5"
        elif case == "rating_zero":
            fields[2] = "0"
        elif case == "rating_missing":
            fields[2] = ""
        lines[bad_index] = sep.join(fields)
        # A blank line before the bad row must still count as a line.
        lines.insert(2, "")
        folder = self.make_dir()
        path = os.path.join(folder, name)
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        expected_line = bad_index + 2  # 1-based, plus the inserted blank.
        with self.assertRaisesRegex(
                movielens.MovieLensFormatError,
                f"{path}, line {expected_line}:"):
            movielens.load_ratings(folder)

    def test_error_messages_say_what_was_expected(self):
        folder = self.make_dir()
        lines = _lines(synthetic_ratings().head(3), "ratings.dat")
        lines[1] = "1::2::3"
        path = os.path.join(folder, "ratings.dat")
        with open(path, "w") as f:
            f.write("\n".join(lines))
        with self.assertRaisesRegex(
                ValueError, r"line 2: expected 4 fields separated by '::' "
                r"\(UserID::MovieID::Rating::Timestamp\), found 3"):
            movielens.load_ratings(folder)

    def test_rows_all_with_an_extra_field_are_an_error(self):
        # pandas would silently drop the extra column of such a file.
        folder = self.make_dir()
        lines = _lines(synthetic_ratings().head(3), "u.data")
        with open(os.path.join(folder, "u.data"), "w") as f:
            f.write("\n".join(line + "\t9" for line in lines) + "\n")
        with self.assertRaisesRegex(ValueError, r"u.data, line 1: expected 4"):
            movielens.load_ratings(folder)

    def test_wrong_csv_header(self):
        folder = self.make_dir()
        path = os.path.join(folder, "ratings.csv")
        with open(path, "w") as f:
            f.write("1,2,3.0,4\n")
        with self.assertRaisesRegex(
                ValueError, f"{path}, line 1: expected the header"):
            movielens.load_ratings(folder)

    def test_missing_directory(self):
        missing = os.path.join(self.make_dir(), "nope")
        with self.assertRaisesRegex(
                FileNotFoundError,
                f"{missing}.*does not exist.*grouplens.org/datasets/movielens.*"
                "tfds:movielens/latest-small-ratings.*--download"):
            movielens.load_ratings(missing)

    def test_no_recognised_file_lists_expected_names(self):
        folder = self.make_dir()
        pathlib.Path(folder, "ratings.txt").write_text("1,2,3,4\n")
        with self.assertRaisesRegex(
                FileNotFoundError,
                r"ratings\.csv.*ratings\.dat.*u\.data") as context:
            movielens.load_ratings(folder)
        self.assertIn(folder, str(context.exception))

    @parameterized.parameters("ratings.csv", "ratings.dat", "u.data")
    def test_empty_file(self, name):
        folder = self.make_dir()
        path = os.path.join(folder, name)
        pathlib.Path(path).write_text("\n")
        with self.assertRaisesRegex(ValueError, f"{path} is empty"):
            movielens.load_ratings(folder)

    def test_header_only_csv(self):
        folder = self.make_dir()
        path = os.path.join(folder, "ratings.csv")
        pathlib.Path(path).write_text("userId,movieId,rating,timestamp\n")
        with self.assertRaisesRegex(ValueError, f"{path} holds no ratings"):
            movielens.load_ratings(folder)

    def test_tfds_prefix_routes_to_tfds_reader(self):
        frame = synthetic_ratings().head(3)
        with mock.patch.object(movielens, "load_ratings_tfds",
                               return_value=frame) as reader:
            result = movielens.load_ratings("tfds:movielens/20m-ratings")
        reader.assert_called_once_with("movielens/20m-ratings")
        self.assertIs(result, frame)

    def test_tfds_records_convert_to_the_same_frame(self):
        frame = synthetic_ratings().head(50)
        records = tf.data.Dataset.from_tensor_slices({
            "user_id": frame["user_id"].astype(str).to_numpy(),
            "movie_id": frame["movie_id"].astype(str).to_numpy(),
            "user_rating": frame["rating"].to_numpy(),
            "timestamp": np.zeros(len(frame), np.int64),
        })
        with mock.patch("tensorflow_datasets.load",
                        return_value=records) as load:
            result = movielens.load_ratings_tfds(
                "movielens/100k-ratings", tfds_data_dir="/somewhere")
        load.assert_called_once_with("movielens/100k-ratings", split="train",
                                     data_dir="/somewhere", download=False)
        pd.testing.assert_frame_equal(result, frame)
        with self.assertRaisesRegex(ValueError, "movielens/<variant>-ratings"):
            movielens.load_ratings_tfds("mnist")

    def test_movie_titles_in_three_formats(self):
        folder = self.make_dir()
        pathlib.Path(folder, "movies.csv").write_text(
            "movieId,title,genres\n1,Toy Story (1995),Animation\n"
            '11,"American President, The (1995)",Comedy|Drama\n')
        self.assertEqual(movielens.load_movie_titles(folder),
                         {1: "Toy Story (1995)",
                          11: "American President, The (1995)"})
        folder = self.make_dir()
        pathlib.Path(folder, "movies.dat").write_bytes(
            "1::Toy Story (1995)::Animation\n2::Jumanji (1995)::Fantasy\n"
            .encode("latin-1"))
        self.assertEqual(movielens.load_movie_titles(folder),
                         {1: "Toy Story (1995)", 2: "Jumanji (1995)"})
        folder = self.make_dir()
        pathlib.Path(folder, "u.item").write_bytes(
            "1|Toy Story (1995)|01-Jan-1995||http://x|0|0\n"
            "2|Misérables, Les (1995)|01-Jan-1995||http://y|0|1\n"
            .encode("latin-1"))
        self.assertEqual(movielens.load_movie_titles(folder),
                         {1: "Toy Story (1995)", 2: "Misérables, Les (1995)"})


def _frame(rows):
    return pd.DataFrame({
        "user_id": np.array([r[0] for r in rows], np.int64),
        "movie_id": np.array([r[1] for r in rows], np.int64),
        "rating": np.array([r[2] for r in rows], np.float32),
    })


class PrepareTest(_TempDirTestCase):

    def test_filtering_keeps_most_rated_movies_and_drops_light_users(self):
        rows = []
        # Movies 10, 20, 30 are rated by all six users; 40 by two; 50 by one.
        for user in range(1, 7):
            rows += [(user, 10, 4.0), (user, 20, 3.0), (user, 30, 2.0)]
        rows += [(1, 40, 5.0), (2, 40, 5.0), (3, 50, 1.0)]
        # User 7 rated only the unpopular movies.
        rows += [(7, 40, 1.0), (7, 50, 2.0)]
        data = movielens.prepare(
            _frame(rows), num_movies=3, num_users=10, support_size=2,
            query_size=1, validation_fraction=0, test_fraction=0)
        np.testing.assert_array_equal(data.movie_ids, [10, 20, 30])
        # User 7 has no rating among the kept movies and is dropped.
        np.testing.assert_array_equal(data.train.user_ids, [1, 2, 3, 4, 5, 6])
        self.assertEqual(data.kept_ratings, 18)
        self.assertEqual((data.raw_ratings, data.raw_users, data.raw_movies),
                         (23, 7, 5))
        np.testing.assert_array_equal(data.rating_values, [2.0, 3.0, 4.0])

        # With a larger episode, users need more ratings than they have.
        with self.assertRaisesRegex(ValueError, r"episodes of support_size 3 \+ query_size 1 need 4 "
                                    "ratings.*user 1, has 3"):
            movielens.prepare(_frame(rows), num_movies=3, support_size=3,
                              query_size=1, validation_fraction=0,
                              test_fraction=0)

    def test_ties_broken_by_id_and_user_cap(self):
        rows = [(1, 5, 3.0), (1, 6, 3.0), (1, 7, 3.0),
                (2, 5, 3.0), (2, 6, 3.0), (2, 7, 3.0),
                (3, 5, 3.0), (3, 6, 3.0), (3, 7, 3.0), (3, 8, 3.0)]
        data = movielens.prepare(_frame(rows), num_movies=2, num_users=2,
                                 support_size=1, query_size=1,
                                 validation_fraction=0, test_fraction=0)
        # Movies 5, 6, 7 tie at 3 ratings: the smaller ids win. Users tie at
        # 2 ratings among them: users 1 and 2 win.
        np.testing.assert_array_equal(data.movie_ids, [5, 6])
        np.testing.assert_array_equal(data.train.user_ids, [1, 2])

    def test_users_with_too_few_ratings_are_dropped(self):
        frame = synthetic_ratings()
        counts = frame.groupby("user_id").size()
        threshold = int(counts.median())
        data = movielens.prepare(frame, num_movies=80, num_users=40,
                                 support_size=threshold - 5, query_size=5)
        kept = np.concatenate([data.train.user_ids, data.validation.user_ids,
                               data.test.user_ids])
        np.testing.assert_array_equal(
            np.sort(kept), counts.index[counts >= threshold].to_numpy())

    def test_most_rated_movies_kept(self):
        frame = synthetic_ratings()
        data = movielens.prepare(frame, num_movies=30, num_users=40,
                                 support_size=SUPPORT, query_size=QUERY)
        counts = frame.groupby("movie_id").size()
        expected = counts.reset_index(name="n").sort_values(
            ["n", "movie_id"], ascending=[False, True])["movie_id"][:30]
        np.testing.assert_array_equal(data.movie_ids,
                                      np.sort(expected.to_numpy()))

    def test_padded_arrays_match_the_frame(self):
        frame = synthetic_ratings()
        data = movielens.prepare(frame, num_movies=80, num_users=40,
                                 support_size=SUPPORT, query_size=QUERY)
        lookup = source_lookup(frame)
        for split in (data.train, data.validation, data.test):
            self.assertEqual(split.items.dtype, np.int32)
            self.assertEqual(split.ratings.dtype, np.float32)
            self.assertEqual(split.counts.dtype, np.int32)
            self.assertEqual(split.items.shape[1], split.counts.max())
            for row, user in enumerate(split.user_ids):
                n = split.counts[row]
                self.assertEqual(
                    n, int((frame["user_id"] == user).sum()))
                items = split.items[row, :n]
                self.assertTrue(np.all(np.diff(items) > 0))
                for item, rating in zip(items, split.ratings[row, :n]):
                    self.assertEqual(
                        lookup[(user, data.movie_ids[item])], rating)
                self.assertTrue(np.all(split.items[row, n:] == 0))
                self.assertTrue(np.all(split.ratings[row, n:] == 0))
        pd.testing.assert_frame_equal(
            pd.concat([s.to_frame(data.movie_ids) for s in
                       (data.train, data.validation, data.test)])
            .sort_values(["user_id", "movie_id"]).reset_index(drop=True),
            frame.sort_values(["user_id", "movie_id"]).reset_index(drop=True))

    def test_splits_disjoint_cover_and_deterministic(self):
        frame = synthetic_ratings()

        def splits(seed):
            data = movielens.prepare(frame, num_movies=80, num_users=40,
                                     support_size=SUPPORT, query_size=QUERY,
                                     seed=seed)
            return data, [set(s.user_ids.tolist()) for s in
                          (data.train, data.validation, data.test)]

        data, (train, validation, test) = splits(0)
        self.assertEqual((len(train), len(validation), len(test)),
                         (30, 3, 7))
        self.assertEqual(data.kept_users, 40)
        self.assertFalse(train & validation or train & test
                         or validation & test)
        self.assertEqual(train | validation | test,
                         set(frame["user_id"].tolist()))
        self.assertEqual(splits(0)[1], [train, validation, test])
        self.assertNotEqual(splits(1)[1], [train, validation, test])

    def test_popularity_entropy(self):
        rows = []
        for user in range(1, 11):
            rows.append((user, 1, 4.0))  # Everyone agrees.
            rows.append((user, 2, [1.0, 5.0, 3.0][user % 3]))  # Disputed.
            rows.append((user, 4, 2.0))
            if user <= 3:
                rows.append((user, 3, [1.0, 5.0, 3.0][user % 3]))  # Niche.
        data = movielens.prepare(_frame(rows), num_movies=10, support_size=2,
                                 query_size=1, validation_fraction=0,
                                 test_fraction=0)
        scores = movielens.popularity_entropy(data)
        self.assertEqual(scores.dtype, np.float32)
        self.assertEqual(scores.shape, (4,))
        index = {m: i for i, m in enumerate(data.movie_ids)}
        self.assertEqual(scores[index[1]], 0.0)
        self.assertEqual(scores[index[4]], 0.0)
        self.assertGreater(scores[index[2]], scores[index[3]])
        self.assertGreater(scores[index[3]], 0.0)
        p = np.array([3, 4, 3]) / 10  # Ratings 1, 3, 5 among ten users.
        self.assertAllClose(scores[index[2]],
                            np.log(11) * -(p * np.log(p)).sum())

    def test_popularity_entropy_uses_training_users_only(self):
        frame = synthetic_ratings()
        data = movielens.prepare(frame, num_movies=80, num_users=40,
                                 support_size=SUPPORT, query_size=QUERY)
        scores = movielens.popularity_entropy(data)
        train = frame[frame["user_id"].isin(data.train.user_ids)]
        movie = data.movie_ids[0]
        counts = train[train["movie_id"] == movie]["rating"].value_counts()
        p = counts.to_numpy() / counts.sum()
        self.assertAllClose(scores[0],
                            np.log1p(counts.sum()) * -(p * np.log(p)).sum(),
                            rtol=1e-5)


class EpisodeSamplerTest(_TempDirTestCase):

    def setUp(self):
        super().setUp()
        self.frame = synthetic_ratings()
        self.data = movielens.prepare(
            self.frame, num_movies=80, num_users=40, support_size=SUPPORT,
            query_size=QUERY)

    def sampler(self, seed=0):
        return movielens.EpisodeSampler(self.data.train, SUPPORT, QUERY,
                                        seed=seed)

    def test_shapes_dtypes_and_contents(self):
        batch = self.sampler().sample(64)
        expected = {
            "support": (tf.int32, [64, SUPPORT]),
            "support_labels": (tf.float32, [64, SUPPORT]),
            "queries": (tf.int32, [64, QUERY]),
            "query_labels": (tf.float32, [64, QUERY]),
            "user_index": (tf.int32, [64]),
        }
        self.assertEqual(set(batch), set(expected))
        for key, (dtype, shape) in expected.items():
            self.assertEqual(batch[key].dtype, dtype, key)
            self.assertEqual(batch[key].shape.as_list(), shape, key)
        batch = {k: v.numpy() for k, v in batch.items()}
        lookup = source_lookup(self.frame)
        for b in range(64):
            user = self.data.train.user_ids[batch["user_index"][b]]
            support = batch["support"][b]
            query = batch["queries"][b]
            self.assertLen(set(support.tolist()), SUPPORT)
            self.assertLen(set(query.tolist()), QUERY)
            self.assertEmpty(set(support.tolist()) & set(query.tolist()))
            for items, ratings in ((support, batch["support_labels"][b]),
                                   (query, batch["query_labels"][b])):
                for item, rating in zip(items, ratings):
                    self.assertEqual(
                        lookup[(user, self.data.movie_ids[item])], rating)

    def test_only_real_ratings_are_drawn(self):
        # One user with exactly an episode's ratings and much padding: every
        # episode must be exactly that user's movies.
        items = np.zeros([2, 40], np.int32)
        ratings = np.zeros([2, 40], np.float32)
        items[0, :4] = [3, 5, 7, 9]
        ratings[0, :4] = [1.0, 2.0, 3.0, 4.0]
        items[1, :40] = np.arange(10, 50)
        ratings[1, :40] = 5.0
        users = movielens.UserRatings(
            user_ids=np.array([1, 2], np.int64), items=items, ratings=ratings,
            counts=np.array([4, 40], np.int32))
        sampler = movielens.EpisodeSampler(users, 3, 1, seed=3)
        batch = {k: v.numpy() for k, v in sampler.sample(200).items()}
        picked = np.concatenate(
            [batch["support"], batch["queries"]], axis=1)
        first = batch["user_index"] == 0
        self.assertTrue(first.any() and (~first).any())
        for row in picked[first]:
            self.assertEqual(sorted(row.tolist()), [3, 5, 7, 9])
        self.assertTrue(np.all(picked[~first] >= 10))
        rating_of = dict(zip(items[0, :4].tolist(), ratings[0, :4].tolist()))
        for row, values in zip(batch["support"][first],
                               batch["support_labels"][first]):
            self.assertEqual([rating_of[i] for i in row], values.tolist())

    def test_same_seed_same_episodes_different_seed_differs(self):
        a = self.sampler(seed=7).sample(16)
        b = self.sampler(seed=7).sample(16)
        c = self.sampler(seed=8).sample(16)
        for key in a:
            self.assertAllEqual(a[key], b[key])
        self.assertFalse(all(np.array_equal(a[k], c[k]) for k in a))
        # Successive batches of one sampler differ too.
        sampler = self.sampler(seed=7)
        first, second = sampler.sample(16), sampler.sample(16)
        self.assertNotAllEqual(first["support"], second["support"])

    def test_checkpoint_restore_replays_the_same_batch(self):
        sampler = self.sampler(seed=5)
        sampler.sample(4)
        checkpoint = tf.train.Checkpoint(sampler=sampler)
        path = checkpoint.save(os.path.join(self.make_dir(), "ckpt"))
        expected = sampler.sample(8)
        # Into the same sampler, and into a fresh one with another seed.
        checkpoint.restore(path).assert_consumed()
        replay = sampler.sample(8)
        fresh = self.sampler(seed=99)
        tf.train.Checkpoint(sampler=fresh).restore(path).assert_consumed()
        fresh_replay = fresh.sample(8)
        for key in expected:
            self.assertAllEqual(expected[key], replay[key])
            self.assertAllEqual(expected[key], fresh_replay[key])

    def test_dataset_yields_the_sampler_batches(self):
        dataset = self.sampler(seed=2).dataset(4)
        self.assertEqual(dataset.cardinality(), tf.data.INFINITE_CARDINALITY)
        from_dataset = list(dataset.take(3))
        sampler = self.sampler(seed=2)
        for batch in from_dataset:
            expected = sampler.sample(4)
            self.assertEqual(batch["support"].shape.as_list(),
                             [4, SUPPORT])
            for key in expected:
                self.assertAllEqual(expected[key], batch[key])

    def test_argument_validation(self):
        with self.assertRaisesRegex(ValueError, r"user \d+ has \d+ ratings; episodes of 10 \+ 500 need 510"):
            movielens.EpisodeSampler(self.data.train, SUPPORT, 500)
        with self.assertRaisesRegex(ValueError, "support_size"):
            movielens.EpisodeSampler(self.data.train, 0, QUERY)
        with self.assertRaisesRegex(ValueError, "batch_size"):
            self.sampler().dataset(0)
        empty = movielens.UserRatings(
            np.zeros([0], np.int64), np.zeros([0, 0], np.int32),
            np.zeros([0, 0], np.float32), np.zeros([0], np.int32))
        with self.assertRaisesRegex(ValueError, "at least one user"):
            movielens.EpisodeSampler(empty, SUPPORT, QUERY)


class LatentFactorsTest(_TempDirTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.data = movielens.prepare(
            synthetic_ratings(), num_movies=80, num_users=40,
            support_size=SUPPORT, query_size=QUERY)
        cls.factors = latent_factors.train_latent_factors(
            cls.data, dim=8, steps=300, learning_rate=0.03, l2=0.05,
            validation_fraction=0.2)

    def test_beats_the_global_mean_on_low_rank_data(self):
        f = self.factors
        self.assertEqual(f.movie_embeddings.shape, (80, 8))
        self.assertEqual(f.movie_embeddings.dtype, np.float32)
        self.assertEqual(f.movie_bias.shape, (80,))
        self.assertAllEqual(f.movie_ids, self.data.movie_ids)
        self.assertLess(f.validation_rmse, 0.8 * f.baseline_rmse)
        self.assertLess(f.train_rmse, f.validation_rmse)

    def test_minibatch_training_also_fits(self):
        f = latent_factors.train_latent_factors(
            self.data, dim=8, steps=300, learning_rate=0.03, l2=0.05,
            validation_fraction=0.2, batch_size=256)
        self.assertLess(f.validation_rmse, 0.8 * f.baseline_rmse)

    def test_save_load_round_trip(self):
        folder = self.make_dir()
        path = os.path.join(folder, "sub", latent_factors.DEFAULT_FILENAME)
        self.factors.save(path)
        self.factors.save(path)  # Overwrites in place.
        self.assertEqual(os.listdir(os.path.dirname(path)),
                         [latent_factors.DEFAULT_FILENAME])
        loaded = latent_factors.load_latent_factors(
            path, movie_ids=self.data.movie_ids)
        for field in ("movie_ids", "movie_embeddings", "movie_bias"):
            self.assertAllEqual(getattr(loaded, field),
                                getattr(self.factors, field))
        for field in ("global_bias", "train_rmse", "validation_rmse",
                      "baseline_rmse"):
            self.assertAllClose(getattr(loaded, field),
                                getattr(self.factors, field))

    def test_vocabulary_mismatch(self):
        path = os.path.join(self.make_dir(), "factors.npz")
        self.factors.save(path)
        other = self.data.movie_ids.copy()
        other[3] += 1
        with self.assertRaisesRegex(ValueError,
                                    f"{path}: movie vocabulary differs.*"
                                    "index 3"):
            latent_factors.load_latent_factors(path, movie_ids=other)
        with self.assertRaisesRegex(ValueError, "has 80 movies, expected 79"):
            latent_factors.load_latent_factors(
                path, movie_ids=self.data.movie_ids[:-1])


class CommandLineTest(_TempDirTestCase):

    def test_last_line_is_json_summary(self):
        folder = self.make_dir()
        frame = synthetic_ratings()
        write_ratings(folder, frame, "ratings.csv")
        # The movie list lacks the first movie: its ratings are dropped.
        movie_ids = np.unique(frame["movie_id"])
        pathlib.Path(folder, "movies.csv").write_text(
            "movieId,title,genres\n" + "".join(
                f"{m},Movie {m} (2000),Drama\n" for m in movie_ids[1:]))
        output_dir = os.path.join(self.make_dir(), "out")
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT),
                   TF_CPP_MIN_LOG_LEVEL="3")
        result = subprocess.run(
            [sys.executable, "-m", "trainers.ratings_data",
             f"--data_dir={folder}", "--num_movies=79", "--num_users=40",
             f"--support_size={SUPPORT}", f"--query_size={QUERY}",
             "--latent_dim=4", "--latent_steps=50",
             f"--output_dir={output_dir}"],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True,
            timeout=120, check=False)
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        lines = result.stdout.strip().splitlines()
        self.assertGreater(len(lines), 1)  # A readable summary first.
        summary = json.loads(lines[-1])
        dropped = int((frame["movie_id"] == movie_ids[0]).sum())
        self.assertGreater(dropped, 0)
        self.assertEqual(summary["ratings"], len(frame) - dropped)
        self.assertEqual(summary["users"], 40)
        self.assertEqual(summary["movies"], 79)
        self.assertEqual(summary["rating_values"],
                         frame["rating"].nunique())
        self.assertEqual(summary["kept_users"],
                         summary["train_users"] + summary["validation_users"]
                         + summary["test_users"])
        for key in ("kept_movies", "kept_ratings", "latent_train_rmse",
                    "latent_validation_rmse", "episodes_per_second"):
            self.assertIn(key, summary)
        self.assertGreater(summary["episodes_per_second"], 0)
        self.assertEqual(summary["dropped_unlisted_ratings"], dropped)
        path = os.path.join(output_dir, latent_factors.DEFAULT_FILENAME)
        self.assertEqual(summary["latent_factors_path"], path)
        self.assertEqual(latent_factors.load_latent_factors(path).dim, 4)


def test_latest_small_counts(shared_data):
    """Integration: the real ml-latest-small copy in ../shared/data.

    GroupLens's README (and PROVENANCE.md) give 100,836 ratings by 610 users
    of 9,724 movies. Should the shared ratings.csv carry rows of movies that
    movies.csv does not list (one such row has been seen: user 999, movie
    999999), the loader drops them, so the published counts hold.
    """
    folder = shared_data / "movielens" / "ml-latest-small"
    ratings = movielens.load_ratings(folder)
    with open(folder / "ratings.csv") as f:
        data_rows = sum(1 for line in f if line.strip()) - 1
    assert len(ratings) + (ratings.attrs["dropped_unlisted"] or 0) == data_rows
    titles = movielens.load_movie_titles(folder)
    assert titles[1] == "Toy Story (1995)"
    listed = ratings
    assert set(listed["movie_id"]) <= set(titles)
    assert len(listed) == 100_836
    assert listed["user_id"].nunique() == 610
    assert listed["movie_id"].nunique() == 9_724
    assert listed["rating"].nunique() == 10
    assert listed["rating"].min() == 0.5 and listed["rating"].max() == 5.0
    data = movielens.prepare(ratings)
    assert data.num_movies == 4000
    # PROVENANCE.md: 336 users have at least 60 ratings (over all movies);
    # among the 4000 most-rated movies that can only be fewer.
    assert 0 < data.kept_users <= 336
    batch = movielens.EpisodeSampler(data.train, seed=0).sample(8)
    assert batch["support"].shape == (8, 50)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
