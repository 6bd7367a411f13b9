"""Checkpoint recovery: corrupt or missing files, stale index, kills at any moment."""

import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from trainers import recovery  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tempdir(test):
    path = tempfile.mkdtemp(prefix="recovery_test_")
    test.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


def _write_checkpoints(directory, steps=(2, 4, 6)):
    """A CheckpointManager directory whose variable holds the step number."""
    value = tf.Variable(0.0)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(value=value), directory,
                                         max_to_keep=5)
    for step in steps:
        value.assign(float(step))
        manager.save(checkpoint_number=step)
    return value


class IndexAndRestoreTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        self.dir = os.path.join(_tempdir(self), "checkpoints")
        _write_checkpoints(self.dir)

    def _restore(self):
        value = tf.Variable(-1.0)
        path = recovery.restore_newest(tf.train.Checkpoint(value=value), self.dir)
        return path, float(value.numpy())

    def test_truncated_newest_falls_back_with_a_warning_naming_it(self):
        data = glob.glob(os.path.join(self.dir, "ckpt-6.data-*"))[0]
        with open(data, "r+b") as f:
            f.truncate(2)
        with self.assertLogs(level="WARNING") as logs:
            path, value = self._restore()
        self.assertEqual(os.path.basename(path), "ckpt-4")
        self.assertEqual(value, 4.0)
        self.assertIn("ckpt-6", "\n".join(logs.output))
        # Set aside, and the index no longer names it: a later save of step 6
        # does not collide with the bad files.
        self.assertEmpty(glob.glob(os.path.join(self.dir, "ckpt-6.*")))
        self.assertLen(glob.glob(os.path.join(self.dir, "corrupt", "*", "ckpt-6.*")), 2)
        self.assertEndsWith(tf.train.latest_checkpoint(self.dir), "ckpt-4")

    def test_garbled_index_is_rebuilt_from_the_files(self):
        with open(os.path.join(self.dir, "checkpoint"), "w") as f:
            f.write("model_checkpoint_path: \x00\x01 garbage {{{")
        self.assertIsNone(tf.train.get_checkpoint_state(self.dir))  # what TF alone sees
        path, value = self._restore()
        self.assertEqual((os.path.basename(path), value), ("ckpt-6", 6.0))
        state = tf.train.get_checkpoint_state(self.dir)
        self.assertEqual([os.path.basename(p) for p in state.all_model_checkpoint_paths],
                         ["ckpt-2", "ckpt-4", "ckpt-6"])

    def test_deleted_newest_files_are_dropped_from_the_index(self):
        for path in glob.glob(os.path.join(self.dir, "ckpt-6.*")):
            os.remove(path)
        path, value = self._restore()
        self.assertEqual((os.path.basename(path), value), ("ckpt-4", 4.0))
        self.assertEndsWith(tf.train.latest_checkpoint(self.dir), "ckpt-4")

    def test_written_but_unrecorded_checkpoint_is_used(self):
        # A run killed between writing ckpt-8 and updating the index.
        _write_checkpoints(self.dir + "_other", steps=(8,))
        for path in glob.glob(os.path.join(self.dir + "_other", "ckpt-8.*")):
            os.rename(path, os.path.join(self.dir, os.path.basename(path)))
        path, value = self._restore()
        self.assertEqual((os.path.basename(path), value), ("ckpt-8", 8.0))

    def test_nothing_restores_is_refused_by_name(self):
        for data in glob.glob(os.path.join(self.dir, "ckpt-*.data-*")):
            with open(data, "r+b") as f:
                f.truncate(1)
        with self.assertRaisesRegex(SystemExit, "no checkpoint in .* restores: .*ckpt-6.*"
                                    "ckpt-4.*ckpt-2"):
            self._restore()

    def test_empty_directory_restores_nothing(self):
        empty = os.path.join(_tempdir(self), "none")
        self.assertIsNone(recovery.restore_newest(tf.train.Checkpoint(), empty))

    def test_temporary_files_are_cleaned(self):
        model_dir = os.path.dirname(self.dir)
        leftovers = [os.path.join(self.dir, "ckpt-8_temp"),
                     os.path.join(model_dir, "best", "ckpt-3_temp")]
        for folder in leftovers:
            os.makedirs(folder)
            open(os.path.join(folder, "part-00000-of-00001.index"), "w").close()
        temp_json = os.path.join(model_dir, "best.json.tmp-1234")
        open(temp_json, "w").close()
        removed = recovery.clean_temporary_files(model_dir)
        self.assertCountEqual(removed, leftovers + [temp_json])
        self.assertLen(recovery.checkpoints_present(self.dir), 3)  # real ones kept


# ------------------------------------------------------------- kill -9 loop
TRAIN_FLAGS = ["--train_steps=12", "--checkpoint_interval=2", "--eval_interval=4",
               "--log_interval=1", "--eval_episodes=4", "--final_eval_episodes=8",
               "--batch_size=4", "--nojit_compile", "--seed=0"]


