"""Batched rollout of Algorithm 1: select, read, update, fast/slow predict.

`unroll` runs T label queries for a batch of episodes with any policy and
returns everything training and evaluation need as `[B, T]` tensors. It runs
inside `tf.function`; the step loop is a `tf.while_loop` with TensorArrays,
so the graph and its trace time do not grow with the label budget, and
nothing loops over episodes or items.
"""

import tensorflow as tf

from active_learning.data.schema import Episode, episode_from_batch  # pylint: disable=unused-import
from active_learning.layers.masked import NEG_INF
from active_learning.policies import OraclePolicy, StepContext

def unroll(model, batch, policy, num_steps, seed, slow_every_step=True,
           imitation=False, training=False, encoded=None):
    """Runs `num_steps` label queries of `policy` on a batch of episodes.

    Args:
      model: an `ActiveMatchingNetwork`.
      batch: an episode batch dict (see `episode_from_batch`).
      policy: a `policies.Policy`.
      num_steps: T, the label budget (a Python int).
      seed: stateless seed, int32 `[2]`; the same seed gives the same rollout.
      slow_every_step: slow-predict the held-out items after every label
        (anytime curves and rewards) or only after the last one.
      imitation: also return, per step, the log-probability that the model's
        selection distribution puts on the oracle's acceptable actions.
      training: passed to the encoders.
      encoded: optional `(support, queries)` context-free encodings x' of the
        batch's items, when the caller ran the item encoder itself (the
        compiled training step does, to keep convolutions out of XLA).

    If the batch carries `selection_noise` (uniform (0, 1), `[B, T, P]`), the
    policies draw their random choices from it instead of from `seed`, which
    keeps each episode's rollout independent of how the batch is split across
    replicas.

    Returns:
      dict of `[B, T]` tensors: `actions`, `log_probs` and `entropies` (of the
      model's selection distribution), `values` (V(s_{t-1})), `fast_rewards`,
      `slow_rewards` (0 where not computed), `query_metric` (accuracy or
      RMSE per episode; NaN where not computed), `distinct_labels`,
      `imitation_log_probs`; plus `final_predictions` for the held-out items,
      `final_state` and the pool's `embeddings` x'' `[B, P, D]`.
    """
    episode = episode_from_batch(batch)
    task = model.config.task
    support_labels = tf.cast(episode.support_labels, model.label_dtype)
    query_labels = tf.cast(episode.query_labels, model.label_dtype)
    if encoded is None:
        encoded = (model.encode(episode.support, training=training),
                   model.encode(episode.queries, training=training))
    embeddings, state = model.context_encoder(encoded[0])
    query_embeddings = encoded[1]
    cosine = model.similarities(embeddings)
    shape = tf.shape(support_labels)
    labeled = tf.zeros(shape, tf.bool)
    if task == "classification":
        labels = tf.fill(shape, tf.constant(-1, tf.int32))
    else:
        labels = tf.zeros(shape, tf.float32)
    oracle = OraclePolicy(task) if imitation else None
    noise = batch.get("selection_noise") if isinstance(batch, dict) else None
    seeds = tf.cast(tf.random.experimental.stateless_split(
        tf.cast(seed, tf.int64), num_steps), tf.int32)

    def slow_predict(state, labels, labeled):
        vectors, _ = model.slow_predictor(
            query_embeddings, model.controller.hidden(state), embeddings, labeled,
            model.label_vectors(labels, labeled), model.query_prior(episode.queries))
        return model._output(vectors)

    def step(t, state, labels, labeled, arrays):
        logits = model.select(embeddings, state, labels, labeled, cosine=cosine)
        log_p = tf.nn.log_softmax(logits, axis=-1)
        ctx = StepContext(model, embeddings, state, labels, labeled, cosine, logits,
                          episode.support, support_labels, episode.queries, query_labels,
                          noise=None if noise is None else noise[:, t])
        index = tf.stop_gradient(policy.choose(ctx, seeds[t]))
        record = {
            "actions": index,
            "log_probs": tf.gather(log_p, index, batch_dims=1),
            "entropies": -tf.reduce_sum(tf.where(labeled, 0.0, tf.exp(log_p) * log_p), -1),
            # The critic learns from its own loss only: it must not reshape the
            # controller state that selection and prediction share.
            "values": model.value(tf.stop_gradient(state)),
        }
        if oracle is not None:
            target = tf.stop_gradient(oracle.target_mask(ctx))
            record["imitation_log_probs"] = tf.reduce_logsumexp(
                tf.where(target, log_p, NEG_INF), axis=-1)
        else:
            record["imitation_log_probs"] = tf.zeros_like(record["values"])

        label = tf.gather(support_labels, index, batch_dims=1)
        state, labels, labeled = model.observe(embeddings, state, labels, labeled,
                                               index, label)
        # Fast reward: mean log-likelihood over the still-unlabelled pool items.
        fast = model.fast_predict(embeddings, state, labels, labeled, cosine=cosine)
        fast_ll = model.log_likelihood(fast, support_labels)
        unlabeled = tf.cast(tf.logical_not(labeled), tf.float32)
        record["fast_rewards"] = (tf.reduce_sum(fast_ll * unlabeled, -1)
                                  / tf.maximum(tf.reduce_sum(unlabeled, -1), 1.0))
        if slow_every_step:
            predictions = slow_predict(state, labels, labeled)
            record["slow_rewards"] = tf.reduce_mean(
                model.log_likelihood(predictions, query_labels), -1)
            record["query_metric"] = query_metric(task, predictions, query_labels)
        record["distinct_labels"] = distinct_labels(support_labels, labeled)
        arrays = {k: arrays[k].write(t, v) for k, v in record.items()}
        return t + 1, state, labels, labeled, arrays

    keys = ["actions", "log_probs", "entropies", "values", "imitation_log_probs",
            "fast_rewards", "distinct_labels"]
    if slow_every_step:
        keys += ["slow_rewards", "query_metric"]
    arrays = {k: tf.TensorArray(tf.int32 if k == "actions" else tf.float32, size=num_steps)
              for k in keys}
    # A symbolic loop keeps the graph (and its trace time) independent of T.
    _, state, labels, labeled, arrays = tf.while_loop(
        lambda t, *_: t < num_steps, step, (tf.constant(0), state, labels, labeled, arrays),
        maximum_iterations=num_steps)
    result = {k: tf.transpose(v.stack(), [1, 0]) for k, v in arrays.items()}

    final_predictions = slow_predict(state, labels, labeled)
    if not slow_every_step:
        # Held-out predictions only after the last label: zeros / NaN before.
        pad = tf.zeros_like(result["fast_rewards"][:, :-1])
        last_reward = tf.reduce_mean(model.log_likelihood(final_predictions, query_labels), -1)
        last_metric = query_metric(task, final_predictions, query_labels)
        result["slow_rewards"] = tf.concat([pad, last_reward[:, None]], 1)
        result["query_metric"] = tf.concat([pad + float("nan"), last_metric[:, None]], 1)
    result["final_predictions"] = final_predictions
    result["final_state"] = state
    result["embeddings"] = embeddings
    return result


