"""Serving at scale: a scalable-selector SavedModel on pools up to 100,000 items.

    python -m trainers.benchmark_scale [--cells=1x100,1x1000,1x10000,64x1000,1x100000]
        [--seconds=2] [--seed=0]

`python -m trainers.benchmark` runs this in a child process (so that its
peak memory is the scale cells' own, not the training benchmarks') and adds
its rows and targets to its table; run alone it prints the JSON.

For each cell (batch x pool), with an Omniglot-sized model built with
`selector_features="scalable"` (random weights: the cost depends on the
shapes only), exported and loaded as a SavedModel:

- `begin` on random ink images, and `selection_index` on its embeddings
  (exact up to `selection_index.EXACT_MAX_POOL` items, clustered above):
  the once-per-pool cost, timed once after one untimed call at the cell's
  shape for pools up to 10,000 items (tracing is done at export; the first
  call of a large pool is timed as it comes);
- from `session.COMPILED_BEGIN_MIN_POOL` items, also `begin_compiled` (the
  context encoder XLA-compiled; its first call, compiling included), which
  is what an in-process `ActiveSession` runs at that size: the cell's
  `begin_total_s` (the target's number) is the session's begin + index;
- `select_indexed` + `observe` from a mid-episode state (10 items labelled),
  p50 / p99 over repeats for `--seconds`, and a label and the next pick as
  one `observe_select` call (what an in-process `ActiveSession` runs per
  label; from two states with 10 and 11 items labelled, in turn), whose p50
  at pool 100 is the 1 ms target;
- the process's peak resident memory after the cell (`VmHWM` on Linux;
  cells run in the order given, smallest first, so each is the peak so far).

The growth exponent of `select`+`observe` p50 in the pool is fitted over the
batch-1 cells.
"""

import json
import sys
import tempfile
import time

import numpy as np

import active_learning  # noqa: F401  (sets TensorFlow's log level before it loads)
import keras
import tensorflow as tf

from active_learning.config import OMNIGLOT_LABELLED_MASS_TEMPERATURES, ModelConfig
from active_learning.model import ActiveMatchingNetwork
from active_learning.session import COMPILED_BEGIN_MIN_POOL

# What issue-level targets docs/performance.md states for large pools.
TARGET_LARGE_POOL = 100_000
TARGET_LARGE_SELECT_OBSERVE_P50_MS = 50.0
TARGET_LARGE_BEGIN_S = 20.0          # begin + selection_index
TARGET_LARGE_PEAK_MIB = 4096.0
TARGET_SMALL_POOL = 100
TARGET_SMALL_SELECT_OBSERVE_P50_MS = 1.0

DEFAULT_CELLS = ((1, 100), (1, 1000), (1, 10_000), (64, 1000), (1, 100_000))
LABELLED = 10


def _log(message):
    print(f"[benchmark_scale] {message}", file=sys.stderr, flush=True)


_PEAK_SEEN_MIB = [0.0]


def peak_memory_mib():
    """This process's peak resident memory, MiB, never less than it said before.

    Linux's `VmHWM` (the high-water mark of this process's own memory
    map), not `ru_maxrss`: Linux carries ru_maxrss across exec, so a child
    started by `trainers.benchmark` would report its parent's peak. VmHWM
    counts the current resident size when read but stores it only lazily, so
    a later read can be a few pages lower: the largest answer is kept.
    """
    peak = None
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    peak = float(line.split()[1]) / 1024.0
                    break
    except OSError:
        pass
    if peak is None:
        import resource  # noqa: PLC0415
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0
    _PEAK_SEEN_MIB[0] = max(_PEAK_SEEN_MIB[0], peak)
    return _PEAK_SEEN_MIB[0]


def percentiles(seconds):
    ms = np.asarray(seconds, np.float64) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "n": int(ms.size)}


def fit_exponent(sizes, values):
    """k of values ~ c * size^k, least squares in log-log space."""
    sizes, values = np.asarray(sizes, np.float64), np.asarray(values, np.float64)
    if sizes.size < 2 or np.any(values <= 0):
        return float("nan")
    return float(np.polyfit(np.log(sizes), np.log(values), 1)[0])


def scalable_model(seed=0):
    """An Omniglot-sized model (the trainer's defaults) with the scalable selector."""
    keras.utils.set_random_seed(seed)
    return ActiveMatchingNetwork(ModelConfig(
        embed_dim=64, units=64, max_classes=20,
        labelled_mass_temperatures=OMNIGLOT_LABELLED_MASS_TEMPERATURES,
        selector_features="scalable"))


def _mid_episode(begun, batch, pool, rng, labelled=LABELLED):
    labeled = np.zeros([batch, pool], np.int32)
    for row in labeled:
        row[rng.choice(pool, labelled, replace=False)] = 1
    labels = np.where(labeled == 1, rng.integers(0, 5, [batch, pool]), -1).astype(np.int32)
    return {"embeddings": begun["embeddings"], "state": begun["state"],
            "labels": tf.constant(labels), "labeled": tf.constant(labeled)}