def _start(model_dir, log_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "tests.tiny_trainer",
                             f"--model_dir={model_dir}"] + TRAIN_FLAGS,
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    log.close()
    return proc


def _wait_for(proc, log_path, text, timeout=300):
    """Waits until `text` appears in the log; False if the process ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(log_path) as f:
            if text in f.read():
                return True
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    raise AssertionError(f"{text!r} not logged within {timeout}s")


def _weights(model_dir):
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(
        os.path.join(model_dir, "checkpoints")))
    return {name: reader.get_tensor(name)
            for name in reader.get_variable_to_shape_map() if name.startswith("model/")}


@pytest.mark.heavy(150)
class KillLoopTest(tf.test.TestCase):

    def test_runs_killed_at_random_moments_end_like_an_uninterrupted_one(self):
        root = _tempdir(self)
        straight_dir, killed_dir = os.path.join(root, "straight"), os.path.join(root, "killed")
        straight = _start(straight_dir, os.path.join(root, "straight.log"))
        rng = random.Random(int(os.environ.get("KILL_LOOP_SEED", time.time())))
        log = os.path.join(root, "killed.log")
        moments = []

        # SIGTERM while training: a checkpoint is saved, and the exit status
        # says the run did not finish (128 + 15).
        proc = _start(killed_dir, log)
        self.assertTrue(_wait_for(proc, log, "step 2/12"))
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(timeout=300), 128 + signal.SIGTERM)
        with open(log) as f:
            self.assertIn("stopped by signal SIGTERM", f.read())
        self.assertTrue(tf.train.latest_checkpoint(os.path.join(killed_dir, "checkpoints")))

        # kill -9 at random moments: during start-up (importing, building the
        # model) or, once the run is under way, while tracing, mid-step, or
        # during a checkpoint, an evaluation or a best-checkpoint write.
        # A run that finishes before its kill is rerun: it then resumes at the
        # last step and redoes the final evaluation, where later kills land.
        for _ in range(15):
            if len(moments) >= 3:
                break
            proc = _start(killed_dir, log)
            if rng.random() < 0.25:
                moment, delay = "start-up", rng.uniform(0.3, 4.0)
            elif _wait_for(proc, log, "resumed from"):
                moment, delay = "resumed", rng.uniform(0.0, 10.0)
            else:
                moment, delay = "finished", 0.0
            try:
                proc.wait(timeout=delay)
                self.assertEqual(proc.returncode, 0, open(log).read()[-3000:])
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                moments.append(f"{moment}+{delay:.2f}s")
        # kill -9 during the final evaluation (metrics.json not yet written).
        for _ in range(3):
            if os.path.exists(os.path.join(killed_dir, "metrics.json")):
                os.remove(os.path.join(killed_dir, "metrics.json"))
            proc = _start(killed_dir, log)
            if _wait_for(proc, log, "final evaluation of"):
                proc.kill()
                proc.wait()
                if not os.path.exists(os.path.join(killed_dir, "metrics.json")):
                    moments.append("final evaluation")
                    break
        self.assertIn("final evaluation", moments)
        self.assertGreaterEqual(len(moments), 4, moments)

        proc = _start(killed_dir, log)
        self.assertEqual(proc.wait(timeout=600), 0, open(log).read()[-3000:])

        # Killed after saving the last checkpoint but before evaluating it:
        # the rerun evaluates it, then writes metrics.json.
        best_json = os.path.join(killed_dir, "best.json")
        with open(best_json) as f:
            record = json.load(f)
        with open(best_json, "w") as f:
            json.dump(dict(record, evaluated_step=8), f)
        os.remove(os.path.join(killed_dir, "metrics.json"))
        proc = _start(killed_dir, log)
        self.assertEqual(proc.wait(timeout=600), 0, open(log).read()[-3000:])
        with open(log) as f:
            self.assertIn("step 12 was saved but not evaluated", f.read())
        self.assertEqual(straight.wait(timeout=600), 0)

        for directory in (straight_dir, killed_dir):
            self.assertTrue(tf.train.latest_checkpoint(os.path.join(directory, "best")))
            with open(os.path.join(directory, "best.json")) as f:
                self.assertEqual(json.load(f)["evaluated_step"], 12)
            self.assertEmpty(glob.glob(os.path.join(directory, "*", "*_temp*")))
        with open(os.path.join(straight_dir, "metrics.json")) as f:
            expected = json.load(f)
        with open(os.path.join(killed_dir, "metrics.json")) as f:
            got = json.load(f)
        self.assertIsNotNone(got["checkpoint"])
        self.assertEqual(os.path.basename(got.pop("checkpoint")),
                         os.path.basename(expected.pop("checkpoint")))
        self.assertEqual(got, expected, f"kills at {moments}")
        want, have = _weights(straight_dir), _weights(killed_dir)
        self.assertEqual(sorted(want), sorted(have))
        for name in want:
            np.testing.assert_array_equal(have[name], want[name], err_msg=f"{name}; kills "
                                          f"at {moments}")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
