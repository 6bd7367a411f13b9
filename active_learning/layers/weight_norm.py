"""Weight-normalised linear map (Salimans & Kingma, 2016).

Every linear map W in the paper is reparameterised as W = g * V / ||V|| (norm
per output unit) with a bias b, which decouples a unit's scale from its
direction and keeps the many small maps of the model well conditioned.
"""

import contextlib
import contextvars

import keras
import tensorflow as tf

# The `FixedKernels` in force, while `fixed_kernels` is active.
_FIXED = contextvars.ContextVar("weight_norm_fixed_kernels", default=None)


class FixedKernels:
    """Each built `WeightNormDense` of a model's kernel g * V / ||V||, computed
    now from the weights as they are, held in a non-trainable variable.

    `variables`: those variables, one per layer.
    """

    def __init__(self, model):
        self._layers = [layer for layer in model._flatten_layers(include_self=False,
                                                                 recursive=True)
                        if isinstance(layer, WeightNormDense) and layer.built]
        self.variables = [tf.Variable(layer.kernel(), trainable=False,
                                      name=f"{layer.name}_fixed_kernel")
                          for layer in self._layers]
        self._by_layer = {id(layer): v for layer, v in zip(self._layers, self.variables)}

    def get(self, layer):
        return self._by_layer.get(id(layer))

    def sources(self, variables):
        """The V and g each of `variables` (some of `self.variables`) came from."""
        wanted = {id(v) for v in variables}
        return [w for layer, v in zip(self._layers, self.variables) if id(v) in wanted
                for w in (layer.direction, layer.gain)]


@contextlib.contextmanager
def fixed_kernels(kernels):
    """Inside, `WeightNormDense.kernel()` reads its `FixedKernels` variable.

    For graphs traced from weights that no longer change (the serving
    signatures): g * V / ||V|| is then computed once, not at every call. At a
    pool of 100 items these few ops over the weights took ~0.1 ms of a label's
    ~1 ms step (docs/performance.md, "Small products").
    """
    token = _FIXED.set(kernels)
    try:
        yield
    finally:
        _FIXED.reset(token)


class WeightNormDense(keras.layers.Layer):
    """y = activation(x @ (g * V / ||V||_col) + b)."""

    def __init__(self, units, use_bias=True, activation=None,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.use_bias = use_bias
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        in_dim = int(input_shape[-1])
        self.direction = self.add_weight(
            name="direction", shape=(in_dim, self.units),
            initializer=self.kernel_initializer)
        self.gain = self.add_weight(name="gain", shape=(self.units,),
                                    initializer="ones")
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.units,),
                                        initializer="zeros")
        self.built = True

    def kernel(self):
        """The effective weight matrix g * V / ||V||."""
        kernels = _FIXED.get()
        fixed = None if kernels is None else kernels.get(self)
        if fixed is not None:
            return tf.convert_to_tensor(fixed)
        v = tf.convert_to_tensor(self.direction)
        norm = tf.sqrt(tf.reduce_sum(tf.square(v), axis=0) + 1e-12)
        return v * (tf.convert_to_tensor(self.gain) / norm)

    def call(self, inputs):
        return self.apply_kernel(inputs, self.kernel())

    def apply_kernel(self, inputs, kernel):
        """`call` with a precomputed `kernel()`.

        For loops that apply the same layer at every step (`scan_lstm`): the
        kernel is then computed, and differentiated, once rather than per step.
        """
        outputs = tf.tensordot(inputs, kernel, axes=[[-1], [0]])
        if self.use_bias:
            outputs = outputs + self.bias
        return self.activation(outputs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, use_bias=self.use_bias,
                      activation=keras.activations.serialize(self.activation))
        return config
