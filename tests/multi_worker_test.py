"""--strategy=multi_worker: TF_CONFIG checks, and two local workers end to end.

The end-to-end test starts two `tests.tiny_trainer` processes with TF_CONFIG
on free localhost ports (CPU only), beside a single-process run of the same
command, and checks that

* the first step of the two workers matches the single-process step within
  the tolerances of training_test.DistributionTest (both train on the same
  global batch: every worker samples it from the same seed and trains on its
  own half, the single process on all of it);
* after `kill -9` of one worker the other stops on its own (missing
  heartbeats) instead of hanging, and restarting both resumes from the newest
  checkpoint in --model_dir and ends with best.json and metrics.json, with no
  worker's temporary folder left.
"""

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl.testing import absltest  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from trainers import multi_worker  # noqa: E402
from trainers import recovery  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TERMS = ("loss", "prediction_loss", "policy_loss", "value_loss", "imitation_loss", "entropy")
# Every trace of the step is paid by each process: few steps, small
# evaluations. Enough steps after the kill point that the kill lands mid-run.
TRAIN_FLAGS = ["--checkpoint_interval=2", "--eval_interval=8", "--log_interval=1",
               "--eval_episodes=4", "--final_eval_episodes=8", "--batch_size=4",
               "--nojit_compile", "--seed=0"]
STEPS = 16
TIMEOUT = 300  # seconds per phase: a hang fails the test instead of blocking


def _tempdir(test):
    path = tempfile.mkdtemp(prefix="multi_worker_test_")
    test.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


def _config(workers, index):
    return json.dumps({"cluster": {"worker": workers},
                       "task": {"type": "worker", "index": index}})


class ParseTFConfigTest(absltest.TestCase):

    WORKERS = ["localhost:2222", "localhost:2223"]

    def test_worker_zero_is_chief_without_a_chief_task(self):
        first = multi_worker.parse_tf_config(_config(self.WORKERS, 0))
        second = multi_worker.parse_tf_config(_config(self.WORKERS, 1))
        self.assertEqual((first.is_chief, second.is_chief), (True, False))
        self.assertEqual(first.num_workers, 2)

    def test_a_chief_task_is_the_chief(self):
        text = json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1"]},
                           "task": {"type": "worker", "index": 0}})
        cluster = multi_worker.parse_tf_config(text)
        self.assertFalse(cluster.is_chief)
        self.assertEqual(cluster.num_workers, 2)

    def test_bad_configs_are_refused_by_what_is_wrong(self):
        cases = {
            "": "needs the TF_CONFIG environment variable",
            "{cluster": "not JSON",
            json.dumps({"task": {"type": "worker", "index": 0}}): "no \"cluster\"",
            json.dumps({"cluster": {"worker": ["a:1"], "ps": ["b:1"]},
                        "task": {"type": "worker", "index": 0}}): r"\['ps'\]",
            _config(["localhost"], 0): "'localhost' is not \"host:port\"",
            _config(["a:1", "a:1"], 0): "lists a:1 twice",
            _config(["a:1", "b:1"], 2): "task.index 2 is out of range",
            json.dumps({"cluster": {"worker": ["a:1"]}}): "needs \"task\"",
            json.dumps({"cluster": {"worker": ["a:1"]},
                        "task": {"type": "chief", "index": 0}}): "task.type 'chief'",
        }
        for text, message in cases.items():
            with self.subTest(text=text):
                with self.assertRaisesRegex(multi_worker.TFConfigError, message):
                    multi_worker.parse_tf_config(text)