def bench_cell(signatures, batch, pool, seconds, rng, compiled=False):
    """One cell's numbers (see the module docstring); `compiled`: also time
    `begin_compiled`, and count it as the session's begin."""
    size = 28
    support = tf.constant(rng.random([batch, pool, size, size, 1]) > 0.8, tf.float32)
    begin, index_fn = signatures["begin"], signatures["selection_index"]
    select, observe = signatures["select_indexed"], signatures["observe"]
    if batch * pool <= 10_000:
        index_fn(embeddings=begin(support=support)["embeddings"])
    start = time.perf_counter()
    begun = begin(support=support)
    begun["state"].numpy()
    begin_s = time.perf_counter() - start
    compiled_s = None
    if compiled:
        start = time.perf_counter()
        signatures["begin_compiled"](support=support)["state"].numpy()
        compiled_s = time.perf_counter() - start
    del support
    start = time.perf_counter()
    index = index_fn(embeddings=begun["embeddings"])
    index["top"].numpy()
    index_s = time.perf_counter() - start
    episode = _mid_episode(begun, batch, pool, rng)
    k = tf.constant(1)
    label = tf.zeros([batch], tf.int32)

    def step():
        start = time.perf_counter()
        chosen = select(k=k, **episode, **index)
        middle = time.perf_counter()
        observe(index=chosen["index"], label=label, **episode)["state"].numpy()
        end = time.perf_counter()
        return middle - start, end - middle, end - start

    # Two states with different numbers of labelled items, taken in turn: a
    # step whose cost depends on that number (say, one compiled per label
    # count) shows here as it would in a session.
    fused_episodes = [episode, _mid_episode(begun, batch, pool, rng, LABELLED + 1)]
    items = [tf.constant(np.argmin(e["labeled"].numpy(), -1).astype(np.int32))
             for e in fused_episodes]
    turn = [0]

    def fused_step():
        turn[0] ^= 1
        start = time.perf_counter()
        signatures["observe_select"](index=items[turn[0]], label=label,
                                     **fused_episodes[turn[0]], **index)["index"].numpy()
        return (time.perf_counter() - start,)

    def repeat(fn):
        for _ in range(2):  # warm-up: the first call of a shape is slower
            fn()
        samples = []
        start = time.perf_counter()
        while len(samples) < 5 or (time.perf_counter() - start < seconds
                                   and len(samples) < 500):
            samples.append(fn())
        return samples

    select_s, observe_s, both_s = zip(*repeat(step))
    (fused_s,) = zip(*repeat(fused_step))
    session_s = begin_s if compiled_s is None else compiled_s
    return {"batch": batch, "pool": pool, "begin_s": begin_s, "begin_compiled_s": compiled_s,
            "begin_session_s": session_s, "index_s": index_s,
            "begin_total_s": session_s + index_s, "select": percentiles(select_s),
            "observe": percentiles(observe_s), "select_observe": percentiles(both_s),
            "observe_select": percentiles(fused_s),
            "peak_memory_mib": peak_memory_mib()}


def run_scale(cells=DEFAULT_CELLS, seconds=2.0, seed=0, compiled_from=COMPILED_BEGIN_MIN_POOL):
    """{cells: [...], exponent, targets} for the given (batch, pool) cells;
    `begin_compiled` is timed from pools of `compiled_from` items."""
    from export.saved_model import export_saved_model  # noqa: PLC0415
    model = scalable_model(seed)
    rng = np.random.default_rng(seed)
    results = {"cells": [], "peak_memory_mib_start": peak_memory_mib()}
    with tempfile.TemporaryDirectory() as tmp:
        path = export_saved_model(model, tmp, version=1)
        signatures = tf.saved_model.load(path).signatures
        for batch, pool in cells:
            _log(f"batch {batch}, pool {pool}")
            cell = bench_cell(signatures, batch, pool, seconds, rng,
                              compiled=pool >= compiled_from)
            if cell["begin_compiled_s"] is not None:
                _log(f"  begin_compiled {cell['begin_compiled_s']:.2f} s")
            _log(f"  begin {cell['begin_s']:.2f} s + index {cell['index_s']:.2f} s, "
                 f"select+observe p50 {cell['select_observe']['p50_ms']:.2f} ms, "
                 f"observe_select p50 {cell['observe_select']['p50_ms']:.2f} ms, "
                 f"peak {cell['peak_memory_mib']:.0f} MiB")
            results["cells"].append(cell)
    ones = [c for c in results["cells"] if c["batch"] == 1]
    results["select_observe_exponent_batch1"] = fit_exponent(
        [c["pool"] for c in ones], [c["select_observe"]["p50_ms"] for c in ones])
    results["targets"] = targets(results["cells"])
    return results


