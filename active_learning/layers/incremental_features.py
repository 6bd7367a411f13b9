"""The exact selector's item-item features, kept up to date label by label.

`selector.similarity_features` reduces the pool's `[B, P, P]` cosines six
times and its `[B, P, K, P]` mass attention once for every selection: O(P^2)
per item picked, 30 times in a 20-way training episode and once more for all
30 states in the training step's deferred selector pass. In a sequential
rollout the labelled set grows one item at a time, and the same values
follow from the new item's column:

- to the labelled items: a running max, min and sum of `cosine[:, :, j]`,
  and a running sum of `attention[:, :, :, j]` (the labelled masses);
- to the unlabelled items: the mean is (row sum - labelled sum) / count; the
  max (min) is the first unlabelled entry of the item's neighbour list, its
  other pool items sorted by cosine, `depth` = min(T, P - 1) long. A
  selection is made with at most T - 1 items labelled, so one of the first
  T is unlabelled; with P - 1 <= T every other item is in the list, and an
  empty set gives 0, as the reference does.

On every unlabelled item the values are `similarity_features`' (the extrema
exactly, the means and masses up to the order of their sums). A labelled
item's features differ, and the selector masks its logit. Gradients reach
the cosines and the attention through the same entries (gathered columns,
the lists' `top_k`), so training differentiates the same function with
O(P x T) work per step instead of O(P^2).

Two forms: `start`/`add`/`features` carry the running values through a
rollout loop, and `pick_order_features` gives all T steps' features at once
from the picks, for the deferred (differentiated) selector pass.
"""

from typing import NamedTuple

import tensorflow as tf

# Stands in for +-inf in the masked extrema (cosines lie in [-1, 1]).
_BIG = 1e9


class NeighbourLists(NamedTuple):
    """Per item, its other pool items sorted by cosine, `[B, P, depth]` each,
    and its cosines to all other items summed, `[B, P]`."""
    top_values: tf.Tensor
    top_items: tf.Tensor
    bottom_values: tf.Tensor
    bottom_items: tf.Tensor
    row_sums: tf.Tensor


class Running(NamedTuple):
    """The labelled side of the features after some labels: how many items
    are labelled `[B]`, the max / sum / min of each item's cosines to them
    `[B, P]`, and its attention on them `[B, P, K]` (the labelled masses)."""
    count: tf.Tensor
    labelled_max: tf.Tensor
    labelled_sum: tf.Tensor
    labelled_min: tf.Tensor
    masses: tf.Tensor


def list_depth(num_steps, pool):
    """How deep the neighbour lists of a rollout of `num_steps` labels must be."""
    return tf.minimum(tf.cast(num_steps, tf.int32), pool - 1)


def neighbour_lists(cosine, depth):
    """`NeighbourLists` of a `[B, P, P]` cosine matrix (self excluded)."""
    self_pairs = tf.eye(tf.shape(cosine)[-1], dtype=tf.bool)[None]
    big = tf.constant(_BIG, cosine.dtype)
    top = tf.math.top_k(tf.where(self_pairs, -big, cosine), depth)
    bottom = tf.math.top_k(tf.where(self_pairs, -big, -cosine), depth)
    return NeighbourLists(top.values, top.indices, -bottom.values, bottom.indices,
                          tf.reduce_sum(tf.where(self_pairs, tf.zeros_like(cosine), cosine), -1))


def start(cosine, attention=None):
    """`Running` with nothing labelled. `attention`: `selector.mass_attention`
    of the episode (None without labelled-mass features)."""
    zeros = tf.zeros_like(cosine[..., 0])
    big = tf.constant(_BIG, cosine.dtype)
    masses = (tf.zeros_like(cosine[..., :0]) if attention is None
              else tf.zeros_like(attention[..., 0]))
    return Running(zeros[:, 0], zeros - big, zeros, zeros + big, masses)


def add(running, cosine, index, attention=None):
    """`running` after item `index` `[B]` (unlabelled so far) is labelled."""
    column = tf.gather(cosine, index, axis=2, batch_dims=1)                   # [B, P]
    masses = running.masses
    if attention is not None:
        masses += tf.gather(attention, index, axis=3, batch_dims=1)           # [B, P, K]
    return Running(running.count + 1.0, tf.maximum(running.labelled_max, column),
                   running.labelled_sum + column, tf.minimum(running.labelled_min, column),
                   masses)


