"""Fast and slow prediction modules (paper 3.2.5 and 3.2.6).

Both predict by attention over the labelled items: a convex combination of
their label vectors (one-hot classes, or ratings). When no item is labelled
yet the attention mass is 0 and the prediction falls back to a prior (uniform
over classes; a global rating), so predictions are always defined.
"""

import keras
import numpy as np
import tensorflow as tf

from active_learning.layers.lstm import LayerNormLSTMCell
from active_learning.layers.masked import NEG_INF, masked_softmax, unit_vectors
from active_learning.layers.weight_norm import WeightNormDense


def blend_with_prior(attention, label_vectors, prior):
    """sum_j a_j y_j + (1 - sum_j a_j) * prior, for attention `[B, N, P]`.

    The prior's weight is clipped at 0: attention that sums to 1 + 1e-7 by
    rounding would otherwise give classes no item carries a probability of
    about -1e-8, and log() of it is NaN.
    """
    mass = tf.reduce_sum(attention, -1, keepdims=True)
    return tf.linalg.matmul(attention, label_vectors) + tf.maximum(1.0 - mass, 0.0) * prior


def soft_clip(x, limit):
    """Smoothly bounds x to (-limit, limit); keeps gradients everywhere."""
    return limit * tf.tanh(x / limit)


class FastPredictor(keras.layers.Layer):
    """Predicts labels of pool items from their cosines to labelled items.

    gamma_i = exp(x''_i . W_gamma s_t) sharpens item i's softmax over the
    labelled items; the cosine matrix is the one computed once per episode.
    """

    def __init__(self, embed_dim, control_units, max_log_temperature=6.0, **kwargs):
        super().__init__(**kwargs)
        self.embed_dim = int(embed_dim)
        self.control_units = int(control_units)
        self.max_log_temperature = max_log_temperature
        self.temperature_map = WeightNormDense(self.embed_dim, name="temperature_map")

    def build(self, input_shape):
        del input_shape  # the first input is the pool; sizes come from __init__
        self.temperature_map.build((None, self.control_units))
        self.built = True

    def call(self, embeddings, control, cosine, labeled, label_vectors, prior):
        """Returns (predictions [B, P, L], attention [B, P, P])."""
        log_gamma = tf.einsum("bpd,bd->bp", embeddings, self.temperature_map(control))
        gamma = tf.exp(soft_clip(log_gamma, self.max_log_temperature))
        not_self = tf.logical_not(tf.eye(tf.shape(labeled)[-1], dtype=tf.bool))
        mask = tf.logical_and(labeled[:, None, :], not_self[None])
        attention = masked_softmax(gamma[:, :, None] * cosine, mask)
        return blend_with_prior(attention, label_vectors, prior), attention


