"""Smoke test of `python -m trainers.benchmark`: tiny sizes, in-process, untimed.

The benchmark is a command, not part of the suite: this only checks that it
runs end to end and reports every field as a positive finite number, with
the table printed last. Nothing here asserts a speed.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import active_learning  # noqa: F401,E402  (first: sets TensorFlow's log level)

import io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402

from absl import flags  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from trainers import benchmark  # noqa: E402

# One training scenario: tracing a training step is most of this test's time
# (~10 s each on the shared 2-core machine). It takes the name of the 5-way
# target scenario so that the targets section is filled in. MovieLens episodes
# are checked apart, without a training step.
TINY_SCENARIOS = (
    benchmark.Scenario("omniglot_5way_1shot", "omniglot", pool=6, queries=3, labels=2, ways=3),
)
TINY_MOVIELENS = benchmark.Scenario("movielens", "movielens", pool=6, queries=2, labels=2)


def tiny_config():
    return benchmark.BenchConfig(
        scenarios=TINY_SCENARIOS, batch_size=2, embed_dim=8, units=8, max_classes=4,
        num_items=40, num_users=4, num_characters=6, drawings=4, train_batches=1,
        warmup_steps=0, rounds=1, steps_per_round=1,
        eager_scenarios=("omniglot_5way_1shot",), eager_steps=1,
        serving_pools=(4, 8), serving_batches=(1, 2), serving_seconds=0.0,
        serving_warmup=1, serving_passes=2, serving_min_reps=2, serving_max_reps=2,
        begin_min_reps=1, serving_ks=(1, 3), scale_cells=(),
        quick=True)


@pytest.fixture(scope="module")
def grappler_off():
    """Skips Grappler's graph rewrites (about 10 s per training-step graph).

    Semantics-preserving rewrites only: the smoke test checks plumbing, and
    the real benchmark runs with the default optimizer.
    """
    previous = tf.config.optimizer.get_experimental_options()
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    yield
    tf.config.optimizer.set_experimental_options(
        {"disable_meta_optimizer": previous.get("disable_meta_optimizer", False)})


@pytest.fixture(scope="module")
def report(tmp_path_factory, grappler_off):
    del grappler_off
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    out = io.StringIO()
    returned = benchmark.run(tiny_config(), output=str(path), stdout=out)
    with open(path) as f:
        written = json.load(f)
    return returned, written, out.getvalue()


def _leaves(tree, prefix=""):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, f"{prefix}.{key}" if prefix else key)
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from _leaves(value, f"{prefix}[{i}]")
    else:
        yield prefix, tree


@pytest.mark.heavy(65)
def test_json_is_what_run_returned(report):
    returned, written, _ = report
    assert json.loads(json.dumps(returned)) == written


def test_every_number_is_positive_and_finite(report):
    _, written, _ = report
    for path, value in _leaves(written):
        if isinstance(value, bool) or isinstance(value, str):
            continue
        assert isinstance(value, (int, float)), path
        assert math.isfinite(value), path
        if "exponent" in path:
            continue  # a slope: with tiny pools it is ~0, of either sign
        if (path.endswith(("retraces_while_timed", "_op_threads"))
                or path.startswith("meta.load_average")):
            assert value >= 0, path
            continue
        assert value > 0, f"{path} = {value}"


def test_every_field_is_present(report):
    _, written, _ = report
    training = written["training"]
    assert set(training) == {s.name for s in TINY_SCENARIOS}
    for name, r in training.items():
        for key in ("episodes_per_s", "step_ms", "floor_episodes_per_s", "floor_step_ms",
                    "train_over_floor", "first_call_s", "floor_first_call_s", "traces",
                    "retraces_while_timed", "pool", "queries", "labels", "batch_size"):
            assert key in r, (name, key)
        assert r["retraces_while_timed"] == 0, name
    eager = training["omniglot_5way_1shot"]
    for key in ("eager_episodes_per_s", "eager_step_ms", "function_speedup",
                "no_xla_episodes_per_s", "no_xla_over_floor", "xla_speedup"):
        assert key in eager
    assert eager["jit_compile"] is True
    serving = written["serving"]
    for name in ("begin", "select", "observe", "select_observe"):
        assert set(serving[name]) == {f"batch{b}_pool{p}" for b in (1, 2) for p in (4, 8)}
        for cell in serving[name].values():
            assert set(cell) == {"p50_ms", "p99_ms", "n"}
            assert cell["p99_ms"] >= cell["p50_ms"]
        for b in (1, 2):
            assert f"{name}_batch{b}" in serving["pool_exponents"]
    assert serving["export_s"] > 0 and serving["load_s"] > 0
    assert (written["peak_memory_mib"] >= written["peak_memory_mib_after_eager"]
            >= written["peak_memory_mib_after_training"] > 0)
    for r in training.values():
        assert 0 < r["peak_memory_mib_so_far"] <= written["peak_memory_mib_after_training"]
    assert set(serving["select_k"]) == {"k1", "k3"}
    for cell in serving["select_k"].values():
        assert set(cell) == {"p50_ms", "p99_ms", "n"}
    targets = written["targets"]
    assert set(targets) == {"train_over_floor_omniglot_5way", "select_observe_pool_exponent",
                            "select_k_over_k_times_k1"}  # no pool 100 here
    for t in targets.values():
        assert isinstance(t["met"], bool)


def test_table_is_printed_last(report):
    returned, _, printed = report
    lines = printed.rstrip("\n").splitlines()
    assert lines[0].startswith("Benchmark")
    assert lines[-1].startswith("Peak memory (ru_maxrss)")
    assert printed.rstrip("\n") == benchmark.format_table(returned)
    for needle in ("Training step", "SavedModel signatures", "select+observe", "Targets",
                   "omniglot_5way_1shot", "select, k picks"):
        assert needle in printed


def test_movielens_episodes_and_floor():
    cfg = tiny_config()
    model, sampler = benchmark.build_scenario(TINY_MOVIELENS, cfg)
    batch = sampler.sample(cfg.batch_size)
    assert batch["support"].shape == (cfg.batch_size, TINY_MOVIELENS.pool)
    assert batch["query_labels"].shape == (cfg.batch_size, TINY_MOVIELENS.queries)
    assert model.config.task == "regression" and model.config.num_items >= cfg.num_items
    loss, grads = benchmark.make_floor_step(model)(batch["support"], batch["queries"])
    assert math.isfinite(float(loss))
    assert len(grads) == len(model.encoder.trainable_variables)


def test_fit_exponent():
    assert benchmark.fit_exponent([10, 100, 1000], [1.0, 100.0, 10000.0]) == pytest.approx(2.0)
    assert benchmark.fit_exponent([25, 100], [2.0, 2.0]) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(benchmark.fit_exponent([25], [1.0]))


def test_flags_make_the_command_configs():
    values = flags.FlagValues()
    benchmark.define_flags(values)
    values(["benchmark", "--quick", "--output=/tmp/x.json", "--intra_op_threads=1"])
    assert values.intra_op_threads == 1
    quick = benchmark.config_from_flags(values)
    assert quick.quick and quick.rounds == 1 and values.output == "/tmp/x.json"
    values = flags.FlagValues()
    benchmark.define_flags(values)
    values(["benchmark"])
    full = benchmark.config_from_flags(values)
    assert not full.quick and values.output == "bench.json"
    # The benchmark times the trainers' own defaults.
    from trainers import common  # noqa: PLC0415
    assert full.batch_size == common.FLAGS["batch_size"].default == 32
    assert full.embed_dim == common.FLAGS["embed_dim"].default == 64
    assert full.units == common.FLAGS["units"].default == 64
    assert [(s.pool, s.labels) for s in full.scenarios] == [(25, 5), (50, 10), (100, 30),
                                                            (50, 10), (50, 10)]
    # The two MovieLens rows differ only in the imitation oracle, and the
    # default one is the trainers' default.
    assert [s.rating_oracle for s in full.scenarios if s.task == "movielens"] == [
        common.FLAGS["rating_oracle"].default, "exact"]
    assert full.serving_pools == (25, 100, 1000) and full.serving_batches == (1, 64)
    # Each Omniglot row trains as its paper-scale flagfile does: the 20-way
    # one slow-predicts after the last label only, the others after each.
    configs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "trainers", "configs")
    for scenario in full.scenarios:
        if scenario.task == "omniglot":
            name = (f"omniglot_full_{scenario.ways}way.cfg" if scenario.ways == 20
                    else f"omniglot_full_{scenario.ways}way_1shot.cfg")
            with open(os.path.join(configs, name)) as f:
                flags_there = [line.strip() for line in f]
            assert scenario.slow_every_step == ("--noslow_every_step" not in flags_there), name


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))


def test_large_pool_cells_report_every_number_and_their_targets():
    # In-process with tiny pools (the command runs the cells in a child).
    from trainers import benchmark_scale  # noqa: PLC0415
    # Pools of 100 items get `begin_compiled` timed too, and it is their
    # session's begin.
    result = benchmark_scale.run_scale(cells=((1, 100), (2, 30)), seconds=0.0, seed=0,
                                       compiled_from=100)
    assert [(c["batch"], c["pool"]) for c in result["cells"]] == [(1, 100), (2, 30)]
    for cell in result["cells"]:
        for key in ("begin_s", "index_s", "begin_total_s", "peak_memory_mib"):
            assert math.isfinite(cell[key]) and cell[key] > 0, key
        assert cell["begin_total_s"] == pytest.approx(cell["begin_session_s"] + cell["index_s"])
        for name in ("select", "observe", "select_observe", "observe_select"):
            assert cell[name]["n"] >= 5 and cell[name]["p99_ms"] >= cell[name]["p50_ms"] > 0
    compiled, plain = result["cells"]
    assert compiled["begin_compiled_s"] > 0 and plain["begin_compiled_s"] is None
    assert (compiled["begin_session_s"], plain["begin_session_s"]) == (
        compiled["begin_compiled_s"], plain["begin_s"])
    # Only the pool-100 target applies to these cells; its verdict follows its value.
    # The target reads the one-call step (`observe_select`), as sessions run it.
    target = result["targets"]["select_observe_p50_ms_pool100_batch1_scalable"]
    assert set(result["targets"]) == {"select_observe_p50_ms_pool100_batch1_scalable"}
    assert target["value"] == compiled["observe_select"]["p50_ms"]
    assert target["met"] == (target["value"] <= target["target"])
    lines = benchmark_scale.format_rows(result)
    assert len(lines) == 2 + 2 + 1 and "pool exponent" in lines[-1]
    with pytest.raises(ValueError, match="BATCHxPOOL"):
        benchmark_scale.parse_cells(["100"])
    with pytest.raises(ValueError, match="pool > 12"):
        benchmark_scale.parse_cells(["1x5"])
    assert benchmark_scale.parse_cells(["1x100000", "64X1000"]) == ((1, 100000), (64, 1000))
