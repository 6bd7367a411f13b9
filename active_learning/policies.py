"""Selection policies that drive the same rollout (paper 4.1, 4.2.3).

Every policy maps a `StepContext` (what the model knows at step t) and a
stateless seed to the index of the next item to label, `[B]` int32, never an
item already labelled. They run inside `tf.function` with no Python branching
on data. In a round of a batch query (`rollout.unroll(..., query_batch=K)`)
`labeled` also covers the items already picked in the round (`pending`), so
every policy picks K distinct items and the heuristics move away from the
pending ones: random K without replacement, min-max-cos becomes greedy
k-centre on the embeddings, the oracle's set is the classes neither labelled
nor pending. Randomness comes from `ctx.noise` (uniform `[B, P]`) when the caller
provides it, so an episode's choices do not depend on how a batch is split
across replicas; otherwise from the stateless `seed`.

- `learned`: the model's selection module (sampled with
  `tfp.distributions.Categorical` in training; greedy or sampled in eval).
- `top_k`: batch querying's naive baseline: the k best of the round's first
  (sequential) ranking, blind to what the round already picked. With one
  label per round it is `greedy`.
- `random`: uniform over unlabelled items.
- `oracle`: knows every label. Classes: any item of a class not yet labelled
  (the balanced Matching Net label set). Ratings: the item whose label most
  improves the slow prediction on the held-out items.
- `min_max_cos`: the item whose largest cosine similarity to the labelled
  items is smallest.
- `labelled_mass`: the item whose softmax attention over the pool puts the
  least mass on labelled items (not in the paper; the feature the selector
  can also read, see `layers/selector.py`).
- `popular_entropy`: log popularity x rating entropy (Rashid et al., 2002),
  scores fixed per item from training users.
- `entropy`: sampled in proportion to the entropy of the fast prediction.
- `gp_variance`: sampled in proportion to the posterior variance of a
  Gaussian process whose kernel is the cosine similarity of the embeddings.
- `balanced` (evaluation only, `make_eval_policy`): the class-balanced label
  set of the paper's Matching Net (balanced) row of Table 1.
"""

import dataclasses
from typing import Any, Optional

import tensorflow as tf
import tensorflow_probability as tfp

from active_learning.layers.masked import NEG_INF, masked_max_mean_min
from active_learning.layers.selector import labelled_mass


@dataclasses.dataclass
class StepContext:
    """What a policy may look at when choosing the t-th item.

    `support_labels` are the true labels of every pool item: only the oracle
    reads them. `support_items` are the raw pool inputs (item ids for
    MovieLens), used by per-item score tables.

    Batch querying: `pending` marks the items picked earlier in the current
    round (already part of `labeled`, their labels not in `labels`), and
    `round_logits` are the selection logits at the start of the round.
    """

    model: Any
    embeddings: tf.Tensor
    state: tf.Tensor
    labels: tf.Tensor
    labeled: tf.Tensor
    cosine: tf.Tensor
    logits: tf.Tensor
    support_items: tf.Tensor
    support_labels: tf.Tensor
    queries: Optional[tf.Tensor] = None
    query_labels: Optional[tf.Tensor] = None
    noise: Optional[tf.Tensor] = None
    pending: Optional[tf.Tensor] = None
    round_logits: Optional[tf.Tensor] = None
    query_embeddings: Optional[tf.Tensor] = None   # x' of `queries`, when encoded


def uniform_noise(ctx, seed):
    """Uniform (0, 1) noise `[B, P]`: the caller's, or drawn from `seed`."""
    if ctx.noise is not None:
        return ctx.noise
    return tf.random.stateless_uniform(tf.shape(ctx.logits), seed=seed,
                                       minval=1e-7, maxval=1.0 - 1e-7)


def _masked_argmax(scores, labeled):
    return tf.argmax(tf.where(labeled, tf.constant(NEG_INF, scores.dtype), scores),
                     axis=-1, output_type=tf.int32)


def _sample_masked(log_weights, labeled, noise):
    """A draw from Categorical(logits) restricted to unlabelled items.

    Gumbel-max with the given uniform noise is an exact Categorical sample
    that stays the same for an episode however the batch is split.
    """
    logits = tf.where(labeled, tf.constant(NEG_INF, log_weights.dtype), log_weights)
    gumbel = -tf.math.log(-tf.math.log(noise))
    return tf.argmax(logits + gumbel, axis=-1, output_type=tf.int32)


def _tie_noise(noise, scale=1e-6):
    """Tiny noise that breaks exact ties at random but changes no strict order."""
    return scale * noise


