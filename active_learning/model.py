"""The active Matching Network (paper 3.2, Figure 1, Algorithm 1).

`ActiveMatchingNetwork` ties the modules of `active_learning.layers` together.
Its methods are the steps of Algorithm 1 and mirror the serving contract, so
the training rollout, the evaluation code and the exported SavedModel all run
the same functions:

  begin(support)                                 -> embeddings, state
  select(embeddings, state, labels, labeled)     -> logits over the pool
  selection_index(embeddings)                    -> the scalable selector's
                                                    per-episode index (or None)
  select_round(embeddings, state, labels, labeled, k, choose)
                                                 -> k picks made one after another
  observe(embeddings, state, labels, labeled, index, label)
                                                 -> state, labels, labeled
  fast_predict(embeddings, state, labels, labeled) -> predictions for the pool
  predict(embeddings, state, labels, labeled, queries) -> predictions

Everything is batched over episodes: `embeddings [B, P, D]` (D =
`config.embedding_width`), `state [B, 2U]`,
`labels [B, P]` (int32 classes, or float32 ratings), `labeled [B, P]` bool.
Labels of unlabelled items are ignored (the serving contract sends -1).
Predictions are class probabilities `[..., max_classes]` or ratings `[...]`.
"""

import collections

import keras
import numpy as np
import tensorflow as tf

from active_learning import layers as al_layers
from active_learning.config import ModelConfig
from active_learning.layers import prior_predictor
from active_learning.layers.masked import cosine_matrix
from active_learning.layers import selection_index as selection_index_lib
from active_learning.layers import selector as selector_lib

# Smoothing for log-likelihood rewards: a class that no labelled item carries
# has probability 0 under a convex combination of one-hot labels.
LOG_LIKELIHOOD_EPS = 1e-4
# `begin` encodes pools of more items than this in chunks of this many, so
# that the encoder's activations for a pool of 100,000 images stay bounded
# (one chunk's, not the pool's: 10 GB for 100,000 Omniglot images at once).
ENCODE_CHUNK = 4096

# What a batch query's pick j knows: its position in the round, the control
# state (after reading picks 0..j-1 without labels), the pending mask of those
# picks, the selection logits given them, and the round's first logits (the
# sequential policy's ranking, which the top-k baseline keeps using).
RoundPick = collections.namedtuple(
    "RoundPick", ["j", "state", "pending", "logits", "first_logits"])


