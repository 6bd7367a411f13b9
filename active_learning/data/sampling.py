"""In-graph, checkpointable random sampling shared by the episode samplers.

Episode samplers draw from a `tf.random.Generator` that they own, so the
sampler's position in its random stream is a `tf.Variable`: a
`tf.train.Checkpoint` that tracks the sampler restores exactly the episodes
an interrupted run would have seen next.
"""

import tensorflow as tf


def sample_without_replacement(rng, batch_shape, population, k, valid=None):
    """Draws `k` distinct indices out of `population`, independently per row.

    Args:
      rng: a `tf.random.Generator`.
      batch_shape: leading shape (list of ints or an int32 tensor).
      population: number of candidates (scalar int).
      k: how many to draw (scalar int, at most the number of valid candidates).
      valid: optional bool tensor `batch_shape + [population]`; invalid
        candidates are never drawn as long as `k` valid ones exist.

    Returns:
      int32 tensor `batch_shape + [k]` of indices in a uniformly random order.
    """
    shape = tf.concat([tf.cast(batch_shape, tf.int32), [population]], axis=0)
    keys = rng.uniform(shape, dtype=tf.float32)
    if valid is not None:
        # Uniform keys lie in [0, 1): invalid candidates sort after all valid.
        keys = tf.where(valid, keys, 2.0)
    return tf.argsort(keys, axis=-1, stable=True)[..., :k]


def make_generator(seed):
    """A Philox generator from an integer seed (same seed, same stream)."""
    return tf.random.Generator.from_seed(int(seed), alg="philox")
