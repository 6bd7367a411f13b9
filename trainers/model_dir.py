"""Checks that a --model_dir belongs to the run about to use it, before any write.

A trainer pointed at a directory that holds another run (another
architecture, task, dataset or episode shape) must refuse without touching
it: overwriting `model_config.json` or `run_config.json` would leave
checkpoints that no longer match their description (an export then fails),
and resuming a 5-way run with 10-way episodes would compare the new
validation accuracy with the old best. So the new run's description is
compared with what the directory records, field by field, and a mismatch is
refused with the fields that differ. Changing the episode shape of a trained
run is a new run: `--init_from=OLD --model_dir=NEW`. Directories written
before the typed run config are read with `run_config.from_record`, so they
are compared the same way.
"""

import dataclasses
import os

import tensorflow as tf

from active_learning import checkpoints
from active_learning import run_config as run_configs
from active_learning.config import ModelConfig


class ModelDirMismatch(ValueError):
    """The directory holds a different run; nothing was written to it."""


def _read(path):
    try:
        return checkpoints.read_json(path)
    except (ValueError, UnicodeDecodeError, tf.errors.OpError) as e:
        raise ModelDirMismatch(
            f"{path} is not readable JSON ({e}); the directory's record of its run is "
            "damaged. Use a new --model_dir (its checkpoints can seed it with "
            "--init_from once the file is restored).") from e


def _fields(differ):
    return ", ".join(f"{k} (it has {a!r}, this run {b!r})" for k, (a, b) in differ.items())


def check(model_dir, run_config: run_configs.RunConfig, model_config: ModelConfig = None):
    """Raises `ModelDirMismatch` when `model_dir` holds another run.

    What a resumed run must share with the run that wrote the directory,
    beside the model config, is `RunConfig.identity()`: the same task,
    dataset and episode shape. Other settings (learning rate, intervals,
    ...) may change on a resume.

    Args:
      model_dir: the --model_dir; may not exist yet (then nothing to check).
      run_config: the new run's `RunConfig`.
      model_config: the new run's ModelConfig, or None to compare the run
        record only (an early check, before the model is built).
    """
    if not tf.io.gfile.isdir(model_dir):
        return
    problems = []
    config_path = os.path.join(model_dir, checkpoints.MODEL_CONFIG)
    run_path = os.path.join(model_dir, checkpoints.RUN_CONFIG)
    has_config = tf.io.gfile.exists(config_path)
    if not has_config and tf.train.latest_checkpoint(
            os.path.join(model_dir, checkpoints.CHECKPOINTS)):
        raise ModelDirMismatch(
            f"{model_dir} holds checkpoints but no {checkpoints.MODEL_CONFIG}, so it "
            "cannot be told whether they fit this run; use a new --model_dir")
    if model_config is not None and has_config:
        recorded = _read(config_path)
        ours = dataclasses.asdict(model_config)
        try:
            theirs = dataclasses.asdict(ModelConfig.from_dict(recorded))
        except (TypeError, ValueError) as e:
            raise ModelDirMismatch(f"{config_path} does not describe a model ({e})") from e
        differ = {k: (theirs.get(k), v) for k, v in ours.items() if theirs.get(k) != v}
        if differ:
            problems.append(f"{checkpoints.MODEL_CONFIG} differs in {_fields(differ)}")
    if tf.io.gfile.exists(run_path):
        try:
            recorded = run_configs.from_record(_read(run_path), run_path).identity()
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise ModelDirMismatch(f"{run_path} does not describe a run ({e})") from e
        ours = run_config.identity()
        differ = {k: (recorded.get(k), v) for k, v in ours.items() if recorded.get(k) != v}
        if differ:
            problems.append(f"{checkpoints.RUN_CONFIG} differs in {_fields(differ)}")
    if problems:
        raise ModelDirMismatch(
            f"--model_dir={model_dir} holds a different run: " + "; ".join(problems)
            + ". Nothing in it was changed. Rerun with the flags it was trained with to "
            f"resume it, or start a new run from its weights with --init_from={model_dir} "
            "and a new --model_dir.")
