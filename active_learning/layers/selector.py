"""Selection module (paper 3.2.4): a distribution over unlabelled items.

d_i = [x''_i * (W_b s_t); six cosine features; labelled-mass features], the
cosine features being max, mean and min cosine similarity of item i to the
labelled items and to the other unlabelled items (0 for an empty set). The
logit is (sigmoid(W_g s_t) * d_i) . w_p, and the softmax runs over unlabelled
items only.

The optional labelled-mass features (not in the paper) are, for each
temperature tau, the share of item i's softmax attention over the other pool
items, softmax_j(cos_ij / tau), that falls on labelled items. Min-max-cos
looks at absolute similarities, so an odd drawing of a class already labelled
can look "new"; its attention still goes mostly to its own class, one of
which is labelled, while the drawings of a class with no label attend to each
other. On held-out Omniglot alphabets this one number finds all 5 classes in
5 picks far more often than min-max-cos on the same embeddings (see
docs/results.md). Besides entering d_i, each labelled mass adds to the logit
through a learned weight of its own, started at MASS_LOGIT_INIT: through
the gated product alone (a unit-gain weight-normed projection over 70-odd
features) the policy learned to use it only weakly.

Two ways to compute the item-item features (`ModelConfig.selector_features`):
"exact", from the pool's full cosine matrix at every step (the reference),
and "scalable", from a per-episode `selection_index.SelectionIndex` in
O(P x L) per step for L labelled items (see `layers/selection_index.py` for
what it computes exactly and what it approximates).
"""

import keras
import tensorflow as tf

from active_learning.config import SELECTOR_FEATURES
from active_learning.layers.masked import NEG_INF, masked_max_mean_min
from active_learning.layers.selection_index import plain_matmul, scalable_similarity_features
from active_learning.layers.weight_norm import WeightNormDense

NUM_SIMILARITY_FEATURES = 6

# Initial weight of each labelled-mass feature's direct logit term: a fresh
# model already prefers items whose attention avoids the labelled ones.
MASS_LOGIT_INIT = -15.0


def mass_attention(cosine, temperatures):
    """`[B, P, K, P]`: each item's attention over the other pool items,
    softmax_j(cosine_ij / t), for each of the K temperatures t. It does not
    depend on which items are labelled, so a rollout computes it once per
    episode and `labelled_masses` only sums it over the labelled items."""
    pool = tf.shape(cosine)[-1]
    inverse = tf.constant([1.0 / t for t in temperatures], cosine.dtype)
    self_pairs = tf.eye(pool, dtype=tf.bool)[None, :, None, :]
    logits = tf.where(self_pairs, tf.constant(NEG_INF, cosine.dtype),
                      cosine[:, :, None, :] * inverse[:, None])          # [B, P, K, P]
    return tf.nn.softmax(logits, axis=-1)


def labelled_masses(cosine, labeled, temperatures, attention=None):
    """`[B, P, K]`: for each of the K temperatures t, the share of each item's
    attention over the other pool items, softmax_j(cosine_ij / t), that falls
    on labelled items j. One softmax for all temperatures (fewer ops on the
    serving path); `attention`: `mass_attention(cosine, temperatures)`, when
    the caller has it already."""
    if attention is None:
        attention = mass_attention(cosine, temperatures)
    return tf.reduce_sum(attention * tf.cast(labeled, attention.dtype)[:, None, None, :], -1)


def labelled_mass(cosine, labeled, temperature):
    """`[B, P]`: `labelled_masses` at one temperature."""
    return labelled_masses(cosine, labeled, (temperature,))[..., 0]


def similarity_features(cosine, labeled, mass_temperatures=(), attention=None):
    """The item-item features `[B, P, 6 + len(mass_temperatures)]` from cosine
    `[B, P, P]`: six max/mean/min cosines, then one labelled mass per
    temperature (from `attention`, `mass_attention`'s, when given)."""
    pool = tf.shape(labeled)[-1]
    not_self = tf.logical_not(tf.eye(pool, dtype=tf.bool))
    to_labeled = tf.logical_and(labeled[:, None, :], not_self[None])
    to_unlabeled = tf.logical_and(tf.logical_not(labeled)[:, None, :], not_self[None])
    cosines = tf.stack(masked_max_mean_min(cosine, to_labeled)
                       + masked_max_mean_min(cosine, to_unlabeled), axis=-1)
    if not mass_temperatures:
        return cosines
    return tf.concat([cosines, labelled_masses(cosine, labeled, mass_temperatures, attention)],
                     -1)


