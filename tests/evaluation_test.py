"""Tests of the evaluation helpers: confidence intervals, policy curves, the
paper's tables and figures on tiny synthetic data, and the command line."""

import csv
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import active_learning  # noqa: F401,E402
from absl import flags  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from active_learning import checkpoints  # noqa: E402
from active_learning import evaluation  # noqa: E402
from active_learning.evaluation import cold_start  # noqa: E402
from active_learning.data import latent_factors  # noqa: E402
from active_learning.data import movielens  # noqa: E402
from active_learning.policies import make_policy  # noqa: E402
from tests import fakes  # noqa: E402
from trainers import evaluate  # noqa: E402


class ConfidenceIntervalTest(tf.test.TestCase):

    def test_known_sample(self):
        samples = np.array([1.0, 2.0, 3.0, 4.0])
        mean, half = evaluation.mean_and_ci(samples)
        # std (ddof=1) = sqrt(5/3); half-width = 1.96 * std / sqrt(4)
        self.assertAllClose(mean, 2.5)
        self.assertAllClose(half, 1.959963984540054 * np.sqrt(5.0 / 3.0) / 2.0)

    def test_per_column_and_single_sample(self):
        mean, half = evaluation.mean_and_ci(np.array([[1.0, 5.0], [3.0, 5.0]]))
        self.assertAllClose(mean, [2.0, 5.0])
        self.assertAllClose(half[1], 0.0)
        self.assertGreater(half[0], 0.0)
        _, half_one = evaluation.mean_and_ci(np.array([[7.0, 8.0]]))
        self.assertAllClose(half_one, [0.0, 0.0])


class EvaluatePolicyTest(tf.test.TestCase):

    def test_oracle_finds_every_class_and_curves_are_seeded(self):
        model = fakes.tiny_model()
        policy = make_policy("oracle")
        run = evaluation.make_rollout_fn(model, policy, 3)
        results = []
        for _ in range(2):
            sampler = fakes.tiny_sampler(ways=3, items_per_class=2, seed=5)
            results.append(evaluation.evaluate_policy(
                model, sampler.sample, policy, 3, num_episodes=10, batch_size=4, seed=1,
                rollout_fn=run))
        first = results[0]
        self.assertEqual(first["episodes"], 10)
        self.assertAllClose(first["distinct_labels"], [1.0, 2.0, 3.0])
        self.assertAllClose(first["found_all"], [0.0, 0.0, 1.0])
        self.assertEqual(len(first["metric"]), 3)
        self.assertTrue(all(0.0 <= m <= 1.0 for m in first["metric"]))
        self.assertEqual(results[0], results[1])


class BalancedPolicyTest(tf.test.TestCase):

    def test_every_class_gets_floor_or_ceil_of_t_over_n_labels(self):
        model = fakes.tiny_model()
        sampler = fakes.tiny_sampler(ways=3, items_per_class=3, seed=2)
        batch = sampler.sample(4)
        policy = evaluation.make_eval_policy("balanced")
        run = evaluation.make_rollout_fn(model, policy, 7)
        actions = run(batch, tf.constant([0, 0]))["actions"].numpy()
        labels = batch["support_labels"].numpy()
        for b in range(4):
            self.assertLen(set(actions[b].tolist()), 7)
            for t in range(1, 8):
                counts = np.bincount(labels[b, actions[b, :t]], minlength=3)
                self.assertLessEqual(counts.max() - counts.min(), 1, (b, t, counts))
        with self.assertRaisesRegex(ValueError, "classification"):
            evaluation.make_eval_policy("balanced", task="regression")


# ------------------------------------------------------------ tiny fixtures
ALPHABETS = ("Alpha", "Beta", "Gamma")
CHARACTERS_PER_ALPHABET = 3


def write_omniglot_folder(root):
    """An unzipped `images_background/<Alphabet>/characterNN/*.png` release.

    9 characters of 20 drawings, 28x28 one-bit PNGs (black ink on white):
    each character a random prototype with a little per-drawing noise.
    """
    images = fakes.character_images(len(ALPHABETS) * CHARACTERS_PER_ALPHABET, drawings=20)
    index = 0
    for alphabet in ALPHABETS:
        for c in range(CHARACTERS_PER_ALPHABET):
            folder = os.path.join(root, "images_background", alphabet, f"character{c + 1:02d}")
            os.makedirs(folder)
            for d in range(20):
                ink = images[index, d] > 0.5
                Image.fromarray(~ink).convert("1").save(
                    os.path.join(folder, f"{index + 1:04d}_{d + 1:02d}.png"))
            index += 1
    return root


