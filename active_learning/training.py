"""The training step of paper 3.3: RL for selection, backprop for prediction.

`Trainer` owns the model, the optimizer, the step counter and the seed
generator; `Trainer.train_step(batch)` is one `tf.function` that unrolls a
batch of episodes under a `GradientTape` and applies Adam with global-norm
clipping. The loss is

    prediction:  -sum_t (fast_t + slow_t)         direct backprop through the
                                                  prediction modules
  + policy:      -sum_t log pi(a_t) * A_t          GAE advantages (gamma, lambda)
  + value:       sum_t huber(V(s_{t-1}) - R_t)     critic for GAE (Huber keeps
                                                  its gradient bounded, so it
                                                  cannot dominate the clip)
  + imitation:   -sum_t log pi(oracle set | s_t)   at states the model visits,
                                                  weight annealed over steps
  - entropy:     sum_t H(pi(. | s_t))
  + contrast:    -sum_i log sum_{j ~ i} softmax_j(c cos(x''_i, x''_j))
                                                  optional (classification):
                                                  the pool's own labels pull
                                                  same-class items together in
                                                  the geometry that selection
                                                  reads (cosine features)

averaged over episodes. Under a `tf.distribute` strategy each replica takes
its slice of the global batch and losses are scaled by the global batch size,
so the update does not depend on the number of replicas. Random choices come
from noise drawn for the whole global batch, so an episode's rollout does not
either. No flags here: trainers/ parses them into a `TrainConfig`.
"""

import dataclasses

import keras
import tensorflow as tf

