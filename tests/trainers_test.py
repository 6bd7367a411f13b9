"""Tests of the training entry points: flagfiles, flag checks, resume, NaN guard."""

import copy
import dataclasses
import glob
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import active_learning  # noqa: F401,E402
from absl import flags  # noqa: E402
from absl.testing import flagsaver  # noqa: E402
import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from active_learning import checkpoints  # noqa: E402
from active_learning import run_config as run_configs  # noqa: E402
from active_learning.run_config import ClassEpisodeConfig  # noqa: E402
from trainers import classification as classification_trainer  # noqa: E402
from trainers import common  # noqa: E402
from trainers import movielens as movielens_trainer  # noqa: E402
from trainers import ratings as ratings_trainer  # noqa: E402
from trainers import ratings_data  # noqa: E402
from trainers import omniglot as omniglot_trainer  # noqa: E402
from tests import fakes  # noqa: E402

FLAGS = flags.FLAGS
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(REPO, "trainers", "configs", "*.cfg")))


def _ensure_parsed():
    if not FLAGS.is_parsed():
        FLAGS(["trainers_test"])


def _module_flags(*modules):
    """A fresh FlagValues holding only the flags these modules define."""
    values = flags.FlagValues()
    for module in modules:
        for flag in FLAGS.get_flags_for_module(module):
            values[flag.name] = copy.deepcopy(flag)  # parsing must not touch FLAGS
    return values


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_flagfile_names_only_known_flags(path):
    if "movielens" in os.path.basename(path):
        # The MovieLens preset runs trainers.ratings, whose data flags live in
        # trainers.ratings_data.
        modules = (common, ratings_trainer, ratings_data)
    else:
        modules = (common, classification_trainer)
    values = _module_flags(*modules)
    values(["prog", f"--flagfile={path}"])  # raises on an unknown flag or bad value
    assert values["model_dir"].value
    if "movielens" in os.path.basename(path):
        assert values["data_dir"].value.startswith("../shared/data/")
    else:  # The shipped copy (data/README.md): a fresh clone trains offline.
        assert values["data_dir"].value in ("data/omniglot", "data/omniglot-full")
    assert values["train_steps"].value >= 1000
    if "full" in os.path.basename(path) or "lake" in os.path.basename(path):
        assert values["data_dir"].value.endswith("omniglot-full")
        assert values["split"].value in ("vinyals", "lake")


def test_there_are_flagfiles_for_every_paper_setting():
    names = {os.path.basename(p) for p in CONFIGS}
    for ways in (5, 10):
        for shots in (1, 2, 3):
            assert f"omniglot_{ways}way_{shots}shot.cfg" in names
    assert {"omniglot_20way.cfg", "omniglot_mixed.cfg", "movielens.cfg"} <= names


class FlagCheckTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        _ensure_parsed()

    def test_budget_larger_than_pool_is_rejected_before_loading(self):
        with flagsaver.flagsaver(data_dir="/nonexistent", model_dir=self.get_temp_dir(),
                                 ways=5, items_per_class=2, budget=11):
            with self.assertRaisesRegex(flags.ValidationError, "exceeds the pool"):
                omniglot_trainer.setup_from_flags()

    def test_ways_above_max_classes_is_rejected(self):
        with flagsaver.flagsaver(data_dir="/nonexistent", model_dir=self.get_temp_dir(),
                                 ways=25, max_classes=20):
            with self.assertRaisesRegex(flags.ValidationError, "max_classes"):
                omniglot_trainer.setup_from_flags()

    def test_missing_data_dir_names_the_problem(self):
        with flagsaver.flagsaver(data_dir=os.path.join(self.get_temp_dir(), "missing"),
                                 model_dir=self.get_temp_dir(), ways=5, shots=1):
            with self.assertRaisesRegex((FileNotFoundError, ValueError), "missing"):
                omniglot_trainer.setup_from_flags()

    def test_movielens_budget_above_support_is_rejected(self):
        with flagsaver.flagsaver(data_dir="/nonexistent", model_dir=self.get_temp_dir(),
                                 budget=60, support_size=50):
            with self.assertRaisesRegex(flags.ValidationError, "exceeds the pool"):
                movielens_trainer.setup_from_flags()


class _CrashingSampler:
    """Delegates to a sampler, then dies on one call: a stand-in for kill -9."""

    def __init__(self, sampler, crash_on_call):
        self.sampler, self.rng = sampler, sampler.rng
        self.calls, self.crash_on_call = 0, crash_on_call

    def sample(self, batch_size, **kwargs):
        self.calls += 1
        if self.calls == self.crash_on_call:
            raise KeyboardInterrupt("simulated crash")
        return self.sampler.sample(batch_size, **kwargs)


