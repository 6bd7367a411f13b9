"""Controller (paper 3.2.3): a layer-normalised LSTM, s_t = LSTM(s_{t-1}, r_t).

Its state is one tensor [h; c] of width 2 * units; `hidden(state)` is the h
half that the selection, prediction and value modules condition on.
"""

import keras
import tensorflow as tf

from active_learning.layers.lstm import LayerNormLSTMCell


class Controller(keras.layers.Layer):
    """Updates the control state from the read vector of the newest label."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.cell = LayerNormLSTMCell(self.units, name="cell")

    def build(self, input_shape):
        self.cell.build(input_shape)
        self.built = True

    def hidden(self, state):
        return state[..., :self.units]

    def call(self, read, state):
        _, new_state = self.cell(read, state)
        return new_state
