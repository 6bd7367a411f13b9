"""Prior-aware rating prediction (not in the paper; `rating_predictor="prior"`).

The paper's rating predictors (3.2.5, 3.2.6) are convex combinations of the
ratings observed so far: after one rating of 4.5 every prediction is 4.5, and
no number of ratings lets them say that one movie is liked more than another
by everyone. A cold-start recommender knows more than that before the first
rating: the global mean and each item's bias, from the latent-factor model
the paper already fits for the encoder (4.2.2, Koren 2010).

Here the prediction for item q starts from its prior p_q = beta + b_q, and
the user's residuals on the labelled items, e_j = y_j - p_j, move it:

  fold-in:     w = argmin_w sum_j (e_j - [v_j, 1] . w)^2
                            + lambda_v |w_v|^2 + lambda_0 w_0^2,
               f_q = [v_q, 1] . w
  correction:  c_q = sum_j a_qj (e_j - f_j), the matching (or fast)
               predictor's attention over what the fold-in leaves
  prediction:  p_q + f_q + g * c_q

v_j are the item table's latent vectors, so w is the new user's latent
vector and rating offset fitted to the ratings seen so far (the classic
"fold-in" of a new user); the penalties lambda and the gate g are learned
(the gate starts at 0), as are the table and the biases; the penalties stay
at what validation tuning of the ridge baseline chose (`INITIAL_L2`): the
latent factors were fitted to the training users' ratings, so on training
episodes the fold-in looks better than it is on new users, and penalties
learned there shrink towards overfitting. At initialisation,
with lambda_v = lambda_0 = l2, the prediction is exactly the ridge baseline
of `active_learning.baselines.RidgeRegression(l2)` around the movie-bias
prior, on whichever items the policy chose: training can only start from the
strongest classic cold-start predictor and learn what it lacks.
"""

import keras
import numpy as np
import tensorflow as tf

# Ridge penalty at initialisation: what validation tuning of the ridge
# baseline around the movie-bias prior chooses at every label count on
# ml-latest-small (docs/results.md, "Baselines only").
INITIAL_L2 = 3.0


def fold_in(vectors, residuals, labeled, l2_vector, l2_offset):
    """Ridge weights `[B, T + 1]` (user vector, then offset) per episode.

    Args:
      vectors: `[B, P, T]` latent vectors of the pool items.
      residuals: `[B, P]` rating minus prior (ignored where not labelled).
      labeled: `[B, P]` bool.
      l2_vector, l2_offset: positive penalties on the vector and the offset.

    The primal system is (T + 1) x (T + 1) whatever the pool size, so the
    cost grows linearly with the pool; the penalties keep it positive
    definite with no label at all (then w = 0 and the prediction is the
    prior).
    """
    mask = tf.cast(labeled, vectors.dtype)[..., None]
    factor, masked = _gram_factor(_features(vectors), mask, l2_vector, l2_offset)
    rhs = tf.linalg.matmul(masked, residuals[..., None] * mask, transpose_a=True)
    return tf.squeeze(tf.linalg.cholesky_solve(factor, rhs), -1)


def _features(vectors):
    return tf.concat([vectors, tf.ones_like(vectors[..., :1])], -1)


def _gram_factor(features, mask, l2_vector, l2_offset):
    width = tf.shape(features)[-1]
    penalty = tf.concat([tf.fill([width - 1], l2_vector), tf.reshape(l2_offset, [1])], 0)
    masked = features * mask
    gram = tf.linalg.matmul(masked, masked, transpose_a=True) + tf.linalg.diag(penalty)
    return tf.linalg.cholesky(gram), masked