def targets(cells):
    """Where the cells stand against the large-pool targets."""
    out = {}
    by_cell = {(c["batch"], c["pool"]): c for c in cells}
    large = by_cell.get((1, TARGET_LARGE_POOL))
    if large:
        for key, value, target in (
                ("select_observe_p50_ms_pool100k_batch1", large["select_observe"]["p50_ms"],
                 TARGET_LARGE_SELECT_OBSERVE_P50_MS),
                ("begin_s_pool100k_batch1", large["begin_total_s"], TARGET_LARGE_BEGIN_S),
                ("peak_memory_mib_pool100k", large["peak_memory_mib"], TARGET_LARGE_PEAK_MIB)):
            out[key] = {"value": value, "target": target, "met": bool(value <= target)}
    small = by_cell.get((1, TARGET_SMALL_POOL))
    if small:
        # Per label, as a session runs it: one `observe_select` call. The two
        # calls stay in the table (docs/performance.md, "A withdrawn number"
        # and "One call per label").
        value = small["observe_select"]["p50_ms"]
        out["select_observe_p50_ms_pool100_batch1_scalable"] = {
            "value": value, "target": TARGET_SMALL_SELECT_OBSERVE_P50_MS,
            "met": bool(value <= TARGET_SMALL_SELECT_OBSERVE_P50_MS)}
    return out


TARGET_DESCRIPTIONS = {
    "select_observe_p50_ms_pool100k_batch1": "scalable select+observe p50 ms, pool 100,000 <=",
    "begin_s_pool100k_batch1": "scalable begin (as a session runs it) + index s, pool "
                               "100,000 <=",
    "peak_memory_mib_pool100k": "peak memory MiB through pool 100,000 <=",
    "select_observe_p50_ms_pool100_batch1_scalable": "scalable select+observe p50 ms (one "
                                                     "observe_select call), pool 100 <=",
}


def format_rows(results):
    """The table's lines for the scale cells."""
    lines = ["Large pools, scalable selector (SavedModel; begin and index once per pool; "
             "XLA begin = begin_compiled, first call; select_indexed+observe and "
             "observe_select ms p50 / p99)",
             f"{'batch':>6}{'pool':>9}{'begin s':>9}{'XLA begin s':>13}{'index s':>9}"
             f"{'select+observe':>20}{'observe_select':>20}{'peak MiB':>10}"]
    for c in results["cells"]:
        so, fused = c["select_observe"], c["observe_select"]
        xla = c.get("begin_compiled_s")
        xla = "-" if xla is None else f"{xla:.2f}"
        lines.append(f"{c['batch']:>6}{c['pool']:>9}{c['begin_s']:9.2f}{xla:>13}"
                     f"{c['index_s']:9.2f}"
                     f"{so['p50_ms']:11.2f} / {so['p99_ms']:<7.2f}"
                     f"{fused['p50_ms']:11.2f} / {fused['p99_ms']:<7.2f}"
                     f"{c['peak_memory_mib']:10.0f}")
    lines.append(f"select+observe pool exponent (batch 1): "
                 f"{results['select_observe_exponent_batch1']:.2f}")
    return lines


def run_in_child(cells=DEFAULT_CELLS, seconds=2.0, seed=0):
    """`run_scale` in a fresh Python process (its own peak memory); its dict."""
    import subprocess  # noqa: PLC0415
    spec = ",".join(f"{b}x{p}" for b, p in cells)
    out = subprocess.run([sys.executable, "-m", "trainers.benchmark_scale", f"--cells={spec}",
                          f"--seconds={seconds}", f"--seed={seed}"],
                         check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(out.stdout)


def parse_cells(values):
    cells = []
    for value in values:
        try:
            batch, pool = (int(v) for v in value.lower().split("x"))
        except ValueError:
            raise ValueError(f"--cells entry {value!r} is not BATCHxPOOL, e.g. 1x100000") \
                from None
        if batch < 1 or pool <= LABELLED + 2:
            raise ValueError(f"--cells entry {value!r}: batch must be >= 1 and pool > "
                             f"{LABELLED + 2} (the mid-episode states label {LABELLED} and "
                             f"{LABELLED + 1} items, and leave one to pick after a label)")
        cells.append((batch, pool))
    return tuple(cells)


def main(argv):
    from absl import flags  # noqa: PLC0415
    if len(argv) > 1:
        raise SystemExit(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    try:
        cells = parse_cells(f.cells)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    results = run_scale(cells, f.seconds, f.seed)
    print(json.dumps(results, indent=2, sort_keys=True))
    print("\n".join(format_rows(results)), file=sys.stderr)


def define_flags():
    from absl import flags  # noqa: PLC0415
    flags.DEFINE_list("cells", [f"{b}x{p}" for b, p in DEFAULT_CELLS],
                      "BATCHxPOOL cells, run in this order (smallest first).")
    flags.DEFINE_float("seconds", 2.0, "Time budget of the select+observe repeats per cell.")
    flags.DEFINE_integer("seed", 0, "Seed of the weights and the random pools.")


if __name__ == "__main__":
    from absl import app  # noqa: PLC0415
    define_flags()
    app.run(main)
