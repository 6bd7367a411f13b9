"""Selection features in O(P x L) per step: a per-episode index of the pool.

The selector's features (paper 3.2.4, and the labelled masses of
`layers/selector.py`) read, for each pool item i, its cosines to the labelled
items and to the other unlabelled items. Computed from the full `[B, P, P]`
cosine matrix at every `select` step, that is P^2 cosines per step: 10^10
for a pool of 100,000. Most of it never changes within an episode, so
`selection_index` computes what needs the whole pool ONCE, from the pool
embeddings (after `begin`), in row blocks of bounded memory, and
`scalable_similarity_features` then reads each step's features from the
index and the L covered (labelled or pending) items in O(P x L):

- max / mean / min cosine to the labelled items: exact, from the cosines to
  the (at most L) covered items, gathered.
- mean cosine to the other unlabelled items: exact, from the sum of all unit
  embeddings (O(P x D), recomputed each step) minus those of the covered
  items.
- labelled mass at temperature t: exact, the covered items' share
  sum_{j covered, j != i} exp(cos_ij / t) over the per-item normaliser
  Z_i(t) = sum_{j != i} exp(cos_ij / t), kept as log Z_i(t).
- max (min) cosine to the other unlabelled items: the largest (smallest)
  cosine among i's `k` most (least) similar other items that is not
  covered; exact unless all k of them are covered. Then it is
  APPROXIMATED by the k-th cosine of the list, a bound on the true value
  (an upper bound for the max, a lower bound for the min). With
  k >= P - 1 the lists hold every other item and these are exact too.

Gradients: the features recompute each cosine they use from the
embeddings (the index only says which pairs: for the max and min to the
uncovered items, the one pair the stored lists point at), so they
differentiate like the exact path's, except through log Z_i(t), which is
held constant (its gradient would need a second pass over all pairs).
"""

import collections

import tensorflow as tf

from active_learning.layers.clustered_index import clustered_selection_index
from active_learning.layers.masked import NEG_INF, masked_max_mean_min

# Row-block size and neighbour-list length when the caller names none
# (`ModelConfig.selection_chunk`, `ModelConfig.selector_neighbours`).
DEFAULT_CHUNK = 1024
DEFAULT_NEIGHBOURS = 32
# Larger pools get the clustered index (`layers/clustered_index.py`).
EXACT_MAX_POOL = 8192

# An impossible cosine that keeps an item out of its own neighbour lists.
_OUTSIDE = 4.0

SelectionIndex = collections.namedtuple(
    "SelectionIndex",
    ["log_normalisers",  # [B, P, K] log Z_i(t), one per temperature
     "top_indices",      # [B, P, k] i's k most similar other items, most first
     "bottom_indices"])  # [B, P, k] i's k least similar other items, least first
# The lists' cosines are not kept: a step recomputes the one it needs per item.


def unit_vectors(embeddings, eps=1e-8):
    """Rows scaled to unit length, as `masked.cosine_matrix` scales them."""
    return embeddings * tf.math.rsqrt(tf.reduce_sum(tf.square(embeddings), -1,
                                                    keepdims=True) + eps)


def selection_index(embeddings, temperatures=(), neighbours=DEFAULT_NEIGHBOURS,
                    chunk=DEFAULT_CHUNK):
    """The per-episode `SelectionIndex` of pool `embeddings` `[B, P, D]`:
    `exact_selection_index` up to `EXACT_MAX_POOL` items, above it the
    clustered approximation of `layers/clustered_index.py` (the exact one
    reads P^2 cosines: over a minute for 100,000 items on two CPU cores).
    """
    neighbours = int(neighbours)
    pool = embeddings.shape[1]

    def exact():
        return tuple(exact_selection_index(embeddings, temperatures, neighbours, chunk))

    def clustered():
        units = unit_vectors(tf.stop_gradient(embeddings))
        return clustered_selection_index(units, temperatures, neighbours)

    if pool is not None:
        return SelectionIndex(*(clustered() if pool > EXACT_MAX_POOL else exact()))
    return SelectionIndex(*tf.cond(tf.shape(embeddings)[1] > EXACT_MAX_POOL, clustered, exact))


