"""Throughput and latency benchmark of training and serving.

    python -m trainers.benchmark [--output=bench.json] [--quick] [--batch_size=32] \
        [--intra_op_threads=N] [--seed=0]

Measures, in one process and side by side (see docs/performance.md):

- training-step throughput (episodes/s) of `Trainer.train_step` on synthetic
  episodes of the paper's settings: Omniglot 5-way (pool 25, 5 labels),
  10-way (pool 50, 10 labels), 20-way (pool 100, 30 labels), and MovieLens
  (50-movie pool, 10 labels, 4000-item table), whose imitation oracle is
  timed both ways (`closed_form`, the trainers' default, and `exact`);
- the encoder-only floor of each: forward + backward of the item encoder
  (conv net, or embedding look-ups) on exactly the support and query items of
  the same episodes, as a `tf.function` with a `GradientTape`; timed in rounds
  alternating with the training step, so their ratio is measured under the
  same load;
- the same training step run eagerly (`tf.config.run_functions_eagerly`), to
  show what `tf.function` buys;
- SavedModel latency through `tf.saved_model.load(...).signatures`: `begin`,
  `select`, `observe` and `select` + `observe` p50/p99 at pools of 25, 100 and
  1000 items, batch 1 and 64, with the growth exponent fitted over the pools;
  and `select` with k = 1, 5, 10 (the k picked jointly, one after another) at
  pool 100, batch 1;
- large pools with the scalable selector (`trainers/benchmark_scale.py`, in a
  child process with its own peak memory): `begin` + `selection_index` once
  per pool and `select_indexed` + `observe` p50/p99 at pools of 100 to
  100,000 items, batch 1 (and 1,000 at batch 64);
- the peak resident memory of the process (`ru_maxrss`).

Every figure is a median (or percentile) over repeats after warm-up. Progress
goes to stderr; the JSON is written, then the table is printed last on stdout.
The episodes are synthetic (random characters, random users): the cost of a
step depends on the shapes, not on the pixel or rating values.
"""

import contextlib
import dataclasses
import gc
import json
import os
import platform
import sys
import tempfile
import time
from typing import Optional, Tuple

import numpy as np

import active_learning  # noqa: F401  (sets TensorFlow's log level before it loads)
import keras
import tensorflow as tf

from active_learning.config import OMNIGLOT_LABELLED_MASS_TEMPERATURES, ModelConfig
from active_learning.data import movielens, omniglot
from active_learning.model import ActiveMatchingNetwork
from active_learning.training import TrainConfig, Trainer
from trainers import benchmark_scale
from trainers.benchmark_scale import fit_exponent, peak_memory_mib  # noqa: F401  (public here)
from trainers.benchmark_scale import percentiles as _percentiles