class SingleProcessWorkerTest(tf.test.TestCase):

    def test_one_process_is_the_chief_and_writes_model_dir_itself(self):
        model_dir = _tempdir(self)
        worker = multi_worker.Worker(tf.distribute.get_strategy(), model_dir)
        self.assertTrue(worker.is_chief)
        self.assertIsNone(worker.temp_dir)
        self.assertEqual(worker.from_chief(7), 7)
        self.assertTrue(worker.any(True))
        self.assertFalse(worker.any(False))
        directory = os.path.join(model_dir, "checkpoints")
        manager = worker.checkpoint_manager(tf.train.Checkpoint(v=tf.Variable(1.0)),
                                            directory, 2)
        manager.save(checkpoint_number=3)
        self.assertEndsWith(tf.train.latest_checkpoint(directory), "ckpt-3")

    def test_a_non_chief_save_leaves_no_files(self):
        model_dir = _tempdir(self)
        temp = os.path.join(model_dir, "workertemp_1")
        worker = multi_worker.Worker(tf.distribute.get_strategy(), model_dir)
        worker.is_chief, worker.temp_dir = False, temp  # as worker 1 of two
        manager = worker.checkpoint_manager(tf.train.Checkpoint(v=tf.Variable(1.0)),
                                            os.path.join(model_dir, "checkpoints"), 3)
        self.assertTrue(manager.save(checkpoint_number=2).startswith(temp))
        self.assertEqual(os.listdir(model_dir), [])


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start(model_dir, log_path, steps, tf_config=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    flags = TRAIN_FLAGS + [f"--model_dir={model_dir}", f"--train_steps={steps}"]
    if tf_config:
        env["TF_CONFIG"] = tf_config
        flags.append("--strategy=multi_worker")
    else:
        env.pop("TF_CONFIG", None)
    with open(log_path, "a") as log:
        return subprocess.Popen([sys.executable, "-m", "tests.tiny_trainer"] + flags,
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)


def _read(path):
    with open(path) as f:
        return f.read()


def _wait_for_text(proc, log_path, text, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in _read(log_path):
            return
        if proc.poll() is not None:
            raise AssertionError(f"ended before logging {text!r}:\n{_read(log_path)[-3000:]}")
        time.sleep(0.02)
    raise AssertionError(f"{text!r} not logged within {timeout}s")


def _scalars(logdir, step):
    """{tag: value} of the summaries at `step` in a TensorBoard folder."""
    values = {}
    for path in glob.glob(os.path.join(logdir, "events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            if event.step == step:
                for value in event.summary.value:
                    values[value.tag] = float(tf.make_ndarray(value.tensor))
    return values


@pytest.mark.heavy(118)
class TwoWorkersTest(tf.test.TestCase):

    def _stop_all(self, procs):
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def test_two_workers_match_one_process_and_resume_after_a_kill(self):
        root = _tempdir(self)
        single_dir, model_dir = os.path.join(root, "single"), os.path.join(root, "workers")
        workers = [f"localhost:{p}" for p in _free_ports(2)]
        logs = [os.path.join(root, f"worker{i}.log") for i in range(2)]
        single_log = os.path.join(root, "single.log")
        procs = []
        self.addCleanup(self._stop_all, procs)

        # The single-process step 1 (its loss terms do not depend on
        # --train_steps, which sets only the learning-rate schedule).
        procs.append(_start(single_dir, single_log, 1))
        procs += [_start(model_dir, logs[i], STEPS, _config(workers, i)) for i in range(2)]
        single, chief, other = procs

        # kill -9 the non-chief worker mid-run; the chief notices the missing
        # heartbeats and stops with an error rather than waiting forever.
        _wait_for_text(chief, logs[0], f"step 3/{STEPS}")
        other.send_signal(signal.SIGKILL)
        other.wait(timeout=TIMEOUT)
        self.assertNotEqual(chief.wait(timeout=TIMEOUT), 0)
        # Which error TensorFlow reports depends on when the peer vanished:
        # missed heartbeats, or a collective whose connection was reset.
        self.assertRegex(_read(logs[0]), r"unhealthy|UnavailableError|Connection reset")
        newest = recovery.checkpoints_present(os.path.join(model_dir, "checkpoints"))[-1]
        resumed_step = int(newest.rsplit("-", 1)[1])
        self.assertBetween(resumed_step, 2, STEPS - 1)
        self.assertEqual(single.wait(timeout=TIMEOUT), 0, _read(single_log)[-3000:])

        # Restart both, same command: both resume from the newest checkpoint.
        restarted = [_start(model_dir, logs[i], STEPS, _config(workers, i)) for i in range(2)]
        procs += restarted
        for proc, log in zip(restarted, logs):
            self.assertEqual(proc.wait(timeout=TIMEOUT), 0, _read(log)[-3000:])
            self.assertIn(f"resumed from {newest} at step {resumed_step}", _read(log))
        best = json.loads(_read(os.path.join(model_dir, "best.json")))
        self.assertEqual(best["evaluated_step"], STEPS)
        metrics = json.loads(_read(os.path.join(model_dir, "metrics.json")))
        self.assertCountEqual(metrics["policies"], ["greedy", "random"])
        self.assertEndsWith(tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")),
                            f"ckpt-{STEPS}")
        self.assertEmpty(glob.glob(os.path.join(model_dir, "workertemp_*")))
        # Only the chief wrote summaries (one events file per start).
        self.assertLen(glob.glob(os.path.join(model_dir, "train", "events.*")), 2)

        # Step 1 of the two workers against the single process, at the
        # tolerances of training_test.DistributionTest (see there why the
        # gradient norm differs by rounding alone).
        ours, theirs = (_scalars(os.path.join(model_dir, "train"), 1),
                        _scalars(os.path.join(single_dir, "train"), 1))
        self.assertAllClose([ours[k] for k in TERMS], [theirs[k] for k in TERMS],
                            rtol=1e-4, atol=1e-4)
        self.assertAllClose(ours["gradient_norm"], theirs["gradient_norm"], rtol=1e-2)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
