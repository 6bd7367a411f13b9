"""Context-free and context-sensitive item encoders (paper 3.2.1).

- `ConvEncoder`: the Omniglot image encoder (5x5/64 s2, 5x5/64 s2, 3x3/64,
  leaky ReLU, 7x7x64 -> weight-normalised dense), optionally deeper by
  zero-initialised residual 3x3 blocks (not in the paper).
- `FeatureEncoder`: for items given as feature vectors (a user's own
  embeddings or tabular data; not in the paper): standardise with the
  training items' mean and scale, then an MLP.
- `EmbeddingEncoder`: the MovieLens movie encoder, a look-up table initialised
  from the latent-factor model (paper 4.2.2), then a linear map to the model
  width.
- `ContextEncoder`: a bidirectional LSTM over the whole pool; x'' = x' +
  W_e [h_fwd; h_bwd], and the final backward state seeds the controller.
"""

import keras
import numpy as np
import tensorflow as tf

from active_learning.layers.lstm import LayerNormLSTMCell, scan_lstm
from active_learning.layers.weight_norm import WeightNormDense


class ConvEncoder(keras.layers.Layer):
    """Maps images `[..., H, W, C]` (paper: 28x28x1) to embeddings `[..., embed_dim]`."""

    def __init__(self, embed_dim, filters=64, residual_blocks=0, **kwargs):
        super().__init__(**kwargs)
        self.embed_dim = int(embed_dim)
        self.residual_blocks = int(residual_blocks)
        act = keras.layers.LeakyReLU(negative_slope=0.2)
        # Named attributes, not a list: TensorFlow checkpoints track
        # attributes of Keras 3 layers but not the items of a Python list.
        self.conv1 = keras.layers.Conv2D(filters, 5, strides=2, padding="same", name="conv1")
        self.conv2 = keras.layers.Conv2D(filters, 5, strides=2, padding="same", name="conv2")
        self.conv3 = keras.layers.Conv2D(filters, 3, strides=1, padding="same", name="conv3")
        # x + act(conv(x)) with a zero kernel and bias is x: a deeper model
        # warm-started from a paper-encoder model starts as that model, and
        # the gradient w.r.t. the zero kernel (act'(0) x) is not zero.
        for i in range(self.residual_blocks):
            setattr(self, f"residual{i + 1}", keras.layers.Conv2D(
                filters, 3, strides=1, padding="same", kernel_initializer="zeros",
                name=f"residual{i + 1}"))
        self.activation = act
        self.flatten = keras.layers.Flatten()
        self.project = WeightNormDense(self.embed_dim, name="project")

    def build(self, input_shape):
        shape = (None,) + tuple(input_shape[-3:])
        for conv in (self.conv1, self.conv2, self.conv3):
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
        for block in self._residuals():
            block.build(shape)
        self.project.build((None, int(np.prod(shape[1:]))))
        self.built = True

    def call(self, images):
        lead = tf.shape(images)[:-3]
        x = tf.reshape(images, tf.concat([[-1], tf.shape(images)[-3:]], 0))
        for conv in (self.conv1, self.conv2, self.conv3):
            x = self.activation(conv(x))
        for block in self._residuals():
            x = x + self.activation(block(x))
        x = self.project(self.flatten(x))
        return tf.reshape(x, tf.concat([lead, [self.embed_dim]], 0))

    def _residuals(self):
        return [getattr(self, f"residual{i + 1}") for i in range(self.residual_blocks)]