def _setup(sampler=None):
    keras.utils.set_random_seed(1)
    model = fakes.tiny_model()
    sampler = sampler or fakes.tiny_sampler(seed=3)
    return common.TaskSetup(
        name="omniglot", model=model, train_sampler=sampler,
        make_eval_sampler=lambda: fakes.tiny_sampler(seed=99), eval_policies=["greedy"],
        num_steps=2, higher_is_better=True, metric_name="accuracy")


# tests.fakes.tiny_sampler's episodes: 3-way, 2 pool items per class.
TINY_EPISODES = ClassEpisodeConfig(ways=[3], eval_ways=3, shots=1, items_per_class=2, budget=2)
RUN_FLAGS = dict(train_steps=6, checkpoint_interval=2, eval_interval=3, log_interval=3,
                 eval_episodes=4, final_eval_episodes=4, batch_size=4, seed=0)


@pytest.mark.heavy(168)
class ResumeTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        _ensure_parsed()

    def _run(self, model_dir, setup):
        # XLA compiles each new model's step anew (tens of seconds here), and
        # these tests are about the loop, not the step: the compiled step is
        # tests/training_test.py's and tests/batch_query_test.py's.
        with flagsaver.flagsaver(model_dir=model_dir, jit_compile=False, **RUN_FLAGS):
            run = common.run_config_from_flags("omniglot", TINY_EPISODES, None)
            return common.run_training(setup, run, tf.distribute.get_strategy())

    def test_crash_then_rerun_equals_an_uninterrupted_run(self):
        straight_dir = os.path.join(self.get_temp_dir(), "straight")
        straight = _setup()
        record = self._run(straight_dir, straight)
        self.assertEqual(record["labels"], [1, 2])
        self.assertTrue(os.path.exists(os.path.join(straight_dir, checkpoints.METRICS)))
        self.assertTrue(tf.train.latest_checkpoint(os.path.join(straight_dir, "best")))
        best = checkpoints.read_json(os.path.join(straight_dir, "best.json"))
        self.assertEqual(best["policy"], "greedy")  # a learned policy is judged greedily

        crash_dir = os.path.join(self.get_temp_dir(), "crashed")
        # Dies while fetching the 6th batch: checkpoints exist for steps 2 and 4.
        crashing = _setup(_CrashingSampler(fakes.tiny_sampler(seed=3), crash_on_call=6))
        with self.assertRaises(KeyboardInterrupt):
            self._run(crash_dir, crashing)
        latest = tf.train.latest_checkpoint(os.path.join(crash_dir, "checkpoints"))
        self.assertTrue(latest.endswith("ckpt-4"), latest)

        resumed = _setup()  # a fresh process: new model, sampler at its seed
        self._run(crash_dir, resumed)
        for a, b in zip(straight.model.trainable_variables, resumed.model.trainable_variables):
            self.assertAllClose(a.numpy(), b.numpy(), atol=1e-5, msg=a.path)

    def test_init_from_starts_at_the_source_weights(self):
        source_dir = os.path.join(self.get_temp_dir(), "source")
        source = _setup()
        self._run(source_dir, source)
        best, _ = checkpoints.load_model(source_dir)
        # A negligible learning rate leaves the copied weights as they were.
        warm = _setup()
        warm_dir = os.path.join(self.get_temp_dir(), "warm")
        with flagsaver.flagsaver(init_from=source_dir, learning_rate=1e-9):
            self._run(warm_dir, warm)
        self.assertEqual(len(best.trainable_variables), len(warm.model.trainable_variables))
        for a, b in zip(best.trainable_variables, warm.model.trainable_variables):
            self.assertAllClose(a.numpy(), b.numpy(), atol=1e-6, msg=a.path)
        fresh = _setup()
        self.assertNotAllClose(fresh.model.trainable_variables[0].numpy(),
                               warm.model.trainable_variables[0].numpy())
        # Another task is refused by name (another architecture of the same
        # task copies what fits: tests/own_data_test.py).
        other = dataclasses.replace(_setup(), model=fakes.tiny_model(task="regression",
                                                                     num_items=40))
        with flagsaver.flagsaver(init_from=source_dir):
            with self.assertRaisesRegex(SystemExit, "init_from.*regression"):
                self._run(os.path.join(self.get_temp_dir(), "other"), other)

    def test_best_checkpoint_is_judged_by_the_training_policy(self):
        # A heuristic-trained model's selector never learns: its best weights
        # are those the heuristic does best with, measured on validation.
        model_dir = os.path.join(self.get_temp_dir(), "random")
        setup = _setup()
        with flagsaver.flagsaver(policy="random"):
            self._run(model_dir, setup)
        best = checkpoints.read_json(os.path.join(model_dir, "best.json"))
        self.assertEqual(best["policy"], "random")
        best_model, _ = checkpoints.load_model(model_dir)
        again = common.evaluate_setup(
            dataclasses.replace(setup, eval_policies=["random"]), best_model,
            RUN_FLAGS["eval_episodes"], RUN_FLAGS["batch_size"], seed=0)["random"]
        self.assertAllClose(best["value"], again["metric"][-1], atol=1e-6)

    def test_non_finite_loss_stops_with_the_last_good_checkpoint(self):
        class NanSampler:
            def __init__(self):
                self.sampler = fakes.tiny_sampler(seed=3)
                self.rng = self.sampler.rng

            def sample(self, batch_size, **kwargs):
                batch = dict(self.sampler.sample(batch_size, **kwargs))
                batch["support"] = batch["support"] * float("nan")
                return batch

        model_dir = os.path.join(self.get_temp_dir(), "nan")
        with self.assertRaisesRegex(SystemExit, "non-finite loss at step 1.*Last good "
                                    "checkpoint: none"):
            self._run(model_dir, _setup(NanSampler()))
        self.assertIsNone(tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")))


def test_format_curves_lists_every_policy():
    record = {"metric": "accuracy", "split": "validation", "labels": [1, 2],
              "policies": {"greedy": {"metric": [0.5, 0.75], "distinct_labels": [1, 2]},
                           "random": {"metric": [0.25, 0.5], "distinct_labels": [1, 1.5]}}}
    text = common.format_curves(record)
    assert "greedy" in text and "random" in text and "0.750" in text and "1.50" in text


def test_omniglot_rotation_is_on_by_default(tmp_path):
    # Matching Networks and the paper train on the four rotations of each
    # training character; a user who names no flag gets that protocol (other
    # data: off, tests/own_data_test.py).
    _ensure_parsed()
    with flagsaver.flagsaver(data_dir="data/omniglot", model_dir=str(tmp_path),
                             cache_dir=str(tmp_path / "cache")):
        run, _, kwargs = omniglot_trainer.setup_from_flags()
    assert FLAGS["rotate"].default is None
    assert run.data.rotate is True
    assert kwargs["train_sampler"].rotate


def test_within_alphabet_training_draws_every_episode_from_one_alphabet(tmp_path):
    # Lake et al.'s protocol for training and checkpoint selection alike
    # (tests/episodes_test.py checks what such a sampler draws).
    _ensure_parsed()
    with flagsaver.flagsaver(data_dir="data/omniglot", model_dir=str(tmp_path),
                             cache_dir=str(tmp_path / "cache"),
                             episode_classes="within_alphabet"):
        run, _, kwargs = omniglot_trainer.setup_from_flags()
    assert run.episodes.episode_classes == "within_alphabet"
    assert kwargs["train_sampler"].within_group
    assert kwargs["make_eval_sampler"]().within_group
    with flagsaver.flagsaver(data_dir="data/omniglot", model_dir=str(tmp_path / "other"),
                             cache_dir=str(tmp_path / "cache"), ways=60,
                             episode_classes="within_alphabet"):
        with pytest.raises(flags.ValidationError, match="60"):
            omniglot_trainer.setup_from_flags()



def test_affine_jitter_distorts_training_episodes_only(tmp_path):
    _ensure_parsed()
    with flagsaver.flagsaver(data_dir="data/omniglot", model_dir=str(tmp_path),
                             cache_dir=str(tmp_path / "cache"), affine_jitter=0.5):
        run, _, kwargs = omniglot_trainer.setup_from_flags()
    assert run.data.jitter == 0.5
    assert kwargs["train_sampler"].jitter == 0.5
    assert kwargs["make_eval_sampler"]().jitter == 0.0    # checkpoints judged on real drawings
    # The record round-trips, and one written before the field reads as 0.
    record = run.to_dict()
    assert run_configs.RunConfig.from_dict(record).data.jitter == 0.5
    del record["data"]["jitter"]
    assert run_configs.RunConfig.from_dict(record).data.jitter == 0.0
    with flagsaver.flagsaver(data_dir="data/omniglot", model_dir=str(tmp_path / "other"),
                             cache_dir=str(tmp_path / "cache"), affine_jitter=3.0):
        with pytest.raises(flags.ValidationError, match="jitter must lie in"):
            omniglot_trainer.setup_from_flags()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