class Policy:
    """Base class: `name`, and `choose(ctx, seed) -> index [B]`.

    `reads_pending`: whether the policy's `ctx.logits` within a round are
    the model's selection given the pending picks (True), or the round's
    first logits (the top-k baseline).
    """

    name = "policy"
    needs_queries = False
    reads_pending = True

    def choose(self, ctx: StepContext, seed) -> tf.Tensor:
        raise NotImplementedError


class LearnedPolicy(Policy):
    """The model's own selection distribution."""

    name = "learned"

    def __init__(self, greedy=False):
        self.greedy = greedy

    def choose(self, ctx, seed):
        if self.greedy:
            return _masked_argmax(ctx.logits, ctx.labeled)
        if ctx.noise is None:
            distribution = tfp.distributions.Categorical(logits=ctx.logits)
            return tf.cast(distribution.sample(seed=seed), tf.int32)
        return _sample_masked(ctx.logits, ctx.labeled, ctx.noise)


class TopKPolicy(Policy):
    """The top k of one ranking: the sequential policy's batch mode.

    Each pick of a round takes the best item of the round's first logits that
    is neither labelled nor pending; it never looks at what the round already
    picked, which is what makes it pick near-duplicates of one class.
    """

    name = "top_k"
    reads_pending = False

    def choose(self, ctx, seed):
        del seed
        logits = ctx.logits if ctx.round_logits is None else ctx.round_logits
        return _masked_argmax(logits, ctx.labeled)


class RandomPolicy(Policy):
    """Uniform over unlabelled items (Matching Net (random) label sets)."""

    name = "random"

    def choose(self, ctx, seed):
        return _sample_masked(tf.zeros_like(ctx.logits), ctx.labeled, uniform_noise(ctx, seed))


def unseen_class_mask(labels, labeled, support_labels):
    """[B, P]: unlabelled items whose class no labelled item carries yet."""
    same = tf.equal(support_labels[:, :, None], support_labels[:, None, :])
    seen = tf.reduce_any(tf.logical_and(same, labeled[:, None, :]), axis=-1)
    del labels
    return tf.logical_and(tf.logical_not(seen), tf.logical_not(labeled))


RATING_ORACLES = ("closed_form", "exact")


def rating_oracle_scores(ctx, method="exact"):
    """[B, P]: minus the held-out squared error if each item were labelled next.

    `exact` tries every candidate at once: the batch is tiled over the pool,
    so the cost is one controller update and one slow prediction over B * P
    episodes, and each candidate's prediction uses the state after reading
    its label, as the model's own prediction would once that item is
    labelled. `closed_form` keeps the current state and matching read and
    adds each candidate to the slow predictor's last softmax
    (`SlowPredictor.lookahead`): O(B Q P), one slow prediction in all. A
    model with the prior-aware predictor scores by its fold-in in closed form
    with either method (`ActiveMatchingNetwork.fold_in_scores`).
    """
    if method not in RATING_ORACLES:
        raise ValueError(f"rating oracle must be one of {RATING_ORACLES}, got {method!r}")
    model = ctx.model
    batch = tf.shape(ctx.labeled)[0]
    pool = tf.shape(ctx.labeled)[1]
    labels = ctx.labels
    if ctx.pending is not None:
        # In a round of a batch query the oracle knows the pending items'
        # ratings too: it completes the round's set greedily.
        labels = tf.where(ctx.pending, tf.cast(ctx.support_labels, labels.dtype), labels)
    if getattr(model, "uses_prior", False):
        return model.fold_in_scores(ctx.embeddings, labels, ctx.labeled, ctx.support_labels,
                                    ctx.queries, ctx.query_labels)
    if method == "closed_form":
        query_embeddings = (model.encode(ctx.queries) if ctx.query_embeddings is None
                            else ctx.query_embeddings)
        return model.lookahead_scores(query_embeddings, ctx.queries, ctx.embeddings, ctx.state,
                                      labels, ctx.labeled, ctx.support_labels,
                                      ctx.query_labels)
    tile = lambda x: tf.repeat(x, pool, axis=0)  # noqa: E731
    candidate = tf.tile(tf.range(pool), [batch])
    support_labels = tile(ctx.support_labels)
    embeddings = tile(ctx.embeddings)
    state, labels, labeled = model.observe(
        embeddings, tile(ctx.state), tile(labels), tile(ctx.labeled), candidate,
        tf.gather(support_labels, candidate, batch_dims=1))
    predictions = model.predict(embeddings, state, labels, labeled, tile(ctx.queries))
    error = tf.reduce_mean(tf.square(predictions - tile(ctx.query_labels)), axis=-1)
    return -tf.reshape(error, [batch, pool])


