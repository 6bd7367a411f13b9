"""The stateless serving steps, written once (Algorithm 1 as a serving contract).

TF Serving keeps no session, so each step of the paper's Algorithm 1 (3.2:
encode the pool, select an item, read its label, predict) takes the episode
state and gives the next one back, in the "wire" form of the SavedModel's
signatures: `embeddings [B, P, D]` and `state [B, 2U]` float32, `labels
[B, P]` (int32 classes, -1 = unknown, or float32 ratings), `labeled [B, P]`
an int32 0/1 mask.

  begin(model, items)                                -> embeddings, state
  select(model, embeddings, state, labels, labeled, k)
                                                     -> probabilities, index, top_k
  observe(model, embeddings, state, labels, labeled, index, label)
                                                     -> state, labels, labeled
  observe_select(model, ..., index, label[, pool_index])
                                                     -> observe's outputs, then the
                                                        next pick's probabilities,
                                                        index (one call per label)
  predict(model, embeddings, state, labels, labeled, queries)
                                                     -> probabilities | ratings
  metadata(model, fingerprint, ...)                  -> task, sizes, configs, ...

Models with `selector_features="scalable"` have two more steps, so that the
per-episode selection index (O(P^2) work) is built once and each select is
O(P x labelled):

  selection_index(model, embeddings)                 -> top, bottom, log_normalisers
  select(model, ..., k, pool_index=wire_index(top, bottom, log_normalisers))
  begin(model, items, compiled=True)                 -> as begin, the context
                                                        encoder XLA-compiled

`export.serving.ServingModule` traces these functions into the signatures
behind its in-graph input checks, and `ActiveSession`'s in-memory backend
calls them eagerly, so the two answer alike by construction. They check
nothing themselves: the callers validate their inputs first (the SavedModel
with core `Assert` ops, the session in numpy), each with its own messages.

Items reach the model through `model_items`: images area-resized to the
model's size, and ratings item ids (MovieLens movieIds, or strings) mapped to
dense indices by one `ItemVocabulary`, the same object in the graph and in
the session.
"""

import numpy as np
import tensorflow as tf

import active_learning
from active_learning.layers.selection_index import SelectionIndex


class ItemVocabulary:
    """The item id of each dense item index of a ratings model, and the way back.

    Args:
      ids: `[num_items]` the item id of each dense index (int64 ids, e.g.
        MovieLens movieIds, or strings for a ratings table with string ids;
        `checkpoints.load_vocabulary`).
      num_items: the model's `config.num_items`.

    The map is a `tf.lookup.StaticHashTable` (a core op, so TF Serving runs
    it without this package): traced into the SavedModel's signatures, and
    called eagerly by the in-memory session.
    """

    def __init__(self, ids, num_items):
        ids = np.asarray(ids)
        self.string_ids = ids.dtype.kind in "USO"
        # String item ids (any ratings table) stay strings; numbers int64.
        ids = ids.astype(str).astype(object) if self.string_ids else ids.astype(np.int64)
        if ids.ndim != 1 or ids.shape[0] != num_items:
            raise ValueError(f"the vocabulary holds {ids.shape} item ids but the model "
                             f"has num_items={num_items}")
        if np.unique(ids).shape[0] != ids.shape[0]:
            raise ValueError("the vocabulary repeats an item id")
        self.ids = ids
        self.dtype = tf.string if self.string_ids else tf.int64
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(ids, self.dtype), tf.range(ids.shape[0], dtype=tf.int64)),
            default_value=-1)

    @classmethod
    def of(cls, vocabulary, num_items):
        """`vocabulary` (an `ItemVocabulary` or the ids) for a model of `num_items`."""
        if not isinstance(vocabulary, cls):
            return cls(vocabulary, num_items)
        if len(vocabulary) != num_items:
            raise ValueError(f"the vocabulary holds {len(vocabulary)} item ids but the "
                             f"model has num_items={num_items}")
        return vocabulary

    def __len__(self):
        return int(self.ids.shape[0])

    def lookup(self, items):
        """The dense index of each item id (int64, same shape), -1 where unknown.

        Ids of the other kind (numbers for a string vocabulary or the
        reverse) are all unknown.
        """
        items = tf.convert_to_tensor(items)
        if items.dtype != self.dtype:
            if not (items.dtype.is_integer and self.dtype == tf.int64):
                return tf.fill(tf.shape(items), tf.constant(-1, tf.int64))
            items = tf.cast(items, tf.int64)
        return self.table.lookup(items)