# What docs/performance.md states the project aims for.
TARGET_TRAIN_OVER_FLOOR = 0.8        # at every Omniglot shape
TARGET_SELECT_OBSERVE_P50_MS = 2.0   # pool 100, batch 1
TARGET_POOL_EXPONENT = 2.0           # select + observe latency ~ pool^k, k <= 2
TARGET_SCENARIO = "omniglot_5way_1shot"
TARGET_POOL, TARGET_BATCH = 100, 1
# select with k picks costs at most k times select with one, plus 20%.
TARGET_SELECT_K_OVER_K_TIMES_ONE = 1.2
# The MovieLens step with the closed-form rating oracle against the exact one.
TARGET_MOVIELENS_ORACLE_SPEEDUP = 3.0


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One training setting: task, pool (support) size, queries, label budget."""

    name: str
    task: str            # "omniglot" or "movielens"
    pool: int
    queries: int
    labels: int
    ways: int = 0        # Omniglot: classes per episode
    rating_oracle: str = "closed_form"   # MovieLens: the imitation oracle's method
    # Held-out predictions after every label (the anytime reward) or after
    # the last only, as the scenario's flagfile trains.
    slow_every_step: bool = True

    def __post_init__(self):
        if self.task not in ("omniglot", "movielens"):
            raise ValueError(f"task must be omniglot or movielens, got {self.task!r}")
        if self.labels > self.pool:
            raise ValueError(f"{self.name}: {self.labels} labels exceed the pool of {self.pool}")
        if self.task == "omniglot" and (self.ways < 2 or self.pool % self.ways
                                        or self.queries % self.ways):
            raise ValueError(f"{self.name}: pool and queries must be multiples of ways >= 2")


SCENARIOS = (
    Scenario("omniglot_5way_1shot", "omniglot", pool=25, queries=5, labels=5, ways=5),
    Scenario("omniglot_10way_1shot", "omniglot", pool=50, queries=10, labels=10, ways=10),
    # trainers/configs/omniglot_full_20way.cfg: --noslow_every_step.
    Scenario("omniglot_20way_30labels", "omniglot", pool=100, queries=20, labels=30, ways=20,
             slow_every_step=False),
    Scenario("movielens", "movielens", pool=50, queries=10, labels=10),
    Scenario("movielens_exact_oracle", "movielens", pool=50, queries=10, labels=10,
             rating_oracle="exact"),
)


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """Sizes and repeat counts; `full()` and `quick()` are the command's two."""

    scenarios: Tuple[Scenario, ...] = SCENARIOS
    batch_size: int = 32             # the trainers' default
    embed_dim: int = 64              # the trainers' default
    units: int = 64                  # the trainers' default
    max_classes: int = 20
    num_items: int = 4000            # MovieLens item table
    num_users: int = 256             # synthetic users, 80 ratings each
    num_characters: int = 100        # synthetic Omniglot characters
    drawings: int = 20
    train_batches: int = 3           # distinct pre-sampled batches, cycled
    warmup_steps: int = 1            # untimed steps after the first (tracing) call
    rounds: int = 7                  # timed rounds: floor steps, then train steps
    min_rounds: int = 3              # ... at least, once `train_seconds` have passed
    train_seconds: float = 40.0      # time budget of the timed rounds per scenario
    steps_per_round: int = 2
    # Eager MovieLens takes ~10 s and ~8 GB a step (the tape keeps the imitation
    # oracle's B x P candidate predictions), so only Omniglot 5-way by default.
    eager_scenarios: Tuple[str, ...] = ("omniglot_5way_1shot",)
    eager_steps: int = 2             # timed eager steps, after one untimed
    jit_compile: bool = True         # the trainers' default (--jit_compile)
    # Also time the step without XLA (same model, same rounds) for these.
    no_xla_scenarios: Tuple[str, ...] = ("omniglot_5way_1shot",)
    serving_pools: Tuple[int, ...] = (25, 100, 1000)
    serving_batches: Tuple[int, ...] = (1, 64)
    serving_ks: Tuple[int, ...] = (1, 5, 10)   # select's k, at the target pool and batch
    serving_seconds: float = 1.0     # time budget per (signature, batch, pool)
    serving_warmup: int = 3
    serving_passes: int = 4          # select/observe: cells take turns this many times
    serving_min_reps: int = 5
    serving_max_reps: int = 400
    begin_min_reps: int = 2          # begin at batch 64 x 1000 items takes seconds
    # Large pools with the scalable selector (trainers/benchmark_scale.py), in
    # a child process: (batch, pool) cells, smallest first; () skips them.
    scale_cells: Tuple[Tuple[int, int], ...] = benchmark_scale.DEFAULT_CELLS
    scale_seconds: float = 2.0       # select+observe repeats per cell
    seed: int = 0
    quick: bool = False

    @classmethod
    def full(cls, **overrides):
        return cls(**overrides)

    @classmethod
    def quick_config(cls, **overrides):
        values = dict(rounds=1, min_rounds=1, steps_per_round=2, warmup_steps=1, eager_steps=1,
                      eager_scenarios=("omniglot_5way_1shot",), serving_seconds=0.2,
                      serving_warmup=1, serving_passes=2, serving_min_reps=3,
                      serving_max_reps=100,
                      begin_min_reps=1, scale_cells=((1, 100), (1, 1000)),
                      scale_seconds=0.2, quick=True)
        values.update(overrides)
        return cls(**values)


# ----------------------------------------------------------------- helpers
def _now():
    return time.perf_counter()


_START = time.perf_counter()


def _log(message):
    print(f"[benchmark {time.perf_counter() - _START:6.1f} s] {message}", file=sys.stderr,
          flush=True)


