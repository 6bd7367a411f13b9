"""Several training processes as one: TF_CONFIG, the chief, per-worker folders.

Under `--strategy=multi_worker` every process (a *worker*) runs the same
trainer command with its own `TF_CONFIG`; `tf.distribute.
MultiWorkerMirroredStrategy` then keeps one copy of the variables per worker
and sums gradients across them with collective ops. A collective op only
completes when every worker runs it, so the training loop follows these rules
(the contract of Keras' `BackupAndRestore` and TF's multi-worker tutorial):

* Every worker runs every train step, every checkpoint save and the
  start-of-run agreement below, in the same order.
* Only the chief (task `chief`, or `worker` 0 when the cluster has no chief)
  writes `--model_dir`: checkpoints, summaries, `best.json`, `metrics.json`.
  The others save their checkpoints to `MODEL_DIR/workertemp_<index>/`
  (TF's `PreemptionCheckpointHandler` uses the same name), deleted right
  after each save and again on start (after a `kill -9`).
* Validation runs on the chief alone (model calls outside `strategy.run`
  read the local copy of the variables: no collective op); its decision to
  keep a best checkpoint is sent to all workers, which join that save.
* On start the chief repairs and restores the newest checkpoint
  (`trainers.recovery`); the others then restore the same one and all
  workers compare their steps, so a worker that cannot read `--model_dir`
  stops the run with `WorkersDisagree` instead of training from step 0.
  `--model_dir` must therefore be one folder that every worker reads: a
  shared file system or a `gs://` bucket.
* SIGTERM or Ctrl-C on any worker stops all of them after the same step,
  each saving a checkpoint (a flag gathered after every step).

Episodes: every worker samples the whole global batch from the same seeded
sampler and trains on its replicas' slices of it (`Trainer._replica_slice`
slices by the global replica id), so a step on N workers sees exactly the
episodes, selection noise and seeds of the single-process step, and every
worker's sampler state (checkpointed by the chief) is the same.

For one process (default or mirrored strategy) `Worker` is the chief, has no
temporary folders and runs no collective ops: the loop behaves as before.
"""

import dataclasses
import json
import os
import re
from typing import Dict, List

from absl import logging
import numpy as np
import tensorflow as tf

from trainers import recovery

TEMP_PREFIX = "workertemp_"
_ADDRESS = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.\-]+):(\d{1,5})$")
_TASK_TYPES = ("chief", "worker")


class TFConfigError(ValueError):
    """TF_CONFIG is missing or does not describe a multi-worker cluster."""


class WorkersDisagree(RuntimeError):
    """The workers restored different steps (they do not share --model_dir)."""


@dataclasses.dataclass(frozen=True)
class Cluster:
    """This process's place in the cluster that TF_CONFIG describes."""

    cluster: Dict[str, List[str]]
    task_type: str
    task_index: int

    @property
    def num_workers(self):
        return sum(len(self.cluster.get(t, [])) for t in _TASK_TYPES)

    @property
    def is_chief(self):
        return is_chief(self.cluster, self.task_type, self.task_index)


def is_chief(cluster, task_type, task_index):
    """The chief writes the model directory: `chief` 0, else `worker` 0."""
    if task_type == "chief":
        return True
    return task_type == "worker" and task_index == 0 and not cluster.get("chief")


