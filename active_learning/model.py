"""The active Matching Network (paper 3.2, Figure 1, Algorithm 1).

`ActiveMatchingNetwork` ties the modules of `active_learning.layers` together.
Its methods are the steps of Algorithm 1 and mirror the serving contract, so
the training rollout, the evaluation code and the exported SavedModel all run
the same functions:

  begin(support)                                 -> embeddings, state
  select(embeddings, state, labels, labeled)     -> logits over the pool
  observe(embeddings, state, labels, labeled, index, label)
                                                 -> state, labels, labeled
  fast_predict(embeddings, state, labels, labeled) -> predictions for the pool
  predict(embeddings, state, labels, labeled, queries) -> predictions

Everything is batched over episodes: `embeddings [B, P, D]`, `state [B, 2U]`,
`labels [B, P]` (int32 classes, or float32 ratings), `labeled [B, P]` bool.
Labels of unlabelled items are ignored (the serving contract sends -1).
Predictions are class probabilities `[..., max_classes]` or ratings `[...]`.
"""

import keras
import numpy as np
import tensorflow as tf

from active_learning import layers as al_layers
from active_learning.config import ModelConfig
from active_learning.layers.masked import cosine_matrix

# Smoothing for log-likelihood rewards: a class that no labelled item carries
# has probability 0 under a convex combination of one-hot labels.
LOG_LIKELIHOOD_EPS = 1e-4


class ActiveMatchingNetwork(keras.Model):
    """Learns which item to label next, how to encode items, how to predict."""

    def __init__(self, config: ModelConfig, item_embeddings=None, item_biases=None, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        c = config
        if c.task == "classification" and c.encoder == "mlp":
            self.encoder = al_layers.FeatureEncoder(c.embed_dim, c.feature_size,
                                                    hidden=c.feature_hidden, name="encoder")
        elif c.task == "classification":
            self.encoder = al_layers.ConvEncoder(c.embed_dim, name="encoder")
        else:
            self.encoder = al_layers.EmbeddingEncoder(
                c.num_items, c.embed_dim, initial_embeddings=item_embeddings,
                table_dim=c.item_table_dim or c.embed_dim,
                train_table=c.train_item_table, name="encoder")
        self.context_encoder = al_layers.ContextEncoder(c.units, c.embed_dim, name="context")
        self.reader = al_layers.Reader(c.units, c.task, max_classes=c.max_classes,
                                       rating_center=0.5 * (c.rating_min + c.rating_max),
                                       rating_min=c.rating_min, rating_max=c.rating_max,
                                       name="reader")
        self.controller = al_layers.Controller(c.units, name="controller")
        self.selector = al_layers.Selector(c.embed_dim, c.units,
                                           mass_temperatures=c.labelled_mass_temperatures,
                                           name="selector")
        self.fast_predictor = al_layers.FastPredictor(c.embed_dim, c.units,
                                                    name="fast_predictor")
        self.slow_predictor = al_layers.SlowPredictor(
            c.units, c.embed_dim, c.units, steps=c.matching_steps,
            prior_slot=c.item_prior, name="slow_predictor")
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
        if c.item_prior:
            # Learns from the slow prediction whenever the prior slot has weight.
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

    def begin(self, support, training=False):
        """Encodes the pool: (x'' [B, P, D], initial control state s_0)."""
        return self.context_encoder(self.encode(support, training=training))

    @staticmethod
    def similarities(embeddings):
        """Cosine matrix among pool items, computed once per episode (3.2.5)."""
        return cosine_matrix(embeddings)

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

    def select(self, embeddings, state, labels, labeled, cosine=None):
        """Selection logits [B, P]; labelled items get a logit of -1e9."""
        del labels  # selection sees which items are labelled, not the labels
        if cosine is None:
            cosine = self.similarities(embeddings)
        return self.selector(embeddings, self.controller.hidden(state), cosine, labeled)

    def value(self, state):
        """Critic estimate V(s) [B]."""
        return self.value_head(self.controller.hidden(state))

    def observe(self, embeddings, state, labels, labeled, index, label):
        """Reads item `index` [B] with its `label` [B] and updates the state."""
        index = tf.cast(index, tf.int32)
        item = tf.gather(embeddings, index, batch_dims=1)
        state = self.controller(self.reader(item, label), state)
        chosen = tf.one_hot(index, tf.shape(labeled)[1], on_value=True, off_value=False)
        label = tf.cast(label, labels.dtype)
        labels = tf.where(chosen, label[:, None], labels)
        return state, labels, tf.logical_or(labeled, chosen)

    def fast_predict(self, embeddings, state, labels, labeled, cosine=None):
        """Predictions for every pool item from the labelled others [B, P, ...]."""
        if cosine is None:
            cosine = self.similarities(embeddings)
        vectors, _ = self.fast_predictor(
            embeddings, self.controller.hidden(state), cosine, labeled,
            self.label_vectors(labels, labeled), self.prior())
        return self._output(vectors)

    def predict(self, embeddings, state, labels, labeled, queries,
                return_attention=False, training=False):
        """Slow (Matching-Network) predictions for held-out `queries`."""
        query_embeddings = self.encode(queries, training=training)
        vectors, attention = self.slow_predictor(
            query_embeddings, self.controller.hidden(state), embeddings, labeled,
            self.label_vectors(labels, labeled), self.query_prior(queries))
        if return_attention:
            return self._output(vectors), attention
        return self._output(vectors)

    # --------------------------------------------------------------- rewards
    def log_likelihood(self, predictions, targets):
        """Per-item reward: log p(y) for classes, -(y_hat - y)^2 for ratings."""
        if self.config.task == "classification":
            c = self.config.max_classes
            p = tf.gather(predictions, tf.cast(targets, tf.int32), batch_dims=2)
            return tf.math.log((p + LOG_LIKELIHOOD_EPS) / (1.0 + c * LOG_LIKELIHOOD_EPS))
        return -tf.square(predictions - tf.cast(targets, tf.float32))
