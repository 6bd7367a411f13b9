"""Acceptance: a user's own ratings table trains, exports and answers.

A generated CSV with other column names (customer, product, stars, when), a
1-10 scale, string item ids and a few duplicate rows trains 10 steps with
`python -m trainers.ratings`; the exported SavedModel answers begin, select,
observe and predict with string ids; evaluation rebuilds the same users and
items from run_config.json alone. About 60 s on two cores.
"""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import pytest
import tensorflow as tf

from active_learning import checkpoints, evaluation
from active_learning.data import ratings_prep, ratings_reader
from active_learning.run_config import RatingsData, load_run_config
from export import saved_model as export_lib
from tests import ratings_fakes

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SUPPORT, QUERY, BUDGET = 20, 5, 5
DUPLICATES = 7
FACTOR_FRACTION = 0.5
SEED, SPLIT_SEED = 3, 1   # the user split fixed apart from the run's seed


def _trainer_args(data, model_dir):
    return [sys.executable, "-m", "trainers.ratings", f"--data=csv:{data}",
            "--user_col=customer", "--item_col=product", "--rating_col=stars",
            "--timestamp_col=when", f"--model_dir={model_dir}", "--train_steps=10",
            "--batch_size=8", f"--support_size={SUPPORT}", f"--query_size={QUERY}",
            f"--budget={BUDGET}", "--num_movies=60", "--latent_dim=8", "--latent_steps=200",
            "--embed_dim=16", "--units=16", "--log_interval=5", "--eval_interval=10",
            "--checkpoint_interval=10", "--eval_episodes=16", "--final_eval_episodes=16",
            "--nojit_compile", f"--factor_fraction={FACTOR_FRACTION}", f"--seed={SEED}",
            f"--split_seed={SPLIT_SEED}"]


def _env():
    return dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="3")


class OwnRatingsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        root = cls.tmp.name
        cls.table = ratings_fakes.latent_factor_table(duplicates=DUPLICATES)
        cls.data = os.path.join(root, "shop.csv")
        cls.table.to_csv(cls.data, index=False)
        cls.model_dir = os.path.join(root, "model")
        cls.result = subprocess.run(_trainer_args(cls.data, cls.model_dir), cwd=REPO_ROOT,
                                    env=_env(), capture_output=True, text=True, timeout=400,
                                    check=False)
        if cls.result.returncode == 0:
            cls.export = export_lib.export_model_dir(cls.model_dir, os.path.join(root, "export"))

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def setUp(self):
        self.assertEqual(self.result.returncode, 0, self.result.stderr[-3000:])

    def test_run_config_records_every_preprocessing_value(self):
        with open(os.path.join(self.model_dir, checkpoints.RUN_CONFIG)) as f:
            run = json.load(f)
        self.assertEqual(run["dataset"], "ratings")
        self.assertEqual(run["data"]["source"], f"csv:{self.data}")
        for key, value in (("user_col", "customer"), ("item_col", "product"),
                           ("rating_col", "stars"), ("timestamp_col", "when")):
            self.assertEqual(run["data"][key], value)
        self.assertEqual(run["episodes"]["support_size"], SUPPORT)
        self.assertEqual(run["data"]["num_movies"], 60)
        self.assertEqual(run["data"]["latent_dim"], 8)
        # Every preprocessing value is recorded, and read back as recorded.
        self.assertEqual(set(run["data"]), {f.name for f in dataclasses.fields(RatingsData)})
        self.assertEqual(load_run_config(self.model_dir).data,
                         RatingsData(**run["data"]))
        recorded = run["recorded"]
        self.assertEqual(recorded["rating_scale"], {"rating_min": 1.0, "rating_max": 10.0,
                                                    "inferred": [True, True]})
        self.assertEqual(recorded["duplicates_dropped"], DUPLICATES)
        self.assertEqual(recorded["item_id_type"], "str")
        # Half the training users fitted the factors, the others trained the learner.
        train_users = recorded["data"]["train_users"]
        self.assertEqual(recorded["factor_users"], round(FACTOR_FRACTION * train_users))
        self.assertEqual(recorded["factor_users"] + recorded["learner_users"], train_users)
        self.assertIn(f"latent factors fitted on {recorded['factor_users']} training users",
                      self.result.stderr)
        config = checkpoints.load_model_config(self.model_dir)
        self.assertEqual((config.rating_min, config.rating_max), (1.0, 10.0))
        self.assertEqual(config.num_items, self.table["product"].nunique())
        # The duplicate rule reached the summary the trainer prints.
        self.assertIn(f"{DUPLICATES} duplicate (user, item) row(s) dropped", self.result.stderr)

    def test_vocabulary_holds_the_string_ids(self):
        vocabulary = checkpoints.load_vocabulary(self.model_dir)
        self.assertEqual(vocabulary.dtype.kind, "U")
        self.assertEqual(list(vocabulary), sorted(self.table["product"].unique()))

    def test_saved_model_answers_the_four_steps_with_string_ids(self):
        loaded = tf.saved_model.load(self.export)
        vocabulary = [v.decode() for v in loaded.vocabulary.numpy()]
        self.assertEqual(vocabulary, sorted(self.table["product"].unique()))
        # One user's real ratings: pool and held-out items from the table.
        user = self.table[self.table["customer"] == self.table["customer"].iloc[0]]
        user = user.drop_duplicates("product")
        pool = user["product"].to_numpy()[:SUPPORT].astype(str)
        truth = dict(zip(user["product"], user["stars"].astype(float)))
        queries = user["product"].to_numpy()[SUPPORT:SUPPORT + QUERY].astype(str)
        sig = loaded.signatures
        out = sig["begin"](support=tf.constant([pool]))
        emb, state = out["embeddings"], out["state"]
        labels = tf.zeros([1, len(pool)], tf.float32)
        labeled = tf.zeros([1, len(pool)], tf.int32)
        asked = []
        for _ in range(BUDGET):
            chosen = sig["select"](embeddings=emb, state=state, labels=labels,
                                   labeled=labeled, k=tf.constant(1))
            probabilities = chosen["probabilities"].numpy()[0]
            np.testing.assert_allclose(probabilities.sum(), 1.0, atol=1e-5)
            index = int(chosen["index"].numpy()[0])
            self.assertNotIn(index, asked)
            self.assertEqual(probabilities[asked].sum() if asked else 0.0, 0.0)
            asked.append(index)
            observed = sig["observe"](
                embeddings=emb, state=state, labels=labels, labeled=labeled,
                index=tf.constant([index]),
                label=tf.constant([truth[pool[index]]], tf.float32))
            state, labels, labeled = observed["state"], observed["labels"], observed["labeled"]
        predicted = sig["predict"](embeddings=emb, state=state, labels=labels,
                                   labeled=labeled, queries=tf.constant([queries]))
        ratings = predicted["ratings"].numpy()[0]
        self.assertEqual(ratings.shape, (QUERY,))
        self.assertTrue(np.all(np.isfinite(ratings)))
        self.assertTrue(np.all((ratings >= 1.0) & (ratings <= 10.0)), ratings)
        meta = sig["metadata"](dummy=tf.constant(0))
        self.assertEqual((float(meta["rating_min"]), float(meta["rating_max"])), (1.0, 10.0))
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                    "item ids unknown to the model vocabulary"):
            sig["begin"](support=tf.constant([["sku-0001", "no-such-item"]]))

    def test_elicitation_demo_takes_a_titles_table_and_string_ids(self):
        from active_learning.session import ActiveSession  # pylint: disable=g-import-not-at-top
        from export import elicit  # pylint: disable=g-import-not-at-top
        titles_path = os.path.join(self.tmp.name, "items.csv")
        products = sorted(self.table["product"].unique())
        with open(titles_path, "w") as f:
            f.write("product,name\n" + "".join(f"{p},Item {p}\n" for p in products))
        _, loaded, titles, pool = elicit.prepare(
            self.export, f"csv:{titles_path}", pool_size=10, seed=1,
            title_item_col="product", title_col="name", ratings=f"csv:{self.data}",
            ratings_item_col="product")
        # The pool is the ten most-rated products of the ratings table.
        counts = self.table["product"].value_counts()
        self.assertEqual(len(pool), 10)
        self.assertGreaterEqual(counts[list(pool)].min(), counts.sort_values().iloc[-10])
        session = ActiveSession(loaded, pool, seed=0)
        answers, lines = iter(["8", "s", "3"]), []
        rated = elicit.elicit(session, titles, budget=2, read=lambda prompt: next(answers),
                              write=lines.append)
        self.assertEqual(sorted(rated.values()), [3.0, 8.0])
        self.assertTrue(set(rated) <= set(products))
        predicted = elicit.report(session, titles, write=lines.append)
        self.assertEqual(len(predicted), 8)   # 10 in the pool, 2 rated
        self.assertTrue(all(1.0 <= r <= 10.0 for _, r in predicted))

    def test_in_memory_session_with_string_vocabulary_matches_the_saved_model(self):
        from active_learning.session import ActiveSession  # pylint: disable=g-import-not-at-top
        model, _ = checkpoints.load_model(self.model_dir)
        vocabulary = checkpoints.load_vocabulary(self.model_dir)
        pool = list(vocabulary[:SUPPORT])
        sessions = [ActiveSession(model, pool, seed=0, vocabulary=vocabulary),
                    ActiveSession(self.export, pool, seed=0)]
        for session in sessions:
            session.teach(session.query(1), [7.0])
        np.testing.assert_allclose(sessions[0].probabilities(), sessions[1].probabilities(),
                                   atol=1e-5)
        np.testing.assert_allclose(sessions[0].predict(), sessions[1].predict(), atol=1e-4)
        with self.assertRaisesRegex(ValueError, "unknown to the model's vocabulary.*'nope'"):
            ActiveSession(model, pool[:3] + ["nope"], vocabulary=vocabulary)

    def test_evaluation_rebuilds_the_same_items_from_the_run_config(self):
        loaded = evaluation.load_evaluation_model(self.model_dir)
        data_dir = evaluation.resolve_data_dir(None, loaded.run_config, self.model_dir)
        episodes = evaluation.movielens_episodes(
            loaded.run_config, data_dir, vocabulary=loaded.vocabulary,
            latent_factors_path=os.path.join(self.model_dir, "latent_factors.npz"))
        self.assertEqual(episodes.data.num_movies, loaded.model.config.num_items)
        # The users were split with --split_seed, not with the run's --seed.
        table = ratings_reader.load_ratings(
            f"csv:{self.data}", **loaded.run_config.data.reader_kwargs())
        kwargs = loaded.run_config.data.prep_kwargs(loaded.run_config.episodes, SEED)
        by_split_seed = ratings_prep.prepare(table, **kwargs)
        by_run_seed = ratings_prep.prepare(table, **{**kwargs, "seed": SEED})
        np.testing.assert_array_equal(episodes.data.test.user_ids,
                                      by_split_seed.test.user_ids)
        self.assertFalse(np.array_equal(episodes.data.test.user_ids,
                                        by_run_seed.test.user_ids))
        batch = episodes.make_sampler("test", seed=0)().sample(4)
        self.assertEqual(tuple(batch["support"].shape), (4, SUPPORT))
        labels = batch["support_labels"].numpy()
        self.assertTrue(np.all((labels >= 1) & (labels <= 10)))


class OwnRatingsErrorsTest(unittest.TestCase):

    def test_a_table_too_small_for_the_episode_shape_is_refused_by_name(self):
        with tempfile.TemporaryDirectory() as root:
            data = os.path.join(root, "small.csv")
            ratings_fakes.latent_factor_table(num_users=20, num_items=15).to_csv(
                data, index=False)
            model_dir = os.path.join(root, "model")
            result = subprocess.run(_trainer_args(data, model_dir), cwd=REPO_ROOT, env=_env(),
                                    capture_output=True, text=True, timeout=120, check=False)
            self.assertNotEqual(result.returncode, 0)
            self.assertIn("need 25 ratings per user", result.stderr)
            self.assertNotIn("Traceback", result.stderr)
            self.assertFalse(os.path.exists(os.path.join(model_dir, "model_config.json")))


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