@contextlib.contextmanager
def _timing():
    """Keeps the garbage collector off while timing.

    After tracing big graphs Python holds millions of objects, and a
    collection landing inside a timed call would cost milliseconds; callers
    collect between phases instead.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _sync(result):
    """Waits for a step by reading its outputs back (cheap scalars)."""
    for value in tf.nest.flatten(result):
        if isinstance(value, tf.Tensor) and value.shape.rank == 0:
            value.numpy()
    return result


def synthetic_characters(num_characters, drawings, size=28, seed=0):
    """[C, D, size, size] ink images: a random prototype per character + noise."""
    rng = np.random.RandomState(seed)
    prototypes = rng.rand(num_characters, 1, size, size) > 0.8
    noise = rng.rand(num_characters, drawings, size, size) > 0.95
    return np.logical_xor(prototypes, noise).astype(np.float32)


def synthetic_user_ratings(num_users, num_items, ratings_per_user, seed=0):
    """`UserRatings` of random users, each rating distinct random items."""
    rng = np.random.default_rng(seed)
    items = np.stack([np.sort(rng.choice(num_items, ratings_per_user, replace=False))
                      for _ in range(num_users)]).astype(np.int32)
    ratings = (rng.integers(1, 11, items.shape) / 2.0).astype(np.float32)
    return movielens.UserRatings(
        user_ids=np.arange(1, num_users + 1, dtype=np.int64), items=items, ratings=ratings,
        counts=np.full([num_users], ratings_per_user, np.int32))


def train_config(labels, seed=0, jit_compile=True, rating_oracle="closed_form",
                 slow_every_step=True):
    """The trainers' flag defaults (trainers/common.py) for a label budget."""
    return TrainConfig(jit_compile=jit_compile, num_steps=labels, rating_oracle=rating_oracle,
                       learning_rate=1e-3, clip_norm=5.0, gae_gamma=1.0,
                       gae_lambda=0.95, entropy_weight=0.01, value_weight=0.5,
                       imitation_weight=1.0, imitation_final_weight=0.1,
                       imitation_anneal_steps=1000, slow_every_step=slow_every_step,
                       policy="learned", seed=seed)


