"""How `select` scales with the pool: exact vs scalable selector features.

    python -m trainers.select_scaling [--pools=1000,10000,100000] \
        [--exact_max_pool=10000] [--labelled=10] [--repeats=5] [--seed=0]
    python -m trainers.select_scaling --fidelity_pool=20000 \
        [--model_dir=models/omniglot_lake_5way_1shot] [--fidelity_steps=30]

With `--fidelity_pool`, it measures instead how close the clustered index
of large pools (`layers/clustered_index.py`) comes to the exact one, on a
real pool (`trainers.session_at_scale`'s rotated Omniglot drawings, the
model's own embeddings): how often each item's nearest and farthest
neighbour is the true one, the recall of the k-lists, the normalisers'
error, and, over `--fidelity_steps` greedy picks (each step's history from
the exact index's picks, answers as in `trainers.session_at_scale`), how
often the clustered index picks the same item and the exact rank of its
pick.

Times, at batch 1 and each pool size, one `ActiveMatchingNetwork.select`
step with the Omniglot trainer's model (embed_dim 64, labelled masses at
OMNIGLOT_LABELLED_MASS_TEMPERATURES) and `--labelled` items labelled:

- exact: the features from the pool's cosine matrix, computed once per
  episode (`similarities`, timed apart) and passed as `cosine=`, as the
  rollout does; each step still reads all P^2 cosines (and builds a
  [B, P, K, P] attention for the labelled masses);
- scalable: the features from the per-episode selection index
  (`selection_index`, timed apart, O(P^2) work once) passed as `index=`;
  each step is O(P x labelled).

Both models share their weights. Embeddings and state are random: the cost
depends on the shapes only. The exact path is skipped above
`--exact_max_pool` (its [P, P] matrices outgrow memory). Medians over
`--repeats` calls after one warm-up call; the ratio is exact / scalable.
"""

import dataclasses
import time

import numpy as np

import active_learning  # noqa: F401  (sets TensorFlow's log level before it loads)
import keras
import tensorflow as tf

from active_learning.config import OMNIGLOT_LABELLED_MASS_TEMPERATURES, ModelConfig
from active_learning.model import ActiveMatchingNetwork


def build_models(seed=0, neighbours=32, chunk=1024):
    """(exact, scalable) Omniglot-sized models with the same weights."""
    keras.utils.set_random_seed(seed)
    config = ModelConfig(embed_dim=64, units=64, max_classes=20,
                         labelled_mass_temperatures=OMNIGLOT_LABELLED_MASS_TEMPERATURES)
    exact = ActiveMatchingNetwork(config)
    scalable = ActiveMatchingNetwork(dataclasses.replace(
        config, selector_features="scalable", selector_neighbours=neighbours,
        selection_chunk=chunk))
    scalable.set_weights(exact.get_weights())
    return exact, scalable


def _median_seconds(fn, repeats):
    fn()  # warm-up (and trace)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _once_seconds(fn):
    fn()  # trace
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(pool, exact, scalable, labelled=10, repeats=5, seed=0, with_exact=True):
    """{path: (per-episode seconds, per-select seconds)} at one pool size."""
    rng = np.random.default_rng(seed)
    embeddings = tf.constant(rng.normal(size=(1, pool, 64)), tf.float32)
    state = tf.constant(rng.normal(size=(1, 128)), tf.float32)
    labels = tf.zeros([1, pool], tf.int32)
    mask = np.zeros((1, pool), bool)
    mask[0, rng.choice(pool, labelled, replace=False)] = True
    labeled = tf.constant(mask)
    out = {}
    if with_exact:
        similarities = tf.function(exact.similarities)
        select = tf.function(lambda c: exact.select(embeddings, state, labels, labeled,
                                                    cosine=c))
        cosine = similarities(embeddings)
        out["exact"] = (_once_seconds(lambda: similarities(embeddings).numpy()),
                        _median_seconds(lambda: select(cosine).numpy(), repeats))
        del cosine
    index_fn = tf.function(scalable.selection_index)
    select = tf.function(lambda i: scalable.select(embeddings, state, labels, labeled,
                                                   index=i))
    index = index_fn(embeddings)
    out["scalable"] = (_once_seconds(lambda: tf.nest.map_structure(
                           lambda t: t.numpy(), index_fn(embeddings))),
                       _median_seconds(lambda: select(index).numpy(), repeats))
    return out