def candidate_errors(vectors, residuals, labeled, l2_vector, l2_offset,
                     candidate_residuals, query_vectors, query_residuals):
    """`[B, P]`: the queries' mean squared fold-in error if item c were labelled next.

    The rating oracle's score for every candidate at once, exactly, without a
    solve per candidate: adding one row f_c to the ridge system changes the
    weights by G^-1 f_c (e_c - f_c . w) / (1 + f_c . G^-1 f_c)
    (Sherman-Morrison), so one Cholesky factor per episode serves the whole
    pool. `candidate_residuals` `[B, P]` are every pool item's rating minus
    prior (the oracle knows them); `query_vectors` `[B, Q, T]`,
    `query_residuals` `[B, Q]` the held-out items'.
    """
    mask = tf.cast(labeled, vectors.dtype)[..., None]
    features = _features(vectors)
    factor, masked = _gram_factor(features, mask, l2_vector, l2_offset)
    weights = tf.linalg.cholesky_solve(
        factor, tf.linalg.matmul(masked, residuals[..., None] * mask, transpose_a=True))
    spread = tf.linalg.cholesky_solve(factor, tf.linalg.matrix_transpose(features))  # [B,d,P]
    queries = _features(query_vectors)
    error = query_residuals - tf.squeeze(tf.linalg.matmul(queries, weights), -1)    # [B, Q]
    leverage = tf.reduce_sum(features * tf.linalg.matrix_transpose(spread), -1)     # [B, P]
    gain = (candidate_residuals - tf.squeeze(tf.linalg.matmul(features, weights), -1)) / (
        1.0 + leverage)
    change = tf.linalg.matmul(queries, spread) * gain[:, None, :]                    # [B,Q,P]
    return tf.reduce_mean(tf.square(error[..., None] - change), axis=1)


def fold_in_predict(weights, vectors):
    """`[B, Q]`: [v_q, 1] . w for `vectors [B, Q, T]`, `weights [B, T + 1]`."""
    return (tf.einsum("bqt,bt->bq", vectors, weights[:, :-1]) + weights[:, -1:])


class PriorFoldIn(keras.layers.Layer):
    """The learned penalties and correction gates of the prior-aware predictor."""

    def __init__(self, initial_l2=INITIAL_L2, **kwargs):
        super().__init__(**kwargs)
        if not initial_l2 > 0:
            raise ValueError(f"initial_l2 must be > 0, got {initial_l2}")
        self.initial_l2 = float(initial_l2)

    def build(self, input_shape=None):
        del input_shape
        log_l2 = keras.initializers.Constant(np.log(self.initial_l2))
        # Weights, not constants, so a checkpoint records them; fixed (see
        # the module docstring).
        self.log_l2_vector = self.add_weight(name="log_l2_vector", shape=(),
                                             initializer=log_l2, trainable=False)
        self.log_l2_offset = self.add_weight(name="log_l2_offset", shape=(),
                                             initializer=log_l2, trainable=False)
        # 0 at the start: the predictor is the ridge fold-in until the
        # attention correction has learned something worth adding.
        self.slow_gate = self.add_weight(name="slow_gate", shape=(), initializer="zeros")
        self.fast_gate = self.add_weight(name="fast_gate", shape=(), initializer="zeros")
        self.built = True

    def penalties(self):
        """(lambda_v, lambda_0), bounded away from 0 so the solve stays defined."""
        clip = lambda v: tf.exp(tf.clip_by_value(tf.convert_to_tensor(v), -5.0, 8.0))
        return clip(self.log_l2_vector), clip(self.log_l2_offset)

    def candidate_errors(self, vectors, residuals, labeled, candidate_residuals,
                         query_vectors, query_residuals):
        """`candidate_errors` with this layer's penalties."""
        l2_vector, l2_offset = self.penalties()
        return candidate_errors(vectors, residuals, labeled, l2_vector, l2_offset,
                                candidate_residuals, query_vectors, query_residuals)

    def call(self, vectors, residuals, labeled):
        """Fold-in weights `[B, T + 1]` (`fold_in` with the learned penalties)."""
        l2_vector, l2_offset = self.penalties()
        return fold_in(vectors, residuals, labeled, l2_vector, l2_offset)