def model_items(config, items, vocabulary=None):
    """Pool or query items `[B, N, ...]` as the model's encoder takes them.

    Returns `(items, unknown)`: feature vectors as they are; images
    area-resized to `config.image_size` (how the Omniglot pipeline turns the
    release's 105x105 drawings into 28x28 ones); ratings item ids as int32
    dense indices, looked up in `vocabulary` when one is given (else the ids
    are the indices). `unknown` `[B, N]` bool marks ids the vocabulary lacks
    (None without a vocabulary): their index is -1, and callers refuse them.
    """
    if config.task == "classification" and config.encoder == "mlp":
        return tf.convert_to_tensor(items, tf.float32), None
    if config.task == "classification":
        items = tf.convert_to_tensor(items, tf.float32)
        size, channels = int(config.image_size), int(config.image_channels)
        shape = tf.shape(items)
        flat = tf.reshape(items, tf.concat([[-1], shape[2:]], 0))
        flat = tf.cond(tf.equal(shape[2], size), lambda: flat,
                       lambda: tf.image.resize(flat, [size, size], method="area"))
        return tf.reshape(flat, tf.concat([shape[:2], [size, size, channels]], 0)), None
    if vocabulary is None:
        return tf.cast(items, tf.int32), None
    dense = vocabulary.lookup(items)
    return tf.cast(dense, tf.int32), dense < 0


def begin(model, items, compiled=False):
    """Encodes the pool (`model_items`): {embeddings, state}; `compiled`:
    the context encoder XLA-compiled (`begin_compiled`, large pools)."""
    embeddings, state = model.begin(items, compiled=compiled)
    return {"embeddings": embeddings, "state": state}


# The selection index's wire tensors, in the order the indexed signatures
# take them after their other inputs.
INDEX_INPUTS = ("top", "bottom", "log_normalisers")


def selection_index(model, embeddings):
    """A scalable model's per-episode `SelectionIndex` as wire tensors:
    {top `[B, P, k]` int32, bottom `[B, P, k]` int32, log_normalisers
    `[B, P, K]` float32} (`layers/selection_index.py`)."""
    index = model.selection_index(embeddings)
    return dict(zip(INDEX_INPUTS, (index.top_indices, index.bottom_indices,
                                   index.log_normalisers)))


def wire_index(top, bottom, log_normalisers):
    """The `SelectionIndex` of `selection_index`'s wire tensors."""
    return SelectionIndex(log_normalisers=log_normalisers, top_indices=top,
                          bottom_indices=bottom)


def select(model, embeddings, state, labels, labeled, k, pool_index=None):
    """The selection distribution and `k` items chosen jointly (paper 3.2.4).

    Returns {probabilities `[B, P]` (0 on labelled items, the first pick's
    distribution), index `[B]` (its argmax), top_k `[B, k]`}. The k items are
    chosen greedily one after another, each seeing the earlier ones as
    pending (`ActiveMatchingNetwork.select_round`), so a batch spreads over
    the pool as k single picks would.

    `pool_index`: a scalable model's `SelectionIndex` of this episode
    (built here when not given; an exact model ignores it).
    """
    mask = tf.equal(labeled, 1)
    logits, probabilities, index = _first_pick(model, embeddings, state, labels, mask,
                                               pool_index)
    # k = 1 (the common stepwise call) skips the loop's machinery: the
    # round's first pick is exactly the sequential argmax.
    top_k = tf.cond(
        tf.equal(k, 1), lambda: index[:, None],
        lambda: model.select_round(embeddings, state, labels, mask, k,
                                   first_logits=logits, index=pool_index)[0])
    return {"probabilities": probabilities, "index": index, "top_k": top_k}


