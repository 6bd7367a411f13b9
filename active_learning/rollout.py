"""Batched rollout of Algorithm 1: select, read, update, fast/slow predict.

`unroll` runs T label queries for a batch of episodes with any policy and
returns everything training and evaluation need as `[B, T]` tensors. It runs
inside `tf.function`; the step loop is a `tf.while_loop` with TensorArrays,
so the graph and its trace time do not grow with the label budget, and
nothing loops over episodes or items.
"""

import tensorflow as tf

from active_learning.data.schema import Episode, episode_from_batch  # pylint: disable=unused-import
from active_learning.layers import incremental_features
from active_learning.layers.masked import NEG_INF
from active_learning.policies import OraclePolicy, StepContext

def unroll(model, batch, policy, num_steps, seed, slow_every_step=True,
           imitation=False, training=False, encoded=None, query_batch=1,
           rating_oracle="closed_form", defer_rewards=None, incremental=True):
    """Runs `num_steps` label queries of `policy` on a batch of episodes.

    With `query_batch` K > 1 the labels arrive in rounds: the policy picks K
    items one after another (`ActiveMatchingNetwork.select_round`, each pick
    seeing the earlier ones as pending), a person labels all K, the
    controller reads them in order, and the rewards are computed once per
    round. Everything then has one entry per round, `[B, T / K]`: a round is
    one action of the policy, with log-probability the sum of its picks'
    (the probability of the ordered set; picks are drawn sequentially), so
    GAE runs over rounds. `actions` stays `[B, T]`, in the order picked.
    K = 1 is the sequential rollout, unchanged.

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
      query_batch: K, labels per round (a Python int dividing `num_steps`).
      rating_oracle: how the imitation oracle scores rating candidates
        (`policies.rating_oracle_scores`): `exact` or `closed_form`.
      defer_rewards: compute the fast and slow rewards of every step after
        the loop, in one call over all steps' states stacked into the batch,
        instead of inside each step. The same values (up to float rounding)
        from T times fewer, larger kernels: the slow prediction of every
        step was most of the compiled training step. None: when `training`
        (evaluation keeps the per-step order of operations, so its recorded
        numbers stay bit-identical).
      incremental: where the selection scores are deferred too (training,
        one label per round, exact selector features), keep the selector's
        item-item features up to date label by label
        (`layers.incremental_features`, O(P x T) a step) instead of
        recomputing them from the `[B, P, P]` cosines at every step. The
        same values on every unlabelled item, up to the order of sums;
        False: the reference, `model.select` at every step.

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
    query_batch = int(query_batch)
    if query_batch < 1 or num_steps % query_batch:
        raise ValueError(f"query_batch must be >= 1 and divide the label budget; got "
                         f"query_batch={query_batch} for {num_steps} labels")
    episode = episode_from_batch(batch)
    task = model.config.task
    support_labels = tf.cast(episode.support_labels, model.label_dtype)
    query_labels = tf.cast(episode.query_labels, model.label_dtype)
    if encoded is None:
        encoded = (model.encode(episode.support, training=training),
                   model.encode(episode.queries, training=training))
    embeddings, state = model.contextualise(encoded[0], episode.support)
    query_embeddings = encoded[1]
    cosine = model.similarities(embeddings)
    # The scalable selector's per-episode index (None for the exact one).
    pool_index = model.selection_index(embeddings)
    # The labelled masses' attention, also once per episode (None if unused).
    pool_attention = model.mass_attention(cosine)
    shape = tf.shape(support_labels)
    labeled = tf.zeros(shape, tf.bool)
    # What an unlabelled item's label reads (masked wherever it is used).
    empty_label = -1 if task == "classification" else 0.0
    labels = tf.fill(shape, tf.constant(empty_label, model.label_dtype))
    oracle = OraclePolicy(task, rating_oracle) if imitation else None
    noise = batch.get("selection_noise") if isinstance(batch, dict) else None
    seeds = tf.cast(tf.random.experimental.stateless_split(
        tf.cast(seed, tf.int64), num_steps), tf.int32)

    if defer_rewards is None:
        defer_rewards = training
    # What the rewards read of each episode (batched over steps when deferred).
    episode_tensors = dict(embeddings=embeddings, cosine=cosine, support_labels=support_labels,
                           query_embeddings=query_embeddings, queries=episode.queries,
                           query_labels=query_labels)

    if defer_rewards:
        # Training predicts for the same queries after every step: their
        # share of the matching LSTM's input projection is computed once.
        episode_tensors["query_projection"] = model.project_queries(query_embeddings)

    def slow_predict(state, labels, labeled, tensors=None):
        t = tensors or episode_tensors
        return model.predict_encoded(t["query_embeddings"], t["queries"], t["embeddings"],
                                     state, labels, labeled,
                                     query_projection=t.get("query_projection"))[0]

    # Deferring also the selection scores (log-probabilities, entropies,
    # values, imitation): the loop then picks from logits nothing
    # differentiates, and the differentiated selector runs once after it.
    # One label at a time with the exact selector only (a round's picks and
    # the scalable index are not batched over steps).
    defer_selection = defer_rewards and query_batch == 1 and pool_index is None
    if defer_selection and incremental:
        lists = incremental_features.neighbour_lists(
            cosine, incremental_features.list_depth(num_steps, tf.shape(cosine)[-1]))
        # The loop only picks: nothing differentiates its features.
        loop_lists = tf.nest.map_structure(tf.stop_gradient, lists)
        loop_cosine = tf.stop_gradient(cosine)
        loop_attention = None if pool_attention is None else tf.stop_gradient(pool_attention)
        running = incremental_features.start(loop_cosine, loop_attention)
    else:
        lists = None
        running = ()

    def selection_scores(logits, labeled, state, index, target):
        log_p = tf.nn.log_softmax(logits, axis=-1)
        out = {
            "log_probs": tf.gather(log_p, index, batch_dims=1),
            "entropies": -tf.reduce_sum(tf.where(labeled, 0.0, tf.exp(log_p) * log_p), -1),
            # The critic learns from its own loss only: it must not reshape the
            # controller state that selection and prediction share.
            "values": model.value(tf.stop_gradient(state)),
        }
        if target is not None:
            out["imitation_log_probs"] = tf.reduce_logsumexp(
                tf.where(target, log_p, NEG_INF), axis=-1)
        else:
            out["imitation_log_probs"] = tf.zeros_like(out["values"])
        return out

    def step(t, state, labels, labeled, arrays, running):
        similarities = (None if lists is None
                        else incremental_features.features(running, loop_lists, labeled))
        logits = model.select(embeddings, state, labels, labeled, cosine=cosine,
                              index=pool_index, mass_attention=pool_attention,
                              similarities=similarities)
        ctx = StepContext(model, embeddings, state, labels, labeled, cosine, logits,
                          episode.support, support_labels, episode.queries, query_labels,
                          noise=None if noise is None else noise[:, t],
                          query_embeddings=query_embeddings)
        index = tf.stop_gradient(policy.choose(ctx, seeds[t]))
        target = None if oracle is None else tf.stop_gradient(oracle.target_mask(ctx))
        record = {"actions": index}
        if defer_selection:
            record.update(picked_state=state, picked_labeled=labeled)
            if target is not None:
                record["picked_target"] = target
        else:
            record.update(selection_scores(logits, labeled, state, index, target))

        label = tf.gather(support_labels, index, batch_dims=1)
        state, labels, labeled = model.observe(embeddings, state, labels, labeled,
                                               index, label)
        if lists is not None:
            running = incremental_features.add(running, loop_cosine, index, loop_attention)
        record = after_labels(state, labels, labeled, record)
        arrays = {k: arrays[k].write(t, v) for k, v in record.items()}
        return t + 1, state, labels, labeled, arrays, running

    def rewards(state, labels, labeled, tensors, slow_inputs=None):
        """The fast reward, and the slow reward and metric when every step has one.
        `slow_inputs`: (state, labels, labeled, tensors) of the slow prediction,
        when it reads other items than the fast one (the labelled items alone)."""
        out = {}
        # Fast reward: mean log-likelihood over the still-unlabelled pool items.
        fast = model.fast_predict(tensors["embeddings"], state, labels, labeled,
                                  cosine=tensors["cosine"])
        fast_ll = model.log_likelihood(fast, tensors["support_labels"])
        unlabeled = tf.cast(tf.logical_not(labeled), tf.float32)
        out["fast_rewards"] = (tf.reduce_sum(fast_ll * unlabeled, -1)
                               / tf.maximum(tf.reduce_sum(unlabeled, -1), 1.0))
        if slow_every_step:
            predictions = slow_predict(*(slow_inputs or (state, labels, labeled, tensors)))
            out["slow_rewards"] = tf.reduce_mean(
                model.log_likelihood(predictions, tensors["query_labels"]), -1)
            out["query_metric"] = query_metric(task, predictions, tensors["query_labels"])
        return out

    def after_labels(state, labels, labeled, record):
        """The rewards and measurements once the labels of a step or round are in."""
        if defer_rewards:
            record.update(seen_state=state, seen_labels=labels, seen_labeled=labeled)
        else:
            record.update(rewards(state, labels, labeled, episode_tensors))
        record["distinct_labels"] = distinct_labels(support_labels, labeled)
        return record

    def picks_in_order(actions):
        """`[B, T]`: the items picked, in order, from the loop's `[R, B]` or
        `[R, B, K]` actions."""
        if query_batch == 1:
            return tf.transpose(actions, [1, 0])
        return tf.reshape(tf.transpose(actions, [1, 0, 2]), [tf.shape(actions)[1], num_steps])

    def labelled_only(seen_state, picks, tiled, tile, flat):
        """The deferred slow prediction's inputs over the labelled items alone.

        The prediction attends only to labelled items, so after round r it
        reads the first (r + 1) K picks: they are gathered once in pick order,
        `[R * B, T, ...]`, each round masking the picks it has not seen,
        instead of all P pool items per round: the same softmaxes over the
        same items (summed in another order), T / P of the attention.
        """
        known = tf.range(num_steps)[None, :] < (tf.range(rounds)[:, None] + 1) * query_batch
        known = flat(tf.tile(known[:, None, :], [1, tf.shape(picks)[0], 1]))   # [R*B, T]
        labels = tile(tf.gather(support_labels, picks, batch_dims=1))
        tensors = dict(tiled, embeddings=tile(tf.gather(embeddings, picks, batch_dims=1)))
        return (seen_state, tf.where(known, labels, tf.cast(empty_label, labels.dtype)),
                known, tensors)

    k_round = query_batch
    reads_pending = getattr(policy, "reads_pending", True)

    def round_step(r, state, labels, labeled, arrays, running):
        def context(pick):
            # Policies see pending items as covered: a heuristic then moves
            # away from them as it would from labelled ones (random k without
            # replacement, greedy k-centre for min-max-cos, the oracle's set
            # of unseen classes), and never picks one twice.
            t = r * k_round + pick.j
            covered = tf.logical_or(labeled, pick.pending)
            logits = pick.logits if reads_pending else tf.where(
                covered, tf.constant(NEG_INF, pick.logits.dtype), pick.first_logits)
            return StepContext(model, embeddings, pick.state, labels, covered, cosine, logits,
                               episode.support, support_labels, episode.queries,
                               query_labels, noise=None if noise is None else noise[:, t],
                               pending=pick.pending, round_logits=pick.first_logits,
                               query_embeddings=query_embeddings), t

        def choose(pick):
            ctx, t = context(pick)
            return tf.stop_gradient(policy.choose(ctx, seeds[t]))

        def record_pick(pick, index):
            log_p = tf.nn.log_softmax(pick.logits, axis=-1)
            covered = tf.logical_or(labeled, pick.pending)
            out = {"log_probs": tf.gather(log_p, index, batch_dims=1),
                   "entropies": -tf.reduce_sum(
                       tf.where(covered, 0.0, tf.exp(log_p) * log_p), -1)}
            if oracle is not None:
                ctx, _ = context(pick)
                target = tf.stop_gradient(oracle.target_mask(ctx))
                out["imitation_log_probs"] = tf.reduce_logsumexp(
                    tf.where(target, log_p, NEG_INF), axis=-1)
            return out

        pick_keys = ("log_probs", "entropies") + (
            ("imitation_log_probs",) if oracle is not None else ())
        indices, _, picks = model.select_round(
            embeddings, state, labels, labeled, k_round, choose=choose, cosine=cosine,
            record=record_pick, record_keys=pick_keys, index=pool_index,
            mass_attention=pool_attention)
        indices = tf.stop_gradient(indices)
        record = {
            "actions": indices,
            "log_probs": tf.reduce_sum(picks["log_probs"], -1),
            "entropies": tf.reduce_sum(picks["entropies"], -1),
            "values": model.value(tf.stop_gradient(state)),
            "imitation_log_probs": (tf.reduce_sum(picks["imitation_log_probs"], -1)
                                    if oracle is not None
                                    else tf.zeros_like(picks["log_probs"][:, 0])),
        }

        def read(j, state, labels, labeled):
            index = indices[:, j]
            label = tf.gather(support_labels, index, batch_dims=1)
            return (j + 1,) + model.observe(embeddings, state, labels, labeled, index, label)

        # The person's labels, read in the order picked, from the round's state.
        _, state, labels, labeled = tf.while_loop(
            lambda j, *_: j < k_round, read, (tf.constant(0), state, labels, labeled),
            maximum_iterations=k_round)
        record = after_labels(state, labels, labeled, record)
        arrays = {k: arrays[k].write(r, v) for k, v in record.items()}
        return r + 1, state, labels, labeled, arrays, running

    keys = ["actions", "distinct_labels"]
    dtypes = {"actions": tf.int32, "seen_labels": labels.dtype, "seen_labeled": tf.bool,
              "picked_labeled": tf.bool, "picked_target": tf.bool}
    if defer_selection:
        keys += ["picked_state", "picked_labeled"] + (
            ["picked_target"] if oracle is not None else [])
    else:
        keys += ["log_probs", "entropies", "values", "imitation_log_probs"]
    if defer_rewards:
        keys += ["seen_state", "seen_labels", "seen_labeled"]
    else:
        keys += ["fast_rewards"] + (["slow_rewards", "query_metric"] if slow_every_step else [])
    rounds = num_steps // query_batch
    body = step if query_batch == 1 else round_step
    arrays = {k: tf.TensorArray(dtypes.get(k, tf.float32), size=rounds) for k in keys}
    # A symbolic loop keeps the graph (and its trace time) independent of T.
    _, state, labels, labeled, arrays, _ = tf.while_loop(
        lambda t, *_: t < rounds, body,
        (tf.constant(0), state, labels, labeled, arrays, running), maximum_iterations=rounds)
    stacked = {}
    if defer_rewards:
        flat = lambda x: tf.reshape(x, tf.concat([[-1], tf.shape(x)[2:]], 0))  # noqa: E731
        # [R, B, ...] -> [R * B, ...]: step r of episode b is row r * B + b.
        tile = lambda v: flat(tf.tile(v[None], tf.concat(  # noqa: E731
            [[rounds], tf.ones_like(tf.shape(v))], 0)))
        tiled = {k: tile(v) for k, v in episode_tensors.items()}
        seen = [flat(arrays.pop(k).stack()) for k in ("seen_state", "seen_labels",
                                                       "seen_labeled")]
        slow_inputs = labelled_only(seen[0], picks_in_order(arrays["actions"].stack()),
                                    tiled, tile, flat) if slow_every_step else None
        stacked.update(rewards(*seen, tiled, slow_inputs=slow_inputs))
        if defer_selection:
            picked_state = flat(arrays.pop("picked_state").stack())
            picked_labeled = flat(arrays.pop("picked_labeled").stack())
            target = (flat(arrays.pop("picked_target").stack()) if oracle is not None
                      else None)
            if lists is None:
                logits = model.select(
                    tiled["embeddings"], picked_state, None, picked_labeled,
                    cosine=tiled["cosine"],
                    mass_attention=None if pool_attention is None else tile(pool_attention))
            else:
                similarities = incremental_features.pick_order_features(
                    cosine, picks_in_order(arrays["actions"].stack()), lists, pool_attention)
                logits = model.select(tiled["embeddings"], picked_state, None, picked_labeled,
                                      similarities=flat(similarities))
            stacked.update(selection_scores(logits, picked_labeled, picked_state,
                                            flat(arrays["actions"].stack()), target))
        stacked = {k: tf.reshape(v, [rounds, -1]) for k, v in stacked.items()}
    stacked.update({k: v.stack() for k, v in arrays.items()
                    if k != "actions" and k not in stacked})
    result = {k: tf.transpose(v, [1, 0]) for k, v in stacked.items()}
    result["actions"] = picks_in_order(arrays["actions"].stack())

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
