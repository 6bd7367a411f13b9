"""Tests of `python -m export.elicit` with scripted standard input.

A tiny ratings model is exported, a tiny movies.csv / ratings.csv written,
and the command is run as a person would use it; its questions and final
predictions are compared with the same session run in-process.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import active_learning  # noqa: F401,E402  (first: sets TensorFlow's log level)

import shutil
import subprocess
import sys
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from active_learning.config import ModelConfig
from active_learning.model import ActiveMatchingNetwork
from active_learning.session import ActiveSession
from export import elicit
from export import saved_model as export_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_ITEMS = 12
VOCABULARY = np.arange(NUM_ITEMS, dtype=np.int64) * 10 + 1
TITLES = {int(m): f"Movie number {i} ({1990 + i})" for i, m in enumerate(VOCABULARY)}
TITLES[1] = "Good, the Bad and the Ugly, The (1966)"  # quoted in the CSV
TITLES[11] = "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)"
TITLES[9999] = "Not In The Vocabulary (2020)"
POOL_SIZE, BUDGET = 6, 3


def write_movies(path):
    with open(path, "w", encoding="utf-8") as f:
        f.write("movieId,title,genres\n")
        for movie, title in TITLES.items():
            quoted = f'"{title}"' if "," in title else title
            f.write(f"{movie},{quoted},Drama\n")


def write_ratings(path):
    # Movie i of the vocabulary gets i + 1 ratings; 9999 the most of all.
    with open(path, "w", encoding="utf-8") as f:
        f.write("userId,movieId,rating,timestamp\n")
        user = 0
        for i, movie in enumerate(list(VOCABULARY) + [9999] * 20):
            for _ in range(i + 1 if movie != 9999 else 1):
                user += 1
                f.write(f"{user},{movie},4.0,0\n")


class ElicitTest(tf.test.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.root = tempfile.mkdtemp(prefix="elicit_test_")
        keras.utils.set_random_seed(2)
        model = ActiveMatchingNetwork(ModelConfig(task="regression", embed_dim=16, units=16,
                                                  num_items=NUM_ITEMS))
        cls.base = os.path.join(cls.root, "export")
        cls.path = export_lib.export_saved_model(model, cls.base, vocabulary=VOCABULARY)
        cls.loaded = tf.saved_model.load(cls.path)
        cls.movies = os.path.join(cls.root, "movies.csv")
        cls.ratings = os.path.join(cls.root, "ratings.csv")
        write_movies(cls.movies)
        write_ratings(cls.ratings)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root, ignore_errors=True)
        super().tearDownClass()

    def run_command(self, answers, *flags):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONIOENCODING="utf-8")
        return subprocess.run(
            [sys.executable, "-m", "export.elicit", f"--export_dir={self.base}",
             f"--movies={self.movies}", f"--pool_size={POOL_SIZE}", f"--budget={BUDGET}",
             "--seed=0", *flags],
            input=answers, cwd=REPO, env=env, capture_output=True, text=True,
            encoding="utf-8", timeout=300)

    def in_process(self, answers, popularity):
        """The same session run here: (lines written, session)."""
        pool = elicit.choose_pool(VOCABULARY, TITLES, POOL_SIZE, 0, popularity)
        session = ActiveSession(self.loaded, pool, seed=0)
        answers = iter(answers.splitlines())
        lines, prompts = [], []

        def read(prompt):
            prompts.append(prompt)
            try:
                return next(answers)
            except StopIteration:
                raise EOFError from None

        elicit.elicit(session, TITLES, BUDGET, read=read, write=lines.append)
        elicit.report(session, TITLES, write=lines.append)
        return prompts, lines, session

    def test_scripted_person(self):
        answers = "abc\n7\n4.5\ns\n3\n2,5\n"
        proc = self.run_command(answers, f"--ratings={self.ratings}")
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        out = proc.stdout
        popularity = {int(m): i + 1 for i, m in enumerate(VOCABULARY)}
        prompts, lines, session = self.in_process(answers, popularity)
        # Bad answers are refused with a clear message and asked again.
        self.assertEqual(out.count("is not a rating"), 2)
        self.assertIn("'abc' is not a rating", out)
        self.assertIn("'7' is not a rating", out)
        # The questions come in the order the policy picks, by title.
        self.assertLen(prompts, 6)
        position = 0
        for prompt in prompts:
            position = out.index(prompt, position)
        # Three ratings used the budget; the skipped movie was never read.
        self.assertLen(session.labeled_indices, BUDGET)
        self.assertAllClose(session.labels, [4.5, 3.0, 2.5])
        self.assertLen(session.skipped_indices, 1)
        # Predictions of the unrated movies, best first, as computed here.
        report = lines[lines.index("Predicted ratings for the movies you did not rate, "
                                   "best first:"):]
        self.assertLen(report, 1 + POOL_SIZE - BUDGET)
        for line in report:
            self.assertIn(line, out)
        values = [float(line.split()[0]) for line in report[1:]]
        self.assertEqual(values, sorted(values, reverse=True))
        # The most rated movies known to the model make the pool.
        pool_titles = {TITLES[int(m)] for m in session.pool}
        self.assertEqual(pool_titles, {TITLES[int(m)] for m in VOCABULARY[-POOL_SIZE:]})
        self.assertNotIn("Not In The Vocabulary", out)

    def test_end_of_input_stops_early(self):
        proc = self.run_command("4\n")
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        self.assertIn("[2/3]", proc.stdout)  # asked a second time, then EOF
        report = proc.stdout[proc.stdout.index("Predicted ratings"):].splitlines()
        self.assertLen(report, POOL_SIZE)  # five unrated movies + the heading

    def test_parse_rating(self):
        self.assertEqual(elicit.parse_rating(" 3.5 "), 3.5)
        self.assertEqual(elicit.parse_rating("5"), 5.0)
        self.assertEqual(elicit.parse_rating("0,5"), 0.5)
        self.assertEqual(elicit.parse_rating("S"), elicit.SKIP)
        self.assertEqual(elicit.parse_rating("q"), elicit.QUIT)
        for bad in ("", "0", "5.5", "3.2", "nan", "inf", "four", "-1"):
            with self.assertRaisesRegex(ValueError, "not a rating"):
                elicit.parse_rating(bad)

    def test_choose_pool(self):
        random_pool = elicit.choose_pool(VOCABULARY, TITLES, 4, seed=3)
        self.assertAllEqual(random_pool, elicit.choose_pool(VOCABULARY, TITLES, 4, seed=3))
        self.assertLen(set(random_pool.tolist()), 4)
        self.assertTrue(set(random_pool.tolist()) <= set(VOCABULARY.tolist()))
        popular = elicit.choose_pool(VOCABULARY, TITLES, 2, 0,
                                     popularity={21: 50, 31: 40, 9999: 100})
        self.assertCountEqual(popular.tolist(), [21, 31])
        everything = elicit.choose_pool(VOCABULARY, {1: "a", 11: "b"}, 10)
        self.assertCountEqual(everything.tolist(), [1, 11])
        with self.assertRaisesRegex(ValueError, "no movie of the model's vocabulary"):
            elicit.choose_pool(VOCABULARY, {5: "x"}, 3)

    def test_bad_setup_fails_clearly(self):
        # What the command reports on stderr before exiting with status 1.
        with self.assertRaisesRegex(FileNotFoundError, "99"):
            elicit.prepare(self.base, self.movies, version=99)
        with self.assertRaisesRegex(OSError, "does not exist|No MovieLens"):
            elicit.prepare(self.base, os.path.join(self.root, "nowhere", "movies.csv"))
        with self.assertRaisesRegex(ValueError, "--pool_size must be >= 1.*got 0"):
            elicit.prepare(self.base, self.movies, pool_size=0)
        path, _, titles, pool = elicit.prepare(self.base, self.movies, ratings=self.ratings,
                                               pool_size=POOL_SIZE)
        self.assertEqual(path, self.path)
        self.assertLen(pool, POOL_SIZE)
        self.assertTrue(all(int(m) in titles for m in pool))


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
