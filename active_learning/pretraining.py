"""Encoder pretraining with a prototypical loss over many-way episodes.

Not in the paper. On Omniglot our balanced matching net (the predictor
handed one drawing of every class) sits 1.3-1.4 points below the paper's at
1-shot (docs/results.md, Table 1), so the shared embedding, not the
selection, holds the gap. Snell et al. (2017) train an encoder of the same
size with a prototypical loss on episodes of many more classes than it is
tested on (60-way for 5- and 20-way tests); here that loss trains the active
learner's own encoder, `model.encoder`, so a trainer warm-starts from the
result with `--init_from` unchanged (every other weight is carried along).

Each episode (the `ClassEpisodeSampler` format, one per step) has N classes
with `shots` support drawings and some held-out drawings each. A class's
prototype is the mean embedding of its support drawings, and each held-out
drawing gets a softmax over the negative squared distances to the N
prototypes (Snell et al., eq. 1-2). Validation is the one-shot accuracy of
the encoder alone: nearest neighbour by cosine, the similarity the matching
network attends with (`one_shot_accuracy`).
"""

import dataclasses

import keras
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """The pretraining episodes and optimiser.

    Attributes:
      ways: classes per training episode (Snell et al.: 60).
      shots: support drawings per class that form its prototype.
      queries: held-out drawings per class that the loss scores.
      learning_rate: Adam step size.
      clip_norm: global gradient-norm clip.
    """

    ways: int = 60
    shots: int = 1
    queries: int = 5
    learning_rate: float = 5e-4
    clip_norm: float = 5.0

    def __post_init__(self):
        problems = []
        if self.ways < 2:
            problems.append(f"ways must be >= 2, got {self.ways}")
        if self.shots < 1:
            problems.append(f"shots must be >= 1, got {self.shots}")
        if self.queries < 1:
            problems.append(f"queries must be >= 1, got {self.queries}")
        if not self.learning_rate > 0:
            problems.append(f"learning_rate must be > 0, got {self.learning_rate}")
        if not self.clip_norm > 0:
            problems.append(f"clip_norm must be > 0, got {self.clip_norm}")
        if problems:
            raise ValueError("PretrainConfig: " + "; ".join(problems))


def prototype_logits(support, support_labels, queries, ways):
    """`[B, Q, N]` negative squared distances from each query to each prototype.

    Args:
      support: `[B, S, D]` support embeddings.
      support_labels: int `[B, S]` class of each, in `[0, ways)`.
      queries: `[B, Q, D]` held-out embeddings.
      ways: N (Python int or scalar tensor).
    """
    members = tf.one_hot(support_labels, ways, dtype=support.dtype)           # [B, S, N]
    counts = tf.reduce_sum(members, axis=1)                                   # [B, N]
    prototypes = (tf.einsum("bsn,bsd->bnd", members, support)
                  / tf.maximum(counts, 1.0)[..., None])
    # |q - p|^2 = |q|^2 - 2 q.p + |p|^2, one product instead of a [B, Q, N, D] tensor.
    squared = (tf.reduce_sum(tf.square(queries), -1)[..., None]
               - 2.0 * tf.einsum("bqd,bnd->bqn", queries, prototypes)
               + tf.reduce_sum(tf.square(prototypes), -1)[:, None, :])
    return -squared


def prototypical_loss(logits, query_labels):
    """(mean cross-entropy, accuracy) of `logits [B, Q, N]` against `query_labels [B, Q]`."""
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=query_labels, logits=logits))
    hits = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), query_labels),
                   tf.float32)
    return loss, tf.reduce_mean(hits)


class EncoderPretrainer(tf.Module):
    """Trains `model.encoder` (and nothing else) with the prototypical loss.

    `optimizer` and `step` are tracked, so a `tf.train.Checkpoint` of this
    module's fields resumes a run exactly.
    """

    def __init__(self, model, config: PretrainConfig, jit_compile=True, name=None):
        super().__init__(name=name)
        self.model = model
        self.config = config
        self.optimizer = keras.optimizers.Adam(config.learning_rate,
                                               global_clipnorm=config.clip_norm)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.train_step = tf.function(self._train_step, jit_compile=jit_compile)

    def _train_step(self, episode):
        """One update from one batch of episodes; returns {loss, accuracy, finite}."""
        encoder = self.model.encoder
        variables = encoder.trainable_variables
        with tf.GradientTape() as tape:
            support = encoder(episode["support"])
            queries = encoder(episode["queries"])
            logits = prototype_logits(support, episode["support_labels"], queries,
                                      self.config.ways)
            loss, accuracy = prototypical_loss(logits, episode["query_labels"])
        gradients = tape.gradient(loss, variables)
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in gradients])
        finite = tf.logical_and(finite, tf.math.is_finite(loss))

        def apply():
            self.optimizer.apply_gradients(zip(gradients, variables))
            return tf.constant(True)

        # A non-finite update is not applied: the trainer stops with the last
        # good checkpoint instead of saving damaged weights.
        tf.cond(finite, apply, lambda: tf.constant(False))
        self.step.assign_add(1)
        return {"loss": loss, "accuracy": accuracy, "finite": tf.cast(finite, tf.float32)}


def one_shot_accuracy(encoder, sampler, num_episodes, batch_size):
    """Mean one-shot accuracy of the encoder alone: each held-out item takes the
    class of its nearest support item by cosine.

    `sampler` draws episodes with one support item per class (a seeded
    `ClassEpisodeSampler` with `items_per_class=1`), so the same seed gives
    the same episodes and the same number.
    """
    hits = []
    drawn = 0
    while drawn < num_episodes:
        count = min(batch_size, num_episodes - drawn)
        episode = sampler.sample(count)
        hits.append(_nearest_hits(encoder, episode))
        drawn += count
    return float(tf.reduce_mean(tf.concat(hits, 0)).numpy())


def _nearest_hits(encoder, episode):
    support = tf.math.l2_normalize(encoder(episode["support"]), -1)
    queries = tf.math.l2_normalize(encoder(episode["queries"]), -1)
    nearest = tf.argmax(tf.einsum("bqd,bsd->bqs", queries, support), -1, output_type=tf.int32)
    predicted = tf.gather(episode["support_labels"], nearest, batch_dims=1)
    return tf.reshape(tf.cast(tf.equal(predicted, episode["query_labels"]), tf.float32), [-1])
