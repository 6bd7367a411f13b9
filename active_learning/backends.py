"""Where an `ActiveSession` runs the serving steps: in memory, a SavedModel, REST.

Every backend answers `call(name, inputs) -> {output: np.ndarray}` for the
signatures of the serving contract (begin, select, observe, predict,
metadata), with the SavedModel's input and output names and dtypes:

- `ModelBackend` runs `active_learning.steps` eagerly on an in-memory
  `ActiveMatchingNetwork`, the very functions the SavedModel's signatures
  were traced from;
- `SavedModelBackend` calls the signatures of a SavedModel (a path or an
  already loaded one);
- `RestBackend` calls a model served by TF Serving through
  `active_learning.rest_client`.

`Backend.prepare_items` validates pool and query items in numpy, so that a
session reports bad input before any model runs.
"""

import json
import os

import numpy as np
import tensorflow as tf

from active_learning import steps
from active_learning.config import MAX_MEAN_PIXEL, PIXEL_CONTRACT
from active_learning.fingerprint import model_fingerprint
from active_learning.rest_client import RestClient, ServingError

SIGNATURES = ("begin", "select", "observe", "predict", "metadata")


class Backend:
    """Runs the serving steps; `call(name, inputs) -> {output: np.ndarray}`.

    Attributes filled by subclasses: `task`, `max_classes` (classification),
    `rating_min`, `rating_max` (ratings), `embed_dim`, `state_size`,
    `image_size`, `description`.
    """

    fingerprint = ""
    # Whether `call("begin_compiled", ...)` runs here: scalable models in
    # process (XLA-compiled context encoder); not through TF Serving, which
    # compiles XLA only behind a flag (export/serving.py).
    compiled_begin = False
    # Whether `call("observe_select", ...)` runs here (exports and servers
    # since it exists; in memory always): a label and the next pick in one
    # call.
    fused_observe_select = False

    def _read_metadata(self, meta):
        self.task = meta["task"]
        # Exports older than the fingerprint have none: "" (not checked).
        self.fingerprint = str(meta.get("fingerprint", ""))
        self.embed_dim = int(meta["embed_dim"])
        # A scalable selector's model also answers `selection_index` and
        # `select_indexed` (exports from before it have no such field).
        model_config = json.loads(str(meta.get("model_config", "")) or "{}")
        self.scalable = model_config.get("selector_features") == "scalable"
        self.state_size = int(meta["state_size"])
        if self.task == "classification":
            self.max_classes = int(meta["max_classes"])
            self.image_size = int(meta["image_size"])
            # Exports from before RGB and feature-vector models lack these.
            self.image_channels = int(meta.get("image_channels", 1))
            self.encoder = str(meta.get("encoder", "conv"))
            self.feature_size = int(meta.get("feature_size", 0))
            self.ink_images = bool(meta.get("ink_images", True))
        else:
            self.rating_min = float(meta["rating_min"])
            self.rating_max = float(meta["rating_max"])

    def hold(self, value):
        """`value` (a numpy array the session passes to every call unchanged,
        such as the pool's embeddings and index) in the form `call` takes
        fastest: in-process backends keep one tensor instead of copying the
        array at each call (50 MB per step for a 100,000-item pool)."""
        return value

    def prepare_items(self, items, what):
        """Validates pool or query items on the client side; numpy array."""
        if self.task == "classification" and self.encoder == "mlp":
            items = np.asarray(items, np.float32)
            if items.ndim != 2 or items.shape[1] != self.feature_size:
                raise ValueError(f"{what} must be feature vectors [n, {self.feature_size}] "
                                 f"(the model's width); got shape {items.shape}")
            if not np.all(np.isfinite(items)):
                raise ValueError(f"{what} holds NaN or Inf features")
            return items
        if self.task == "classification":
            items = np.asarray(items, np.float32)
            channels = self.image_channels
            if items.ndim == 3 and channels == 1:
                items = items[..., None]
            if (items.ndim != 4 or items.shape[-1] != channels
                    or items.shape[1] != items.shape[2]):
                layout = "grey-scale images [n, H, W] or [n, H, W, 1]" if channels == 1 \
                    else "RGB images [n, H, W, 3]"
                raise ValueError(f"{what} must be square {layout}, as the model "
                                 f"was trained on; got shape {items.shape}")
            if not np.all(np.isfinite(items)):
                raise ValueError(f"{what} holds NaN or Inf pixels; images are float32 in "
                                 "[0, 1]" + (", ink = 1" if self.ink_images else ""))
            if items.size and (items.min() < 0 or items.max() > 1):
                contract = PIXEL_CONTRACT if self.ink_images else "images are float32 in [0, 1]"
                raise ValueError(f"{what} has pixels outside [0, 1] (min {items.min():g}, "
                                 f"max {items.max():g}): {contract}")
            # Only ink images (Omniglot's convention) have a known polarity;
            # a photograph may well be bright on average.
            means = items.reshape(len(items), -1).mean(-1) if items.size else items
            if self.ink_images and np.any(means > MAX_MEAN_PIXEL):
                raise ValueError(
                    f"{what} has images whose mean pixel exceeds {MAX_MEAN_PIXEL} (the "
                    f"background is ink), e.g. image {int(np.argmax(means))}: "
                    f"{PIXEL_CONTRACT}")
            return items
        items = np.asarray(items)
        if items.ndim != 1 or (items.size and items.dtype.kind not in "iuUSO"):
            raise ValueError(f"{what} must be a 1-D array of integer or string item ids; "
                             f"got shape {items.shape} dtype {items.dtype}")
        if what == "pool":
            values, counts = np.unique(items, return_counts=True)
            if np.any(counts > 1):
                raise ValueError(f"the pool repeats item ids {values[counts > 1].tolist()[:20]}"
                                 "; each item can be asked about once")
        # String ids (ratings tables with string item ids) stay strings.
        return items.astype(str) if items.dtype.kind in "USO" else items.astype(np.int64)