def parse_tf_config(text) -> Cluster:
    """Validates a TF_CONFIG string for `--strategy=multi_worker`.

    Raises:
      TFConfigError: naming what is wrong and the expected form.
    """
    example = ('TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
               '"task": {"type": "worker", "index": 0}}\' (index 1 on the second machine)')
    if not text:
        raise TFConfigError(f"--strategy=multi_worker needs the TF_CONFIG environment "
                            f"variable on every worker, e.g. {example}")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise TFConfigError(f"TF_CONFIG is not JSON ({e}); expected {example}") from None
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict):
        raise TFConfigError(f"TF_CONFIG has no \"cluster\" object; expected {example}")
    cluster = config["cluster"]
    unknown = sorted(set(cluster) - set(_TASK_TYPES))
    if unknown:
        raise TFConfigError(f"TF_CONFIG cluster has task types {unknown}; multi-worker "
                            f"training uses only {list(_TASK_TYPES)} (no parameter "
                            "servers or evaluators)")
    seen = set()
    for task_type in _TASK_TYPES:
        addresses = cluster.get(task_type, [])
        if not isinstance(addresses, list):
            raise TFConfigError(f"TF_CONFIG cluster.{task_type} must be a list of "
                                f"\"host:port\", got {addresses!r}")
        for address in addresses:
            match = _ADDRESS.match(address) if isinstance(address, str) else None
            if not match or not 0 < int(match.group(2)) < 65536:
                raise TFConfigError(f"TF_CONFIG cluster.{task_type} entry {address!r} is "
                                    "not \"host:port\" (port 1-65535)")
            if address in seen:
                raise TFConfigError(f"TF_CONFIG lists {address} twice; every worker needs "
                                    "its own port")
            seen.add(address)
    if len(cluster.get("chief", [])) > 1:
        raise TFConfigError("TF_CONFIG cluster.chief must list one address")
    if not cluster.get("worker") and not cluster.get("chief"):
        raise TFConfigError(f"TF_CONFIG cluster lists no workers; expected {example}")
    task = config.get("task")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise TFConfigError("TF_CONFIG needs \"task\": {\"type\": ..., \"index\": ...}: "
                            "which of the cluster's addresses this process is")
    task_type, index = task["type"], task["index"]
    if task_type not in _TASK_TYPES or not cluster.get(task_type):
        raise TFConfigError(f"TF_CONFIG task.type {task_type!r} is not a task type of the "
                            f"cluster ({sorted(cluster)})")
    if not isinstance(index, int) or not 0 <= index < len(cluster[task_type]):
        raise TFConfigError(f"TF_CONFIG task.index {index!r} is out of range: cluster."
                            f"{task_type} has {len(cluster[task_type])} addresses")
    return Cluster({t: list(cluster.get(t, [])) for t in _TASK_TYPES if cluster.get(t)},
                   task_type, index)


def make_strategy(environ=None):
    """MultiWorkerMirroredStrategy for the cluster in TF_CONFIG, validated first."""
    environ = os.environ if environ is None else environ
    cluster = parse_tf_config(environ.get("TF_CONFIG", ""))
    logging.info("multi-worker training: %s %d of a cluster of %d workers (%s)",
                 cluster.task_type, cluster.task_index, cluster.num_workers,
                 "chief" if cluster.is_chief else "not the chief")
    return tf.distribute.MultiWorkerMirroredStrategy()


class _WorkerManager:
    """A CheckpointManager of a non-chief worker: saves, then deletes the files.

    The save takes part in any collective op the chief's save runs; its files
    are not kept (the chief's checkpoint is the one a restart reads).
    """

    def __init__(self, manager, root):
        self._manager, self._root = manager, root

    def save(self, checkpoint_number=None):
        path = self._manager.save(checkpoint_number=checkpoint_number)
        _remove(self._root)
        return path

    @property
    def latest_checkpoint(self):
        return None


def _remove(path):
    if tf.io.gfile.exists(path):
        tf.io.gfile.rmtree(path)