def _assemble(count, labelled_max, labelled_sum, labelled_min, unlabelled_max,
              unlabelled_min, unlabelled_count, row_sums, masses):
    """The selector's feature order (`similarity_features`): max / mean / min
    to the labelled items, the same to the unlabelled ones, then the masses.
    Every argument but `masses` `[..., K]` has the shape of the pool's items."""
    zero = tf.zeros_like(labelled_sum)
    any_labelled, any_unlabelled = count > 0, unlabelled_count > 0
    to_labelled = [tf.where(any_labelled, labelled_max, zero),
                   tf.where(any_labelled, labelled_sum / tf.maximum(count, 1.0), zero),
                   tf.where(any_labelled, labelled_min, zero)]
    to_unlabelled = [
        tf.where(any_unlabelled, unlabelled_max, zero),
        tf.where(any_unlabelled,
                 (row_sums - labelled_sum) / tf.maximum(unlabelled_count, 1.0), zero),
        tf.where(any_unlabelled, unlabelled_min, zero)]
    return tf.concat([tf.stack(to_labelled + to_unlabelled, -1), masses], -1)


def _first_unlabelled(values, unlabelled, fill):
    """The max (`fill` = -big) or min (+big) of a sorted list's `values` over
    its `unlabelled` entries: the first of them."""
    reduce = tf.reduce_max if fill < 0 else tf.reduce_min
    return reduce(tf.where(unlabelled, values, tf.constant(fill, values.dtype)), -1)


def features(running, lists, labeled):
    """`[B, P, 6 + K]`: `similarity_features(cosine, labeled, ...)` on the
    unlabelled items, from `running` (after the labels in `labeled`)."""
    pool = tf.cast(tf.shape(labeled)[-1], running.labelled_sum.dtype)
    top_open = tf.logical_not(tf.gather(labeled, lists.top_items, batch_dims=1))
    bottom_open = tf.logical_not(tf.gather(labeled, lists.bottom_items, batch_dims=1))
    count = running.count[:, None] + tf.zeros_like(running.labelled_sum)
    return _assemble(count, running.labelled_max, running.labelled_sum, running.labelled_min,
                     _first_unlabelled(lists.top_values, top_open, -_BIG),
                     _first_unlabelled(lists.bottom_values, bottom_open, _BIG),
                     pool - 1.0 - count, lists.row_sums, running.masses)


def pick_order_features(cosine, picks, lists, attention=None):
    """`[T, B, P, 6 + K]`: the features of each step t of a rollout that
    labelled `picks` `[B, T]` in order, i.e. before picks[:, t] was labelled
    (labelled set picks[:, :t]); each equals `features` at that step.

    O(B x P x T^2) in all, against O(T x B x P^2) for T calls of
    `similarity_features`: the columns of the picked items, reduced under a
    triangular mask, and the neighbour lists against each item's pick time.
    """
    num_steps = tf.shape(picks)[1]
    pool = tf.shape(cosine)[-1]
    dtype = cosine.dtype
    steps = tf.range(num_steps)
    earlier = steps[None, :] < steps[:, None]                                 # [t, s]: s < t
    columns = tf.gather(cosine, picks, axis=2, batch_dims=1)                  # [B, P, s]
    before = earlier[None, None]                                              # [1, 1, t, s]
    big = tf.constant(_BIG, dtype)
    labelled_max = tf.reduce_max(tf.where(before, columns[:, :, None, :], -big), -1)
    labelled_min = tf.reduce_min(tf.where(before, columns[:, :, None, :], big), -1)
    earlier_f = tf.cast(earlier, dtype)
    labelled_sum = tf.einsum("bps,ts->bpt", columns, earlier_f)               # [B, P, t]
    if attention is None:
        masses = tf.zeros_like(labelled_sum[..., None][..., :0])
    else:
        picked = tf.gather(attention, picks, axis=3, batch_dims=1)            # [B, P, K, s]
        masses = tf.einsum("bpks,ts->bptk", picked, earlier_f)                # [B, P, t, K]
    # When each item was picked (num_steps: never); labelled at step t: < t.
    picked_at = tf.reduce_min(tf.where(
        tf.one_hot(picks, pool, on_value=True, off_value=False, dtype=tf.bool),
        steps[None, :, None], num_steps), 1)                                  # [B, P]

    def first_open(values, items, fill):
        times = tf.gather(picked_at, items, batch_dims=1)                     # [B, P, D]
        still_open = times[:, :, None, :] >= steps[None, None, :, None]       # [B, P, t, D]
        return _first_unlabelled(values[:, :, None, :], still_open, fill)

    count = tf.cast(steps, dtype)[None, None] + tf.zeros_like(labelled_sum)  # [B, P, t]
    out = _assemble(count, labelled_max, labelled_sum, labelled_min,
                    first_open(lists.top_values, lists.top_items, -_BIG),
                    first_open(lists.bottom_values, lists.bottom_items, _BIG),
                    tf.cast(pool, dtype) - 1.0 - count, lists.row_sums[..., None], masses)
    return tf.transpose(out, [2, 0, 1, 3])
