"""Masked reductions and cosine similarities shared by the paper's modules.

Sets in the paper (labelled items, unlabelled items) become boolean masks over
a fixed-size pool, so every episode in a batch has the same shape. Reductions
over an empty set return 0 (never NaN), as DESIGN.md decides.
"""

import tensorflow as tf

# A finite stand-in for -inf: exp() of it is exactly 0 in float32, and unlike
# -inf it never turns an all-masked row into NaN.
NEG_INF = -1e9


def unit_vectors(x, eps=1e-8):
    """Rows of `x` scaled to unit length (`eps` keeps a zero row finite)."""
    return x * tf.math.rsqrt(tf.reduce_sum(tf.square(x), -1, keepdims=True) + eps)


def cosine_matrix(a, b=None, eps=1e-8):
    """Cosine similarities `[..., Na, Nb]` between rows of `a` and of `b`."""
    a_n = unit_vectors(a, eps)
    b_n = a_n if b is None else unit_vectors(b, eps)
    return tf.linalg.matmul(a_n, b_n, transpose_b=True)


def masked_softmax(logits, mask, axis=-1):
    """Softmax over the entries where `mask` is True; all-zero where none are.

    Returns weights that sum to 1 over the valid entries of each row, or to 0
    for a row without valid entries (callers blend in a prior for those).
    """
    mask = tf.cast(mask, logits.dtype)
    shifted = logits + (1.0 - mask) * NEG_INF
    shifted = shifted - tf.stop_gradient(tf.reduce_max(shifted, axis, keepdims=True))
    weights = tf.exp(shifted) * mask
    total = tf.reduce_sum(weights, axis, keepdims=True)
    # A row with a valid entry has total >= 1 (its max contributes exp(0));
    # a row without one divides 0 by 1. Not maximum(total, tiny): the
    # gradient's weights / total^2 underflows to 0 / 0 = NaN once XLA fuses
    # the division.
    return weights / tf.where(total > 0, total, tf.ones_like(total))


def masked_max_mean_min(values, mask, axis=-1):
    """Max, mean and min of `values` over valid entries; 0 when there are none."""
    mask_f = tf.cast(mask, values.dtype)
    count = tf.reduce_sum(mask_f, axis)
    any_valid = count > 0
    big = tf.constant(1e9, values.dtype)
    v_max = tf.reduce_max(tf.where(mask, values, -big), axis)
    v_min = tf.reduce_min(tf.where(mask, values, big), axis)
    v_mean = tf.reduce_sum(values * mask_f, axis) / tf.maximum(count, 1.0)
    zero = tf.zeros_like(v_mean)
    return (tf.where(any_valid, v_max, zero), tf.where(any_valid, v_mean, zero),
            tf.where(any_valid, v_min, zero))
