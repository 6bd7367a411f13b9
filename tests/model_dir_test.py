"""A refused run leaves the model directory it was pointed at byte for byte intact."""

import dataclasses

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import active_learning  # noqa: F401,E402
from absl import flags  # noqa: E402
from absl.testing import flagsaver  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from active_learning import checkpoints  # noqa: E402
from active_learning import run_config as run_configs  # noqa: E402
from active_learning.training import TrainConfig  # noqa: E402
from tests import fakes  # noqa: E402
from trainers import common  # noqa: E402
from trainers import model_dir as model_dirs  # noqa: E402
from trainers import movielens as movielens_trainer  # noqa: E402
from trainers import omniglot as omniglot_trainer  # noqa: E402

FLAGS = flags.FLAGS
# The flat run_config.json of runs trained before the typed RunConfig.
OMNIGLOT_RUN = {"task": "omniglot", "dataset": "omniglot", "ways": [5], "eval_ways": 5,
                "shots": 1, "items_per_class": 5, "budget": 5}


FIVE_WAY = run_configs.ClassEpisodeConfig(ways=[5], eval_ways=5, shots=1, items_per_class=5,
                                          budget=5)


def _run_config(model_dir, episodes=FIVE_WAY, task="omniglot"):
    return run_configs.RunConfig(
        task=task, dataset=task, loop=run_configs.LoopConfig(model_dir=model_dir),
        train_config=TrainConfig(num_steps=episodes.budget), episodes=episodes)


def _snapshot(root):
    """{relative path: bytes} of every file under `root`."""
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, root)] = f.read()
    return files


class ModelDirTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        if not FLAGS.is_parsed():
            FLAGS(["model_dir_test"])
        # A trained 5-way Omniglot run as the trainer leaves it (the files the
        # check reads, plus a checkpoint and metrics that must survive).
        self.model = fakes.tiny_model()
        self.dir = os.path.join(self.get_temp_dir(), f"run_{self._testMethodName}")
        checkpoints.save_model_config(self.dir, self.model.config)
        record = dict(OMNIGLOT_RUN, flags={"learning_rate": 0.001})
        checkpoints.write_json_atomic(os.path.join(self.dir, checkpoints.RUN_CONFIG), record)
        tf.train.CheckpointManager(tf.train.Checkpoint(model=self.model),
                                   os.path.join(self.dir, "checkpoints"), 1).save(100)
        checkpoints.write_json_atomic(os.path.join(self.dir, "best.json"), {"step": 100})
        self.before = _snapshot(self.dir)

    def assert_untouched(self):
        self.assertEqual(_snapshot(self.dir), self.before)

    def test_another_architecture_is_refused_before_any_write(self):
        setup = common.TaskSetup(
            name="omniglot", model=fakes.tiny_model(embed_dim=4),
            train_sampler=fakes.tiny_sampler(), make_eval_sampler=fakes.tiny_sampler,
            eval_policies=["greedy"], num_steps=5, higher_is_better=True,
            metric_name="accuracy")
        with flagsaver.flagsaver(model_dir=self.dir, train_steps=200):
            with self.assertRaisesRegex(SystemExit, "model_config.json differs in embed_dim "
                                        "\\(it has 8, this run 4\\).*Nothing in it was "
                                        "changed.*--init_from="):
                common.run_training(setup,
                                    common.run_config_from_flags("omniglot", FIVE_WAY, None),
                                    tf.distribute.get_strategy())
        self.assert_untouched()

    def test_other_episode_shape_is_refused_before_reading_data(self):
        with flagsaver.flagsaver(data_dir="/nonexistent", model_dir=self.dir, ways=10,
                                 shots=1, items_per_class=5):
            with self.assertRaisesRegex(flags.ValidationError,
                                        "run_config.json differs in ways \\(it has \\[5\\], "
                                        "this run \\[10\\]\\).*eval_ways.*budget"):
                omniglot_trainer.setup_from_flags()
        self.assert_untouched()

    def test_another_task_is_refused_before_reading_data(self):
        with flagsaver.flagsaver(data_dir="/nonexistent", model_dir=self.dir):
            with self.assertRaisesRegex(flags.ValidationError,
                                        "differs in task \\(it has 'omniglot', this run "
                                        "'movielens'\\), dataset"):
                movielens_trainer.setup_from_flags()
        self.assert_untouched()

    def test_the_same_run_passes(self):
        # Other loop and objective settings may change on a resume.
        run = dataclasses.replace(_run_config(self.dir),
                                  train_config=TrainConfig(num_steps=5, learning_rate=0.5))
        model_dirs.check(self.dir, run, self.model.config)
        model_dirs.check(os.path.join(self.dir, "new"), run, self.model.config)

    def test_a_directory_in_the_current_format_is_compared_the_same_way(self):
        new_dir = os.path.join(self.get_temp_dir(), "current")
        os.makedirs(new_dir)
        run_configs.write_run_config(new_dir, _run_config(new_dir))
        model_dirs.check(new_dir, _run_config(new_dir), self.model.config)
        ten_way = run_configs.ClassEpisodeConfig(ways=[10], eval_ways=10, shots=1,
                                                 items_per_class=5, budget=10)
        with self.assertRaisesRegex(model_dirs.ModelDirMismatch,
                                    "differs in ways \\(it has \\[5\\], this run \\[10\\]\\)"):
            model_dirs.check(new_dir, _run_config(new_dir, ten_way), self.model.config)

    def test_damaged_record_is_named(self):
        with open(os.path.join(self.dir, checkpoints.MODEL_CONFIG), "w") as f:
            f.write('{"task": "classif')
        with self.assertRaisesRegex(model_dirs.ModelDirMismatch,
                                    "model_config.json is not readable JSON"):
            model_dirs.check(self.dir, _run_config(self.dir), self.model.config)

    def test_checkpoints_without_a_model_config_are_refused(self):
        os.remove(os.path.join(self.dir, checkpoints.MODEL_CONFIG))
        with self.assertRaisesRegex(model_dirs.ModelDirMismatch, "holds checkpoints but no "
                                    "model_config.json"):
            model_dirs.check(self.dir, _run_config(self.dir), self.model.config)


class FlagValueTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        if not FLAGS.is_parsed():
            FLAGS(["model_dir_test"])

    def test_keep_checkpoints_zero_is_refused_before_writing(self):
        model_dir = os.path.join(self.get_temp_dir(), "keep0")
        with flagsaver.flagsaver(data_dir="/nonexistent", model_dir=model_dir,
                                 keep_checkpoints=0):
            with self.assertRaisesRegex(flags.ValidationError,
                                        "--keep_checkpoints must be >= 1.*got 0"):
                omniglot_trainer.setup_from_flags()
        self.assertFalse(os.path.exists(model_dir))

    def test_ways_choices_that_are_not_integers_are_named(self):
        with flagsaver.flagsaver(data_dir="/nonexistent", model_dir=self.get_temp_dir(),
                                 ways_choices=["5", "x"]):
            with self.assertRaisesRegex(flags.ValidationError,
                                        "--ways_choices must be comma-separated integers.*"
                                        "'5,x'"):
                omniglot_trainer.setup_from_flags()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
