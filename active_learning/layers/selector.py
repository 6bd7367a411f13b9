"""Selection module (paper 3.2.4): a distribution over unlabelled items.

d_i = [x''_i * (W_b s_t); six cosine features], the features being max, mean
and min cosine similarity of item i to the labelled items and to the other
unlabelled items (0 for an empty set). The logit is (sigmoid(W_g s_t) * d_i)
. w_p, and the softmax runs over unlabelled items only.
"""

import keras
import tensorflow as tf

from active_learning.layers.masked import NEG_INF, masked_max_mean_min
from active_learning.layers.weight_norm import WeightNormDense

NUM_SIMILARITY_FEATURES = 6


def similarity_features(cosine, labeled):
    """The six item-item features `[B, P, 6]` from cosine `[B, P, P]`."""
    pool = tf.shape(labeled)[-1]
    not_self = tf.logical_not(tf.eye(pool, dtype=tf.bool))
    to_labeled = tf.logical_and(labeled[:, None, :], not_self[None])
    to_unlabeled = tf.logical_and(tf.logical_not(labeled)[:, None, :], not_self[None])
    return tf.stack(masked_max_mean_min(cosine, to_labeled)
                    + masked_max_mean_min(cosine, to_unlabeled), axis=-1)


class Selector(keras.layers.Layer):
    """Returns masked selection logits `[B, P]` (NEG_INF on labelled items)."""

    def __init__(self, embed_dim, control_units, **kwargs):
        super().__init__(**kwargs)
        self.embed_dim = int(embed_dim)
        self.control_units = int(control_units)
        self.controller_map = WeightNormDense(self.embed_dim, name="controller_map")
        self.gate = WeightNormDense(self.embed_dim + NUM_SIMILARITY_FEATURES,
                                    activation="sigmoid", name="gate")
        self.score = WeightNormDense(1, use_bias=False, name="score")

    def build(self, input_shape):
        del input_shape  # the first input is the pool; sizes come from __init__
        self.controller_map.build((None, self.control_units))
        self.gate.build((None, self.control_units))
        self.score.build((None, self.embed_dim + NUM_SIMILARITY_FEATURES))
        self.built = True

    def call(self, embeddings, control, cosine, labeled):
        """embeddings [B,P,D], control [B,H], cosine [B,P,P], labeled [B,P]."""
        item_control = embeddings * self.controller_map(control)[:, None, :]
        features = tf.concat([item_control, similarity_features(cosine, labeled)], -1)
        gated = self.gate(control)[:, None, :] * features
        logits = tf.squeeze(self.score(gated), -1)
        return tf.where(labeled, tf.constant(NEG_INF, logits.dtype), logits)
