"""In-graph episode sampler over prepared ratings (`ratings_prep.UserRatings`).

`EpisodeSampler.sample(batch_size)` draws a batch of cold-start episodes in
the graph, in the episode schema of `active_learning.data.schema`, from a
checkpointable `tf.random.Generator`; `episodes_per_second` times it.
"""

import time

import numpy as np
import tensorflow as tf

from active_learning.data import sampling



class EpisodeSampler(tf.Module):
    """Draws batches of cold-start episodes in the graph.

    An episode is one user (uniform over the split's users, with
    replacement) and a fresh random choice of `support_size + query_size`
    distinct movies that user rated: the first `support_size` form the pool
    the learner may query, the rest the held-out set, so the two never share
    a movie. Randomness comes from `self.rng`, a `tf.random.Generator` whose
    state a `tf.train.Checkpoint` of this module saves and restores.

    `sample(batch_size)` (a `tf.function`) returns one batch as a dict, see
    `_sample`; `dataset(batch_size)` streams them.
    """

    def __init__(self, user_ratings, support_size=50, query_size=10, seed=0,
                 name=None):
        super().__init__(name=name)
        for value, what in ((support_size, "support_size"),
                            (query_size, "query_size")):
            if int(value) != value or value < 1:
                raise ValueError(
                    f"{what} must be a positive integer, got {value}.")
        if user_ratings.num_users == 0:
            raise ValueError("EpisodeSampler needs at least one user.")
        self.support_size = int(support_size)
        self.query_size = int(query_size)
        episode_size = self.support_size + self.query_size
        short = np.nonzero(user_ratings.counts < episode_size)[0]
        if short.size:
            raise ValueError(
                f"user {user_ratings.user_ids[short[0]]} has "
                f"{user_ratings.counts[short[0]]} ratings; episodes of "
                f"{self.support_size} + {self.query_size} need {episode_size} "
                f"({short.size} user(s) have fewer). Filter them with "
                "prepare(support_size=..., query_size=...).")
        self.num_users = user_ratings.num_users
        self._width = int(user_ratings.items.shape[1])
        self._items = tf.constant(user_ratings.items, tf.int32)
        self._ratings = tf.constant(user_ratings.ratings, tf.float32)
        self._counts = tf.constant(user_ratings.counts, tf.int32)
        self.rng = sampling.make_generator(seed)
        # Built per instance, not with @tf.function on the class: a
        # decorated method only keeps a weak reference to its instance, so
        # `EpisodeSampler(...).sample(8)` on a temporary would fail.
        self.sample = tf.function(self._sample)

    def _sample(self, batch_size):
        """A batch of episodes (`self.sample` is this as a `tf.function`).

        Returns:
          the episode dict of `active_learning.data.schema`: `support` int32
          [B, support_size] (movie indices), `support_labels` float32
          [B, support_size] (ratings), `queries` int32 [B, query_size],
          `query_labels` float32 [B, query_size], and `user_index` int32 [B]
          (row of the split's `UserRatings`).
        """
        if isinstance(batch_size, int) and batch_size < 1:
            raise ValueError(
                f"batch_size must be a positive integer, got {batch_size}.")
        episode_size = self.support_size + self.query_size
        user_index = self.rng.uniform([batch_size], minval=0,
                                      maxval=self.num_users, dtype=tf.int32)
        counts = tf.gather(self._counts, user_index)
        # Padding columns are invalid, so only the user's real ratings can be
        # drawn; every user has at least episode_size of them.
        valid = tf.range(self._width)[None, :] < counts[:, None]
        columns = sampling.sample_without_replacement(
            self.rng, [batch_size], self._width, episode_size, valid=valid)
        items = tf.gather(tf.gather(self._items, user_index), columns,
                          batch_dims=1)
        ratings = tf.gather(tf.gather(self._ratings, user_index), columns,
                            batch_dims=1)
        s = self.support_size
        return {
            "support": items[:, :s],
            "support_labels": ratings[:, :s],
            "queries": items[:, s:],
            "query_labels": ratings[:, s:],
            "user_index": user_index,
        }

    def dataset(self, batch_size):
        """An infinite `tf.data.Dataset` of `sample(batch_size)` dicts.

        The map runs sequentially, so the episodes come in the generator's
        order and a restored generator replays them.
        """
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(
                f"batch_size must be a positive integer, got {batch_size}.")
        batch_size = int(batch_size)
        return tf.data.Dataset.from_tensors(0).repeat().map(
            lambda _: self._sample(batch_size))


def episodes_per_second(sampler, batch_size=32, seconds=1.0):
    """Measured throughput of `sampler.sample(batch_size)`, in episodes/s.

    Note: this advances the sampler's generator.
    """
    tf.nest.map_structure(lambda t: t.numpy(), sampler.sample(batch_size))
    batches, start = 0, time.perf_counter()
    while True:
        tf.nest.map_structure(lambda t: t.numpy(), sampler.sample(batch_size))
        batches += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return batches * batch_size / elapsed