class SlowPredictor(keras.layers.Layer):
    """Matching-Network read of the labelled items for held-out queries.

    K steps of m_k = LSTM(m_{k-1}, [x~_{k-1}; x^'; s_t]), x^'' = x^' + W_m m_k,
    a_k = softmax over labelled items of tau * cos(x^'', x''_j), x~_k = a_k X''.
    The label attention of the last step is the prediction. tau is a learned
    scale (cosines alone are too flat for a sharp softmax).

    With `prior_slot`, every softmax has one more entry, the prior, whose
    logit is read from the matching state (W_0 m_k + b): the prediction is
    then sum_j a_j y_j + a_0 * prior, so it can lean on the prior for as
    long as the labelled items say little about the query.
    """

    def __init__(self, units, embed_dim, control_units, steps=3, initial_temperature=10.0,
                 prior_slot=False, **kwargs):
        super().__init__(**kwargs)
        if steps < 1:
            raise ValueError(f"matching steps must be >= 1, got {steps}")
        self.units = int(units)
        self.embed_dim = int(embed_dim)
        self.control_units = int(control_units)
        self.steps = int(steps)
        self.prior_slot = bool(prior_slot)
        if self.prior_slot:
            self.prior_logit = WeightNormDense(1, name="prior_logit")
        self.initial_temperature = float(initial_temperature)
        self.cell = LayerNormLSTMCell(self.units, name="matching_lstm")
        self.match_map = WeightNormDense(self.embed_dim, name="match_map")

    def build(self, input_shape):
        del input_shape  # the first input is the queries; sizes come from __init__
        self.cell.build((None, 2 * self.embed_dim + self.control_units))
        self.match_map.build((None, self.units))
        if self.prior_slot:
            self.prior_logit.build((None, self.units))
        self.log_temperature = self.add_weight(
            name="log_temperature", shape=(),
            initializer=keras.initializers.Constant(np.log(self.initial_temperature)))
        self.built = True

    def call(self, queries, control, support, labeled, label_vectors, prior,
             query_projection=None):
        """queries [B,Q,D], control [B,H], support [B,P,D] -> (pred, attention).

        `query_projection`: `project_queries(queries)`, from a caller that
        predicts for the same queries many times (training predicts after
        every step of an episode). The matching LSTM's input projection is
        then split by input: the queries' and the control's shares once, the
        read's per matching step, and the first step starts from the zero
        state without its hidden projection. The same function with about
        half the multiply-adds, rounded differently; without it the
        projection is the recorded one, so evaluation stays bit-identical.
        """
        attention, _, _ = self._match(queries, control, support, labeled, query_projection)
        return blend_with_prior(attention, label_vectors, prior), attention

    def project_queries(self, queries):
        """`[B, Q, 4 units]`: W_x' x', the queries' share of the matching
        LSTM's input projection, the same at every matching step."""
        if not self.built:
            self.build(None)
        kernel = self.cell.input_map.kernel()[self.embed_dim:2 * self.embed_dim]
        return tf.tensordot(queries, kernel, axes=[[-1], [0]])

    def _match(self, queries, control, support, labeled, query_projection=None):
        """The K matching steps: (last attention `[B, Q, P]`, last logits to
        every pool item `[B, Q, P]`, unmasked, and the log of the last
        softmax's normaliser `[B, Q, 1]` over the labelled items and the prior
        slot)."""
        state = tf.zeros(tf.concat([tf.shape(queries)[:2], [2 * self.units]], 0),
                         queries.dtype)
        read = tf.zeros_like(queries)
        if query_projection is None:
            # Broadcasting, not tf.tile: the gradient then needs no shape value
            # carried through the rollout loop, which XLA cannot compile.
            control_q = control[:, None, :] + tf.zeros_like(queries[..., :1])
        else:
            kernel = self.cell.input_map.kernel()
            read_kernel = kernel[:self.embed_dim]
            shared = query_projection + tf.linalg.matmul(
                control, kernel[2 * self.embed_dim:])[:, None, :]
            hidden_kernel = self.cell.hidden_map.kernel()
        mask = tf.broadcast_to(labeled[:, None, :],
                               tf.concat([tf.shape(queries)[:2], tf.shape(labeled)[1:]], 0))
        temperature = tf.exp(tf.convert_to_tensor(self.log_temperature))
        support_unit = unit_vectors(support)
        attention = logits = masked = None
        for k in range(self.steps):  # K is a small constant (3): unrolled
            if query_projection is None:
                hidden, state = self.cell(tf.concat([read, queries, control_q], -1), state)
            elif k == 0:
                hidden, state = self.cell.first_step(self.cell.input_norm(shared))
            else:
                projected = shared + tf.tensordot(read, read_kernel, axes=[[-1], [0]])
                hidden, state = self.cell.step(self.cell.input_norm(projected), state,
                                               hidden_kernel)
            matched = queries + self.match_map(hidden)
            logits = temperature * tf.linalg.matmul(unit_vectors(matched), support_unit,
                                                    transpose_b=True)
            masked = tf.where(mask, logits, NEG_INF)
            if self.prior_slot:
                # Softmax over [items; prior]: the items' weights sum to
                # 1 - a_0, which blend_with_prior gives to the prior.
                masked = tf.concat([masked, self.prior_logit(hidden)], -1)
                attention = tf.nn.softmax(masked, -1)[..., :-1]
            else:
                attention = masked_softmax(logits, mask)
            read = tf.linalg.matmul(attention, support)
        return attention, logits, tf.reduce_logsumexp(masked, -1, keepdims=True)

    def lookahead(self, queries, control, support, labeled, label_vectors, prior,
                  candidate_vectors):
        """`[B, P, Q, L]`: the prediction for each query if pool item p were
        labelled next with label vector `candidate_vectors[:, p]`, in closed form.

        The matching read of the current labelled set is kept and the
        candidate joins only its last softmax: with l the candidate's logit
        and Z the softmax's normaliser, the prediction becomes
        (1 - s) * prediction + s * y_p with s = sigmoid(l - Z). This leaves out
        how the candidate would change the control state and the earlier
        matching steps, and costs O(B Q P) instead of a controller update and a
        slow prediction per candidate.
        """
        if not self.built:
            self.build(None)
        attention, logits, log_normaliser = self._match(queries, control, support, labeled)
        current = blend_with_prior(attention, label_vectors, prior)           # [B, Q, L]
        share = tf.sigmoid(logits - log_normaliser)                           # [B, Q, P]
        share = tf.transpose(share, [0, 2, 1])[..., None]                     # [B, P, Q, 1]
        return (1.0 - share) * current[:, None] + share * candidate_vectors[:, :, None, :]