def query_metric(task, predictions, targets):
    """Accuracy (classes) or RMSE over an episode's held-out items `[B]`.

    A measurement, never differentiated: the gradient is stopped, because
    sqrt'(0) is infinite, and an episode predicted exactly (a user who gave
    every held-out movie the one rating seen) made the compiled step's
    gradient 0 * inf = NaN, even though no loss term reads the metric.
    """
    predictions = tf.stop_gradient(predictions)
    if task == "classification":
        hits = tf.equal(tf.argmax(predictions, -1, output_type=tf.int32),
                        tf.cast(targets, tf.int32))
        return tf.reduce_mean(tf.cast(hits, tf.float32), -1)
    return tf.sqrt(tf.reduce_mean(tf.square(predictions - targets), -1))


def distinct_labels(support_labels, labeled):
    """[B]: how many distinct label values the labelled items carry."""
    same = tf.equal(support_labels[:, :, None], support_labels[:, None, :])
    pool = tf.shape(labeled)[1]
    earlier = tf.linalg.band_part(tf.ones([pool, pool], tf.bool), -1, 0)  # j <= i
    earlier = tf.logical_and(earlier, tf.logical_not(tf.eye(pool, dtype=tf.bool)))
    # An item is a first occurrence if no earlier labelled item shares its label.
    dup = tf.reduce_any(tf.logical_and(tf.logical_and(same, earlier[None]),
                                       labeled[:, None, :]), axis=-1)
    first = tf.logical_and(labeled, tf.logical_not(dup))
    return tf.reduce_sum(tf.cast(first, tf.float32), -1)