def exact_selection_index(embeddings, temperatures=(), neighbours=DEFAULT_NEIGHBOURS,
                          chunk=DEFAULT_CHUNK):
    """The exact per-episode `SelectionIndex` of pool `embeddings` `[B, P, D]`.

    Rows are processed `chunk` at a time (a `tf.while_loop` that keeps one
    `[B, chunk, P]` block of cosines alive), so memory is O(B x chunk x P)
    however large the pool; the work is the P^2 cosines, once per episode.
    The index is a constant of the episode: no gradient flows through it.

    Args:
      embeddings: `[B, P, D]` pool embeddings x''.
      temperatures: the labelled-mass temperatures (may be empty).
      neighbours: k, the length of each item's top and bottom lists
        (min(k, P - 1) are kept; a pool of one item lists itself, and its
        features, over empty sets, never read the list).
      chunk: rows per block.
    """
    neighbours, chunk = int(neighbours), int(chunk)
    if neighbours < 1 or chunk < 1:
        raise ValueError(f"neighbours and chunk must be >= 1; got neighbours={neighbours}, "
                         f"chunk={chunk}")
    units = unit_vectors(tf.stop_gradient(embeddings))
    batch, pool = tf.shape(units)[0], tf.shape(units)[1]
    k = tf.maximum(tf.minimum(neighbours, pool - 1), 1)
    rows = tf.minimum(chunk, pool)
    blocks = (pool + rows - 1) // rows
    # Padding rows (zero vectors, cosine 0 to everything) make every block
    # the same shape; their results are cut off at the end.
    padded = tf.pad(units, [[0, 0], [0, blocks * rows - pool], [0, 0]])
    temperatures = tuple(float(t) for t in temperatures)
    columns = tf.range(pool)

    def block(b, arrays):
        first = b * rows
        cosine = tf.linalg.matmul(padded[:, first:first + rows], units,
                                  transpose_b=True)                        # [B, r, P]
        self_pair = tf.equal((first + tf.range(rows))[:, None], columns[None, :])[None]
        outside = tf.constant(_OUTSIDE, cosine.dtype)
        _, top = tf.math.top_k(tf.where(self_pair, -outside, cosine), k)
        _, bottom = tf.math.top_k(tf.where(self_pair, -outside, -cosine), k)
        # One temperature at a time: a [B, r, P, K] tensor would be K blocks.
        log_z = [tf.reduce_logsumexp(tf.where(self_pair, tf.constant(NEG_INF, cosine.dtype),
                                              cosine * (1.0 / t)), axis=2)
                 for t in temperatures]
        log_z = (tf.stack(log_z, -1) if log_z
                 else tf.zeros(tf.concat([tf.shape(cosine)[:2], [0]], 0), cosine.dtype))
        values = (top, bottom, log_z)
        return b + 1, tuple(a.write(b, v) for a, v in zip(arrays, values))

    arrays = tuple(tf.TensorArray(dtype, size=blocks)
                   for dtype in (tf.int32, tf.int32, units.dtype))
    _, arrays = tf.while_loop(lambda b, _: b < blocks, block, (tf.constant(0), arrays),
                              parallel_iterations=1)

    def rows_of(array, width):
        # [blocks, B, rows, w] -> [B, P, w]
        stacked = tf.transpose(array.stack(), [1, 0, 2, 3])
        return tf.reshape(stacked, [batch, blocks * rows, width])[:, :pool]

    top, bottom, log_z = (rows_of(a, w) for a, w in zip(arrays, (k, k, len(temperatures))))
    return SelectionIndex(log_z, top, bottom)


def _covered_items(covered):
    """Indices `[B, L]` of the covered items (L = the most of any episode) and
    which of them are real `[B, L]` (episodes with fewer covered items are
    padded). O(P log L): a top_k over the mask, covered items first."""
    counts = tf.reduce_sum(tf.cast(covered, tf.int32), -1)
    most = tf.reduce_max(counts)
    _, items = tf.math.top_k(tf.cast(covered, tf.int32), most)
    real = tf.range(most)[None, :] < counts[:, None]
    return items, real


