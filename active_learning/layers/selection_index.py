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
from active_learning.layers.masked import unit_vectors  # noqa: F401  (public here too)

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


def _extreme_neighbours(indices, uncovered):
    """Each item's most (least) similar uncovered item `[B, P]`, from its top
    (bottom) list `indices` `[B, P, k]`, ordered most extreme first.

    The first uncovered entry of the list; where all k are covered, the
    list's last (k-th) entry, the documented approximation. Most lists start
    with an uncovered item, so only the rows whose first entry is covered
    (about as many as the covered items have list entries pointing at them)
    read their whole list: O(P + rows x k), not a gather of all P x k
    entries per step.
    """
    batch, pool, k = tf.shape(indices)[0], tf.shape(indices)[1], tf.shape(indices)[2]
    flat_uncovered = tf.reshape(uncovered, [-1])
    offsets = (tf.range(batch) * pool)[:, None]                               # [B, 1]
    first = indices[..., 0]                                                   # [B, P]
    rows = tf.where(tf.logical_not(tf.gather(flat_uncovered, first + offsets)))
    rows = tf.cast(rows, tf.int32)                                            # [R, 2]
    lists = tf.gather_nd(indices, rows)                                       # [R, k]
    open_ = tf.gather(flat_uncovered, lists + rows[:, :1] * pool)
    position = tf.where(tf.reduce_any(open_, -1),
                        tf.argmax(tf.cast(open_, tf.int32), axis=-1, output_type=tf.int32),
                        tf.fill(tf.shape(rows)[:1], k - 1))
    return tf.tensor_scatter_nd_update(first, rows, tf.gather(lists, position, batch_dims=1))


def plain_matmul(x, y, adj_y=False):
    """`tf.linalg.matmul(x, y)` for the small batched products of a step.

    The core `BatchMatMulV3` op (float32 in and out), not `BatchMatMulV2`:
    TensorFlow's CPU build hands `BatchMatMulV2` (and `einsum`, `matvec`) to
    oneDNN, whose batched product costs ~0.13 ms a call at a pool of 100
    items whatever its size, the better part of a step's 1 ms there; this
    one runs in Eigen. Used where its right side is narrow (a vector, a few
    columns), where it is also faster at 100,000 items (docs/performance.md,
    "Small products").
    """
    return tf.raw_ops.BatchMatMulV3(x=x, y=y, adj_y=adj_y, Tout=x.dtype)


def _dot_rows(embeddings, rows):
    """`[B, P, D] x [B, Q, D] -> [B, P, Q]`, e_i . r_q per episode.

    `plain_matmul` for one episode (a served session: the fastest form
    measured from 100 to 100,000 items), oneDNN's batched product otherwise
    (2.4x faster than Eigen's for 64 episodes of 1,000 items).
    """
    return tf.cond(tf.equal(tf.shape(embeddings)[0], 1),
                   lambda: plain_matmul(embeddings, rows, adj_y=True),
                   lambda: tf.linalg.matmul(embeddings, rows, transpose_b=True))


