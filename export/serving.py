"""The tf.Module whose functions are the SavedModel's serving signatures.

TF Serving keeps no session, so every signature is stateless: the episode
state (pool embeddings, controller state, labels and the labelled mask) goes
out with every answer and comes back with the next request. All inputs and
outputs are flat, named, JSON-friendly tensors with a leading batch dimension
(many users or episodes at once) and a free pool size:

  begin(support)                                  -> embeddings, state
  select(embeddings, state, labels, labeled, k)   -> probabilities, index, top_k
                                                  (k items chosen jointly)
  observe(embeddings, state, labels, labeled, index, label)
                                                  -> state, labels, labeled
  observe_select(embeddings, state, labels, labeled, index, label)
                                                  -> observe's outputs, then
                                                     probabilities, index of
                                                     the next pick (k = 1): one
                                                     call per label
  predict(embeddings, state, labels, labeled, queries)
                                                  -> probabilities | ratings
  metadata(dummy)                                 -> task, sizes, configs,
                                                     fingerprint, ...

Models built with `selector_features="scalable"` have two more signatures
(every other model's signatures are unchanged). `select` rebuilds their
per-episode selection index at every call (P^2 cosines); a client with a
large pool builds it once instead and sends it back with each select:

  selection_index(embeddings)                     -> top, bottom, log_normalisers
  select_indexed(embeddings, state, labels, labeled, k, top, bottom,
                 log_normalisers)                 -> as select, O(P x labelled)
  begin_compiled(support)                         -> as begin, the context
                                                     encoder XLA-compiled
  observe_select(..., label, top, bottom, log_normalisers)
                                                  -> as observe_select, with
                                                     the index as select_indexed

`begin_compiled` is for in-process clients (`ActiveSession` on a SavedModel
uses it for pools of `session.COMPILED_BEGIN_MIN_POOL` items or more): the
BiLSTM's one step per pool item runs about nine times faster under XLA, but
TF Serving compiles XLA only with `--xla_cpu_compilation_enabled` and
otherwise answers this signature with an error; its other signatures never
call it. Its embeddings equal `begin`'s up to float rounding, which the
recurrence carries along the pool (docs/performance.md).

`labeled` is an int32 0/1 mask rather than a bool tensor: plain numbers are
what every JSON client writes without thinking. `labels` are int32 classes
(-1 = unknown) for classification and float32 ratings for the ratings task.
Ratings models take the data set's item ids (int64, e.g. MovieLens movieIds,
or strings when the ratings table's item ids are strings) and map them to the
model's dense item indices in the graph with the `tf.lookup.StaticHashTable`
of a `steps.ItemVocabulary`.
`metadata` takes a dummy scalar because TF Serving's REST API refuses a
signature without inputs.

Each signature is input validation followed by the step of its name in
`active_learning.steps`, the functions an in-memory `ActiveSession` calls
eagerly. Loaded signatures do not check the shapes of their inputs (a
`ConcreteFunction` restored from a SavedModel only checks dtypes, and TF
Serving feeds whatever it receives), so every signature validates its inputs
with core `tf.debugging.Assert` ops, in stages (ranks, then shapes, then
values), and a malformed input fails with an `InvalidArgumentError` naming
the input rather than an obscure error from deep inside the model. Only core
ops are used: `tensorflow_model_server` and `saved_model_cli` run the graph
without this package installed.
"""

import functools
import json
import types

import numpy as np
import tensorflow as tf

from active_learning import steps
from active_learning.backends import SIGNATURES
from active_learning.config import MAX_MEAN_PIXEL, PIXEL_CONTRACT
from active_learning.fingerprint import model_fingerprint
from active_learning.layers import weight_norm

# Signatures of every export beyond the contract's core (`SIGNATURES`):
# exports from before them lack them, so clients check for them.
EXTRA_SIGNATURES = ("observe_select",)
# The extra signatures of a model with `selector_features="scalable"`.
SCALABLE_SIGNATURES = ("selection_index", "select_indexed", "begin_compiled")

# How many entries of an offending tensor an assertion message prints.
_SUMMARIZE = 16


def _check(condition, message, *data):
    """A core `Assert` op whose error names the input and the expectation."""
    return tf.debugging.Assert(condition, [message, *data], summarize=_SUMMARIZE)


def _all_finite(x):
    """Whether every value of `x` is finite: its sum is, unless one is NaN or
    Inf (or values so large that their sum overflows, which no model output
    holds; used for the model's own outputs passed back, not for client
    data). One reduction, where is_finite + reduce_all write a boolean per
    value first: a few ms per call for a 100,000-item pool."""
    return tf.math.is_finite(tf.reduce_sum(x))


