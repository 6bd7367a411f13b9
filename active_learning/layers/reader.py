"""Reading module (paper 3.2.2): r_t = W_r [x''_i; y_i] for the chosen item.

Labels enter as one-hot over `max_classes` (so a model trained on 5..20-way
tasks reads 20-way ones) or, for ratings, as the centred rating plus a learned
embedding of its level: the scale [rating_min, rating_max] cut into
`rating_levels` steps, so MovieLens's half stars 0.5..5 are levels 0..9 and a
1-10 scale uses the same ten levels (DESIGN.md). With `read_residual` (the
prior-aware rating predictor) the reader also reads the rating minus the
item's prior: how much this user departs from what the item usually gets.
"""

import keras
import tensorflow as tf

from active_learning.layers.weight_norm import WeightNormDense


class Reader(keras.layers.Layer):
    """Encodes the chosen item and its label into the controller's input."""

    def __init__(self, units, task, max_classes=20, rating_levels=10,
                 rating_embedding_dim=8, rating_center=None, rating_min=0.5,
                 rating_max=5.0, read_residual=False, **kwargs):
        super().__init__(**kwargs)
        if task not in ("classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
        self.units = int(units)
        self.task = task
        self.max_classes = int(max_classes)
        self.rating_levels = int(rating_levels)
        self.rating_min = float(rating_min)
        self.rating_max = float(rating_max)
        if not self.rating_max > self.rating_min:
            raise ValueError(f"rating_max {rating_max} must exceed rating_min {rating_min}")
        self.read_residual = bool(read_residual)
        if self.read_residual and task != "regression":
            raise ValueError("read_residual is for ratings (task='regression') only")
        self.rating_center = float(0.5 * (self.rating_min + self.rating_max)
                                   if rating_center is None else rating_center)
        if task == "regression":
            self.rating_embedding = keras.layers.Embedding(
                self.rating_levels, rating_embedding_dim, name="rating_embedding")
        self.project = WeightNormDense(self.units, name="project")

    def label_features(self, label):
        """Label `[...]` (int class or float rating) -> features `[..., L]`."""
        if self.task == "classification":
            return tf.one_hot(tf.cast(label, tf.int32), self.max_classes)
        rating = tf.cast(label, tf.float32)
        # [min, max] -> levels 0..L-1. On 0.5..5 with L=10 the step is exactly
        # 2.0, so this is round(2 * rating) - 1, the half-star level.
        step = (self.rating_levels - 1) / (self.rating_max - self.rating_min)
        level = tf.clip_by_value(
            tf.cast(tf.round((rating - self.rating_min) * step), tf.int32), 0,
            self.rating_levels - 1)
        return tf.concat([(rating - self.rating_center)[..., None],
                          self.rating_embedding(level)], axis=-1)

    def label_width(self):
        """L, the width of `label_features`."""
        if self.task == "classification":
            return self.max_classes
        return 1 + self.rating_embedding.output_dim + int(self.read_residual)

    def call(self, item_embedding, label, residual=None):
        """`residual` `[...]`: rating minus prior, required with `read_residual`."""
        features = self.label_features(label)
        if self.read_residual:
            if residual is None:
                raise ValueError("this reader reads the rating's residual: pass residual=")
            features = tf.concat([features, tf.cast(residual, features.dtype)[..., None]], -1)
        return self.project(tf.concat([item_embedding, features], axis=-1))

    def read_unknown(self, item_embedding):
        """r = W_r [x''_i; 0]: the item with its label not known yet.

        Batch querying reads an item picked earlier in the same round
        (pending) before a person labels it. A zero label vector is what a
        one-hot of class -1 already is; for ratings it is the centred rating 0
        and a zero level embedding. It needs no weights of its own, so models
        trained one label at a time load and run unchanged.
        """
        shape = tf.concat([tf.shape(item_embedding)[:-1], [self.label_width()]], 0)
        return self.project(tf.concat(
            [item_embedding, tf.zeros(shape, item_embedding.dtype)], axis=-1))