def build_scenario(scenario, cfg):
    """(model, sampler) with synthetic data of the scenario's shapes."""
    keras.utils.set_random_seed(cfg.seed)
    if scenario.task == "omniglot":
        images = synthetic_characters(max(cfg.num_characters, scenario.ways),
                                      max(cfg.drawings, (scenario.pool + scenario.queries)
                                          // scenario.ways), seed=cfg.seed)
        sampler = omniglot.EpisodeSampler(
            images, np.arange(images.shape[0]), ways=scenario.ways,
            items_per_class=scenario.pool // scenario.ways,
            queries_per_class=scenario.queries // scenario.ways, seed=cfg.seed)
        model = ActiveMatchingNetwork(ModelConfig(
            task="classification", max_classes=max(cfg.max_classes, scenario.ways),
            embed_dim=cfg.embed_dim, units=cfg.units,
            labelled_mass_temperatures=OMNIGLOT_LABELLED_MASS_TEMPERATURES))
    else:
        per_user = max(80, scenario.pool + scenario.queries)
        num_items = max(cfg.num_items, per_user)
        users = synthetic_user_ratings(cfg.num_users, num_items, per_user, seed=cfg.seed)
        sampler = movielens.EpisodeSampler(users, scenario.pool, scenario.queries,
                                           seed=cfg.seed)
        model = ActiveMatchingNetwork(ModelConfig(
            task="regression", embed_dim=cfg.embed_dim, units=cfg.units,
            num_items=num_items, item_table_dim=cfg.embed_dim, rating_min=0.5,
            rating_max=5.0, rating_prior=3.0))
    return model, sampler


def make_floor_step(model):
    """Forward + backward of the item encoder alone, on support and queries.

    The same two encoder calls (same shapes) as the training step makes, and
    the gradient with respect to the encoder's variables; no optimizer.
    """
    variables = model.encoder.trainable_variables

    def floor_step(support, queries):
        with tf.GradientTape() as tape:
            loss = (tf.reduce_sum(model.encode(support, training=True))
                    + tf.reduce_sum(model.encode(queries, training=True)))
        grads = tape.gradient(loss, variables)
        return loss, [tf.convert_to_tensor(g) for g in grads]

    return tf.function(floor_step, autograph=False)


def _items(batch):
    return batch["support"], batch["queries"]


# ---------------------------------------------------------------- training
def bench_training(scenario, cfg):
    """Throughput of the train step and of its encoder-only floor."""
    model, sampler = build_scenario(scenario, cfg)
    trainer = Trainer(model, train_config(scenario.labels, cfg.seed, cfg.jit_compile,
                                          scenario.rating_oracle, scenario.slow_every_step))
    # Timing only: both trainers update the same weights, which is harmless.
    plain = (Trainer(model, train_config(scenario.labels, cfg.seed, jit_compile=False,
                                         slow_every_step=scenario.slow_every_step))
             if cfg.jit_compile and scenario.name in cfg.no_xla_scenarios else None)
    batches = [sampler.sample(cfg.batch_size) for _ in range(cfg.train_batches)]
    floor_step = make_floor_step(model)
    b = cfg.batch_size

    start = _now()
    _sync(trainer.train_step(batches[0]))
    first_call_s = _now() - start
    if plain is not None:
        _sync(plain.train_step(batches[0]))
        for i in range(cfg.warmup_steps):
            _sync(plain.train_step(batches[i % len(batches)]))
    start = _now()
    _sync(floor_step(*_items(batches[0])))
    floor_first_call_s = _now() - start
    for i in range(cfg.warmup_steps):
        _sync(trainer.train_step(batches[i % len(batches)]))
        _sync(floor_step(*_items(batches[i % len(batches)])))
    traces = trainer._train_step.experimental_get_tracing_count()
    gc.collect()

    train_rates, floor_rates, ratios, plain_rates = [], [], [], []
    step = 0
    with _timing():
        timed = _now()
        for round_index in range(cfg.rounds):
            if round_index >= cfg.min_rounds and _now() - timed > cfg.train_seconds:
                break
            # Floor, then training, on the same batches: a pair sees the same load.
            start = _now()
            for i in range(cfg.steps_per_round):
                _sync(floor_step(*_items(batches[(step + i) % len(batches)])))
            floor_rate = cfg.steps_per_round * b / (_now() - start)
            start = _now()
            for i in range(cfg.steps_per_round):
                _sync(trainer.train_step(batches[(step + i) % len(batches)]))
            train_rate = cfg.steps_per_round * b / (_now() - start)
            if plain is not None:
                start = _now()
                for i in range(cfg.steps_per_round):
                    _sync(plain.train_step(batches[(step + i) % len(batches)]))
                plain_rates.append(cfg.steps_per_round * b / (_now() - start))
            step += cfg.steps_per_round
            train_rates.append(train_rate)
            floor_rates.append(floor_rate)
            ratios.append(train_rate / floor_rate)
    retraces = trainer._train_step.experimental_get_tracing_count() - traces

    result = {
        "pool": scenario.pool,
        "queries": scenario.queries,
        "labels": scenario.labels,
        "batch_size": b,
        "episodes_per_s": float(np.median(train_rates)),
        "step_ms": float(1e3 * b / np.median(train_rates)),
        "floor_episodes_per_s": float(np.median(floor_rates)),
        "floor_step_ms": float(1e3 * b / np.median(floor_rates)),
        "train_over_floor": float(np.median(ratios)),
        "first_call_s": first_call_s,
        "floor_first_call_s": floor_first_call_s,
        "traces": int(traces),
        "retraces_while_timed": int(retraces),
        "rounds": len(ratios),
        "steps_per_round": cfg.steps_per_round,
        "jit_compile": cfg.jit_compile,
    }
    if plain_rates:
        result["no_xla_episodes_per_s"] = float(np.median(plain_rates))
        result["xla_speedup"] = float(np.median(np.asarray(train_rates)
                                                / np.asarray(plain_rates)))
        result["no_xla_over_floor"] = float(np.median(np.asarray(plain_rates)
                                                      / np.asarray(floor_rates)))
    return result


def bench_eager(scenario, cfg):
    """The same train step with every tf.function run as plain Python.

    A fresh model and trainer (eager mode needs no trace), run after every
    graph-mode measurement so that its memory (the tape keeps every
    intermediate of the unrolled loops) is reported apart.
    """
    model, sampler = build_scenario(scenario, cfg)
    # Eager means nothing compiled: the XLA head would not apply.
    trainer = Trainer(model, train_config(scenario.labels, cfg.seed, jit_compile=False,
                                          rating_oracle=scenario.rating_oracle,
                                          slow_every_step=scenario.slow_every_step))
    batches = [sampler.sample(cfg.batch_size) for _ in range(cfg.train_batches)]
    previous = tf.config.functions_run_eagerly()
    tf.config.run_functions_eagerly(True)
    try:
        _sync(trainer.train_step(batches[0]))  # warm-up: op kernels, caches
        gc.collect()
        times = []
        with _timing():
            for i in range(cfg.eager_steps):
                start = _now()
                _sync(trainer.train_step(batches[i % len(batches)]))
                times.append(_now() - start)
    finally:
        tf.config.run_functions_eagerly(previous)
    step_s = float(np.median(times))
    return {"eager_step_ms": 1e3 * step_s, "eager_episodes_per_s": cfg.batch_size / step_s,
            "eager_steps": len(times)}


# ----------------------------------------------------------------- serving
def _time_calls(fn, warmup, min_reps, max_reps, seconds):
    """Per-call wall times of `fn()` after `warmup` calls (a dict of lists)."""
    for _ in range(warmup):
        fn()
    samples = {}
    with _timing():
        start = _now()
        reps = 0
        while reps < max_reps and (reps < min_reps or _now() - start < seconds):
            for key, value in fn().items():
                samples.setdefault(key, []).append(value)
            reps += 1
    return samples


def serving_inputs(batch, pool, embed_dim, state_size, max_classes, seed=0):
    """An episode mid-way: 10% of the pool labelled, random embeddings/state."""
    rng = np.random.default_rng(seed)
    labeled = np.zeros([batch, pool], np.int32)
    num_labeled = min(max(1, pool // 10), pool - 1)
    for row in labeled:
        row[rng.choice(pool, num_labeled, replace=False)] = 1
    labels = np.where(labeled == 1, rng.integers(0, max_classes, [batch, pool]), -1)
    return {
        "embeddings": tf.constant(rng.normal(size=[batch, pool, embed_dim]), tf.float32),
        "state": tf.constant(0.5 * rng.normal(size=[batch, state_size]), tf.float32),
        "labels": tf.constant(labels, tf.int32),
        "labeled": tf.constant(labeled),
    }


def bench_serving(cfg):
    """Latency of the exported signatures, loaded with tf.saved_model.load."""
    from export.saved_model import export_saved_model  # noqa: PLC0415

    keras.utils.set_random_seed(cfg.seed)
    config = ModelConfig(task="classification", max_classes=cfg.max_classes,
                         embed_dim=cfg.embed_dim, units=cfg.units,
                         labelled_mass_temperatures=OMNIGLOT_LABELLED_MASS_TEMPERATURES)
    model = ActiveMatchingNetwork(config)
    result = {"begin": {}, "select": {}, "observe": {}, "select_observe": {}}
    with tempfile.TemporaryDirectory() as tmp:
        start = _now()
        path = export_saved_model(model, tmp, version=1)
        result["export_s"] = _now() - start
        start = _now()
        loaded = tf.saved_model.load(path)
        result["load_s"] = _now() - start
        signatures = loaded.signatures
        gc.collect()
        begin, select, observe = (signatures[n] for n in ("begin", "select", "observe"))
        rng = np.random.default_rng(cfg.seed)
        cells = [(b, p) for b in cfg.serving_batches for p in cfg.serving_pools]
        for batch, pool in cells:
            key = f"batch{batch}_pool{pool}"
            _log(f"serving begin {key}")
            support = tf.constant(rng.random([batch, pool, config.image_size,
                                              config.image_size, 1]) > 0.8, tf.float32)

            def run_begin(support=support):
                start = _now()
                out = begin(support=support)
                out["state"].numpy()
                return {"begin": _now() - start}

            # begin grows with batch x pool (64 x 1000 images take seconds).
            big = batch * pool >= 10_000
            samples = _time_calls(run_begin, 1 if big else cfg.serving_warmup,
                                  cfg.begin_min_reps if big else cfg.serving_min_reps,
                                  cfg.serving_max_reps, cfg.serving_seconds)
            result["begin"][key] = _percentiles(samples["begin"])
            del support

        k = tf.constant(1)
        calls = {}
        for batch, pool in cells:
            episode = serving_inputs(batch, pool, config.embed_dim, 2 * config.units,
                                     min(config.max_classes, 5), seed=cfg.seed)
            label = tf.zeros([batch], tf.int32)

            # Every repeat starts from the same mid-episode state (10% of the
            # pool labelled): the cost does not depend on which item is chosen.
            def run_select_observe(episode=episode, label=label):
                start = _now()
                chosen = select(k=k, **episode)
                index = chosen["index"]
                middle = _now()
                out = observe(index=index, label=label, **episode)
                out["state"].numpy()
                end = _now()
                return {"select": middle - start, "observe": end - middle,
                        "select_observe": end - start}

            calls[(batch, pool)] = run_select_observe
            for _ in range(cfg.serving_warmup):
                run_select_observe()
        # The cells take turns, `serving_passes` times: on a shared machine a
        # burst of load then spreads over every cell instead of skewing one.
        samples = {cell: {} for cell in cells}
        passes = max(1, cfg.serving_passes)
        for pass_index in range(passes):
            _log(f"serving select/observe, pass {pass_index + 1} of {passes}")
            for cell in cells:
                got = _time_calls(calls[cell], 0, -(-cfg.serving_min_reps // passes),
                                  -(-cfg.serving_max_reps // passes),
                                  cfg.serving_seconds / passes)
                for name, values in got.items():
                    samples[cell].setdefault(name, []).extend(values)
        for (batch, pool), by_name in samples.items():
            for name, values in by_name.items():
                result[name][f"batch{batch}_pool{pool}"] = _percentiles(values)
        result["select_k"] = bench_select_k(select, config, cfg)
        del loaded, signatures, begin, select, observe

    exponents = {}
    for name in ("begin", "select", "observe", "select_observe"):
        for batch in cfg.serving_batches:
            p50 = [result[name][f"batch{batch}_pool{p}"]["p50_ms"] for p in cfg.serving_pools]
            exponents[f"{name}_batch{batch}"] = fit_exponent(cfg.serving_pools, p50)
    result["pool_exponents"] = exponents
    return result


def bench_select_k(select, config, cfg):
    """`select` latency for each k of `cfg.serving_ks` at the target cell.

    The k picks are made one after another inside the one call, so the cost
    grows with k; the validation, the cosine matrix and the first pick's
    softmax are paid once. The k values take turns, as the cells above do.
    """
    episode = serving_inputs(TARGET_BATCH, TARGET_POOL, config.embed_dim, 2 * config.units,
                             min(config.max_classes, 5), seed=cfg.seed)
    calls = {}
    for k in cfg.serving_ks:
        def run_select(k=tf.constant(k)):
            start = _now()
            select(k=k, **episode)["top_k"].numpy()
            return {"select": _now() - start}
        calls[k] = run_select
        for _ in range(cfg.serving_warmup):
            run_select()
    samples = {k: [] for k in cfg.serving_ks}
    passes = max(1, cfg.serving_passes)
    for pass_index in range(passes):
        _log(f"serving select with k = {', '.join(map(str, cfg.serving_ks))}, pass "
             f"{pass_index + 1} of {passes}")
        for k in cfg.serving_ks:
            got = _time_calls(calls[k], 0, -(-cfg.serving_min_reps // passes),
                              -(-cfg.serving_max_reps // passes), cfg.serving_seconds / passes)
            samples[k].extend(got["select"])
    return {f"k{k}": _percentiles(values) for k, values in samples.items()}


# -------------------------------------------------------------- the whole
def run_benchmark(cfg: BenchConfig):
    """Runs every measurement; returns the JSON-ready results dict."""
    wall = _now()
    cpus = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count())
    results = {
        "meta": {
            "quick": cfg.quick,
            "tensorflow": tf.__version__,
            "python": platform.python_version(),
            "cpus": cpus,
            "load_average_start": list(os.getloadavg()),
            "batch_size": cfg.batch_size,
            "embed_dim": cfg.embed_dim,
            "units": cfg.units,
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        },
        "training": {},
    }
    for scenario in cfg.scenarios:
        _log(f"training {scenario.name}")
        results["training"][scenario.name] = r = bench_training(scenario, cfg)
        gc.collect()
        r["peak_memory_mib_so_far"] = peak_memory_mib()
        _log(f"  {r['episodes_per_s']:.1f} episodes/s, floor {r['floor_episodes_per_s']:.1f}, "
             f"first call {r['first_call_s']:.1f} s")
    results["peak_memory_mib_after_training"] = peak_memory_mib()
    for scenario in cfg.scenarios:
        if scenario.name in cfg.eager_scenarios:
            _log(f"eager {scenario.name}")
            r = results["training"][scenario.name]
            r.update(bench_eager(scenario, cfg))
            r["function_speedup"] = r["episodes_per_s"] / r["eager_episodes_per_s"]
            gc.collect()
    results["peak_memory_mib_after_eager"] = peak_memory_mib()
    _log("serving")
    results["serving"] = bench_serving(cfg)
    results["peak_memory_mib"] = peak_memory_mib()
    if cfg.scale_cells:
        _log("large pools (child process)")
        results["scale"] = benchmark_scale.run_in_child(cfg.scale_cells, cfg.scale_seconds,
                                                        cfg.seed)
    results["targets"] = targets(results, cfg)
    results["meta"]["load_average_end"] = list(os.getloadavg())
    results["meta"]["elapsed_s"] = _now() - wall
    return results


def targets(results, cfg):
    """Where the run stands against the targets of docs/performance.md."""
    out = {}
    training = results["training"]
    for scenario in cfg.scenarios:
        if scenario.task == "omniglot" and scenario.name in training:
            value = training[scenario.name]["train_over_floor"]
            key = ("train_over_floor_omniglot_5way" if scenario.name == TARGET_SCENARIO
                   else f"train_over_floor_{scenario.name}")
            out[key] = {"value": value, "target": TARGET_TRAIN_OVER_FLOOR,
                        "met": bool(value >= TARGET_TRAIN_OVER_FLOOR)}
    if "movielens" in training and "movielens_exact_oracle" in training:
        value = (training["movielens_exact_oracle"]["step_ms"]
                 / training["movielens"]["step_ms"])
        out["movielens_step_speedup_over_exact_oracle"] = {
            "value": value, "target": TARGET_MOVIELENS_ORACLE_SPEEDUP,
            "met": bool(value >= TARGET_MOVIELENS_ORACLE_SPEEDUP)}
    key = f"batch{TARGET_BATCH}_pool{TARGET_POOL}"
    serving = results["serving"]
    if key in serving["select_observe"]:
        value = serving["select_observe"][key]["p50_ms"]
        out["select_observe_p50_ms_pool100_batch1"] = {
            "value": value, "target": TARGET_SELECT_OBSERVE_P50_MS,
            "met": bool(value <= TARGET_SELECT_OBSERVE_P50_MS)}
    by_k = serving.get("select_k", {})
    if "k1" in by_k and len(by_k) > 1:
        one = by_k["k1"]["p50_ms"]
        value = max(c["p50_ms"] / (int(key[1:]) * one) for key, c in by_k.items()
                    if key != "k1")
        out["select_k_over_k_times_k1"] = {
            "value": value, "target": TARGET_SELECT_K_OVER_K_TIMES_ONE,
            "met": bool(value <= TARGET_SELECT_K_OVER_K_TIMES_ONE)}
    exponents = [serving["pool_exponents"][f"select_observe_batch{b}"]
                 for b in cfg.serving_batches]
    value = max(exponents)
    out["select_observe_pool_exponent"] = {
        "value": value, "target": TARGET_POOL_EXPONENT,
        "met": bool(value <= TARGET_POOL_EXPONENT)}
    if "scale" in results:
        out.update(results["scale"]["targets"])
    return out


def format_table(results):
    """The human-readable summary (printed last)."""
    meta = results["meta"]
    lines = [
        f"Benchmark{' (quick)' if meta['quick'] else ''}: batch {meta['batch_size']}, "
        f"embed_dim {meta['embed_dim']}, units {meta['units']}; TF {meta['tensorflow']}; "
        f"intra-op threads {meta['intra_op_threads'] or 'default'}; "
        f"{meta['cpus']} CPUs, load average {meta['load_average_start'][0]:.1f} -> "
        f"{meta['load_average_end'][0]:.1f}; {meta['elapsed_s']:.0f} s",
        "",
        "Training step (episodes/s; medians over rounds; floor = encoder fwd+bwd only)",
        f"{'scenario':<24}{'pool':>5}{'qry':>5}{'T':>4}{'train':>9}{'floor':>9}"
        f"{'train/floor':>12}{'eager':>8}{'fn x':>7}{'step ms':>9}{'1st call s':>11}",
    ]
    no_xla = []
    for name, r in results["training"].items():
        eager = f"{r['eager_episodes_per_s']:8.2f}" if "eager_episodes_per_s" in r else f"{'-':>8}"
        speedup = f"{r['function_speedup']:7.1f}" if "function_speedup" in r else f"{'-':>7}"
        lines.append(
            f"{name:<24}{r['pool']:>5}{r['queries']:>5}{r['labels']:>4}"
            f"{r['episodes_per_s']:9.1f}{r['floor_episodes_per_s']:9.1f}"
            f"{r['train_over_floor']:12.3f}{eager}{speedup}{r['step_ms']:9.0f}"
            f"{r['first_call_s']:11.1f}")
        if "no_xla_episodes_per_s" in r:
            no_xla.append(f"  {name}: without XLA {r['no_xla_episodes_per_s']:.1f} episodes/s "
                          f"(train/floor {r['no_xla_over_floor']:.3f}); XLA "
                          f"{r['xla_speedup']:.2f}x")
    if no_xla:
        lines += ["Compiled head (--jit_compile) against the plain graph, same rounds:"] + no_xla
    serving = results["serving"]
    batches = sorted({int(k.split("_")[0][5:]) for k in serving["select"]})
    pools = sorted({int(k.split("_")[1][4:]) for k in serving["select"]})
    lines += [
        "",
        f"SavedModel signatures (ms, p50 / p99; exponent k of p50 ~ pool^k); export "
        f"{serving['export_s']:.1f} s, load {serving['load_s']:.1f} s",
        f"{'signature':<16}{'batch':>6}" + "".join(f"{'pool ' + str(p):>20}" for p in pools)
        + f"{'k':>7}",
    ]
    for name in ("begin", "select", "observe", "select_observe"):
        for b in batches:
            cells = []
            for p in pools:
                c = serving[name][f"batch{b}_pool{p}"]
                cells.append(f"{c['p50_ms']:9.2f} / {c['p99_ms']:<8.2f}")
            k = serving["pool_exponents"][f"{name}_batch{b}"]
            label = "select+observe" if name == "select_observe" else name
            lines.append(f"{label:<16}{b:>6}" + "".join(f"{c:>20}" for c in cells)
                         + f"{k:7.2f}")
    if serving.get("select_k"):
        lines.append(f"select, k picks (pool {TARGET_POOL}, batch {TARGET_BATCH}): " + ", ".join(
            f"k={key[1:]} {c['p50_ms']:.2f} / {c['p99_ms']:.2f}"
            for key, c in serving["select_k"].items()))
    if "scale" in results:
        lines += [""] + benchmark_scale.format_rows(results["scale"])
    lines += ["", "Targets"]
    descriptions = {
        **benchmark_scale.TARGET_DESCRIPTIONS,
        "train_over_floor_omniglot_5way": "train / encoder floor, Omniglot 5-way >=",
        "select_observe_p50_ms_pool100_batch1": "select+observe p50 ms, pool 100, batch 1 <=",
        "select_observe_pool_exponent": "select+observe pool exponent (max over batches) <=",
        "select_k_over_k_times_k1": "select(k) p50 / (k x select(1) p50), max over k >1 <=",
        "movielens_step_speedup_over_exact_oracle":
            "MovieLens step, exact oracle / closed form (x faster) >=",
    }
    for key, t in results["targets"].items():
        description = descriptions.get(key) or (
            f"train / encoder floor, {key[len('train_over_floor_'):]} >=")
        lines.append(f"  {description} {t['target']:g}: {t['value']:.2f}  "
                     f"{'MET' if t['met'] else 'MISSED'}")
    lines += ["", f"Peak memory (ru_maxrss): {results['peak_memory_mib']:.0f} MiB; "
              f"{results['peak_memory_mib_after_training']:.0f} MiB after graph-mode "
              f"training, {results['peak_memory_mib_after_eager']:.0f} MiB after eager"]
    return "\n".join(lines)


def run(cfg: BenchConfig, output: Optional[str] = None, stdout=None):
    """Benchmarks, writes `output` (JSON) if given, prints the table last."""
    stdout = stdout or sys.stdout
    results = run_benchmark(cfg)
    if output:
        directory = os.path.dirname(os.path.abspath(output))
        os.makedirs(directory, exist_ok=True)
        with open(output, "w") as f:
            json.dump(results, f, indent=2, sort_keys=True)
            f.write("\n")
        _log(f"wrote {output}")
    print(format_table(results), file=stdout, flush=True)
    return results


def define_flags(flag_values=None):
    """The command's flags (defined only when run as a program or asked)."""
    from absl import flags  # noqa: PLC0415
    if flag_values is None:
        flag_values = flags.FLAGS
    flags.DEFINE_string("output", "bench.json", "Where the JSON results go ('' for none).",
                        flag_values=flag_values)
    flags.DEFINE_bool("quick", False, "Smoke version: one round, fewer repeats.",
                      flag_values=flag_values)
    flags.DEFINE_integer("batch_size", None,
                         "Episodes per training step (default 32, the trainers' default).",
                         flag_values=flag_values)
    flags.DEFINE_integer("seed", 0, "Seed of the synthetic data and weights.",
                         flag_values=flag_values)
    flags.DEFINE_bool("jit_compile", True, "Train with the XLA-compiled head, as the "
                      "trainers do by default (then Omniglot 5-way is also timed without).",
                      flag_values=flag_values)
    flags.DEFINE_integer("intra_op_threads", 0, "TensorFlow intra-op threads (0: its "
                         "default, one per core). 1 is faster for select/observe on a "
                         "busy 2-core machine, slower for the conv encoder.",
                         flag_values=flag_values)


def config_from_flags(flag_values):
    overrides = {"seed": flag_values.seed, "jit_compile": flag_values.jit_compile}
    if flag_values.batch_size:
        overrides["batch_size"] = flag_values.batch_size
    if flag_values.quick:
        return BenchConfig.quick_config(**overrides)
    return BenchConfig.full(**overrides)


def main(argv):
    from absl import flags  # noqa: PLC0415
    if len(argv) > 1:
        raise SystemExit(f"unexpected arguments: {argv[1:]}")
    tf.get_logger().setLevel("ERROR")
    flag_values = flags.FLAGS
    if flag_values.intra_op_threads:
        # Before any op runs: the thread pools are made on first use.
        tf.config.threading.set_intra_op_parallelism_threads(flag_values.intra_op_threads)
    run(config_from_flags(flag_values), output=flag_values.output or None)


if __name__ == "__main__":
    from absl import app  # noqa: PLC0415
    define_flags()
    app.run(main)