def scalable_similarity_features(embeddings, index, covered, temperatures=()):
    """`similarity_features` from a `SelectionIndex`, O(P x (L + k)) per step.

    Same layout `[B, P, 6 + K]`: max/mean/min cosine to the covered items,
    max/mean/min to the other uncovered ones, one labelled mass per
    temperature; 0 for an empty set. Only the max and min to uncovered items
    can differ from the exact path (see the module docstring).

    The cost is a few passes over the `[B, P, D]` embeddings (what a step
    of a 100,000-item pool spends its time on), so the unit vectors are
    never formed: each cosine is e_i . e_j x r_i x r_j with r the inverse
    norms, and one matmul gives the cosines to the covered items and the
    dot products with the sum of the uncovered units together.
    """
    dtype = embeddings.dtype
    batch, pool = tf.shape(covered)[0], tf.shape(covered)[-1]
    squares = tf.reduce_sum(tf.square(embeddings), -1)                        # [B, P]
    inverse_norm = tf.math.rsqrt(squares + 1e-8)       # as unit_vectors / cosine_matrix
    items, real = _covered_items(covered)                                     # [B, L]
    covered_units = (tf.gather(embeddings, items, batch_dims=1)
                     * tf.gather(inverse_norm, items, batch_dims=1)[..., None])   # [B, L, D]
    uncovered = tf.logical_not(covered)
    is_uncovered = tf.cast(uncovered, dtype)
    # The sum of the uncovered units is O(P x D), so a step recomputes it
    # rather than keep it in the index: that way it carries its gradient.
    # Summed over the uncovered items themselves (not all items less the
    # covered ones, whose float32 difference would cancel to an error of
    # ~1e-7 x P when few items are left uncovered).
    uncovered_sum = plain_matmul((is_uncovered * inverse_norm)[:, None],
                                 embeddings)                                  # [B, 1, D]
    both = _dot_rows(embeddings, tf.concat([covered_units, uncovered_sum], 1))
    both = both * inverse_norm[..., None]                                     # [B, P, L + 1]
    to_covered, total = both[..., :-1], both[..., -1]
    positions = tf.range(pool)
    not_self = tf.not_equal(items[:, None, :], positions[None, :, None])
    valid = tf.logical_and(real[:, None, :], not_self)
    covered_features = masked_max_mean_min(to_covered, valid)

    # Mean to the other uncovered items: x_i . (sum of uncovered units), less
    # the item itself when it is uncovered.
    self_cosine = squares * tf.square(inverse_norm)
    others = (tf.reduce_sum(is_uncovered, -1, keepdims=True) - is_uncovered)  # [B, P]
    total = total - is_uncovered * self_cosine
    has_others = others > 0
    mean_uncovered = tf.where(has_others, total / tf.maximum(others, 1.0),
                              tf.zeros_like(total))

    # Max and min to the uncovered items: only the pair each list points at
    # is recomputed (so the values have the exact path's gradient).
    depth = tf.shape(embeddings)[-1]
    rows = tf.reshape(embeddings, [batch * pool, depth])
    norms = tf.reshape(inverse_norm, [-1])
    offsets = (tf.range(batch) * pool)[:, None]

    def cosine_to(neighbour):  # [B, P] -> cos(item, its neighbour) [B, P]
        flat = neighbour + offsets
        # One gather of [B x P] rows per list: a single gather of [B, P, 2]
        # indices ran three times slower here at P = 100,000 (CPU), and
        # einsum runs the [1, D] x [D, 2] product P times over (10x slower).
        partner = tf.reshape(tf.gather(rows, tf.reshape(flat, [-1])), tf.shape(embeddings))
        return (tf.reduce_sum(embeddings * partner, -1) * inverse_norm
                * tf.gather(norms, flat))

    extremes = tf.stack([cosine_to(_extreme_neighbours(index.top_indices, uncovered)),
                         cosine_to(_extreme_neighbours(index.bottom_indices, uncovered))], -1)
    extremes = tf.where(has_others[..., None], extremes, tf.zeros_like(extremes))
    max_uncovered, min_uncovered = extremes[..., 0], extremes[..., 1]

    features = tf.stack(list(covered_features)
                        + [max_uncovered, mean_uncovered, min_uncovered], axis=-1)
    if not temperatures:
        return features
    log_z = tf.stop_gradient(index.log_normalisers)                          # [B, P, K]
    masses = []
    for j, t in enumerate(temperatures):  # [B, P, L] each: no [B, P, L, K] broadcast
        # Masked before exp(): cos_ii / t - log Z_i may overflow (the item is
        # not in its own normaliser).
        logits = tf.where(valid, to_covered * (1.0 / t) - log_z[:, :, j:j + 1],
                          tf.constant(NEG_INF, dtype))
        masses.append(tf.reduce_sum(tf.exp(logits), -1))
    masses = tf.stack(masses, -1)
    return tf.concat([features, masses], -1)