def _extreme_uncovered(units, indices, uncovered, has_any):
    """Max (min) cosine of each item to the uncovered items, from its top
    (bottom) list `indices` `[B, P, k]`, ordered most extreme first.

    The first uncovered entry of the list; where all k are covered, the
    list's last (k-th) entry, the documented approximation; 0 where the item
    has no uncovered other item (`has_any`). Only the pair chosen is
    recomputed from the unit vectors (so the value has the exact path's
    gradient): O(P x (k + D)).
    """
    open_ = tf.gather(uncovered, indices, batch_dims=1)                      # [B, P, k]
    first = tf.argmax(tf.cast(open_, tf.int32), axis=-1, output_type=tf.int32)
    last = tf.fill(tf.shape(first), tf.shape(indices)[-1] - 1)
    position = tf.where(tf.reduce_any(open_, -1), first, last)
    neighbour = tf.gather(indices, position, batch_dims=2)                    # [B, P]
    value = tf.reduce_sum(units * tf.gather(units, neighbour, batch_dims=1), -1)
    return tf.where(has_any, value, tf.zeros_like(value))


def scalable_similarity_features(embeddings, index, covered, temperatures=()):
    """`similarity_features` from a `SelectionIndex`, O(P x (L + k)) per step.

    Same layout `[B, P, 6 + K]`: max/mean/min cosine to the covered items,
    max/mean/min to the other uncovered ones, one labelled mass per
    temperature; 0 for an empty set. Only the max and min to uncovered items
    can differ from the exact path (see the module docstring).
    """
    units = unit_vectors(embeddings)
    dtype = units.dtype
    pool = tf.shape(covered)[-1]
    positions = tf.range(pool)
    items, real = _covered_items(covered)                                     # [B, L]
    covered_units = tf.gather(units, items, batch_dims=1)                     # [B, L, D]
    to_covered = tf.einsum("bpd,bld->bpl", units, covered_units)             # [B, P, L]
    not_self = tf.not_equal(items[:, None, :], positions[None, :, None])
    valid = tf.logical_and(real[:, None, :], not_self)
    covered_features = masked_max_mean_min(to_covered, valid)

    # Mean to the other uncovered items: x_i . (sum of uncovered units), less
    # the item itself when it is uncovered.
    # The sum of all units is O(P x D), so a step recomputes it rather than
    # keep it in the index: that way it carries its gradient. In float64:
    # with few items left uncovered, a float32 difference of the sums
    # would cancel to an error of ~1e-7 x P.
    unit_sum = tf.reduce_sum(tf.cast(units, tf.float64), 1)
    covered_sum = tf.einsum("bld,bl->bd", tf.cast(covered_units, tf.float64),
                            tf.cast(real, tf.float64))
    uncovered_sum = tf.cast(unit_sum - covered_sum, dtype)
    self_cosine = tf.reduce_sum(tf.square(units), -1)
    uncovered = tf.logical_not(covered)
    is_uncovered = tf.cast(uncovered, dtype)
    others = (tf.reduce_sum(is_uncovered, -1, keepdims=True) - is_uncovered)  # [B, P]
    total = tf.einsum("bpd,bd->bp", units, uncovered_sum) - is_uncovered * self_cosine
    has_others = others > 0
    mean_uncovered = tf.where(has_others, total / tf.maximum(others, 1.0),
                              tf.zeros_like(total))

    max_uncovered = _extreme_uncovered(units, index.top_indices, uncovered, has_others)
    min_uncovered = _extreme_uncovered(units, index.bottom_indices, uncovered, has_others)

    features = tf.stack(list(covered_features)
                        + [max_uncovered, mean_uncovered, min_uncovered], axis=-1)
    if not temperatures:
        return features
    inverse = tf.constant([1.0 / t for t in temperatures], dtype)
    log_z = tf.stop_gradient(index.log_normalisers)                          # [B, P, K]
    # Masked before exp(): cos_ii / t - log Z_i may overflow (the item is
    # not in its own normaliser).
    logits = tf.where(valid[..., None], to_covered[..., None] * inverse - log_z[:, :, None, :],
                      tf.constant(NEG_INF, dtype))                           # [B, P, L, K]
    masses = tf.reduce_sum(tf.exp(logits), 2)
    return tf.concat([features, masses], -1)