def _dims(x, n):
    """The first `n` dims of `x`'s shape, padded with -1: never fails."""
    return tf.concat([tf.shape(x), tf.fill([n], -1)], 0)[:n]


def _index_ranks(index):
    """`_rank_checks` entries of the selection index's wire tensors (none
    when `index` is empty: an exact model's signature)."""
    return [(name, t, 3, "[batch, pool, n]") for name, t in zip(steps.INDEX_INPUTS, index)]


def _static(t, dims):
    """`t` reshaped to its own (validated) shape, with the static `dims` known.

    Not `tf.ensure_shape`: Grappler reads an EnsureShape as a promise about
    its input and folds the earlier `tf.rank` check of that input to the
    promised rank, which silently disabled the rank checks in a test.
    """
    if not dims:
        return tf.reshape(t, [])
    shape = _dims(t, len(dims))
    return tf.reshape(t, tf.stack([shape[i] if d is None else d for i, d in enumerate(dims)]))


def _run_stage(stage):
    checks = stage()
    asserts = [_check(condition, *message) for condition, *message in checks]
    with tf.control_dependencies(asserts):
        return tf.reduce_all(tf.stack([condition for condition, *_ in checks]))


def _validated(stages, tensors):
    """Runs the checks of `stages` in order; returns `tensors` after them.

    A stage is a callable returning `(condition, message, *data)` tuples.
    Each stage runs inside a `tf.cond` on the success of the previous one,
    so a check that reads the shape or the values of `x` is never computed
    before the earlier checks of `x` passed (a gather before its indices are
    known to be in range, say): plain control dependencies did not keep that
    order in a test, once Grappler had rewritten the graph.
    """
    ok = tf.constant(True)
    for stage in stages:
        ok = tf.cond(ok, lambda stage=stage: _run_stage(stage), lambda: tf.constant(False))
    with tf.control_dependencies([ok]):
        return [tf.identity(t) for t in tensors]