def fidelity(model_dir, data_dir, pool_size, steps, seed=0):
    """The clustered index against the exact one on a real pool (a dict)."""
    from active_learning.layers import clustered_index  # noqa: PLC0415
    from active_learning.layers import selection_index as index_lib  # noqa: PLC0415
    from trainers.session_at_scale import rotated_pool, scalable_copy  # noqa: PLC0415
    pool, classes, _ = rotated_pool(data_dir, pool_size, seed, held_out=0)
    model, _ = scalable_copy(model_dir)
    c = model.config
    embeddings, state = tf.function(model.begin)(tf.constant(pool[None, ..., None],
                                                             tf.float32))
    features = model.features(embeddings)
    exact = tf.function(lambda x: index_lib.exact_selection_index(
        x, c.labelled_mass_temperatures, c.selector_neighbours, c.selection_chunk))(features)
    clustered = index_lib.SelectionIndex(*tf.function(
        lambda x: clustered_index.clustered_selection_index(
            index_lib.unit_vectors(x), c.labelled_mass_temperatures,
            c.selector_neighbours))(features))
    units = index_lib.unit_vectors(features).numpy()[0]

    def first_cosine(lists):
        return np.einsum("pd,pd->p", units, units[lists.numpy()[0][:, 0]])

    got_top, want_top = (i.top_indices.numpy()[0] for i in (clustered, exact))
    recall = np.mean([len(np.intersect1d(a, b)) / a.size for a, b in zip(got_top, want_top)])
    out = {
        "pool": pool_size, "neighbours": c.selector_neighbours,
        "nearest_is_exact": float(np.mean(got_top[:, 0] == want_top[:, 0])),
        "nearest_cosine_gap_p50": float(np.median(first_cosine(exact.top_indices)
                                                  - first_cosine(clustered.top_indices))),
        "nearest_cosine_gap_p99": float(np.percentile(
            first_cosine(exact.top_indices) - first_cosine(clustered.top_indices), 99)),
        "farthest_is_exact": float(np.mean(clustered.bottom_indices.numpy()[0][:, 0]
                                           == exact.bottom_indices.numpy()[0][:, 0])),
        "top_list_recall": float(recall),
    }
    errors = np.abs(clustered.log_normalisers.numpy()[0] - exact.log_normalisers.numpy()[0])
    for j, t in enumerate(c.labelled_mass_temperatures):
        out[f"log_normaliser_error_t{t:g}_p50"] = float(np.median(errors[:, j]))
        out[f"log_normaliser_error_t{t:g}_p99"] = float(np.percentile(errors[:, j], 99))
    labels = tf.fill([1, pool_size], -1)
    labeled = tf.zeros([1, pool_size], tf.bool)
    select = tf.function(lambda s, y, m, i: model.select(embeddings, s, y, m, index=i))
    observe = tf.function(lambda s, y, m, i, a: model.observe(embeddings, s, y, m, i, a))
    same, ranks = [], []
    for _ in range(steps):
        want = select(state, labels, labeled, exact).numpy()[0]
        got = int(np.argmax(select(state, labels, labeled, clustered).numpy()[0]))
        pick = int(np.argmax(want))
        same.append(got == pick)
        ranks.append(int(np.sum(want > want[got])))
        answer = tf.constant([int(classes[pick] % c.max_classes)])
        state, labels, labeled = observe(state, labels, labeled, tf.constant([pick]), answer)
    out.update(steps=steps, same_pick=float(np.mean(same)),
               exact_rank_of_pick_p50=float(np.median(ranks)),
               exact_rank_of_pick_max=int(np.max(ranks)))
    return out


def main(argv):
    from absl import flags  # noqa: PLC0415
    if len(argv) > 1:
        raise SystemExit(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    if f.fidelity_pool:
        # The model's neighbour lists hold 32 items (its selector_neighbours).
        if f.fidelity_pool <= 33 or not 1 <= f.fidelity_steps < f.fidelity_pool:
            raise SystemExit(f"need --fidelity_pool > 33 and 1 <= --fidelity_steps < "
                             f"--fidelity_pool; got --fidelity_pool={f.fidelity_pool}, "
                             f"--fidelity_steps={f.fidelity_steps}")
        for key, value in fidelity(f.model_dir, f.data_dir, f.fidelity_pool,
                                   f.fidelity_steps, f.seed).items():
            print(f"{key:>36} {value:.4g}" if isinstance(value, float) else
                  f"{key:>36} {value}", flush=True)
        return
    exact, scalable = build_models(f.seed, f.neighbours, f.chunk)
    print(f"{'pool':>7} {'path':>9} {'per episode s':>14} {'select ms':>10} {'ratio':>7}",
          flush=True)
    for pool in (int(p) for p in f.pools):
        result = measure(pool, exact, scalable, f.labelled, f.repeats, f.seed,
                         with_exact=pool <= f.exact_max_pool)
        for path, (episode, step) in result.items():
            ratio = ""
            if path == "scalable" and "exact" in result:
                ratio = f"{result['exact'][1] / step:7.1f}"
            print(f"{pool:>7} {path:>9} {episode:>14.3f} {1000 * step:>10.2f} {ratio:>7}",
                  flush=True)


def define_flags():
    from absl import flags  # noqa: PLC0415
    flags.DEFINE_list("pools", ["1000", "10000", "100000"], "Pool sizes to time.")
    flags.DEFINE_integer("exact_max_pool", 10000, "Largest pool the exact path is timed at.")
    flags.DEFINE_integer("labelled", 10, "Labelled items in the pool.")
    flags.DEFINE_integer("repeats", 5, "Timed select calls per pool and path.")
    flags.DEFINE_integer("neighbours", 32, "The scalable index's k.")
    flags.DEFINE_integer("chunk", 1024, "The scalable index's rows per block.")
    flags.DEFINE_integer("seed", 0, "Seed of the weights and the random pool.")
    flags.DEFINE_integer("fidelity_pool", 0, "Measure the clustered index against the "
                         "exact one on a real pool of this many items instead.")
    flags.DEFINE_integer("fidelity_steps", 30, "Greedy picks compared (--fidelity_pool).")
    flags.DEFINE_string("model_dir", "models/omniglot_lake_5way_1shot",
                        "--fidelity_pool: the trained model whose embeddings are used.")
    flags.DEFINE_string("data_dir", "data/omniglot-full", "--fidelity_pool: the release.")


if __name__ == "__main__":
    from absl import app  # noqa: PLC0415
    define_flags()
    app.run(main)
