"""How `select` scales with the pool: exact vs scalable selector features.

    python -m trainers.select_scaling [--pools=1000,10000,100000] \
        [--exact_max_pool=10000] [--labelled=10] [--repeats=5] [--seed=0]

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


def main(argv):
    from absl import flags  # noqa: PLC0415
    if len(argv) > 1:
        raise SystemExit(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
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


if __name__ == "__main__":
    from absl import app  # noqa: PLC0415
    define_flags()
    app.run(main)