def make_model_dir(root, data_dir, seed=0):
    """A trained-model directory as the Omniglot trainer lays it out (tiny, untrained)."""
    keras.utils.set_random_seed(seed)
    model = fakes.tiny_model(max_classes=4)
    checkpoints.save_model_config(root, model.config)
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model),
                               os.path.join(root, "checkpoints"), 1).save()
    split = {"split": "alphabets", "test_alphabets": ["Alpha"],
             "validation_alphabets": ["Beta"], "train_characters": 3,
             "validation_characters": 3, "test_characters": 3}
    checkpoints.write_json_atomic(os.path.join(root, checkpoints.RUN_CONFIG), {
        "dataset": "omniglot", "data_dir": data_dir, "split": split, "ways": [3],
        "eval_ways": 3, "shots": 1, "items_per_class": 5, "budget": 3,
        "train_config": {"policy": "learned", "seed": 0}})
    return root


def run_cli(*args):
    """Runs `trainers.evaluate` in-process on its own flag values; its record."""
    values = flags.FlagValues()
    evaluate.define_flags(values)
    values(["evaluate", *args])
    return evaluate.run(values)


class CommandLineTest(tf.test.TestCase):
    """One tiny data folder and model directory; each command runs once per class."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        root = os.path.join(tf.compat.v1.test.get_temp_dir(), "evaluation_cli")
        cls.root = root
        cls.data_dir = write_omniglot_folder(os.path.join(root, "omniglot"))
        cls.model_dir = make_model_dir(os.path.join(root, "model"), cls.data_dir)
        cls.common = [f"--cache_dir={os.path.join(root, 'cache')}", "--batch_size=4"]
        # ways, shots and the data folder come from the run's run_config.json.
        cls.table1 = run_cli(f"--model_dir={cls.model_dir}",
                             f"--output_dir={os.path.join(root, 'table1')}",
                             "--episodes=6", "--seed=3", *cls.common)

    def test_table1_writes_csv_json_png_markdown(self):
        record = self.table1
        self.assertEqual((record["ways"], record["shots"], record["labels"]), (3, 1, 3))
        stem = os.path.join(self.root, "table1", "table1_3way1shot")
        for ext in ("csv", "json", "png", "md"):
            self.assertGreater(os.path.getsize(f"{stem}.{ext}"), 0, ext)
        with open(f"{stem}.json") as f:
            saved = json.load(f)
        self.assertEqual(saved["episodes"], 6)
        self.assertIn("machine", saved)
        self.assertIn("--seed=3", saved["command"])
        with open(f"{stem}.csv") as f:
            rows = list(csv.DictReader(f))
        self.assertLen(rows, 4 * 3)  # four series x three label counts
        with open(f"{stem}.md") as f:
            text = f.read()
        for label, policy in evaluation.TABLE1_ROWS:
            self.assertIn(f"| {label} | `{policy}` |", text)
        with open(f"{stem}.png", "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        balanced = next(r for r in record["rows"] if r["policy"] == "balanced")
        self.assertAllClose(balanced["distinct_labels"], 3.0)
        self.assertAllClose(balanced["found_all"], 1.0)

    def test_markdown_lists_every_row_and_the_papers_numbers(self):
        record = json.loads(json.dumps(self.table1))
        # No paper column for 3-way.
        self.assertIn("not in the paper", evaluation.table1_markdown(record))
        record["ways"] = 5
        for row in record["rows"]:
            row["paper_accuracy"], row["paper_ci"] = \
                evaluation.PAPER_TABLE1[(5, 1)][row["policy"]]
        text = evaluation.table1_markdown(record)
        self.assertIn("paper (Table 1)", text)
        for label, policy in evaluation.TABLE1_ROWS:
            paper = evaluation.PAPER_TABLE1[(5, 1)][policy]
            self.assertIn(f"| {label} | `{policy}` |", text)
            self.assertIn(f"{paper[0]:.1f}% ± {paper[1]:.2f}", text)

    def test_paper_table_has_every_setting_and_row(self):
        for ways in (5, 10):
            for shots in (1, 2, 3):
                self.assertEqual(set(evaluation.PAPER_TABLE1[(ways, shots)]),
                                 {p for _, p in evaluation.TABLE1_ROWS})
        self.assertEqual(evaluation.PAPER_TABLE1[(10, 1)]["greedy"], (94.3, 0.24))

    def test_same_seed_same_episodes(self):
        model = evaluation.load_evaluation_model(self.model_dir)
        episodes = evaluation.class_episodes(model.run_config, self.data_dir,
                                                os.path.join(self.root, "cache"))
        self.assertLen(episodes.classes.test, 3)
        make = episodes.make_sampler("test", 3, seed=3)
        first, second = make(), make()
        self.assertAllEqual(first.sample(2)["support"],
                            second.sample(2)["support"])
        other = episodes.make_sampler("validation", 3, seed=3)()
        self.assertNotAllClose(first.sample(2)["support"],
                               other.sample(2)["support"])

    def test_figure3_with_two_models(self):
        out = os.path.join(self.root, "fig3")
        record = run_cli(f"--model_dir={self.model_dir}", f"--model_dir={self.model_dir}",
                         f"--output_dir={out}", "--figure=figure3", "--ways=3",
                         "--max_labels=6", "--distinct_max=5", "--episodes=4", *self.common)
        self.assertLen(record["right"]["rows"], 4)  # oracle, random, two active
        self.assertEqual([p["labels"] for p in record["left"]["points"]], [3, 6])
        oracle = record["right"]["rows"][0]["distinct_labels"]
        self.assertAllClose(oracle[:5], [1, 2, 3, 3, 3])
        for ext in ("csv", "json", "png", "md"):
            self.assertTrue(os.path.exists(os.path.join(out, f"figure3_3way.{ext}")))

    def test_exported_saved_model_loads_the_same_weights(self):
        from export import saved_model  # pylint: disable=g-import-not-at-top
        base = os.path.join(self.root, "exported")
        saved_model.export_model_dir(self.model_dir, base, which="latest")
        self.assertTrue(evaluation.is_saved_model(base))
        self.assertFalse(evaluation.is_saved_model(self.model_dir))
        exported = evaluation.load_evaluation_model(base)
        trained = evaluation.load_evaluation_model(self.model_dir)
        self.assertEqual(exported.kind, "saved_model")
        self.assertEqual(exported.run_config.episodes.eval_ways, 3)
        for a, b in zip(exported.model.variables, trained.model.variables):
            if a.path not in exported.missing:
                self.assertAllEqual(a.numpy(), b.numpy())
        # Only what the serving signatures never use is missing.
        self.assertTrue(all(p.startswith(("value/", "fast_predictor/", "reader/"))
                            for p in exported.missing), exported.missing)

    def test_bad_arguments_are_named(self):
        with self.assertRaisesRegex(flags.ValidationError, "NAME=DIR"):
            run_cli(f"--model_dir={self.model_dir}", "--output_dir=/tmp/x",
                    "--heuristic_model_dir=nonsense", *self.common)
        with self.assertRaisesRegex(ValueError, "max_classes"):
            run_cli(f"--model_dir={self.model_dir}", "--output_dir=/tmp/x", "--ways=5",
                    *self.common)


# ------------------------------------------------------------- MovieLens
def tiny_movielens(num_users=36, num_movies=40, seed=0):
    """Prepared low-rank ratings, random latent factors and a tiny ratings model."""
    rng = np.random.default_rng(seed)
    users = rng.normal(size=[num_users, 2])
    movies = rng.normal(size=[num_movies, 2])
    scores = np.clip(np.round((3.0 + users @ movies.T) * 2) / 2, 0.5, 5.0)
    u, m = np.nonzero(rng.random([num_users, num_movies]) < 0.8)
    frame = pd.DataFrame({"user_id": u + 1, "movie_id": m + 100,
                          "rating": scores[u, m].astype(np.float32)})
    data = movielens.prepare(frame, support_size=8, query_size=4, validation_fraction=0.2,
                             test_fraction=0.2, seed=seed)
    factors = latent_factors.LatentFactors(
        movie_ids=data.movie_ids,
        movie_embeddings=rng.normal(size=[data.num_movies, 4]).astype(np.float32),
        movie_bias=np.zeros(data.num_movies, np.float32), global_bias=3.0,
        train_rmse=0.0, validation_rmse=0.0, baseline_rmse=0.0)
    episodes = evaluation.MovieLensEpisodes(data, factors, movielens.popularity_entropy(data))
    keras.utils.set_random_seed(seed)
    model = fakes.tiny_model(task="regression", num_items=data.num_movies)
    loaded = evaluation.LoadedModel(model, "tiny", "tiny", {"dataset": "movielens"})
    return loaded, episodes


class Figure4Test(tf.test.TestCase):

    def test_every_series_improvement_and_outputs(self):
        model, episodes = tiny_movielens()
        record = evaluation.run_figure4(model, episodes, num_steps=2, num_episodes=6,
                                        batch_size=4, tune_episodes=5,
                                        ridge_grid=(0.1, 10.0), gp_grid=(0.1, 1.0),
                                        include_random=False,
                                        heuristics=(("Min-Max-Cos", "min_max_cos"),))
        # Every heuristic is a policy driving the model like Min-Max-Cos here;
        # one keeps the test fast (each costs a rollout trace).
        labels = [r["label"] for r in record["rows"]]
        self.assertEqual(labels, ["Regression", "Gaussian Process", "Min-Max-Cos",
                                  "Active MN"])
        for row in record["rows"]:
            self.assertLen(row["rmse"], 2)
            self.assertTrue(all(np.isfinite(row["rmse"])), row["label"])
        heuristic = next(r for r in record["rows"] if r["key"] == "min_max_cos")
        self.assertIn("active model's weights", heuristic["note"])
        self.assertLen(record["tuning"]["ridge"]["best"], 2)
        improvement = record["improvement"]
        baseline = next(r for r in record["rows"]
                        if r["label"] == improvement["best_baseline"])
        self.assertAllClose(improvement["improvement_pct"],
                            100 * (baseline["rmse"][1] - improvement["active_rmse"])
                            / baseline["rmse"][1])
        paths = evaluation.write_outputs(self.get_temp_dir(), record)
        with open(paths["md"]) as f:
            text = f.read()
        self.assertIn("improvement", text)
        self.assertIn("Gaussian Process", text)

    def test_baselines_alone_need_no_model(self):
        _, episodes = tiny_movielens(seed=2)
        record = evaluation.run_figure4(None, episodes, num_steps=2, num_episodes=6,
                                        batch_size=4, tune_episodes=5,
                                        ridge_grid=(0.1, 10.0), gp_grid=(0.1, 1.0),
                                        baseline_prior="movie_bias")
        self.assertEqual([r["label"] for r in record["rows"]],
                         ["Regression", "Gaussian Process"])
        self.assertIsNone(record["improvement"])
        paths = evaluation.write_outputs(self.get_temp_dir(), record)
        self.assertTrue(paths["json"].endswith("figure4_movie_bias_baselines.json"))
        with self.assertRaisesRegex(ValueError, "baseline_prior"):
            evaluation.run_figure4(None, episodes, baseline_prior="nonsense")


class ColdStartTest(tf.test.TestCase):

    def test_per_user_pools_each_users_episodes(self):
        squared = np.array([[1.0, 4.0], [9.0, 0.0], [4.0, 4.0]])
        values, ids = cold_start.per_user(squared, np.array([7, 3, 7]))
        self.assertAllEqual(ids, [3, 7])
        # User 7: sqrt of the mean of (1, 4) and (4, 4), not the mean of the RMSEs.
        self.assertAllClose(values, [[3.0, 0.0], [np.sqrt(2.5), 2.0]])

    def test_bias_model_and_orders(self):
        _, episodes = tiny_movielens()
        factors = episodes.factors
        factors.movie_bias[:] = np.linspace(-1, 1, len(factors.movie_bias))
        test = evaluation.collect_rating_episodes(episodes.make_sampler("test", 0), 5, 5,
                                                  keys=("user_index",))
        prior = factors.global_bias + factors.movie_bias
        # A user who rates everything 0.7 above its prior: the offset is exact.
        shifted = dict(test, support_labels=prior[test["support"]] + 0.7)
        orders = evaluation.random_orders(5, test["support"].shape[1], 0)
        predictions = cold_start.bias_model(shifted, orders, 3, factors)
        self.assertAllClose(predictions, prior[test["queries"]] + 0.7, atol=1e-5)
        self.assertAllClose(cold_start.bias_model(test, orders, 0, factors),
                            prior[test["queries"]])
        scores = np.arange(len(prior), dtype=np.float32)
        order = cold_start.score_orders(scores, test["support"])
        ranked = np.take_along_axis(scores[test["support"]], order, 1)
        self.assertTrue(np.all(np.diff(ranked, axis=1) <= 0))

    def test_record_rows_checks_and_outputs(self):
        model, episodes = tiny_movielens()
        record = evaluation.run_cold_start(
            [("learned", "learned", model, "greedy"), ("random", "random", model, "random")],
            episodes, num_steps=2, num_episodes=6, batch_size=3, tune_episodes=4)
        keys = [r["key"] for r in record["rows"]]
        self.assertEqual(keys[:1] + keys[-2:], ["global_mean", "learned", "random"])
        self.assertIn("fold_in_random", keys)
        for row in record["rows"]:
            self.assertLen(row["rmse"], 2)
            self.assertTrue(all(np.isfinite(row["rmse"] + row["ci"])), row["label"])
        glob = record["rows"][0]
        self.assertEqual(glob["rmse"][0], glob["rmse"][1])   # asks nothing
        checks = record["checks"]
        best = min((r for r in record["rows"] if r["kind"] == "baseline"),
                   key=lambda r: r["rmse"][-1])
        self.assertEqual(checks["best_baseline"], best["label"])
        self.assertAllClose(checks["ratio_to_best_baseline"],
                            record["rows"][-2]["rmse"][-1] / best["rmse"][-1])
        self.assertIn(2, checks["versus_random_picks"])
        paths = evaluation.write_outputs(self.get_temp_dir(), record)
        with open(paths["md"], encoding="utf-8") as f:
            self.assertIn("best classic baseline", f.read())


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
