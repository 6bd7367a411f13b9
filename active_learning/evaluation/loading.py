"""Models to evaluate: a trained model directory or an exported SavedModel.

`load_evaluation_model` gives a `LoadedModel`: the Keras model with its
weights, the checkpoint or SavedModel it came from and the run config it
was trained with (`run_config.json`, or the SavedModel's metadata), from
which the evaluation rebuilds the run's data and episodes (`rebuild`).
"""

import dataclasses
import json
import os
from typing import Optional

import numpy as np
import tensorflow as tf

from active_learning import checkpoints
from active_learning import run_config as run_configs
from active_learning.config import ModelConfig
from active_learning.model import ActiveMatchingNetwork
from active_learning.session import resolve_saved_model


@dataclasses.dataclass
class LoadedModel:
    """A model to evaluate and where it came from.

    `missing` names the variables the source did not hold (a SavedModel
    carries only what its serving signatures use: not the fast predictor's
    temperature or the value head, so the entropy policy, which reads the
    fast prediction, refuses such a model).
    """

    model: ActiveMatchingNetwork
    source: str
    path: str
    run_config: Optional[run_configs.RunConfig]
    kind: str = "model_dir"
    vocabulary: Optional[np.ndarray] = None
    missing: tuple = ()

    @property
    def task(self):
        return self.model.config.task

    @property
    def dataset(self):
        if self.run_config is not None:
            return self.run_config.dataset
        return "omniglot" if self.task == "classification" else "movielens"

    def trained_ways(self):
        """The N (list) the model was trained on, from its run config."""
        return list(getattr(self.run_config and self.run_config.episodes, "ways", ()))

    def trained_policy(self):
        return self.run_config and self.run_config.train_config.policy

    def short_name(self):
        ways = self.trained_ways()
        if not ways:
            return os.path.basename(os.path.normpath(self.path))
        span = f"{min(ways)}-{max(ways)}" if len(ways) > 1 else f"{ways[0]}"
        return f"{span}c"


def is_saved_model(path):
    """True for an exported SavedModel or a base directory of numbered versions."""
    path = os.fspath(path)
    if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        return True
    if tf.io.gfile.exists(os.path.join(path, checkpoints.MODEL_CONFIG)):
        return False
    if not tf.io.gfile.isdir(path):
        return False
    versions = [n.rstrip("/") for n in tf.io.gfile.listdir(path) if n.rstrip("/").isdigit()]
    return any(tf.io.gfile.exists(os.path.join(path, v, "saved_model.pb")) for v in versions)


def _load_saved_model(path):
    """Rebuilds the Keras model of an exported SavedModel (`export.saved_model`).

    The SavedModel's `metadata` signature carries the model config and the
    run config; its variables keep their TensorFlow names, which equal those
    of a freshly built model's variables, so they are copied by name.
    """
    path = resolve_saved_model(path)
    loaded = tf.saved_model.load(path)
    meta = loaded.signatures["metadata"](dummy=tf.constant(0, tf.int32))
    config = ModelConfig.from_json(meta["model_config"].numpy().decode("utf-8"))
    run_config = run_configs.from_record(
        json.loads(meta["training_config"].numpy().decode("utf-8") or "{}"), path, config)
    model = ActiveMatchingNetwork(config)
    saved = {v.name: v for v in getattr(loaded, "model_variables", [])}
    missing = []
    for variable in model.variables:
        name = variable.value.name
        if name in saved and tuple(saved[name].shape) == tuple(variable.shape):
            variable.assign(saved[name])
        else:
            missing.append(variable.path)
    used = {v.value.name for v in model.variables}
    unknown = sorted(set(saved) - used)
    if unknown or not saved:
        raise ValueError(f"{path}: the SavedModel's variables do not match the model its "
                         f"metadata describes (unmatched: {unknown[:5]})")
    vocabulary = loaded.vocabulary.numpy() if hasattr(loaded, "vocabulary") else None
    return LoadedModel(model, path, path, run_config, kind="saved_model",
                       vocabulary=vocabulary, missing=tuple(missing))


def load_evaluation_model(path, which="best"):
    """A `LoadedModel` from a trained model directory or an exported SavedModel."""
    if is_saved_model(path):
        return _load_saved_model(path)
    model, checkpoint = checkpoints.load_model(path, which)
    run_config = run_configs.load_run_config(path, model.config)
    vocabulary = None
    if model.config.task == "regression":
        vocabulary = checkpoints.load_vocabulary(path)
    return LoadedModel(model, checkpoint, path, run_config, vocabulary=vocabulary)
