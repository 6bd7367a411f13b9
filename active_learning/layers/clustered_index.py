"""The selection index of a large pool without its P^2 cosines.

`selection_index.selection_index` reads every cosine once per episode: for
100,000 items that is 10^10 cosines, over a minute of `begin` on two CPU
cores however it is blocked. Above `selection_index.EXACT_MAX_POOL` items
the index comes from here instead, in O(P x (n x M + P/M x s) x D):

1. Spherical k-means (`KMEANS_ITERATIONS` Lloyd steps from evenly spaced
   items) puts the unit embeddings into about P / M clusters.
2. The items, sorted by cluster and within it by similarity to the
   centroid, are cut into consecutive blocks of exactly M (`BLOCK_SIZE`)
   items, so every block has the same shape (a large cluster spans several
   blocks; small ones share one).
3. Each block probes the n (`PROBES`) blocks whose mean directions are most
   similar to its own (itself first) and the `FAR_PROBES` least similar ones. An
   item's top-k neighbours are the k most similar items of its block's
   near probes, its bottom-k the k least similar of the far probes: the
   inverted-file search of nearest-neighbour libraries, with the probes
   chosen per block so that each block's cosines are one batched matmul.
4. The log-normaliser log Z_i(t) = log sum_{j != i} exp(cos_ij / t) is exact
   over the near probes (where the largest terms are) and estimated over
   every other block from `REPRESENTATIVES` of its members (evenly spaced in
   the block's order), each standing for n_b / s items: a stratified
   sample, so its error shrinks with the spread of cosines inside a block.

All three are APPROXIMATIONS of the exact index: a true neighbour outside
the probed blocks is missed, and the normaliser carries the sampling error.
`trainers.select_scaling --fidelity` measures both against the exact index
on real embeddings. Everything is fixed-shape core TensorFlow ops, so the
SavedModel graph of a scalable model stays servable anywhere.
"""

import tensorflow as tf

from active_learning.layers.masked import unit_vectors


BLOCK_SIZE = 256        # M: items per block
PROBES = 16             # n: blocks searched for each block's near items
FAR_PROBES = 16         # blocks searched for its farthest items (at 20,000 items, 8
                        # saved 10% of the index's time but the picks matched the
                        # exact index's 73% of the time instead of 83%)
REPRESENTATIVES = 8     # s: sampled members per block for the normalisers
KMEANS_ITERATIONS = 4
BLOCKS_PER_STEP = 16    # blocks whose cosines one loop step holds in memory

_OUTSIDE = 4.0          # an impossible cosine, for self pairs and padding


def _kmeans_assignment(units, clusters, iterations):
    """Each item's cluster `[B, P]` and its cosine to the centroid `[B, P]`."""
    pool = tf.shape(units)[1]
    batch = tf.shape(units)[0]
    seeds = (tf.range(clusters) * pool) // clusters
    centroids = tf.gather(units, seeds, axis=1)                               # [B, C, D]
    for _ in range(iterations):
        assign = tf.argmax(tf.einsum("bpd,bcd->bpc", units, centroids), -1,
                           output_type=tf.int32)
        flat = assign + tf.range(batch)[:, None] * clusters
        sums = tf.math.unsorted_segment_sum(units, flat, batch * clusters)
        sums = tf.reshape(sums, [batch, clusters, -1])
        empty = tf.reduce_sum(tf.square(sums), -1, keepdims=True) < 1e-12
        centroids = tf.where(empty, centroids, unit_vectors(sums))
    similarity = tf.einsum("bpd,bcd->bpc", units, centroids)
    assign = tf.argmax(similarity, -1, output_type=tf.int32)
    return assign, tf.reduce_max(similarity, -1)


