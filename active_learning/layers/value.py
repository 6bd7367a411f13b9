"""Value head: the critic V(s_t) that generalised advantage estimation needs.

The paper trains with GAE (Schulman et al., 2016b), an actor-critic method, so
the model carries a small critic on the controller state.
"""

import keras
import tensorflow as tf

from active_learning.layers.weight_norm import WeightNormDense


class ValueHead(keras.layers.Layer):
    """Critic V(s_t) for generalised advantage estimation."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.hidden = WeightNormDense(units, activation="tanh", name="hidden")
        self.out = WeightNormDense(1, name="out")

    def build(self, input_shape):
        self.hidden.build(input_shape)
        self.out.build((None, self.hidden.units))
        self.built = True

    def call(self, control):
        return tf.squeeze(self.out(self.hidden(control)), -1)