class Selector(keras.layers.Layer):
    """Returns masked selection logits `[B, P]` (NEG_INF on labelled items)."""

    def __init__(self, embed_dim, control_units, mass_temperatures=(), features="exact",
                 **kwargs):
        super().__init__(**kwargs)
        if features not in SELECTOR_FEATURES:
            raise ValueError(f"features must be one of {SELECTOR_FEATURES}, got {features!r}")
        self.features = features
        self.embed_dim = int(embed_dim)
        self.control_units = int(control_units)
        self.mass_temperatures = tuple(float(t) for t in mass_temperatures)
        self.num_features = NUM_SIMILARITY_FEATURES + len(self.mass_temperatures)
        self.controller_map = WeightNormDense(self.embed_dim, name="controller_map")
        self.gate = WeightNormDense(self.embed_dim + self.num_features,
                                    activation="sigmoid", name="gate")
        self.score = WeightNormDense(1, use_bias=False, name="score")

    def build(self, input_shape):
        del input_shape  # the first input is the pool; sizes come from __init__
        self.controller_map.build((None, self.control_units))
        self.gate.build((None, self.control_units))
        self.score.build((None, self.embed_dim + self.num_features))
        if self.mass_temperatures:
            self.mass_logit_weights = self.add_weight(
                name="mass_logit_weights", shape=(len(self.mass_temperatures),),
                initializer=keras.initializers.Constant(MASS_LOGIT_INIT))
        self.built = True

    def _folded_logits(self, embeddings, control, similarities):
        """The logits of `call`, with the per-episode weights folded first.

        (g * [e_i * c, d_i]) . w + d_i^mass . m = e_i . (c * g_e * w_e) +
        d_i . (g_d * w_d + [0, m]): two `[B, P, .] x [B, ., 1]` products
        (`plain_matmul`) instead of four passes over `[B, P, D + F]`
        (product, concat, gate, score): at 100,000 items each pass over the
        pool costs ~2 ms. The scalable selector's form only: the exact path
        keeps the rounding its recorded numbers were made with.
        """
        gated_weights = self.gate(control) * self.score.kernel()[:, 0]             # [B, D + F]
        item_weights = self.controller_map(control) * gated_weights[:, :self.embed_dim]
        feature_weights = gated_weights[:, self.embed_dim:]                        # [B, F]
        if self.mass_temperatures:
            feature_weights += tf.pad(tf.cast(self.mass_logit_weights, feature_weights.dtype),
                                      [[NUM_SIMILARITY_FEATURES, 0]])
        return (plain_matmul(embeddings, item_weights[..., None])
                + plain_matmul(similarities, feature_weights[..., None]))[..., 0]

    def call(self, embeddings, control, cosine, labeled, index=None, attention=None,
             similarities=None):
        """embeddings [B,P,D], control [B,H], cosine [B,P,P], labeled [B,P].

        With `features="scalable"`, `index` is the episode's `SelectionIndex`
        and `cosine` is not read (None is fine). `attention`: the episode's
        `mass_attention` (exact features), when the caller computed it once.
        `similarities`: the item-item features `[B, P, num_features]`, when
        the caller has them (`incremental_features`); then neither `cosine`
        nor `index` is read.
        """
        if similarities is None and self.features == "scalable":
            if index is None:
                raise ValueError("a scalable selector needs the episode's selection index "
                                 "(`index=`, from `selection_index.selection_index`)")
            similarities = scalable_similarity_features(embeddings, index, labeled,
                                                        self.mass_temperatures)
        elif similarities is None:
            similarities = similarity_features(cosine, labeled, self.mass_temperatures,
                                               attention)
        if self.features == "scalable":
            logits = self._folded_logits(embeddings, control, similarities)
        else:
            item_control = embeddings * self.controller_map(control)[:, None, :]
            features = tf.concat([item_control, similarities], -1)
            gated = self.gate(control)[:, None, :] * features
            logits = tf.squeeze(self.score(gated), -1)
            if self.mass_temperatures:
                masses = similarities[..., NUM_SIMILARITY_FEATURES:]
                logits += tf.linalg.matvec(masses, tf.cast(self.mass_logit_weights,
                                                           masses.dtype))
        return tf.where(labeled, tf.constant(NEG_INF, logits.dtype), logits)
