"""Layer-normalised LSTM cell (Ba et al., 2016) and a scan over sequences.

The paper uses layer normalisation in both of its controller LSTMs (the
active-learning controller and the matching LSTM of the slow predictor). The
cell keeps its state as one tensor `[batch, 2 * units]` = [h; c] so that the
state can cross the serving boundary as a single flat input.
"""

import keras
import tensorflow as tf

from active_learning.layers.weight_norm import WeightNormDense


class LayerNormLSTMCell(keras.layers.Layer):
    """One LSTM step with layer norm on the gate pre-activations and the cell."""

    def __init__(self, units, forget_bias=1.0, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.forget_bias = forget_bias
        self.input_map = WeightNormDense(4 * self.units, use_bias=False,
                                         name="input_map")
        self.hidden_map = WeightNormDense(4 * self.units, use_bias=False,
                                          name="hidden_map")
        self.input_norm = keras.layers.LayerNormalization(name="input_norm")
        self.hidden_norm = keras.layers.LayerNormalization(name="hidden_norm")
        self.cell_norm = keras.layers.LayerNormalization(name="cell_norm")

    @property
    def state_size(self):
        return 2 * self.units

    def build(self, input_shape):
        self.input_map.build(input_shape)
        self.hidden_map.build((None, self.units))
        self.input_norm.build((None, 4 * self.units))
        self.hidden_norm.build((None, 4 * self.units))
        self.cell_norm.build((None, self.units))
        self.bias = self.add_weight(name="bias", shape=(4 * self.units,),
                                    initializer="zeros")
        self.built = True

    def zero_state(self, batch_size, dtype=tf.float32):
        return tf.zeros([batch_size, 2 * self.units], dtype)

    def call(self, inputs, state):
        """Returns (h, new_state) for inputs `[..., in]`, state `[..., 2u]`."""
        return self.step(self.project_inputs(inputs), state)

    def project_inputs(self, inputs):
        """LN(W_x x): the half of the gate pre-activations that ignores the state.

        `scan_lstm` computes it for a whole sequence at once, outside its loop.
        """
        return self.input_norm(self.input_map(inputs))

    def first_step(self, projected_inputs):
        """`step` from the zero state, without the hidden projection of zeros:
        returns (h, new_state)."""
        # LN of the zero projection is its offset; one row broadcasts.
        zero = self.hidden_norm(tf.zeros([1, 4 * self.units], projected_inputs.dtype))
        gates = projected_inputs + zero + self.bias
        i, _, g, o = tf.split(gates, 4, axis=-1)
        c = tf.sigmoid(i) * tf.tanh(g)
        h = tf.sigmoid(o) * tf.tanh(self.cell_norm(c))
        return h, tf.concat([h, c], axis=-1)

    def step(self, projected_inputs, state, hidden_kernel=None):
        """`call` from `project_inputs(inputs)`; returns (h, new_state).

        `hidden_kernel`: `self.hidden_map.kernel()`, when a loop computes it
        once for all its steps.
        """
        h, c = tf.split(state, 2, axis=-1)
        if hidden_kernel is None:
            hidden = self.hidden_map(h)
        else:
            hidden = self.hidden_map.apply_kernel(h, hidden_kernel)
        gates = projected_inputs + self.hidden_norm(hidden) + self.bias
        i, f, g, o = tf.split(gates, 4, axis=-1)
        c = tf.sigmoid(f + self.forget_bias) * c + tf.sigmoid(i) * tf.tanh(g)
        h = tf.sigmoid(o) * tf.tanh(self.cell_norm(c))
        return h, tf.concat([h, c], axis=-1)


def scan_lstm(cell, inputs, initial_state):
    """Runs `cell` over `inputs [B, T, F]`; returns (outputs [B, T, u], state).

    A `tf.scan` keeps the graph size independent of the sequence length (the
    pool can hold a thousand items at serving time). What does not depend on
    the state is computed outside the loop: the input half of the gates, as
    one matmul and one layer norm over the whole sequence, and the
    weight-normalised hidden kernel. Per-step work (and its gradient) is then
    only the recurrent part, which roughly halves the cost of the context
    encoder (docs/performance.md).
    """
    if not cell.built:
        cell.build((None, inputs.shape[-1]))
    time_major = tf.transpose(inputs, [1, 0, 2])
    projected = cell.project_inputs(time_major)
    hidden_kernel = cell.hidden_map.kernel()

    def step(carry, projected_t):
        _, state = carry
        return cell.step(projected_t, state, hidden_kernel)

    init_h = initial_state[:, :cell.units]
    hs, states = tf.scan(step, projected, initializer=(init_h, initial_state))
    return tf.transpose(hs, [1, 0, 2]), states[-1]