from active_learning import rollout
from active_learning.layers.masked import NEG_INF, cosine_matrix
from active_learning.policies import RATING_ORACLES, make_policy


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of the training objective and optimizer."""

    num_steps: int = 5             # T, labels requested per episode
    learning_rate: float = 1e-3
    decay_steps: int = 0           # > 0: cosine decay to decay_floor * lr
    decay_floor: float = 0.1
    clip_norm: float = 5.0
    gae_gamma: float = 1.0
    gae_lambda: float = 0.95
    prediction_weight: float = 1.0
    fast_weight: float = 1.0
    slow_weight: float = 1.0
    slow_every_step: bool = True
    policy_weight: float = 1.0
    value_weight: float = 0.5
    entropy_weight: float = 0.01
    imitation_weight: float = 1.0
    imitation_final_weight: float = 0.0
    imitation_anneal_steps: int = 2000
    normalize_advantages: bool = True
    contrast_weight: float = 0.0   # pool contrastive term (classification only)
    contrast_scale: float = 10.0   # c: cosine -> logit scale of that term
    policy: str = "learned"        # a fixed heuristic trains the rest end to end
    seed: int = 0
    # Compile everything after the item encoder (context encoder, rollout,
    # loss and their gradients) with XLA: the rollout is ~20,000 tiny ops per
    # step that XLA fuses. The encoder stays outside (oneDNN convolutions are
    # faster than XLA's on CPU). Only under the default strategy.
    jit_compile: bool = False
    # K, labels per round: the policy picks K items before any of their labels
    # arrive (batch-mode querying, `rollout.unroll`); rewards, values and GAE
    # are per round. 1 is the paper's one label at a time.
    query_batch: int = 1
    # How the imitation oracle scores rating candidates: `closed_form` adds
    # each one to the slow predictor's last softmax, `exact` replays a
    # controller update and a slow prediction per candidate (5x the step;
    # runs recorded before this field trained with it).
    rating_oracle: str = "closed_form"

    def __post_init__(self):
        if self.num_steps < 1:
            raise ValueError(f"num_steps (the label budget) must be >= 1, got {self.num_steps}")
        if self.query_batch < 1 or self.num_steps % self.query_batch:
            raise ValueError(f"query_batch must be >= 1 and divide the label budget "
                             f"num_steps={self.num_steps}, got {self.query_batch}")
        if not 0.0 <= self.gae_gamma <= 1.0 or not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError("gae_gamma and gae_lambda must lie in [0, 1]")
        if self.contrast_weight < 0 or self.contrast_scale <= 0:
            raise ValueError("contrast_weight must be >= 0 and contrast_scale > 0, got "
                             f"{self.contrast_weight} and {self.contrast_scale}")
        if self.rating_oracle not in RATING_ORACLES:
            raise ValueError(f"rating_oracle must be one of {RATING_ORACLES}, "
                             f"got {self.rating_oracle!r}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")


def generalized_advantage_estimation(rewards, values, gamma, lam, bootstrap=None):
    """GAE (Schulman et al., 2016b) over the time axis of `[B, T]` tensors.

    delta_t = r_t + gamma * V_{t+1} - V_t, A_t = sum_k (gamma lam)^k delta_{t+k},
    with V_T = `bootstrap` (0 for a finished episode). Returns (advantages,
    returns = advantages + values).
    """
    rewards = tf.convert_to_tensor(rewards, tf.float32)
    values = tf.convert_to_tensor(values, tf.float32)
    if bootstrap is None:
        bootstrap = tf.zeros_like(values[:, 0])
    next_values = tf.concat([values[:, 1:], bootstrap[:, None]], axis=1)
    deltas = rewards + gamma * next_values - values

    def backward(carry, delta):
        advantage = delta + gamma * lam * carry
        return advantage

    reversed_deltas = tf.reverse(tf.transpose(deltas), axis=[0])
    advantages = tf.scan(backward, reversed_deltas, initializer=tf.zeros_like(bootstrap))
    advantages = tf.transpose(tf.reverse(advantages, axis=[0]))
    return advantages, advantages + values


def pool_contrastive_loss(embeddings, labels, scale):
    """Supervised neighbourhood loss over each pool, summed over episodes.

    For every pool item i with at least one other item of its class: minus the
    log of the softmax mass (logits `scale * cos(x_i, x_j)`, j != i) that falls
    on items of i's class, averaged over such items of the episode. Items
    alone in their class are left out, and an episode with none adds 0.
    """
    pool = tf.shape(labels)[-1]
    not_self = tf.logical_not(tf.eye(pool, dtype=tf.bool))[None]
    logits = tf.where(not_self, scale * cosine_matrix(embeddings), NEG_INF)
    same = tf.logical_and(tf.equal(labels[:, :, None], labels[:, None, :]), not_self)
    log_p = tf.nn.log_softmax(logits, axis=-1)
    log_same = tf.reduce_logsumexp(tf.where(same, log_p, NEG_INF), axis=-1)
    valid = tf.cast(tf.reduce_any(same, axis=-1), tf.float32)
    per_episode = (-tf.reduce_sum(log_same * valid, -1)
                   / tf.maximum(tf.reduce_sum(valid, -1), 1.0))
    return tf.reduce_sum(per_episode)


def imitation_weight(config: TrainConfig, step):
    """Linear anneal from `imitation_weight` to `imitation_final_weight`."""
    frac = tf.minimum(tf.cast(step, tf.float32) / max(config.imitation_anneal_steps, 1), 1.0)
    return config.imitation_weight + frac * (config.imitation_final_weight
                                             - config.imitation_weight)


def compute_loss(model, batch, config: TrainConfig, policy, seed, step, global_batch_size,
                 num_steps=None, encoded=None):
    """Loss of one (per-replica) batch and a dict of scalar diagnostics.

    `encoded`: optional `(support, queries)` item encodings (see `rollout.unroll`).
    """
    use_imitation = config.policy == "learned" and (
        config.imitation_weight > 0 or config.imitation_final_weight > 0)
    out = rollout.unroll(model, batch, policy, num_steps or config.num_steps, seed,
                         slow_every_step=config.slow_every_step,
                         imitation=use_imitation, training=True, encoded=encoded,
                         query_batch=config.query_batch,
                         rating_oracle=config.rating_oracle)
    rewards = config.fast_weight * out["fast_rewards"] + config.slow_weight * out["slow_rewards"]
    per_episode = lambda x: tf.reduce_sum(x) / global_batch_size  # noqa: E731

    prediction_loss = -per_episode(rewards)
    advantages, returns = generalized_advantage_estimation(
        tf.stop_gradient(rewards), tf.stop_gradient(out["values"]),
        config.gae_gamma, config.gae_lambda)
    if config.normalize_advantages:
        # Moments over the global batch, so every replica normalises alike.
        ctx = tf.distribute.get_replica_context()
        count, total, squares = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [
            tf.cast(tf.size(advantages), tf.float32), tf.reduce_sum(advantages),
            tf.reduce_sum(tf.square(advantages))])
        mean = total / count
        var = tf.maximum(squares / count - tf.square(mean), 0.0)
        advantages = (advantages - mean) * tf.math.rsqrt(var + 1e-8)
    policy_loss = -per_episode(out["log_probs"] * tf.stop_gradient(advantages))
    error = tf.abs(out["values"] - tf.stop_gradient(returns))
    value_loss = per_episode(tf.where(error < 1.0, 0.5 * tf.square(error), error - 0.5))
    imitation_loss = -per_episode(out["imitation_log_probs"])
    entropy = per_episode(out["entropies"])
    w_imitation = imitation_weight(config, step)
    if config.policy != "learned":
        # A fixed heuristic drives selection: only prediction modules learn.
        policy_term = 0.0
    else:
        policy_term = (config.policy_weight * policy_loss + w_imitation * imitation_loss
                       - config.entropy_weight * entropy)
    loss = (config.prediction_weight * prediction_loss + config.value_weight * value_loss
            + policy_term)
    contrast_loss = tf.constant(0.0)
    if config.contrast_weight > 0 and model.config.task == "classification":
        episode = rollout.episode_from_batch(batch)
        contrast_loss = pool_contrastive_loss(
            out["embeddings"], episode.support_labels, config.contrast_scale
        ) / global_batch_size
        loss += config.contrast_weight * contrast_loss
    metrics = {
        "loss": loss,
        "prediction_loss": prediction_loss,
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "imitation_loss": imitation_loss,
        "contrast_loss": contrast_loss,
        "entropy": entropy,
        "imitation_weight": w_imitation,
        "reward": per_episode(rewards),
        "fast_reward": per_episode(out["fast_rewards"]),
        "slow_reward": per_episode(out["slow_rewards"]),
        "final_query_metric": per_episode(out["query_metric"][:, -1]),
        "final_distinct_labels": per_episode(out["distinct_labels"][:, -1]),
    }
    return loss, metrics


def _zeros_for_missing(grads, targets):
    """Gradients with zeros where a target does not reach the loss (None)."""
    return [tf.zeros_like(t) if g is None else g for g, t in zip(grads, targets)]


class Trainer(tf.Module):
    """Model + Adam + step + seed stream, and the compiled training step.

    Everything that a checkpoint must hold to resume exactly is an attribute
    here (`model`, `optimizer`, `step`, `rng`); the episode sampler's own
    generator is checkpointed beside it by the caller.
    """

    def __init__(self, model, config: TrainConfig, strategy=None, item_scores=None,
                 name="trainer"):
        super().__init__(name=name)
        self.config = config
        self.strategy = strategy or tf.distribute.get_strategy()
        self.model = model
        self.policy = make_policy(config.policy, model.config.task, item_scores=item_scores)
        with self.strategy.scope():
            # Clipping happens in the step, after gradients are summed over
            # replicas: Keras would clip each replica's part on its own.
            learning_rate = config.learning_rate
            if config.decay_steps > 0:
                # A function of the optimizer's own step count, which the
                # checkpoint holds, so a resumed run continues the schedule.
                learning_rate = keras.optimizers.schedules.CosineDecay(
                    config.learning_rate, config.decay_steps, alpha=config.decay_floor)
            self.optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
            self.optimizer.build(model.trainable_variables)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.rng = tf.random.Generator.from_seed(config.seed + 7919, alg="philox")
        # AutoGraph is off: the step has no data-dependent Python control flow
        # (the loops are tf.while_loop / tf.scan), so the graph is the same op
        # for op, and converting the call tree cost about half of each trace.
        self._train_step = tf.function(self._train_step_fn, reduce_retracing=True,
                                       autograph=False)
        if config.jit_compile and self.strategy.num_replicas_in_sync > 1:
            raise ValueError("jit_compile needs a single replica: XLA cannot compile the "
                             "cross-replica reductions inside the loss; turn it off for "
                             "mirrored or multi-worker training")
        self._compiled_head = tf.function(self._head_loss_and_gradients,
                                          jit_compile=True, autograph=False)
        # Clipping and Adam are ~15 small ops per variable; XLA fuses them too.
        self._compiled_update = tf.function(self._update, jit_compile=True, autograph=False)

    def train_step(self, batch, num_steps=None):
        """One update on a global batch dict; returns scalar metrics.

        `num_steps` overrides the label budget (mixed-way training asks for
        N * shots labels); each distinct value traces the step once.
        """
        return self._train_step(batch, int(num_steps or self.config.num_steps))

    def _replica_slice(self, batch, global_batch_size):
        ctx = tf.distribute.get_replica_context()
        replicas = ctx.num_replicas_in_sync
        per_replica = global_batch_size // replicas
        start = tf.cast(ctx.replica_id_in_sync_group, tf.int32) * per_replica
        return {k: v[start:start + per_replica] for k, v in batch.items()}

    def loss_and_gradients(self, batch, seed, step, global_batch_size, num_steps,
                           jit_compile=None):
        """(loss, metrics, gradients in `model.trainable_variables` order).

        One replica's part; no update. `jit_compile` overrides the config's
        choice of the compiled head (tests compare the two).
        """
        use_xla = self.config.jit_compile if jit_compile is None else jit_compile
        if use_xla:
            return self._encoder_then_compiled_head(batch, seed, step, global_batch_size,
                                                    num_steps)
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            loss, metrics = compute_loss(self.model, batch, self.config, self.policy, seed,
                                         step, global_batch_size, num_steps)
        return loss, metrics, _zeros_for_missing(tape.gradient(loss, variables), variables)

    def _update(self, grads, global_loss, replicas):
        """Clips the summed gradients and applies Adam; returns (norm, finite)."""
        grads, norm = tf.clip_by_global_norm(grads, self.config.clip_norm)
        finite = tf.logical_and(tf.math.is_finite(global_loss), tf.math.is_finite(norm))
        # Skip the update on a non-finite loss: the caller stops training
        # with the last good checkpoint intact. The optimizer sums the
        # replicas' gradients again, hence the division.
        grads = [tf.where(finite, g / replicas, tf.zeros_like(g)) for g in grads]
        self.optimizer.apply(grads, self.model.trainable_variables)
        return norm, finite

    def _head_variables(self):
        encoder = {id(v) for v in self.model.encoder.trainable_variables}
        return [v for v in self.model.trainable_variables if id(v) not in encoder]

    def _head_loss_and_gradients(self, batch, support_x, query_x, seed, step,
                                 global_batch_size, num_steps):
        """Loss and gradients w.r.t. the non-encoder variables and the encodings."""
        variables = self._head_variables()
        with tf.GradientTape() as tape:
            tape.watch([support_x, query_x])
            loss, metrics = compute_loss(
                self.model, batch, self.config, self.policy, seed, step,
                global_batch_size, num_steps, encoded=(support_x, query_x))
        targets = variables + [support_x, query_x]
        return loss, metrics, _zeros_for_missing(tape.gradient(loss, targets), targets)

    def _encoder_then_compiled_head(self, batch, seed, step, global_batch_size, num_steps):
        """The loss gradient in two parts: the compiled head, then the encoder.

        The head returns d loss / d encodings, which the encoder's own tape
        carries back to its variables (the chain rule across the XLA boundary).
        """
        episode = rollout.episode_from_batch(batch)
        encoder_variables = self.model.encoder.trainable_variables
        with tf.GradientTape() as tape:
            support_x = self.model.encode(episode.support, training=True)
            query_x = self.model.encode(episode.queries, training=True)
        loss, metrics, grads = self._compiled_head(
            batch, support_x, query_x, seed, step, global_batch_size, num_steps)
        head_grads, d_support, d_query = grads[:-2], grads[-2], grads[-1]
        encoder_grads = tape.gradient([support_x, query_x], encoder_variables,
                                      output_gradients=[d_support, d_query])
        by_ref = {id(v): g for v, g in zip(self._head_variables(), head_grads)}
        by_ref.update({id(v): g for v, g in zip(encoder_variables, encoder_grads)})
        return loss, metrics, [by_ref[id(v)] for v in self.model.trainable_variables]

    def _train_step_fn(self, batch, num_steps):
        first = next(iter(batch.values()))
        global_batch_size = tf.shape(first)[0]
        pool = tf.shape(batch["support_labels"])[1]
        batch = dict(batch)
        batch["selection_noise"] = self.rng.uniform(
            [global_batch_size, num_steps, pool], minval=1e-7, maxval=1.0 - 1e-7)
        seed = tf.cast(self.rng.make_seeds(1)[:, 0], tf.int32)
        step = self.step

        def replica_fn(global_batch):
            local = self._replica_slice(global_batch, global_batch_size)
            variables = self.model.trainable_variables
            loss, metrics, grads = self.loss_and_gradients(
                local, seed, step, tf.cast(global_batch_size, tf.float32), num_steps)
            ctx = tf.distribute.get_replica_context()
            grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
            global_loss = ctx.all_reduce(tf.distribute.ReduceOp.SUM, loss)
            replicas = tf.cast(ctx.num_replicas_in_sync, tf.float32)
            update = self._compiled_update if self.config.jit_compile else self._update
            norm, finite = update([tf.convert_to_tensor(g) for g in grads], global_loss,
                                  replicas)
            metrics["gradient_norm"] = norm
            metrics["finite"] = tf.cast(finite, tf.float32)
            return metrics

        per_replica = self.strategy.run(replica_fn, args=(batch,))
        metrics = {}
        for key, value in per_replica.items():
            if key in ("gradient_norm", "imitation_weight", "finite"):
                metrics[key] = self.strategy.reduce(tf.distribute.ReduceOp.MEAN, value, None)
            else:
                metrics[key] = self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, None)
        self.step.assign_add(1)
        return metrics