class ModelBackend(Backend):
    """Runs `active_learning.steps` eagerly on an in-memory `ActiveMatchingNetwork`.

    Args:
      model: the `ActiveMatchingNetwork`.
      vocabulary: ratings models only: the item id of each dense index
        (`steps.ItemVocabulary`, or the ids to build one from); pool and
        queries are then item ids, else dense indices.
    """

    def __init__(self, model, vocabulary=None):
        self.model = model
        c = model.config
        self.description = "in-memory model"
        self._vocabulary = None
        if vocabulary is not None:
            if c.task != "regression":
                raise ValueError("a vocabulary only applies to a ratings model")
            self._vocabulary = steps.ItemVocabulary.of(vocabulary, c.num_items)
        self._num_items = c.num_items
        self._fingerprint = model_fingerprint(model)
        self._read_metadata(steps.scalars(self.call("metadata", {"dummy": 0})))
        self.compiled_begin = self.scalable
        self.fused_observe_select = True

    def _model_items(self, items):
        """[B, N, ...] client items -> what the model's encoder takes."""
        if self.task == "regression" and self._vocabulary is None and items.size and (
                items.dtype.kind not in "iu" or items.min() < 0
                or items.max() >= self._num_items):
            raise ValueError(f"item indices must lie in 0..{self._num_items - 1} (pass "
                             "vocabulary= to use movieIds)")
        model_items, unknown = steps.model_items(self.model.config, tf.constant(items),
                                                 self._vocabulary)
        if unknown is not None and np.any(unknown.numpy()):
            ids = sorted(set(items[unknown.numpy()].tolist()), key=str)
            raise ValueError(f"item ids unknown to the model's vocabulary: {ids[:20]}")
        return model_items

    def hold(self, value):
        return tf.constant(value)

    def call(self, name, inputs):
        m = self.model
        if name == "metadata":
            out = steps.metadata(m, self._fingerprint)
        elif name in ("begin", "begin_compiled"):
            out = steps.begin(m, self._model_items(inputs["support"]),
                              compiled=name == "begin_compiled")
        elif name == "selection_index":
            out = steps.selection_index(m, _tensor(inputs["embeddings"], tf.float32))
        else:
            episode = (_tensor(inputs["embeddings"], tf.float32),
                       tf.constant(inputs["state"], tf.float32),
                       tf.constant(inputs["labels"], m.label_dtype),
                       tf.constant(inputs["labeled"], tf.int32))
            if name == "select":
                out = steps.select(m, *episode, tf.constant(inputs["k"], tf.int32))
            elif name == "select_indexed":
                index = steps.wire_index(*(tf.convert_to_tensor(inputs[key])
                                           for key in steps.INDEX_INPUTS))
                out = steps.select(m, *episode, tf.constant(inputs["k"], tf.int32),
                                   pool_index=index)
            elif name == "observe":
                out = steps.observe(m, *episode, tf.constant(inputs["index"], tf.int32),
                                    tf.constant(inputs["label"], m.label_dtype))
            elif name == "observe_select":
                index = None
                if "top" in inputs:
                    index = steps.wire_index(*(tf.convert_to_tensor(inputs[key])
                                               for key in steps.INDEX_INPUTS))
                out = steps.observe_select(
                    m, *episode, tf.constant(inputs["index"], tf.int32),
                    tf.constant(inputs["label"], m.label_dtype), index)
            elif name == "predict":
                out = steps.predict(m, *episode, self._model_items(inputs["queries"]))
            else:
                raise ValueError(f"unknown step {name!r}")
        return {key: value.numpy() for key, value in out.items()}