class ActiveMatchingNetwork(keras.Model):
    """Learns which item to label next, how to encode items, how to predict."""

    def __init__(self, config: ModelConfig, item_embeddings=None, item_biases=None, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        c = config
        # The prior-aware rating predictor (`layers/prior_predictor.py`).
        self.uses_prior = c.rating_predictor == "prior"
        if c.task == "classification" and c.encoder == "mlp":
            self.encoder = al_layers.FeatureEncoder(c.embed_dim, c.feature_size,
                                                    hidden=c.feature_hidden, name="encoder")
        elif c.task == "classification":
            self.encoder = al_layers.ConvEncoder(
                c.embed_dim, residual_blocks=c.encoder_residual_blocks, name="encoder")
        else:
            self.encoder = al_layers.EmbeddingEncoder(
                c.num_items, c.embed_dim, initial_embeddings=item_embeddings,
                table_dim=c.item_table_dim or c.embed_dim,
                train_table=c.train_item_table, name="encoder")
        self.context_encoder = al_layers.ContextEncoder(c.units, c.embed_dim, name="context")
        self.reader = al_layers.Reader(c.units, c.task, max_classes=c.max_classes,
                                       rating_center=0.5 * (c.rating_min + c.rating_max),
                                       rating_min=c.rating_min, rating_max=c.rating_max,
                                       read_residual=self.uses_prior,
                                       name="reader")
        self.controller = al_layers.Controller(c.units, name="controller")
        self.selector = al_layers.Selector(c.embed_dim, c.units,
                                           mass_temperatures=c.labelled_mass_temperatures,
                                           features=c.selector_features,
                                           name="selector")
        self.fast_predictor = al_layers.FastPredictor(c.embed_dim, c.units,
                                                    name="fast_predictor")
        self.slow_predictor = al_layers.SlowPredictor(
            c.units, c.embed_dim, c.units, steps=c.matching_steps,
            prior_slot=c.item_prior or self.uses_prior, name="slow_predictor")
        if self.uses_prior:
            self.fold_in = prior_predictor.PriorFoldIn(name="fold_in")
        self.value_head = al_layers.ValueHead(c.units, name="value")
        if c.task == "regression":
            # Not trainable: the prior only shows where no item is labelled, and
            # no rollout reward is computed before the first label, so its
            # gradient is only the float rounding of (1 - attention mass), ~1e-7,
            # which Adam would blow up into learning-rate-sized random steps.
            # It stays `config.rating_prior` (set it to the training mean).
            self.rating_prior = self.add_weight(
                name="rating_prior", shape=(),
                initializer=keras.initializers.Constant(c.rating_prior),
                trainable=False)
        if c.item_prior or self.uses_prior:
            # Learns from the slow prediction whenever the prior has weight.
            self.item_bias = self.add_weight(name="item_bias", shape=(c.num_items,),
                                             initializer="zeros")
            if item_biases is not None:
                item_biases = np.asarray(item_biases, np.float32)
                if item_biases.shape != (c.num_items,):
                    raise ValueError(f"item_biases has shape {item_biases.shape}; expected "
                                     f"({c.num_items},), one per item")
                self.item_bias.assign(item_biases)
        self.build_variables()

    # ------------------------------------------------------------------ setup
    def support_spec(self, pool=None):
        """TensorSpec of `support`/`queries` inputs for `[B, pool]` items."""
        if self.config.task == "classification":
            return tf.TensorSpec([None, pool, *self.config.item_shape], tf.float32)
        return tf.TensorSpec([None, pool], tf.int32)

    @property
    def label_dtype(self):
        return tf.int32 if self.config.task == "classification" else tf.float32

    def build_variables(self):
        """Creates every variable by running one tiny episode eagerly."""
        if self.config.task == "classification":
            support = tf.zeros([1, 3, *self.config.item_shape])
        else:
            support = tf.zeros([1, 3], tf.int32)
        labels = tf.zeros([1, 3], self.label_dtype)
        labeled = tf.constant([[True, False, False]])
        embeddings, state = self.begin(support)
        self.select(embeddings, state, labels, labeled)
        self.value(state)
        self.observe(embeddings, state, labels, labeled, tf.constant([1]),
                     tf.zeros([1], self.label_dtype))
        self.fast_predict(embeddings, state, labels, labeled)
        self.predict(embeddings, state, labels, labeled, support)
        self.built = True

    def call(self, inputs, training=False):
        """Keras entry point: begin + predict with everything labelled."""
        support, labels, queries = inputs
        embeddings, state = self.begin(support, training=training)
        labeled = tf.ones(tf.shape(labels), tf.bool)
        return self.predict(embeddings, state, labels, labeled, queries)

    # ------------------------------------------------------------ the steps
    def encode(self, items, training=False):
        """Context-free encoding x' of support or held-out items."""
        del training  # no dropout or batch statistics in these encoders
        return self.encoder(items)

    def begin(self, support, training=False, compiled=False):
        """Encodes the pool: (embeddings [B, P, D], initial control state s_0).

        Outside training, pools of more than `ENCODE_CHUNK` items are encoded
        chunk by chunk (the context encoder is a scan already), so memory
        stays bounded for any pool size.

        `compiled`: run the context encoder XLA-compiled (see `contextualise`).
        """
        if training:
            encoded = self.encode(support, training=True)
        else:
            encoded = self._encode_in_chunks(support)
        return self.contextualise(encoded, support, compiled=compiled)

    def _encode_in_chunks(self, items):
        """`encode` of `[B, P, ...]` items, `ENCODE_CHUNK` items at a time."""
        shape = tf.shape(items)
        count = shape[0] * shape[1]
        static = items.shape[0] is not None and items.shape[1] is not None
        if static and items.shape[0] * items.shape[1] <= ENCODE_CHUNK:
            return self.encode(items)

        def chunked():
            flat = tf.reshape(items, tf.concat([[count], shape[2:]], 0))
            chunks = (count + ENCODE_CHUNK - 1) // ENCODE_CHUNK
            pad = chunks * ENCODE_CHUNK - count
            padding = tf.concat([[[0, pad]], tf.zeros([tf.rank(items) - 2, 2], tf.int32)], 0)
            blocks = tf.reshape(tf.pad(flat, padding),
                                tf.concat([[chunks, 1, ENCODE_CHUNK], shape[2:]], 0))
            encoded = tf.map_fn(self.encode, blocks, parallel_iterations=1,
                                fn_output_signature=self.compute_dtype)   # [n, 1, C, D]
            encoded = tf.reshape(encoded, [chunks * ENCODE_CHUNK, -1])[:count]
            return tf.reshape(encoded, tf.concat([shape[:2], [-1]], 0))

        if static:
            return chunked()
        return tf.cond(count > ENCODE_CHUNK, chunked, lambda: self.encode(items))

    def contextualise(self, encoded, support, compiled=False):
        """`begin` from the context-free encoding x' `[B, P, embed_dim]` of `support`.

        The embeddings are x'' (3.2.1); with the prior-aware rating predictor
        each pool item's prior and latent vector follow (`item_priors`), since
        the later steps see the pool only through these embeddings.

        `compiled=True` runs the context encoder as an XLA-compiled function.
        The BiLSTM takes one sequential step per pool item, and each step is
        a few dozen tiny ops: XLA runs 100,000 items' steps about nine times
        faster on CPU (docs/performance.md). Its float rounding differs from
        the plain graph's, and TF Serving runs XLA only behind a flag, so it
        is an option (the `begin_compiled` signature of scalable models) and
        not the default. Each call builds a fresh function, so nothing
        compiled is attached to the model or saved with it: traced into a
        signature it compiles once per pool shape; called eagerly (an
        in-memory session) it compiles at each call, about a second.
        """
        if compiled:
            contextual, state = tf.function(self.context_encoder, jit_compile=True,
                                            autograph=False)(encoded)
        else:
            contextual, state = self.context_encoder(encoded)
        if not self.uses_prior:
            return contextual, state
        prior, vectors = self.item_priors(support)
        return tf.concat([contextual, prior[..., None], vectors], -1), state

    def features(self, embeddings):
        """The matching features x'' `[B, P, embed_dim]` of `begin`'s embeddings."""
        if not self.uses_prior:
            return embeddings
        return embeddings[..., :self.config.embed_dim]

    def item_side(self, embeddings):
        """(prior `[B, P]`, latent vectors `[B, P, T]`) carried by the embeddings."""
        d = self.config.embed_dim
        return embeddings[..., d], embeddings[..., d + 1:]

    def item_priors(self, items):
        """(prior beta + b `[B, N]`, latent vectors `[B, N, T]`) of item indices."""
        items = tf.cast(items, tf.int32)
        bias = tf.gather(tf.convert_to_tensor(self.item_bias), items)
        vectors = tf.gather(tf.convert_to_tensor(self.encoder.table), items)
        return tf.convert_to_tensor(self.rating_prior) + bias, vectors

    def similarities(self, embeddings):
        """Cosine matrix among pool items, computed once per episode (3.2.5)."""
        return cosine_matrix(self.features(embeddings))

    def mass_attention(self, cosine):
        """The labelled-mass features' attention `[B, P, K, P]` of the exact
        selector (`selector.mass_attention`): it does not depend on the labels,
        so a rollout computes it once per episode, as the cosine matrix; None
        for the scalable selector or without mass temperatures."""
        c = self.config
        if c.selector_features == "scalable" or not c.labelled_mass_temperatures:
            return None
        return selector_lib.mass_attention(cosine, c.labelled_mass_temperatures)

    def selection_index(self, embeddings):
        """The per-episode `SelectionIndex` of a scalable selector; None for the
        exact one (`config.selector_features`).

        What the scalable selector needs of the whole pool, computed once per
        episode in row blocks (O(P^2) work, bounded memory); pass it to
        `select`/`select_round` as `index=` so that each step costs
        O(P x labelled), as `cosine=` is passed to the exact path.
        """
        c = self.config
        if c.selector_features != "scalable":
            return None
        return selection_index_lib.selection_index(
            self.features(embeddings), c.labelled_mass_temperatures, neighbours=c.selector_neighbours,
            chunk=c.selection_chunk)

    def label_vectors(self, labels, labeled):
        """Labels as vectors to combine: one-hot classes or ratings [B, P, L]."""
        mask = tf.cast(labeled, tf.float32)[..., None]
        if self.config.task == "classification":
            return tf.one_hot(tf.cast(labels, tf.int32), self.config.max_classes) * mask
        return tf.cast(labels, tf.float32)[..., None] * mask

    def prior(self):
        """Prediction when nothing is labelled: uniform classes or a rating."""
        if self.config.task == "classification":
            c = self.config.max_classes
            return tf.fill([c], 1.0 / c)
        return tf.reshape(tf.convert_to_tensor(self.rating_prior), [1])

    def query_prior(self, queries):
        """The slow predictor's prior for held-out `queries`, `[B, Q, L]` or `[L]`.

        The model-wide `prior()`, or with `config.item_prior` each item's own:
        rating_prior + its learned bias.
        """
        if not self.config.item_prior:
            return self.prior()
        bias = tf.gather(tf.convert_to_tensor(self.item_bias), tf.cast(queries, tf.int32))
        return (tf.convert_to_tensor(self.rating_prior) + bias)[..., None]

    def _output(self, vectors):
        if self.config.task == "classification":
            return vectors
        return tf.squeeze(vectors, -1)

    def select(self, embeddings, state, labels, labeled, cosine=None, pending=None,
               index=None, mass_attention=None, similarities=None):
        """Selection logits [B, P]; labelled items get a logit of -1e9.

        `pending` [B, P] (optional): items already picked in this round of a
        batch query and not labelled yet. The selector counts them as covered,
        exactly as if they were labelled (its features read which items are
        labelled, never their labels): they take part in the max/mean/min
        cosine and labelled-mass features on the labelled side and get a
        logit of -1e9, so the next pick moves away from them. With no pending
        item this is the sequential selector, op for op.

        `cosine` (exact selector) or `index` (scalable selector,
        `selection_index`): the episode's precomputed similarities, computed
        here when not given; the other one is not read. `mass_attention`
        (exact selector, `mass_attention`): likewise, for the labelled masses.
        `similarities`: the selector's item-item features `[B, P, F]` when
        the caller keeps them up to date itself (`incremental_features`, the
        training rollout); then neither `cosine` nor `index` is read.
        """
        del labels  # selection sees which items are labelled, not the labels
        covered = labeled if pending is None else tf.logical_or(labeled, pending)
        if similarities is not None:
            return self.selector(self.features(embeddings), self.controller.hidden(state), None,
                                 covered, similarities=similarities)
        if self.config.selector_features == "scalable":
            if index is None:
                index = self.selection_index(embeddings)
            return self.selector(self.features(embeddings), self.controller.hidden(state),
                                 None, covered, index=index)
        if cosine is None:
            cosine = self.similarities(embeddings)
        return self.selector(self.features(embeddings), self.controller.hidden(state), cosine,
                             covered, attention=mass_attention)

    def read_pending(self, embeddings, state, index):
        """The control state after reading item `index` [B] without its label.

        Within a round of a batch query the controller sees each pick before
        the next one is made (a read with the zero "unknown" label vector,
        `Reader.read_unknown`). That state only serves the rest of the round's
        picks: once the labels arrive, `observe` reads them from the state the
        round started in, so the label-reading path is the sequential one.
        """
        item = tf.gather(self.features(embeddings), tf.cast(index, tf.int32), batch_dims=1)
        return self.controller(self.reader.read_unknown(item), state)

    def select_round(self, embeddings, state, labels, labeled, k, choose=None,
                     cosine=None, read_pending=True, record=None, record_keys=(),
                     first_logits=None, index=None, mass_attention=None):
        """Picks `k` items one after another, each conditioned on the earlier ones.

        Batch-mode querying (annotators label k items at a time). The paper
        (3.2.4) picks one item per label; taking the top k of one such
        distribution gives near-duplicates of a single unseen class. Here pick
        j sees picks 0..j-1 as pending: the selector counts them as covered
        (`select(..., pending=)`) and, with `read_pending`, the controller has
        read each of them without its label (`read_pending`). The loop is a
        `tf.while_loop`, so `k` may be a tensor (the serving signature's
        input) and nothing loops over items in Python.

        Args:
          k: picks per round, a Python int or an int32 scalar tensor; at most
            the number of unlabelled items of every episode.
          choose: `choose(pick) -> index [B] int32` for a `RoundPick`, never a
            labelled or pending item; default: greedy (argmax of the logits,
            which are -1e9 on covered items), what serving uses.
          record: optional `record(pick, index)` -> dict of float32 `[B]`
            tensors, with keys `record_keys`, stacked over picks (the rollout
            records log-probabilities there).
          first_logits: the sequential `select` logits of this state, when
            the caller has them already (serving).
          cosine, index, mass_attention: the episode's similarities, as for
            `select`.

        Returns:
          (indices `[B, k]` int32 in the order picked, logits of the first pick
          `[B, P]` (the sequential selection distribution), `{key: [B, k]}`).
        """
        # Not `index`: the loop body's name for a pick.
        pool_index = index
        if self.config.selector_features == "scalable":
            if pool_index is None:
                pool_index = self.selection_index(embeddings)
        elif cosine is None:
            cosine = self.similarities(embeddings)
        if choose is None:
            def choose(pick):
                return tf.argmax(pick.logits, axis=-1, output_type=tf.int32)
        pending = tf.zeros_like(labeled)
        first = (self.select(embeddings, state, labels, labeled, cosine=cosine,
                             index=pool_index, mass_attention=mass_attention)
                 if first_logits is None else first_logits)
        # A static bound where k is known (training): XLA needs one to
        # differentiate through the loop.
        bound = k if isinstance(k, int) else None
        k = tf.convert_to_tensor(k, tf.int32)
        picks = tf.TensorArray(tf.int32, size=k)
        arrays = {key: tf.TensorArray(tf.float32, size=k) for key in record_keys}

        def pick(j, state_j, pending, picks, arrays):
            # The first pick reuses `first`: with k = 1 the round is one call of
            # the sequential selector.
            logits = tf.cond(
                tf.equal(j, 0), lambda: first,
                lambda: self.select(embeddings, state_j, labels, labeled, cosine=cosine,
                                    pending=pending, index=pool_index,
                                    mass_attention=mass_attention))
            now = RoundPick(j, state_j, pending, logits, first)
            index = tf.cast(choose(now), tf.int32)
            if record is not None:
                values = record(now, index)
                arrays = {key: arrays[key].write(j, values[key]) for key in record_keys}
            picks = picks.write(j, index)
            if read_pending:
                # The last pick of a round is never read: no pick follows it
                # (and k = 1 costs what the sequential selector costs).
                state_j = tf.cond(j + 1 < k,
                                  lambda: self.read_pending(embeddings, state_j, index),
                                  lambda: state_j)
            pending = tf.logical_or(pending, tf.one_hot(
                index, tf.shape(labeled)[1], on_value=True, off_value=False))
            return j + 1, state_j, pending, picks, arrays

        _, _, _, picks, arrays = tf.while_loop(
            lambda j, *_: j < k, pick, (tf.constant(0), state, pending, picks, arrays),
            maximum_iterations=bound)
        stacked = {key: tf.transpose(a.stack(), [1, 0]) for key, a in arrays.items()}
        return tf.transpose(picks.stack(), [1, 0]), first, stacked

    def value(self, state):
        """Critic estimate V(s) [B]."""
        return self.value_head(self.controller.hidden(state))

    def observe(self, embeddings, state, labels, labeled, index, label):
        """Reads item `index` [B] with its `label` [B] and updates the state."""
        index = tf.cast(index, tf.int32)
        item = tf.gather(self.features(embeddings), index, batch_dims=1)
        if self.uses_prior:
            prior = tf.gather(self.item_side(embeddings)[0], index, batch_dims=1)
            read = self.reader(item, label, residual=tf.cast(label, tf.float32) - prior)
        else:
            read = self.reader(item, label)
        state = self.controller(read, state)
        chosen = tf.one_hot(index, tf.shape(labeled)[1], on_value=True, off_value=False)
        label = tf.cast(label, labels.dtype)
        labels = tf.where(chosen, label[:, None], labels)
        return state, labels, tf.logical_or(labeled, chosen)

    def fast_predict(self, embeddings, state, labels, labeled, cosine=None):
        """Predictions for every pool item from the labelled others [B, P, ...]."""
        if cosine is None:
            cosine = self.similarities(embeddings)
        control = self.controller.hidden(state)
        if not self.uses_prior:
            vectors, _ = self.fast_predictor(
                embeddings, control, cosine, labeled,
                self.label_vectors(labels, labeled), self.prior())
            return self._output(vectors)
        prior, vectors, weights, left = self._fold_in(embeddings, labels, labeled)
        correction, _ = self.fast_predictor(
            self.features(embeddings), control, cosine, labeled, left[..., None],
            tf.zeros([1]))
        return (prior + prior_predictor.fold_in_predict(weights, vectors)
                + self.fold_in.fast_gate * correction[..., 0])

    def _fold_in(self, embeddings, labels, labeled):
        """Prior-aware predictor: (pool priors, latent vectors, fold-in weights,
        what the fold-in leaves of each labelled residual, 0 elsewhere)."""
        prior, vectors = self.item_side(embeddings)
        residual = tf.where(labeled, tf.cast(labels, tf.float32) - prior, 0.0)
        weights = self.fold_in(vectors, residual, labeled)
        left = residual - prior_predictor.fold_in_predict(weights, vectors)
        return prior, vectors, weights, tf.where(labeled, left, 0.0)

    def fold_in_scores(self, embeddings, labels, labeled, support_labels, queries,
                       query_labels):
        """Prior-aware predictor: `[B, P]`, minus the queries' mean squared error
        of the fold-in prediction if each pool item were labelled next.

        The rating oracle's scores (`policies.rating_oracle_scores`) in closed
        form: the fold-in part of the prediction (all of it while the
        correction gates are 0), with no controller update or matching read
        per candidate.
        """
        prior, vectors = self.item_side(embeddings)
        residual = tf.where(labeled, tf.cast(labels, tf.float32) - prior, 0.0)
        query_prior, query_vectors = self.item_priors(queries)
        return -self.fold_in.candidate_errors(
            vectors, residual, labeled, tf.cast(support_labels, tf.float32) - prior,
            query_vectors, tf.cast(query_labels, tf.float32) - query_prior)

    def project_queries(self, query_embeddings):
        """The queries' share of the slow predictor's input projection, once
        for all the predictions of an episode (`predict_encoded`)."""
        return self.slow_predictor.project_queries(query_embeddings)

    def lookahead_scores(self, query_embeddings, queries, embeddings, state, labels, labeled,
                         support_labels, query_labels):
        """Paper predictor: `[B, P]`, minus the queries' mean squared error of
        the slow prediction if each pool item were labelled next, with the
        current state and matching read (`SlowPredictor.lookahead`): the
        rating oracle's closed form."""
        candidates = self.label_vectors(support_labels, tf.ones_like(labeled))
        vectors = self.slow_predictor.lookahead(
            query_embeddings, self.controller.hidden(state), embeddings, labeled,
            self.label_vectors(labels, labeled), self.query_prior(queries), candidates)
        error = tf.square(self._output(vectors) - tf.cast(query_labels, tf.float32)[:, None, :])
        return -tf.reduce_mean(error, -1)

    def predict(self, embeddings, state, labels, labeled, queries,
                return_attention=False, training=False):
        """Slow (Matching-Network) predictions for held-out `queries`."""
        predictions, attention = self.predict_encoded(
            self.encode(queries, training=training), queries, embeddings, state, labels,
            labeled)
        if return_attention:
            return predictions, attention
        return predictions

    def predict_encoded(self, query_embeddings, queries, embeddings, state, labels, labeled,
                        query_projection=None):
        """`predict` from the queries' encoding x' (the rollout encodes once):
        (predictions, the last matching attention `[B, Q, P]`).
        `query_projection`: `project_queries(query_embeddings)`, for a caller
        that predicts for the same queries after every step
        (`SlowPredictor.call`)."""
        control = self.controller.hidden(state)
        if not self.uses_prior:
            vectors, attention = self.slow_predictor(
                query_embeddings, control, embeddings, labeled,
                self.label_vectors(labels, labeled), self.query_prior(queries),
                query_projection=query_projection)
            return self._output(vectors), attention
        _, _, weights, left = self._fold_in(embeddings, labels, labeled)
        query_prior, query_vectors = self.item_priors(queries)
        correction, attention = self.slow_predictor(
            query_embeddings, control, self.features(embeddings), labeled, left[..., None],
            tf.zeros([1]), query_projection=query_projection)
        predictions = (query_prior + prior_predictor.fold_in_predict(weights, query_vectors)
                       + self.fold_in.slow_gate * correction[..., 0])
        return predictions, attention

    # --------------------------------------------------------------- rewards
    def log_likelihood(self, predictions, targets):
        """Per-item reward: log p(y) for classes, -(y_hat - y)^2 for ratings."""
        if self.config.task == "classification":
            c = self.config.max_classes
            p = tf.gather(predictions, tf.cast(targets, tf.int32), batch_dims=2)
            return tf.math.log((p + LOG_LIKELIHOOD_EPS) / (1.0 + c * LOG_LIKELIHOOD_EPS))
        return -tf.square(predictions - tf.cast(targets, tf.float32))