class Worker:
    """What one process of a (possibly one-process) run does and writes."""

    def __init__(self, strategy, model_dir):
        self.strategy = strategy
        self.model_dir = model_dir
        resolver = getattr(strategy, "cluster_resolver", None)
        spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
        if resolver is not None and spec:
            self.task_type, self.task_index = resolver.task_type, resolver.task_id
            self.num_workers = sum(len(spec.get(t, [])) for t in _TASK_TYPES)
            self.is_chief = is_chief(spec, self.task_type, self.task_index)
        else:
            self.task_type, self.task_index, self.num_workers, self.is_chief = (
                "worker", 0, 1, True)
        self.temp_dir = (None if self.is_chief else
                         os.path.join(model_dir, f"{TEMP_PREFIX}{self.task_index}"))
        self._gather_fn = None
        if self.temp_dir:
            # What a killed run of this worker left behind.
            _remove(self.temp_dir)

    def checkpoint_manager(self, checkpoint, directory, max_to_keep):
        """The chief's manager of `directory`, or a save-and-delete one."""
        if self.is_chief:
            return tf.train.CheckpointManager(checkpoint, directory, max_to_keep=max_to_keep)
        own = os.path.join(self.temp_dir, os.path.relpath(directory, self.model_dir))
        return _WorkerManager(
            tf.train.CheckpointManager(checkpoint, own, max_to_keep=1), self.temp_dir)

    def summary_writer(self, logdir):
        if self.is_chief:
            return tf.summary.create_file_writer(logdir)
        return tf.summary.create_noop_writer()

    def gather(self, values):
        """Every worker's int64 `values`, `[num_workers, len(values)]`.

        A collective op: all workers must call it, in the same order.
        """
        values = np.asarray(values, np.int64).reshape([-1])
        if self.num_workers == 1:
            return values[None]
        if self._gather_fn is None:
            replicas = self.strategy.num_replicas_in_sync

            @tf.function(autograph=False)
            def gather_fn(local):
                # Each replica fills its own row and a sum over replicas
                # assembles the table: the all-reduce the train step uses.
                def replica_fn(x):
                    ctx = tf.distribute.get_replica_context()
                    row = tf.one_hot(ctx.replica_id_in_sync_group, replicas, dtype=tf.float64)
                    return ctx.all_reduce(tf.distribute.ReduceOp.SUM,
                                          row[:, None] * x[None, :])
                out = self.strategy.run(replica_fn, args=(local,))
                return self.strategy.experimental_local_results(out)[0]
            self._gather_fn = gather_fn
        # float64 holds integers below 2**53 exactly (steps, flags).
        table = self._gather_fn(tf.constant(values, tf.float64)).numpy()
        # One row per replica; a worker's replicas hold the same row.
        per_worker = self.strategy.num_replicas_in_sync // self.num_workers
        return np.rint(table[::max(per_worker, 1)]).astype(np.int64)

    def from_chief(self, value):
        """The chief's `value` (an int) on every worker."""
        if self.num_workers == 1:
            return value
        chief_row = 0  # the chief is replica group 0 in MultiWorkerMirroredStrategy
        return type(value)(self.gather([int(value)])[chief_row, 0])

    def any(self, flag):
        """True on every worker when `flag` is true on any of them."""
        if self.num_workers == 1:
            return bool(flag)
        return bool(self.gather([int(bool(flag))]).max())

    def restore(self, state, checkpoint_dir, best_dir, step):
        """Restores the newest checkpoint on every worker; returns its path.

        The chief repairs the folders first (`trainers.recovery`), then the
        others read the checkpoint it chose; the steps must agree.

        Raises:
          WorkersDisagree: a worker restored another step than the chief.
        """
        restored = None
        if self.is_chief:
            restored = recovery.restore_newest(state, checkpoint_dir)
            recovery.rebuild_index(best_dir)
        if self.num_workers == 1:
            return restored
        self.gather([0])  # waits until the chief has repaired the folders
        if not self.is_chief:
            restored = tf.train.latest_checkpoint(checkpoint_dir)
            if restored:
                state.restore(restored).assert_existing_objects_matched()
        steps = self.gather([int(step.numpy())])[:, 0]
        if len(set(steps.tolist())) > 1:
            raise WorkersDisagree(
                f"the workers restored different steps ({steps.tolist()}, the chief's "
                f"first): this worker read {restored or 'no checkpoint'} in "
                f"{checkpoint_dir}. --model_dir must be one folder that every worker "
                "reads and the chief writes (a shared file system or gs://); a local path "
                "on each machine gives each worker a different run.")
        return restored

    def cleanup(self):
        if self.temp_dir:
            _remove(self.temp_dir)