def _tensor(value, dtype):
    """`value` as a `dtype` tensor, without a copy when it already is one."""
    if isinstance(value, tf.Tensor) and value.dtype == dtype:
        return value
    return tf.constant(value, dtype)


def resolve_saved_model(path):
    """`path` if it is a SavedModel, else its highest numbered version."""
    path = os.fspath(path)
    if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        return path
    versions = []
    if tf.io.gfile.isdir(path):
        versions = sorted(int(n.rstrip("/")) for n in tf.io.gfile.listdir(path)
                          if n.rstrip("/").isdigit())
    if not versions:
        raise FileNotFoundError(f"{path!r} is neither a SavedModel nor a base directory "
                                "with numbered versions (see `python -m export.saved_model`)")
    return os.path.join(path, str(versions[-1]))


class SavedModelBackend(Backend):
    """Calls the signatures of a SavedModel loaded with `tf.saved_model.load`."""

    def __init__(self, path_or_loaded, prefix=""):
        if hasattr(path_or_loaded, "signatures"):
            self.path = None
            self.loaded = path_or_loaded
        else:
            self.path = resolve_saved_model(path_or_loaded)
            self.loaded = tf.saved_model.load(self.path)
        self.description = f"SavedModel {self.path or '(loaded)'}"
        self._prefix = prefix
        missing = [n for n in SIGNATURES if prefix + n not in self.loaded.signatures]
        if missing:
            raise ValueError(f"{self.path} lacks the signatures {[prefix + n for n in missing]}"
                             f"; it has {sorted(self.loaded.signatures)}")
        self._read_metadata(steps.scalars(self.call("metadata", {"dummy": 0})))
        # Exports from before `begin_compiled` / `observe_select` lack them.
        self.compiled_begin = prefix + "begin_compiled" in self.loaded.signatures
        self.fused_observe_select = prefix + "observe_select" in self.loaded.signatures

    def hold(self, value):
        return tf.constant(value)

    def call(self, name, inputs):
        fn = self.loaded.signatures[self._prefix + name]
        specs = fn.structured_input_signature[1]
        args = {key: value if isinstance(value, tf.Tensor) and value.dtype == specs[key].dtype
                else tf.constant(np.asarray(value), specs[key].dtype)
                for key, value in inputs.items()}
        return {key: value.numpy() for key, value in fn(**args).items()}


class RestBackend(Backend):
    """Calls a model served by TF Serving over its REST API."""

    def __init__(self, url, prefix=""):
        self.client = RestClient(url)
        self.description = f"TF Serving {url}"
        self._prefix = prefix
        self._read_metadata(self.client.metadata(prefix))
        # One request per label where the served export has `observe_select`
        # (exports since it exists), per TF Serving's own metadata; anything
        # else keeps `observe` + `select`.
        self.fused_observe_select = self._serves(prefix + "observe_select")

    def _serves(self, signature):
        try:
            meta = self.client.model_metadata()
        except ServingError:
            return False
        defs = (meta.get("metadata") or {}).get("signature_def") or {}
        return signature in (defs.get("signature_def") or {})

    def call(self, name, inputs):
        single = {"predict": "probabilities" if self.task == "classification" else "ratings"}
        return self.client.predict(self._prefix + name, inputs, output_name=single.get(name))


def make_backend(source, signature_prefix="", vocabulary=None):
    """The backend for a model, a SavedModel (path or loaded) or a REST URL."""
    if isinstance(source, Backend):
        return source
    if hasattr(source, "begin") and hasattr(source, "config"):
        if signature_prefix:
            raise ValueError("signature_prefix applies to SavedModel and REST models only")
        return ModelBackend(source, vocabulary)
    if hasattr(source, "signatures"):
        return SavedModelBackend(source, signature_prefix)
    if vocabulary is not None:
        raise ValueError("vocabulary= applies to an in-memory model only (a SavedModel "
                         "maps movieIds itself)")
    source = os.fspath(source)
    if source.startswith(("http://", "https://")):
        return RestBackend(source, signature_prefix)
    return SavedModelBackend(source, signature_prefix)