class ServingModule(tf.Module):
    """Owns the serving signatures of a trained `ActiveMatchingNetwork`.

    Args:
      model: the `ActiveMatchingNetwork` (weights restored).
      vocabulary: ratings models only: `[num_items]` int64 or str, the item
        id of each dense item index (`checkpoints.load_vocabulary`), or a
        `steps.ItemVocabulary` of them; the signatures then take items of
        that dtype.
      run_config: optional dict, how the model was trained; exported as a
        JSON string by the `metadata` signature.
      version: the export version, reported by `metadata`.
      checkpoint: optional checkpoint path, reported by `metadata`.
    """

    def __init__(self, model, vocabulary=None, run_config=None, version=0,
                 checkpoint=""):
        super().__init__(name="active_learner")
        # The Keras model is kept out of the tracked attributes: a SavedModel
        # that tracks Keras 3 layers saves each variable twice and its TF1
        # (session) view -- what TF Serving and `saved_model_cli run` load --
        # then fails with "Could not find variable". Only the tf.Variables
        # the signatures capture are tracked (see `signatures`), as Keras's
        # own ExportArchive does.
        self._holder = types.SimpleNamespace(model=model)
        config = model.config
        self._config = config
        self._classification = config.task == "classification"
        self._version = int(version)
        self._run_config_json = json.dumps(run_config or {}, sort_keys=True,
                                           default=_json_default)
        self._checkpoint = str(checkpoint or "")
        self._fingerprint = model_fingerprint(model)
        # Like the fingerprint, from the weights as they are now: the
        # signatures read each weight-normalised kernel from a variable of its
        # own instead of recomputing it at every call (`weight_norm.fixed_kernels`).
        self._holder.kernels = weight_norm.FixedKernels(model)
        self._embed_dim = int(config.embedding_width)
        self._state_size = 2 * int(config.units)

        if self._classification:
            if vocabulary is not None:
                raise ValueError("a classification model takes no vocabulary")
            if config.encoder == "mlp":
                item_shape = [None, None, int(config.feature_size)]
            else:
                item_shape = [None, None, None, None, int(config.image_channels)]
            item_dtype = tf.float32
            label_dtype = tf.int32
        else:
            if vocabulary is None:
                raise ValueError(
                    "a ratings model needs its movieId vocabulary "
                    "(checkpoints.load_vocabulary(model_dir))")
            vocabulary = steps.ItemVocabulary.of(vocabulary, config.num_items)
            item_dtype = vocabulary.dtype
            # A variable so that clients can read the vocabulary back from
            # the loaded SavedModel (`loaded.vocabulary`).
            self.vocabulary = tf.Variable(tf.constant(vocabulary.ids, item_dtype),
                                          trainable=False, name="vocabulary")
            # Tracked, so that the SavedModel saves the table the signatures
            # capture; the lookups go through `self._items_vocabulary`.
            self._table = vocabulary.table
            item_shape = [None, None]
            label_dtype = tf.float32
        self._items_vocabulary = vocabulary
        self._item_dtype = item_dtype
        self._label_dtype = label_dtype
        self._item_shape = item_shape
        self._input_spec = self.describe_inputs()

        # Input specs leave the rank unknown on purpose. A restored signature
        # (and TF Serving) checks dtypes but not shapes, and with a declared
        # rank Grappler folds `tf.rank(x)` to that constant, so an in-graph
        # rank check would pass a wrongly shaped input and the call would
        # fail deep in the model, or even answer. With unknown ranks the
        # checks see the real shapes; `_static` then gives the model
        # its static shapes back. The expected shapes are documented by
        # `metadata`'s `input_spec` and in docs/serving.md.
        def spec(dtype):
            return tf.TensorSpec(None, dtype)

        emb, state = spec(tf.float32), spec(tf.float32)
        labels, labeled = spec(label_dtype), spec(tf.int32)
        # AutoGraph is off: the model has no data-dependent Python control
        # flow (its loops are over constants, the pool loop is a tf.scan)
        # and converting it triples the tracing time.
        def function(fn, *specs):
            def traced(*args):
                with weight_norm.fixed_kernels(self._holder.kernels):
                    return fn(*args)
            return tf.function(functools.wraps(fn)(traced), input_signature=list(specs),
                               autograph=False)

        # The functions live outside the tracked attributes: the SavedModel
        # needs them only as signatures, and `tf.saved_model.save` would
        # otherwise trace every attached function a second time (a few
        # seconds per export).
        self._scalable = config.selector_features == "scalable"
        self._functions = types.SimpleNamespace(
            begin=function(self._begin, spec(item_dtype)),
            begin_compiled=function(self._begin_compiled, spec(item_dtype)),
            select=function(self._select, emb, state, labels, labeled, spec(tf.int32)),
            selection_index=function(self._selection_index, emb),
            select_indexed=function(self._select_indexed, emb, state, labels, labeled,
                                    spec(tf.int32), spec(tf.int32), spec(tf.int32),
                                    spec(tf.float32)),
            observe=function(self._observe, emb, state, labels, labeled, spec(tf.int32),
                             spec(label_dtype)),
            # A scalable model's also takes the episode's selection index.
            observe_select=(
                function(self._observe_select_indexed, emb, state, labels, labeled,
                         spec(tf.int32), spec(label_dtype), spec(tf.int32), spec(tf.int32),
                         spec(tf.float32)) if self._scalable else
                function(self._observe_select, emb, state, labels, labeled, spec(tf.int32),
                         spec(label_dtype))),
            predict=function(self._predict, emb, state, labels, labeled, spec(item_dtype)),
            metadata=function(self._metadata, spec(tf.int32)),
        )

    def begin(self, support):
        """`support` -> {embeddings, state}."""
        return self._functions.begin(support)

    def select(self, embeddings, state, labels, labeled, k):
        """-> {probabilities, index, top_k}."""
        return self._functions.select(embeddings, state, labels, labeled, k)

    def begin_compiled(self, support):
        """Scalable models: `begin`, the context encoder XLA-compiled."""
        self._require_scalable("begin_compiled")
        return self._functions.begin_compiled(support)

    def selection_index(self, embeddings):
        """Scalable models: -> {top, bottom, log_normalisers}."""
        self._require_scalable("selection_index")
        return self._functions.selection_index(embeddings)

    def select_indexed(self, embeddings, state, labels, labeled, k, top, bottom,
                       log_normalisers):
        """Scalable models: `select` with the episode's selection index."""
        self._require_scalable("select_indexed")
        return self._functions.select_indexed(embeddings, state, labels, labeled, k, top,
                                              bottom, log_normalisers)

    def observe_select(self, embeddings, state, labels, labeled, index, label, *pool_index):
        """`observe`, then `select` with k = 1 on the new state, in one call
        -> {state, labels, labeled, probabilities, index}. Scalable models
        also take the episode's `top`, `bottom`, `log_normalisers`
        (`selection_index`), as `select_indexed` does."""
        if len(pool_index) != (3 if self._scalable else 0):
            raise ValueError(f"observe_select takes the selection index "
                             f"({', '.join(steps.INDEX_INPUTS)}) for a scalable model, "
                             "and only then")
        return self._functions.observe_select(embeddings, state, labels, labeled, index,
                                              label, *pool_index)

    def _require_scalable(self, name):
        if not self._scalable:
            raise ValueError(f"`{name}` is a signature of models built with "
                             "selector_features='scalable'; this model's selector reads "
                             "the cosine matrix (use `select`)")

    def observe(self, embeddings, state, labels, labeled, index, label):
        """-> {state, labels, labeled}."""
        return self._functions.observe(embeddings, state, labels, labeled, index, label)

    def predict(self, embeddings, state, labels, labeled, queries):
        """-> {probabilities} (classification) or {ratings}."""
        return self._functions.predict(embeddings, state, labels, labeled, queries)

    def metadata(self, dummy=0):
        """-> {task, export_version, ...} scalars."""
        return self._functions.metadata(dummy)

    @property
    def model(self):
        return self._holder.model

    # ------------------------------------------------------------- exporting
    def signatures(self):
        """{name: concrete function} for `tf.saved_model.save`.

        Also tracks the variables those functions capture, so that saving
        this module saves exactly them.
        """
        names = SIGNATURES + EXTRA_SIGNATURES + (SCALABLE_SIGNATURES if self._scalable else ())
        functions = {name: getattr(self._functions, name).get_concrete_function()
                     for name in names}
        read, seen = [], set()
        for variable in (v for f in functions.values() for v in f.variables):
            if id(variable) not in seen:
                seen.add(id(variable))
                read.append(variable)
        kernels = self._holder.kernels
        fixed = {id(v) for v in kernels.variables}
        self.fixed_kernels = [v for v in read if id(v) in fixed]
        # The model's own variables: the signatures read only the fixed
        # kernels, so the V and g they came from are added; they are what a
        # model rebuilt from this export restores (`evaluation.loading`).
        self.model_variables = ([v for v in read if id(v) not in fixed]
                                + kernels.sources(self.fixed_kernels))
        return functions

    def describe_inputs(self):
        """Human-readable description of the signatures' inputs."""
        c = self._config
        if self._classification and c.encoder == "mlp":
            items = (f"support/queries: float32 [batch, pool, {c.feature_size}] feature "
                     "vectors, on the scale of the training data")
            label = f"int32 class in 0..{c.max_classes - 1}, -1 = unknown"
        elif self._classification:
            kind = "grey-scale" if c.image_channels == 1 else "RGB"
            ink = ", ink = 1" if c.ink_images else ""
            items = (f"support/queries: float32 [batch, pool, H, W, {c.image_channels}] "
                     f"{kind} images in [0, 1]{ink}; {c.image_size}x{c.image_size} "
                     "expected, any other square size (e.g. 105x105) is area-resized in "
                     "the graph")
            label = f"int32 class in 0..{c.max_classes - 1}, -1 = unknown"
        else:
            items = (f"support/queries: {self._item_dtype.name} [batch, pool] item ids "
                     "(e.g. MovieLens movieIds) known to the model's vocabulary")
            label = f"float32 rating in [{c.rating_min}, {c.rating_max}]"
        return (f"{items}; embeddings: float32 [batch, pool, {self._embed_dim}]; "
                f"state: float32 [batch, {self._state_size}]; labels: [batch, pool] "
                f"{label}; labeled: int32 [batch, pool] 0/1; index: int32 [batch]; "
                f"label: [batch]; k: int32 scalar")

    # ------------------------------------------------------------ validation
    # Each helper returns `(condition, message, *data)` tuples for a stage
    # of `_validated`; a stage may rely on the checks of earlier stages.
    # Within a stage conditions must not fail whatever the shapes (`_dims`
    # pads instead of slicing past the rank).
    def _rank_checks(self, fn, inputs):
        """Each (name, tensor, rank, layout) has the right rank."""
        return [(tf.equal(tf.rank(t), rank),
                 f"{fn}: input `{name}` must have rank {rank} {layout}; got shape",
                 tf.shape(t))
                for name, t, rank, layout in inputs]

    def _item_rank(self):
        c = self._config
        if self._classification and c.encoder == "mlp":
            return 3, f"[batch, pool, {c.feature_size}]"
        if self._classification:
            return 5, f"[batch, pool, height, width, {c.image_channels}]"
        return 2, "[batch, pool]"

    def _item_shape_checks(self, fn, name, items):
        c = self._config
        if not self._classification:
            return []
        if c.encoder == "mlp":
            shape = _dims(items, 3)
            return [(tf.equal(shape[2], c.feature_size),
                     f"{fn}: input `{name}` must hold feature vectors of width "
                     f"{c.feature_size} [batch, pool, {c.feature_size}] (the width the "
                     "model was trained on); got shape", tf.shape(items))]
        channels = int(c.image_channels)
        kind = "single-channel (grey-scale)" if channels == 1 else "3-channel (RGB)"
        shape = _dims(items, 5)
        return [
            (tf.equal(shape[4], channels),
             f"{fn}: input `{name}` must hold {kind} images [batch, pool, H, W, "
             f"{channels}], as the model was trained on; got shape", tf.shape(items)),
            (tf.logical_and(tf.equal(shape[2], shape[3]), shape[2] > 0),
             f"{fn}: input `{name}` must hold square images (H == W > 0); got shape",
             tf.shape(items)),
        ]

    def _item_value_checks(self, fn, name, items):
        """Pixels finite, in [0, 1], ink = 1; features finite; ratings pools without repeats."""
        c = self._config
        if self._classification and c.encoder == "mlp":
            return [(tf.reduce_all(tf.math.is_finite(items)),
                     f"{fn}: input `{name}` holds NaN or Inf features")]
        if self._classification:
            finite = tf.math.is_finite(items)
            clean = tf.where(finite, items, 0.0)
            contract = PIXEL_CONTRACT if c.ink_images else "images are float32 in [0, 1]"
            checks = [
                (tf.reduce_all(finite),
                 f"{fn}: input `{name}` holds NaN or Inf pixels; images are float32 in "
                 "[0, 1]" + (", ink = 1" if c.ink_images else "")),
                (tf.logical_and(tf.reduce_min(clean) >= 0.0, tf.reduce_max(clean) <= 1.0),
                 f"{fn}: input `{name}` has pixels outside [0, 1] (min, max):",
                 tf.reduce_min(clean), tf.reduce_max(clean), contract),
            ]
            if c.ink_images:
                # Only Omniglot-style ink images have a known polarity; a
                # photograph may well be bright on average.
                means = tf.reduce_mean(clean, axis=[2, 3, 4])
                checks.append(
                    (tf.reduce_all(means <= MAX_MEAN_PIXEL),
                     f"{fn}: input `{name}` has images whose mean pixel exceeds "
                     f"{MAX_MEAN_PIXEL} (the background is ink):", tf.reduce_max(means),
                     PIXEL_CONTRACT))
            return checks
        if name != "support":
            return []  # queries may repeat an item; a pool must not
        items = _static(items, [None, None])  # rank checked before
        # Ids may be strings, which tf.sort does not take: order by the dense
        # index instead (unknown ids, -1, get distinct negatives so that they
        # are left to the vocabulary check).
        dense = self._items_vocabulary.lookup(items)
        dense = tf.where(dense < 0, -1 - tf.cast(tf.range(tf.shape(dense)[1]), dense.dtype)[None],
                         dense)
        order = tf.argsort(dense, axis=-1, stable=True)
        ordered = tf.gather(items, order, batch_dims=1)
        dense = tf.gather(dense, order, batch_dims=1)
        repeated = tf.equal(dense[:, 1:], dense[:, :-1])
        return [(tf.logical_not(tf.reduce_any(repeated)),
                 f"{fn}: input `{name}` repeats an item within a pool (each item can "
                 "be asked about once); repeated item ids:",
                 tf.boolean_mask(ordered[:, 1:], repeated))]

    def _items(self, fn, name, given):
        """Pool items as the model takes them (`steps.model_items`), known ids only."""
        items, unknown = steps.model_items(self._config, given, self._items_vocabulary)
        if unknown is None:
            return items
        (items,) = _validated([lambda: [(
            tf.logical_not(tf.reduce_any(unknown)),
            f"{fn}: input `{name}` holds item ids unknown to the model vocabulary:",
            tf.boolean_mask(given, unknown))]], [items])
        return items

    def _episode_ranks(self, fn, embeddings, state, labels, labeled):
        return self._rank_checks(fn, [
            ("embeddings", embeddings, 3, "[batch, pool, embed_dim]"),
            ("state", state, 2, "[batch, state_size]"),
            ("labels", labels, 2, "[batch, pool]"),
            ("labeled", labeled, 2, "[batch, pool]"),
        ])

    def _episode_checks(self, fn, embeddings, state, labels, labeled):
        """State and masks agree with the pool embeddings; all of it finite.

        The finiteness checks read values, but whatever the shapes, so they
        can share the shapes' stage: one NaN in the state would otherwise
        turn every output into NaN without an error.
        """
        e = _dims(embeddings, 3)
        checks = [
            (e[0] > 0, f"{fn}: input `embeddings` holds an empty batch (0 episodes); send "
             "at least one episode; got shape", tf.shape(embeddings)),
            (_all_finite(embeddings),
             f"{fn}: input `embeddings` holds NaN or Inf values; pass the `embeddings` "
             "output of `begin` unchanged"),
            (_all_finite(state),
             f"{fn}: input `state` holds NaN or Inf values; pass the `state` output of "
             "`begin`/`observe` unchanged"),
        ]
        if not self._classification:
            checks.append((tf.reduce_all(tf.math.is_finite(labels)),
                           f"{fn}: input `labels` holds NaN or Inf ratings; unknown ratings "
                           "are 0 (with `labeled` 0), not NaN"))
        return checks + [
            (tf.equal(e[2], self._embed_dim),
             f"{fn}: input `embeddings` must be [batch, pool, {self._embed_dim}] "
             "(from `begin`); got shape", tf.shape(embeddings)),
            (tf.reduce_all(tf.equal(_dims(state, 2), tf.stack([e[0], self._state_size]))),
             f"{fn}: input `state` must be [batch, {self._state_size}] with the batch "
             "of `embeddings`; got state shape", tf.shape(state),
             "embeddings shape", tf.shape(embeddings)),
            (tf.reduce_all(tf.equal(_dims(labels, 2), e[:2])),
             f"{fn}: input `labels` must be [batch, pool] like `embeddings` (pool size "
             "or batch mismatch); got labels shape", tf.shape(labels),
             "embeddings shape", tf.shape(embeddings)),
            (tf.reduce_all(tf.equal(_dims(labeled, 2), e[:2])),
             f"{fn}: input `labeled` must be [batch, pool] like `embeddings` (pool size "
             "or batch mismatch); got labeled shape", tf.shape(labeled),
             "embeddings shape", tf.shape(embeddings)),
        ]

    def _label_ok(self, label):
        c = self._config
        if self._classification:
            return tf.logical_and(label >= 0, label < c.max_classes)
        return tf.logical_and(label >= c.rating_min, label <= c.rating_max)

    def _label_expectation(self):
        c = self._config
        if self._classification:
            return f"a class in 0..{c.max_classes - 1}"
        return f"a rating in [{c.rating_min}, {c.rating_max}]"

    def _value_checks(self, fn, labels, labeled):
        """A 0/1 mask, and valid labels wherever it is 1."""
        is_labeled = tf.equal(labeled, 1)
        return [
            (tf.reduce_all(tf.logical_or(is_labeled, tf.equal(labeled, 0))),
             f"{fn}: input `labeled` must be a 0/1 mask; got", labeled),
            (tf.reduce_all(tf.logical_or(tf.logical_not(is_labeled),
                                         self._label_ok(labels))),
             f"{fn}: input `labels` must hold {self._label_expectation()} wherever "
             "`labeled` is 1; got", labels),
        ]

    def _episode_shapes(self, embeddings, state, labels, labeled):
        """The validated episode tensors with their static shapes restored."""
        return (_static(embeddings, [None, None, self._embed_dim]),
                _static(state, [None, self._state_size]),
                _static(labels, [None, None]),
                _static(labeled, [None, None]))

    # ------------------------------------------------------------ signatures
    def _begin(self, support, fn="begin"):
        rank, layout = self._item_rank()
        (support,) = _validated([
            lambda: self._rank_checks(fn, [("support", support, rank, layout)]),
            lambda: self._item_shape_checks(fn, "support", support) + [
                (tf.shape(support)[0] > 0,
                 f"{fn}: input `support` holds an empty batch (0 episodes); send at "
                 "least one episode; got shape", tf.shape(support)),
                (tf.shape(support)[1] > 0,
                 f"{fn}: input `support` must hold at least one item per episode; "
                 "got shape", tf.shape(support))],
            lambda: self._item_value_checks(fn, "support", support),
        ], [support])
        support = _static(support, self._item_shape)
        return steps.begin(self.model, self._items(fn, "support", support),
                           compiled=fn == "begin_compiled")

    def _begin_compiled(self, support):
        return self._begin(support, fn="begin_compiled")

    def _select(self, embeddings, state, labels, labeled, k, index=None, fn="select"):
        episode = (embeddings, state, labels, labeled)
        index = index or ()

        def values():
            unlabeled = tf.reduce_sum(tf.cast(tf.equal(labeled, 0), tf.int32), -1)
            return self._value_checks(fn, labels, labeled) + [
                (k >= 1, f"{fn}: input `k` must be >= 1; got", k),
                (tf.reduce_all(k <= unlabeled),
                 f"{fn}: input `k` must not exceed the number of unlabelled items of "
                 "any episode; got k =", k, "unlabelled items per episode:", unlabeled)
            ] + (self._index_value_checks(fn, embeddings, *index) if index else [])

        shapes = lambda: self._episode_checks(fn, *episode) + (  # noqa: E731
            self._index_shape_checks(fn, embeddings, *index) if index else [])
        embeddings, state, labels, labeled, k, *index = _validated([
            lambda: self._episode_ranks(fn, *episode) + self._rank_checks(
                fn, [("k", k, 0, "(a scalar)")] + _index_ranks(index)),
            shapes,
            values,
        ], [embeddings, state, labels, labeled, k, *index])
        embeddings, state, labels, labeled = self._episode_shapes(
            embeddings, state, labels, labeled)
        k = _static(k, [])
        if index:
            index = steps.wire_index(*(_static(t, [None, None, None]) for t in index))
        return steps.select(self.model, embeddings, state, labels, labeled, k,
                            pool_index=index or None)

    # ------------------------------------------- scalable models' signatures
    def _index_width(self, embeddings):
        """k of the index of a pool: min(neighbours, P - 1), at least 1."""
        pool = _dims(embeddings, 2)[1]
        return tf.maximum(tf.minimum(int(self._config.selector_neighbours), pool - 1), 1)

    def _index_shape_checks(self, fn, embeddings, top, bottom, log_normalisers):
        e = _dims(embeddings, 2)
        lists = tf.stack([e[0], e[1], self._index_width(embeddings)])
        temperatures = len(self._config.labelled_mass_temperatures)
        return [
            (tf.reduce_all(tf.equal(_dims(t, 3), lists)),
             f"{fn}: input `{name}` must be [batch, pool, k] as `selection_index` gave it "
             "for these embeddings; got shape", tf.shape(t), "expected", lists)
            for name, t in (("top", top), ("bottom", bottom))
        ] + [(tf.reduce_all(tf.equal(_dims(log_normalisers, 3),
                                     tf.stack([e[0], e[1], temperatures]))),
              f"{fn}: input `log_normalisers` must be [batch, pool, {temperatures}] as "
              "`selection_index` gave it; got shape", tf.shape(log_normalisers))]

    def _index_value_checks(self, fn, embeddings, top, bottom, log_normalisers):
        pool = tf.shape(embeddings)[1]
        return [
            (tf.logical_and(tf.reduce_min(t) >= 0, tf.reduce_max(t) < pool),
             f"{fn}: input `{name}` must hold item positions in 0..pool-1 (pass the "
             "output of `selection_index` unchanged); pool size", pool)
            for name, t in (("top", top), ("bottom", bottom))
        ] + [(_all_finite(log_normalisers),
              f"{fn}: input `log_normalisers` holds NaN or Inf values; pass the output "
              "of `selection_index` unchanged")]

    def _selection_index(self, embeddings):
        fn = "selection_index"
        e = _dims(embeddings, 3)
        (embeddings,) = _validated([
            lambda: self._rank_checks(fn, [("embeddings", embeddings, 3,
                                            "[batch, pool, embed_dim]")]),
            lambda: [
                (tf.logical_and(e[0] > 0, e[1] > 0),
                 f"{fn}: input `embeddings` must hold at least one episode and one item; "
                 "got shape", tf.shape(embeddings)),
                (tf.equal(e[2], self._embed_dim),
                 f"{fn}: input `embeddings` must be [batch, pool, {self._embed_dim}] (from "
                 "`begin`); got shape", tf.shape(embeddings)),
                (_all_finite(embeddings),
                 f"{fn}: input `embeddings` holds NaN or Inf values; pass the `embeddings` "
                 "output of `begin` unchanged")],
        ], [embeddings])
        embeddings = _static(embeddings, [None, None, self._embed_dim])
        return steps.selection_index(self.model, embeddings)

    def _select_indexed(self, embeddings, state, labels, labeled, k, top, bottom,
                        log_normalisers):
        return self._select(embeddings, state, labels, labeled, k,
                            index=(top, bottom, log_normalisers), fn="select_indexed")

    def _observe(self, embeddings, state, labels, labeled, index, label):
        return steps.observe(self.model, *self._observed_inputs(
            "observe", embeddings, state, labels, labeled, index, label))

    def _observed_inputs(self, fn, embeddings, state, labels, labeled, index, label,
                         pool_index=(), next_pick=False):
        """`observe`'s inputs (and `observe_select`'s selection index) validated,
        with their static shapes. `next_pick`: the episode must also keep an
        unlabelled item after the label."""
        episode = (embeddings, state, labels, labeled)

        def shapes():
            batch = _dims(embeddings, 1)[0]
            return self._episode_checks(fn, *episode) + [
                (tf.equal(tf.shape(index)[0], batch),
                 f"{fn}: input `index` must be [batch] like `embeddings`; got shape",
                 tf.shape(index), "embeddings shape", tf.shape(embeddings)),
                (tf.equal(tf.shape(label)[0], batch),
                 f"{fn}: input `label` must be [batch] like `embeddings`; got shape",
                 tf.shape(label), "embeddings shape", tf.shape(embeddings))] + (
                self._index_shape_checks(fn, embeddings, *pool_index) if pool_index else [])

        def values():
            pool = tf.shape(embeddings)[1]
            return self._value_checks(fn, labels, labeled) + [
                (tf.reduce_all(tf.logical_and(index >= 0, index < pool)),
                 f"{fn}: input `index` must lie in 0..pool-1; got", index,
                 "pool size", pool),
                (tf.reduce_all(self._label_ok(label)),
                 f"{fn}: input `label` must be {self._label_expectation()}; got", label),
            ] + (self._index_value_checks(fn, embeddings, *pool_index) if pool_index else [])

        def not_labeled():
            already = tf.gather(labeled, index, batch_dims=1)
            checks = [(tf.reduce_all(tf.equal(already, 0)),
                       f"{fn}: input `index` names an item that is already labelled "
                       "(labeled == 1); index", index, "labeled there", already)]
            if next_pick:
                unlabeled = tf.reduce_sum(tf.cast(tf.equal(labeled, 0), tf.int32), -1)
                checks.append((tf.reduce_all(unlabeled >= 2),
                               f"{fn}: every episode must keep an unlabelled item after this "
                               "label, for the next pick (use `observe` for the last item "
                               "of a pool); unlabelled items per episode:", unlabeled))
            return checks

        *inputs, index, label = _validated([
            lambda: self._episode_ranks(fn, *episode) + self._rank_checks(
                fn, [("index", index, 1, "[batch]"), ("label", label, 1, "[batch]")]
                + _index_ranks(pool_index)),
            shapes, values, not_labeled,
        ], [embeddings, state, labels, labeled, *pool_index, index, label])
        episode = self._episode_shapes(*inputs[:4])
        pool_index = tuple(_static(t, [None, None, None]) for t in inputs[4:])
        return (*episode, _static(index, [None]), _static(label, [None]), *pool_index)

    def _observe_select(self, embeddings, state, labels, labeled, index, label,
                        pool_index=()):
        inputs = self._observed_inputs("observe_select", embeddings, state, labels, labeled,
                                       index, label, pool_index=pool_index, next_pick=True)
        return steps.observe_select(self.model, *inputs[:6],
                                    steps.wire_index(*inputs[6:]) if pool_index else None)

    def _observe_select_indexed(self, embeddings, state, labels, labeled, index, label, top,
                                bottom, log_normalisers):
        return self._observe_select(embeddings, state, labels, labeled, index, label,
                                    pool_index=(top, bottom, log_normalisers))

    def _predict(self, embeddings, state, labels, labeled, queries):
        fn = "predict"
        rank, layout = self._item_rank()
        episode = (embeddings, state, labels, labeled)
        embeddings, state, labels, labeled, queries = _validated([
            lambda: self._episode_ranks(fn, *episode)
            + self._rank_checks(fn, [("queries", queries, rank, layout)]),
            lambda: self._episode_checks(fn, *episode)
            + self._item_shape_checks(fn, "queries", queries) + [
                (tf.equal(tf.shape(queries)[0], tf.shape(embeddings)[0]),
                 "predict: input `queries` must have the batch of `embeddings`; got "
                 "queries shape", tf.shape(queries), "embeddings shape",
                 tf.shape(embeddings)),
                (tf.shape(queries)[1] > 0,
                 "predict: input `queries` must hold at least one item per episode; got "
                 "shape", tf.shape(queries))],
            lambda: self._value_checks(fn, labels, labeled)
            + self._item_value_checks(fn, "queries", queries),
        ], [embeddings, state, labels, labeled, queries])
        embeddings, state, labels, labeled = self._episode_shapes(
            embeddings, state, labels, labeled)
        queries = _static(queries, self._item_shape)
        return steps.predict(self.model, embeddings, state, labels, labeled,
                             self._items(fn, "queries", queries))

    def _metadata(self, dummy):
        # TF Serving's REST API rejects a signature without inputs, so this
        # one takes a scalar it ignores.
        del dummy
        return steps.metadata(self.model, self._fingerprint, version=self._version,
                              run_config_json=self._run_config_json,
                              checkpoint=self._checkpoint, input_spec=self._input_spec)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