class OraclePolicy(Policy):
    """Knows every label: balanced classes, or the most helpful rating."""

    name = "oracle"

    def __init__(self, task="classification", rating_oracle="exact"):
        if rating_oracle not in RATING_ORACLES:
            raise ValueError(f"rating_oracle must be one of {RATING_ORACLES}, "
                             f"got {rating_oracle!r}")
        self.task = task
        self.rating_oracle = rating_oracle
        self.needs_queries = task == "regression"

    def target_mask(self, ctx):
        """[B, P] bool: the actions the oracle would accept at this state."""
        if self.task == "classification":
            unseen = unseen_class_mask(ctx.labels, ctx.labeled, ctx.support_labels)
            # Once every class is labelled, any unlabelled item is fine.
            any_unseen = tf.reduce_any(unseen, axis=-1, keepdims=True)
            return tf.where(any_unseen, unseen, tf.logical_not(ctx.labeled))
        scores = rating_oracle_scores(ctx, self.rating_oracle)
        best = _masked_argmax(scores, ctx.labeled)
        return tf.one_hot(best, tf.shape(ctx.labeled)[1], on_value=True, off_value=False)

    def choose(self, ctx, seed):
        mask = self.target_mask(ctx)
        return _sample_masked(tf.zeros_like(ctx.logits), tf.logical_not(mask),
                              uniform_noise(ctx, seed))


class MinMaxCosPolicy(Policy):
    """The unlabelled item least similar to everything labelled so far."""

    name = "min_max_cos"

    def choose(self, ctx, seed):
        max_to_labeled, _, _ = masked_max_mean_min(ctx.cosine, ctx.labeled[:, None, :])
        score = -max_to_labeled + _tie_noise(uniform_noise(ctx, seed))
        return _masked_argmax(score, ctx.labeled)


class LabelledMassPolicy(Policy):
    """The unlabelled item whose pool attention falls least on labelled items."""

    name = "labelled_mass"

    def __init__(self, temperature=0.3):
        self.temperature = float(temperature)

    def choose(self, ctx, seed):
        mass = labelled_mass(ctx.cosine, ctx.labeled, self.temperature)
        score = -mass + _tie_noise(uniform_noise(ctx, seed))
        return _masked_argmax(score, ctx.labeled)


class PopularEntropyPolicy(Policy):
    """Highest log(popularity) x rating entropy first (fixed per item)."""

    name = "popular_entropy"

    def __init__(self, item_scores):
        self.item_scores = tf.constant(item_scores, tf.float32)

    def choose(self, ctx, seed):
        score = tf.gather(self.item_scores, tf.cast(ctx.support_items, tf.int32))
        return _masked_argmax(score + _tie_noise(uniform_noise(ctx, seed)), ctx.labeled)


def prediction_entropy(ctx):
    """[B, P] entropy of the fast prediction for every pool item."""
    model = ctx.model
    if model.config.task == "classification":
        probs = model.fast_predict(ctx.embeddings, ctx.state, ctx.labels, ctx.labeled,
                                   cosine=ctx.cosine)
    else:
        # Ratings: the attention mass on each half-star level is a distribution.
        _, attention = model.fast_predictor(
            model.features(ctx.embeddings), model.controller.hidden(ctx.state), ctx.cosine,
            ctx.labeled,
            model.label_vectors(ctx.labels, ctx.labeled), model.prior())
        c = model.config
        levels = int(round((c.rating_max - c.rating_min) * 2)) + 1
        level = tf.clip_by_value(
            tf.cast(tf.round((tf.cast(ctx.labels, tf.float32) - c.rating_min) * 2), tf.int32),
            0, levels - 1)
        onehot = tf.one_hot(level, levels) * tf.cast(ctx.labeled, tf.float32)[..., None]
        mass = tf.linalg.matmul(attention, onehot)
        # No labelled neighbour yet: maximal uncertainty, uniform over levels.
        # Clipped at 0 as in `blend_with_prior`: attention summing to 1 + 1e-7
        # by rounding would make the empty levels' probability negative, and
        # the entropy NaN.
        rest = tf.maximum(1.0 - tf.reduce_sum(mass, -1, keepdims=True), 0.0)
        probs = mass + rest / levels
    return -tf.reduce_sum(probs * tf.math.log(probs + 1e-12), axis=-1)