def clustered_selection_index(units, temperatures, neighbours, block_size=BLOCK_SIZE,
                              probes=PROBES, representatives=REPRESENTATIVES,
                              iterations=KMEANS_ITERATIONS, far_probes=FAR_PROBES):
    """(log_normalisers `[B, P, K]`, top `[B, P, k]`, bottom `[B, P, k]`) of
    unit embeddings `units` `[B, P, D]` (P > k; a pool of fewer than
    `probes` blocks probes them all).

    Same layout and meaning as `selection_index.SelectionIndex`; see the
    module docstring for what is approximated.
    """
    dtype = units.dtype
    batch, pool = tf.shape(units)[0], tf.shape(units)[1]
    blocks = (pool + block_size - 1) // block_size
    padded_size = blocks * block_size
    k = neighbours
    assign, centre = _kmeans_assignment(units, blocks, iterations)

    # Sorted by cluster, then by closeness to its centroid (f64 keeps both).
    key = tf.cast(assign, tf.float64) + (1.0 - tf.cast(centre, tf.float64)) / 2.5
    order = tf.argsort(key, axis=-1, stable=True)       # [B, P]
    padding = padded_size - pool
    members = tf.reshape(tf.pad(order, [[0, 0], [0, padding]], constant_values=-1),
                         [batch, blocks, block_size])                          # [B, nb, M]
    real = members >= 0
    safe = tf.maximum(members, 0)
    member_units = tf.gather(units, safe, batch_dims=1) * tf.cast(real, dtype)[..., None]
    counts = tf.reduce_sum(tf.cast(real, dtype), -1)                           # [B, nb]
    directions = unit_vectors(tf.reduce_sum(member_units, 2))                   # [B, nb, D]
    block_cosine = tf.einsum("bnd,bmd->bnm", directions, directions)
    near = tf.math.top_k(block_cosine, tf.minimum(probes, blocks)).indices    # [B, nb, n]
    far = tf.math.top_k(-block_cosine, tf.minimum(far_probes, blocks)).indices

    # Representatives: s members per block, evenly spaced among its real ones.
    slots = tf.cast(tf.range(representatives), dtype) / float(representatives)
    position = tf.cast(tf.floor(counts[..., None] * slots[None, None]), tf.int32)
    rep_items = tf.gather(safe, position, batch_dims=2)                       # [B, nb, s]
    rep_units = tf.reshape(tf.gather(units, rep_items, batch_dims=1),
                           [batch, blocks * representatives, -1])
    # Each representative stands for n_b / s items (log weight).
    rep_log_weight = tf.reshape(tf.repeat(tf.math.log(counts / representatives), representatives,
                                          axis=-1), [batch, 1, 1, -1])
    temperatures = tuple(float(t) for t in temperatures)
    step = BLOCKS_PER_STEP

    def candidates(block_ids, probe_lists):
        cand = tf.gather(members, tf.gather(probe_lists, block_ids, axis=1), batch_dims=1)
        cand = tf.reshape(cand, [batch, tf.shape(block_ids)[0], -1])          # [B, g, nM]
        cand_units = tf.gather(units, tf.maximum(cand, 0), batch_dims=1)
        return cand, cand_units

    def extreme(cosine, valid, cand, sign):
        values, where = tf.math.top_k(tf.where(valid, sign * cosine, -_OUTSIDE), k)
        return tf.gather(cand, where, batch_dims=2), values                   # [B, g, M, k]

    def body(first, arrays):
        block_ids = tf.range(first, tf.minimum(first + step, blocks))
        query = tf.gather(members, block_ids, axis=1)                          # [B, g, M]
        query_units = tf.gather(member_units, block_ids, axis=1)              # [B, g, M, D]
        near_cand, near_cosine, near_valid = _probe_cosines(
            query, query_units, candidates(block_ids, near))
        far_cand, far_cosine, far_valid = _probe_cosines(
            query, query_units, candidates(block_ids, far))
        top, top_cosine = extreme(near_cosine, near_valid, near_cand, 1.0)
        out = [top, extreme(far_cosine, far_valid, far_cand, -1.0)[0]]
        # Normalisers: exact over the near probes, sampled over the rest.
        # Sums of exp((cos - m) / t), shifted by the item's largest cosine m
        # (the top list's first): the largest term is 1, so nothing
        # overflows or vanishes, without logsumexp's own max pass.
        probed = tf.reduce_any(tf.equal(
            tf.gather(near, block_ids, axis=1)[..., None],
            tf.range(blocks)[None, None, None]), axis=2)                      # [B, g, nb]
        skip = tf.repeat(probed, representatives, axis=-1)[:, :, None, :]
        rep_cosine = tf.einsum("bgmd,brd->bgmr", query_units, rep_units)
        shift = top_cosine[..., :1]                                           # [B, g, M, 1]
        # Pairs that do not count are -inf before the temperatures: exp()
        # then gives the exact 0 that a where() after it gave, with one
        # masking pass for all temperatures instead of one per temperature.
        minus_inf = tf.constant(float("-inf"), dtype)
        near_offset = tf.where(near_valid, near_cosine - shift, minus_inf)
        rep_offset = tf.where(skip, minus_inf, rep_cosine - shift)
        log_z = []
        for t in temperatures:
            exact = tf.reduce_sum(tf.exp(near_offset * (1.0 / t)), -1)
            # A sampled block may hold items more similar than every probed
            # one: capped so that exp() stays finite at tiny temperatures.
            sampled = tf.reduce_sum(tf.exp(tf.minimum(
                rep_offset * (1.0 / t) + rep_log_weight, 80.0)), -1)
            log_z.append(shift[..., 0] * (1.0 / t) + tf.math.log(exact + sampled))
        log_z = (tf.stack(log_z, -1) if log_z
                 else tf.zeros(tf.concat([tf.shape(query), [0]], 0), dtype))
        # Block-major parts [g, B, M, w]: TensorArray.concat joins axis 0,
        # and the last step may hold fewer than `step` blocks.
        values = [tf.transpose(v, [1, 0, 2, 3]) for v in out + [log_z]]
        index = first // step
        return first + step, tuple(a.write(index, v) for a, v in zip(arrays, values))

    loops = (blocks + step - 1) // step
    arrays = tuple(tf.TensorArray(d, size=loops, infer_shape=False)
                   for d in (tf.int32, tf.int32, dtype))
    _, arrays = tf.while_loop(lambda first, _: first < blocks, body,
                              (tf.constant(0), arrays), parallel_iterations=1)

    # Back from block order [B, nb * M] to item order [B, P].
    inverse = tf.argsort(order, axis=-1)

    def item_order(array, width):
        joined = tf.transpose(array.concat(), [1, 0, 2, 3])                  # [B, nb, M, w]
        return tf.gather(tf.reshape(joined, [batch, padded_size, width]), inverse,
                         batch_dims=1)

    top, bottom, log_z = (item_order(a, w) for a, w in
                          zip(arrays, (k, k, len(temperatures))))
    return log_z, top, bottom


def _probe_cosines(query, query_units, candidates):
    """Cosines `[B, g, M, nM]` of a step's query items to their probed
    candidates, and which pairs count (a real candidate, not the item)."""
    cand, cand_units = candidates
    cosine = tf.einsum("bgmd,bgjd->bgmj", query_units, cand_units)
    valid = tf.logical_and(cand[:, :, None, :] >= 0,
                           tf.not_equal(cand[:, :, None, :], query[..., None]))
    return cand, cosine, valid