class FeatureEncoder(keras.layers.Layer):
    """Maps feature vectors `[..., F]` to embeddings `[..., embed_dim]`.

    Features arrive on any scale, so the layer first standardises them with
    a mean and scale it keeps as (non-trainable) weights: the trainer sets
    them from the training items (`set_standardization`), and they travel
    with the checkpoint and the SavedModel, so a served model standardises
    exactly as in training.
    """

    def __init__(self, embed_dim, feature_size, hidden=(256,), **kwargs):
        super().__init__(**kwargs)
        self.embed_dim = int(embed_dim)
        self.feature_size = int(feature_size)
        self.activation = keras.layers.LeakyReLU(negative_slope=0.2)
        self.hidden = [int(u) for u in hidden]
        # Named attributes (see ConvEncoder): checkpoints track those.
        for i, units in enumerate(self.hidden):
            setattr(self, f"dense{i}", WeightNormDense(units, name=f"dense{i}"))
        self.project = WeightNormDense(self.embed_dim, name="project")

    def build(self, input_shape=None):
        self.mean = self.add_weight(name="feature_mean", shape=(self.feature_size,),
                                    initializer="zeros", trainable=False)
        self.scale = self.add_weight(name="feature_scale", shape=(self.feature_size,),
                                     initializer="ones", trainable=False)
        width = self.feature_size
        for i, units in enumerate(self.hidden):
            getattr(self, f"dense{i}").build((None, width))
            width = units
        self.project.build((None, width))
        self.built = True

    def set_standardization(self, features):
        """Sets the mean and scale from training features `[N, F]`."""
        features = np.asarray(features, np.float64).reshape(-1, self.feature_size)
        self.mean.assign(features.mean(0).astype(np.float32))
        # A constant feature keeps scale 1 rather than dividing by 0.
        std = features.std(0)
        self.scale.assign(np.where(std > 1e-8, std, 1.0).astype(np.float32))

    def call(self, features):
        x = (features - self.mean) / self.scale
        for i in range(len(self.hidden)):
            x = self.activation(getattr(self, f"dense{i}")(x))
        return self.project(x)


class EmbeddingEncoder(keras.layers.Layer):
    """Maps dense item indices `[...]` int to embeddings `[..., embed_dim]`."""

    def __init__(self, num_items, embed_dim, initial_embeddings=None,
                 table_dim=None, train_table=True, **kwargs):
        super().__init__(**kwargs)
        self.num_items = int(num_items)
        self.embed_dim = int(embed_dim)
        if initial_embeddings is not None:
            initial_embeddings = np.asarray(initial_embeddings, np.float32)
            if initial_embeddings.shape[0] != self.num_items:
                raise ValueError(
                    f"initial_embeddings has {initial_embeddings.shape[0]} rows "
                    f"but the vocabulary has {self.num_items} items")
            if table_dim is not None and int(table_dim) != initial_embeddings.shape[1]:
                # Else a model rebuilt from its config (no embeddings) would not
                # match its own checkpoint.
                raise ValueError(
                    f"initial_embeddings has width {initial_embeddings.shape[1]} but "
                    f"table_dim is {table_dim} (ModelConfig.item_table_dim)")
            table_dim = initial_embeddings.shape[1]
        self.table_dim = int(table_dim or embed_dim)
        self._initial = initial_embeddings
        self.train_table = bool(train_table)
        self.project = WeightNormDense(self.embed_dim, name="project")

    def build(self, input_shape=None):
        init = ("random_normal" if self._initial is None
                else keras.initializers.Constant(self._initial))
        self.table = self.add_weight(
            name="table", shape=(self.num_items, self.table_dim),
            initializer=init, trainable=self.train_table)
        self.project.build((None, self.table_dim))
        self._initial = None  # the checkpoint owns the values from here on
        self.built = True

    def call(self, items):
        return self.project(tf.gather(self.table, items))


class ContextEncoder(keras.layers.Layer):
    """Bidirectional LSTM context over the pool, in the order items are given.

    The paper runs the forward LSTM "following a random order"; the episode
    samplers shuffle the pool, so the given order is already random, and a
    served model gives the same answer for the same pool.

    Returns (x'' `[B, P, D]`, initial controller state `[B, 2 * units]`).
    """

    def __init__(self, units, embed_dim, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.embed_dim = int(embed_dim)
        self.forward_cell = LayerNormLSTMCell(self.units, name="forward")
        self.backward_cell = LayerNormLSTMCell(self.units, name="backward")
        self.mix = WeightNormDense(self.embed_dim, name="mix")

    def build(self, input_shape):
        d = int(input_shape[-1])
        self.forward_cell.build((None, d))
        self.backward_cell.build((None, d + self.units))
        self.mix.build((None, 2 * self.units))
        self.built = True

    def call(self, embeddings):
        batch = tf.shape(embeddings)[0]
        zero = self.forward_cell.zero_state(batch, embeddings.dtype)
        h_fwd, _ = scan_lstm(self.forward_cell, embeddings, zero)
        reverse_in = tf.reverse(tf.concat([embeddings, h_fwd], -1), axis=[1])
        h_bwd_rev, final_state = scan_lstm(self.backward_cell, reverse_in, zero)
        h_bwd = tf.reverse(h_bwd_rev, axis=[1])
        contextual = embeddings + self.mix(tf.concat([h_fwd, h_bwd], -1))
        return contextual, final_state
