"""One Keras layer per module of the active Matching Network (paper 3.2)."""

from active_learning.layers.controller import Controller
from active_learning.layers.encoders import (ContextEncoder, ConvEncoder, EmbeddingEncoder,
                                             FeatureEncoder)
from active_learning.layers.lstm import LayerNormLSTMCell
from active_learning.layers.predictors import FastPredictor, SlowPredictor
from active_learning.layers.value import ValueHead
from active_learning.layers.reader import Reader
from active_learning.layers.selector import Selector
from active_learning.layers.weight_norm import WeightNormDense

__all__ = [
    "ContextEncoder", "Controller", "ConvEncoder", "EmbeddingEncoder",
    "FastPredictor", "FeatureEncoder", "LayerNormLSTMCell", "Reader", "Selector", "SlowPredictor",
    "ValueHead", "WeightNormDense",
]