def _first_pick(model, embeddings, state, labels, mask, pool_index):
    """(logits, probabilities, index) of one pick given the labelled `mask`."""
    logits = model.select(embeddings, state, labels, mask, index=pool_index)
    # The model already puts NEG_INF on labelled items, so exp() is exactly
    # 0 there; the where() makes that a guarantee of the interface.
    probabilities = tf.where(mask, 0.0, tf.nn.softmax(logits, axis=-1))
    return logits, probabilities, tf.argmax(logits, -1, output_type=tf.int32)


def observe(model, embeddings, state, labels, labeled, index, label):
    """Reads item `index` `[B]` with its `label` `[B]`: {state, labels, labeled}."""
    state, labels, mask = model.observe(embeddings, state, labels, tf.equal(labeled, 1),
                                        index, label)
    return {"state": state, "labels": labels, "labeled": tf.cast(mask, tf.int32)}


def observe_select(model, embeddings, state, labels, labeled, index, label, pool_index=None):
    """`observe`, then the next single pick (`select` with k = 1) on the new state.

    The stepwise loop's per-label work in one call (the `observe_select`
    signature): one request and one set of input checks per label instead
    of two (docs/performance.md). `pool_index`: as for `select`. Returns observe's
    {state, labels, labeled} and select's {probabilities, index} for the
    episode after the label; every episode must keep an unlabelled item (the
    callers check).

    Not XLA-compiled: the scalable features gather the labelled items, a
    list whose length is a value of the input, so XLA recompiles at every
    new label count (1.4-2 s a call at a pool of 100, measured).
    """
    observed = observe(model, embeddings, state, labels, labeled, index, label)
    _, probabilities, pick = _first_pick(model, embeddings, observed["state"],
                                         observed["labels"],
                                         tf.equal(observed["labeled"], 1), pool_index)
    return dict(observed, probabilities=probabilities, index=pick)


def predict(model, embeddings, state, labels, labeled, queries):
    """Slow predictions for held-out `queries` (`model_items`).

    {probabilities `[B, Q, max_classes]`} or {ratings `[B, Q]`}.
    """
    predictions = model.predict(embeddings, state, labels, tf.equal(labeled, 1), queries)
    if model.config.task == "classification":
        return {"probabilities": predictions}
    return {"ratings": predictions}


def metadata(model, fingerprint, version=0, run_config_json="{}", checkpoint="",
             input_spec=""):
    """What the model is: {name: scalar tensor}, the `metadata` signature's outputs.

    Args:
      fingerprint: `fingerprint.model_fingerprint(model)`, computed by the
        caller (it reads the weights' values, which a trace cannot).
      version, run_config_json, checkpoint, input_spec: what an export
        reports about itself (defaults for an in-memory model).
    """
    c = model.config
    out = {
        "task": tf.constant(c.task),
        "export_version": tf.constant(int(version), tf.int64),
        "package_version": tf.constant(active_learning.__version__),
        "input_spec": tf.constant(input_spec),
        "model_config": tf.constant(c.to_json()),
        "training_config": tf.constant(run_config_json),
        "checkpoint": tf.constant(checkpoint),
        "fingerprint": tf.constant(fingerprint),
        "embed_dim": tf.constant(int(c.embedding_width), tf.int32),
        "state_size": tf.constant(2 * int(c.units), tf.int32),
    }
    if c.task == "classification":
        out["max_classes"] = tf.constant(c.max_classes, tf.int32)
        out["image_size"] = tf.constant(c.image_size, tf.int32)
        out["image_channels"] = tf.constant(c.image_channels, tf.int32)
        out["ink_images"] = tf.constant(c.ink_images)
        out["encoder"] = tf.constant(c.encoder)
        out["feature_size"] = tf.constant(c.feature_size, tf.int32)
    else:
        out["rating_min"] = tf.constant(c.rating_min, tf.float32)
        out["rating_max"] = tf.constant(c.rating_max, tf.float32)
        out["num_items"] = tf.constant(c.num_items, tf.int32)
    return out


def scalars(outputs):
    """`metadata` outputs (tensors or numpy) as Python str, int, float or bool."""
    values = {}
    for key, value in outputs.items():
        value = np.asarray(value).item()
        values[key] = value.decode("utf-8") if isinstance(value, bytes) else value
    return values