class EntropyPolicy(Policy):
    """Sampled in proportion to the entropy of the fast prediction."""

    name = "entropy"

    def choose(self, ctx, seed):
        return _sample_masked(tf.math.log(prediction_entropy(ctx) + 1e-6), ctx.labeled,
                              uniform_noise(ctx, seed))


def gp_posterior_variance(cosine, labeled, noise=0.1):
    """[B, P] GP posterior variance given the labelled items, kernel = cosine."""
    mask = tf.cast(labeled, cosine.dtype)
    pool = tf.shape(cosine)[-1]
    eye = tf.eye(pool, dtype=cosine.dtype)
    pair = mask[:, :, None] * mask[:, None, :]
    # Unlabelled rows/columns become identity so the system stays invertible
    # without coupling to anything.
    system = cosine * pair + eye * (noise * mask[:, None, :] + (1.0 - mask[:, None, :]))
    k_to_labeled = cosine * mask[:, None, :]
    solved = tf.linalg.solve(system, tf.linalg.matrix_transpose(k_to_labeled))
    reduction = tf.reduce_sum(k_to_labeled * tf.linalg.matrix_transpose(solved), axis=-1)
    return tf.maximum(tf.linalg.diag_part(cosine) - reduction, 0.0)


class GPVariancePolicy(Policy):
    """Sampled in proportion to GP posterior variance (the GP baseline)."""

    name = "gp_variance"

    def __init__(self, noise=0.1):
        self.noise = noise

    def choose(self, ctx, seed):
        variance = gp_posterior_variance(ctx.cosine, ctx.labeled, self.noise)
        return _sample_masked(tf.math.log(variance + 1e-6), ctx.labeled,
                              uniform_noise(ctx, seed))


class BalancedPolicy(Policy):
    """Labels a class-balanced set: an item of a class with fewest labels so far.

    The paper's Matching Net (balanced) labels K items of each of the N
    classes (Table 1); after t labels every class holds floor(t/N) or
    ceil(t/N). For t <= N this is the oracle policy. Ties are broken at random.
    """

    name = "balanced"

    def choose(self, ctx, seed):
        same = tf.equal(ctx.support_labels[:, :, None], ctx.support_labels[:, None, :])
        labeled = tf.cast(ctx.labeled, tf.float32)
        # [B, P]: how many labelled items carry item j's class.
        count = tf.reduce_sum(tf.cast(same, tf.float32) * labeled[:, None, :], axis=-1)
        score = -count + 1e-3 * uniform_noise(ctx, seed)
        return _masked_argmax(score, ctx.labeled)


POLICY_NAMES = ("learned", "greedy", "top_k", "random", "oracle", "min_max_cos",
                "labelled_mass", "popular_entropy", "entropy", "gp_variance")


def make_policy(name, task="classification", item_scores=None):
    """Builds a policy by name (`greedy` is the learned policy's argmax)."""
    if name == "learned":
        return LearnedPolicy(greedy=False)
    if name == "greedy":
        return LearnedPolicy(greedy=True)
    if name == "top_k":
        return TopKPolicy()
    if name == "random":
        return RandomPolicy()
    if name == "oracle":
        return OraclePolicy(task)
    if name == "min_max_cos":
        return MinMaxCosPolicy()
    if name == "labelled_mass":
        return LabelledMassPolicy()
    if name == "popular_entropy":
        if task != "regression":
            raise ValueError("popular_entropy scores item ids, so it needs the ratings "
                             f"task (task='regression'), got task={task!r}")
        if item_scores is None:
            raise ValueError("popular_entropy needs per-item scores from training users "
                             "(active_learning.data.movielens.popularity_entropy)")
        return PopularEntropyPolicy(item_scores)
    if name == "entropy":
        return EntropyPolicy()
    if name == "gp_variance":
        return GPVariancePolicy()
    raise ValueError(f"unknown policy {name!r}; choose one of {POLICY_NAMES}")


# `balanced` is not a training policy: it reads every class label and is
# defined for classification only, so it is offered where policies are
# evaluated, not among the trainers' --policy choices.
EVAL_POLICY_NAMES = POLICY_NAMES + ("balanced",)


def make_eval_policy(name, task="classification", item_scores=None):
    """`make_policy`, plus `balanced` (classification only)."""
    if name == "balanced":
        if task != "classification":
            raise ValueError("the balanced policy needs class labels (classification)")
        return BalancedPolicy()
    return make_policy(name, task, item_scores=item_scores)
