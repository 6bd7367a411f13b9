"""The layout of a model directory, and loading a trained model from one.

    model_dir/
      model_config.json   the ModelConfig that builds the model
      run_config.json     how it was trained (task, data, episode shape, flags)
      vocabulary.npz      ratings task: the item id (int64 or str) of each item index
      checkpoints/        full training state (model, optimizer, step, sampler
                          RNG), tf.train.CheckpointManager, newest last
      best/               the checkpoint with the best validation metric
      metrics.json        held-out curves of the final evaluation

Checkpoints save the model under the key `model`, so any code can restore the
weights alone with `tf.train.Checkpoint(model=model)`.
"""

import dataclasses
import json
import os

import numpy as np
import tensorflow as tf

from active_learning.config import ModelConfig
from active_learning.model import ActiveMatchingNetwork

MODEL_CONFIG = "model_config.json"
RUN_CONFIG = "run_config.json"
VOCABULARY = "vocabulary.npz"
CHECKPOINTS = "checkpoints"
BEST = "best"
METRICS = "metrics.json"


def write_json_atomic(path, value):
    """Writes JSON through a temporary file so a crash never leaves half a file."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(json.dumps(value, indent=2, sort_keys=True, default=_json_default) + "\n")
    tf.io.gfile.rename(tmp, path, overwrite=True)


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_json(path):
    with tf.io.gfile.GFile(path) as f:
        return json.loads(f.read())


def save_model_config(model_dir, config: ModelConfig):
    tf.io.gfile.makedirs(model_dir)
    write_json_atomic(os.path.join(model_dir, MODEL_CONFIG), json.loads(config.to_json()))


def load_model_config(model_dir) -> ModelConfig:
    path = os.path.join(model_dir, MODEL_CONFIG)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"{path} not found: {model_dir!r} is not a trained model directory "
            "(train one with `python -m trainers.omniglot` or `trainers.movielens`)")
    try:
        values = read_json(path)
        if not isinstance(values, dict):
            raise ValueError(f"expected a JSON object, got {type(values).__name__}")
        return ModelConfig.from_dict(values)
    except (ValueError, TypeError) as e:  # bad JSON, unknown keys, wrong value types
        raise ValueError(f"{path} does not describe a model ({e}); it was damaged or "
                         "written by something else than the trainers") from e


def save_vocabulary(model_dir, movie_ids):
    path = os.path.join(model_dir, VOCABULARY)
    tmp = path + ".tmp.npz"
    # int64 ids (MovieLens) or str ids (any ratings table), never pickled.
    ids = np.asarray(movie_ids)
    np.savez(tmp, movie_ids=ids.astype(np.int64) if ids.dtype.kind in "iu" else ids.astype(str))
    os.replace(tmp, path)


def load_vocabulary(model_dir):
    path = os.path.join(model_dir, VOCABULARY)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: a ratings model needs its movieId vocabulary")
    with np.load(path) as f:
        return f["movie_ids"]


def find_checkpoint(model_dir, which="best"):
    """Path of the `best` (falling back to latest) or `latest` checkpoint."""
    if which not in ("best", "latest"):
        raise ValueError(f"which must be 'best' or 'latest', got {which!r}")
    candidates = [BEST, CHECKPOINTS] if which == "best" else [CHECKPOINTS]
    for sub in candidates:
        path = tf.train.latest_checkpoint(os.path.join(model_dir, sub))
        if path:
            return path
    raise FileNotFoundError(
        f"no checkpoint under {model_dir!r} (looked in {candidates}); "
        "train first, or point --model_dir at a directory that has one")


def load_model(model_dir, which="best"):
    """Rebuilds the model from `model_config.json` and restores its weights.

    Raises a clear error when the checkpoint is missing, corrupt, or was
    written by a model of another shape.
    """
    config = load_model_config(model_dir)
    path = find_checkpoint(model_dir, which)
    model = ActiveMatchingNetwork(config)
    _restore_weights(model, path, f"does not match the model described by "
                     f"{os.path.join(model_dir, MODEL_CONFIG)} or is corrupt")
    return model, path


def _restore_weights(model, path, problem):
    """Restores `model`'s weights from `path`, raising `ValueError(problem)`."""
    try:
        status = tf.train.Checkpoint(model=model).restore(path)
        status.expect_partial()
        status.assert_existing_objects_matched()
    except (tf.errors.OpError, AssertionError, ValueError) as e:
        raise ValueError(f"checkpoint {path} {problem}: {e}") from e


def initialize_from(model, model_dir, which="best"):
    """Copies another trained model's weights into `model` (a warm start).

    With the same `ModelConfig` every variable has a counterpart of the same
    shape and all are copied. Otherwise (a shipped model fine-tuned on a
    user's own data: RGB instead of grey, another image size, more classes)
    every variable whose name and shape match is copied and the rest keep
    their fresh initialisation; both models must have the same task. Only
    weights are copied: the optimizer, step counter and random streams of
    the new run start fresh.

    Returns:
      (checkpoint path used, [names of re-initialised variables],
       {config field: (theirs, ours)} of the fields that differ).
    """
    source_config = load_model_config(model_dir)
    theirs, ours = dataclasses.asdict(source_config), dataclasses.asdict(model.config)
    differ = {k: (theirs.get(k), ours[k]) for k in ours if theirs.get(k) != ours[k]}
    if source_config.task != model.config.task:
        raise ValueError(f"cannot initialise a {model.config.task} model from {model_dir}, "
                         f"a {source_config.task} model")
    path = find_checkpoint(model_dir, which)
    if not differ:
        _restore_weights(model, path, "could not initialise this model: it is corrupt or "
                         "of another shape")
        return path, [], {}
    source = ActiveMatchingNetwork(source_config)
    _restore_weights(source, path, "could not be read: it is corrupt")
    values = {v.path: v for v in source.variables}
    fresh = []
    for variable in model.variables:
        match = values.get(variable.path)
        if match is not None and tuple(match.shape) == tuple(variable.shape):
            variable.assign(match)
        else:
            fresh.append(variable.path)
    if len(fresh) == len(model.variables):
        raise ValueError(f"no weight of {model_dir} fits this model (config differs in "
                         f"{sorted(differ)})")
    return path, fresh, differ


def initialize_encoder_from(model, model_dir, which="best"):
    """Copies another model's item encoder into `model`; returns the checkpoint used.

    The encoders must have the same architecture (`encoder`, image shape,
    `embed_dim`, `encoder_residual_blocks`): e.g. an encoder pretrained by
    `trainers.pretrain_encoder` given to a model whose other weights come
    from elsewhere.
    """
    source_config = load_model_config(model_dir)
    fields = ("encoder", "item_shape", "embed_dim", "encoder_residual_blocks", "feature_size")
    differ = {f: (getattr(source_config, f), getattr(model.config, f)) for f in fields
              if getattr(source_config, f) != getattr(model.config, f)}
    if differ:
        raise ValueError(f"the encoder of {model_dir} differs from this model's in " + ", ".join(
            f"{k} (it has {a!r}, this model {b!r})" for k, (a, b) in differ.items()))
    path = find_checkpoint(model_dir, which)
    source = ActiveMatchingNetwork(source_config)
    _restore_weights(source, path, "could not be read: it is corrupt")
    for ours, theirs in zip(model.encoder.variables, source.encoder.variables):
        if ours.path.split("/")[-1] != theirs.path.split("/")[-1] or ours.shape != theirs.shape:
            raise ValueError(f"encoder weight {theirs.path} {theirs.shape} of {model_dir} does "
                             f"not fit {ours.path} {ours.shape}")
        ours.assign(theirs)
    return path
