"""A slice of the committed results reproduces to the last bit.

docs/results.md quotes tables that `python -m trainers.evaluate` measured on
the models under models/ (1,000 episodes each). Here the same command path
(flags -> `trainers.evaluate.run` -> model loading, episode rebuilding, the
experiment, the report writers) runs a few episodes of two of them, and
every number must equal the one recorded below to the last bit: the curves,
their confidence intervals, the tuned regularisers, and the Markdown and CSV
files written.

The expected values were produced with `python tests/evaluation_reproduction_test.py
--print` on the CPU machine of this repository's development, with the
evaluation code as it stood at commit c34ec23 (one `evaluation.py` module),
before it became the `active_learning/evaluation/` package. Numbers from
another machine (another CPU, a GPU) may differ in the last bits (measured:
1 ulp of two baseline CIs on an AVX-512 machine), so the numbers must agree
to a relative 1e-9 and, where they agree to the last bit, the written files
must hash the same; the property this test guards is that reorganising the
code changes nothing.
"""

import hashlib
import os
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
SHARED_DATA = REPO.parent / "shared" / "data"


def run_evaluate(output_dir, *args):
    """`trainers.evaluate` in-process on its own flag values; its record."""
    from absl import flags  # pylint: disable=g-import-not-at-top
    from trainers import evaluate  # pylint: disable=g-import-not-at-top
    values = flags.FlagValues()
    evaluate.define_flags(values)
    values(["evaluate", f"--output_dir={output_dir}", "--seed=0",
            "--progress_seconds=1000", *args])
    return evaluate.run(values)


def table1_slice(output_dir):
    """Table 1 of models/omniglot_5way_1shot on 20 test episodes (shipped data)."""
    return run_evaluate(output_dir, f"--model_dir={MODELS / 'omniglot_5way_1shot'}",
                        f"--data_dir={REPO / 'data' / 'omniglot'}", "--episodes=20",
                        "--batch_size=10")


def figure4_baselines_slice(output_dir):
    """Figure 4's Regression and GP series of models/movielens on 20 episodes."""
    return run_evaluate(output_dir, f"--model_dir={MODELS / 'movielens'}",
                        f"--data_dir={SHARED_DATA / 'movielens' / 'ml-latest-small'}",
                        "--baselines_only", "--episodes=20", "--tune_episodes=20",
                        "--batch_size=10")


def table1_numbers(record):
    return {row["key"]: {k: row[k] for k in ("curve", "curve_ci", "distinct_labels",
                                             "found_all")}
            for row in record["rows"]}


def figure4_numbers(record):
    out = {row["key"]: {"rmse": row["rmse"], "ci": row["ci"]} for row in record["rows"]}
    out["tuned"] = {k: record["tuning"][k]["best"] for k in ("ridge", "gp")}
    return out


def file_digests(record):
    """sha256 of the written Markdown and CSV, with the checkout's path removed
    (they name the model's checkpoint, whose path depends on the checkout)."""
    digests = {}
    for ext in ("md", "csv"):
        with open(record["outputs"][ext], encoding="utf-8") as f:
            text = f.read().replace(str(REPO) + os.sep, "")
        digests[ext] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return digests


# Produced at c34ec23 (see the module docstring).
TABLE1_NUMBERS = {
    "balanced": {
        "curve": [
            20.000000298023224, 36.0000005364418, 52.000001668930054,
            67.00000181794167, 79.00000125169754
        ],
        "curve_ci": [
            0.0, 3.5971726605870646, 4.405619095808214, 5.146440141301025,
            6.654161268052247
        ],
        "distinct_labels": 5.0,
        "found_all": 1.0,
    },
    "greedy": {
        "curve": [
            20.000000298023224, 37.000000551342964, 50.00000156462192,
            59.00000162422657, 64.00000154972076
        ],
        "curve_ci": [
            0.0, 3.211118887586696, 5.320290424855695, 7.236376928355423,
            7.3058920622249515
        ],
        "distinct_labels": 4.050000190734863,
        "found_all": 0.20000000298023224,
    },
    "min_max_cos": {
        "curve": [
            20.000000298023224, 35.00000052154064, 47.00000137090683,
            57.00000159442424, 66.00000187754631
        ],
        "curve_ci": [
            0.0, 3.8940536323340686, 5.879892340980494, 7.1237416613760445,
            5.007052220028509
        ],
        "distinct_labels": 4.25,
        "found_all": 0.30000001192092896,
    },
    "random": {
        "curve": [
            20.000000298023224, 33.00000049173832, 45.000001192092896,
            54.000001549720764, 57.00000196695327
        ],
        "curve_ci": [
            0.0, 4.289355018999116, 5.598055090160568, 5.758286019269597,
            4.289355177034103
        ],
        "distinct_labels": 3.549999952316284,
        "found_all": 0.05000000074505806,
    },
}

TABLE1_DIGESTS = {
    "csv": "993c82753655a8ecdc3049637f5aab8ecbd3e400ba965c43879eb0c11e2ee111",
    "md": "196f4a258af091f55a28118e8ef9277cbbcb9037580cec5db349403cafb92856",
}

FIGURE4_NUMBERS = {
    "gp": {
        "ci": [
            0.11132152630563501, 0.10826554414130878, 0.11729756905264746,
            0.10977342944082634, 0.10404333467284511, 0.10165802225177,
            0.10197368995641624, 0.10540272283842968, 0.10260140151829228,
            0.09922334788717424
        ],
        "rmse": [
            1.0104957356146629, 0.9939007593214045, 0.9461372011081121,
            0.9384880584717991, 0.9246913780967227, 0.9093632393905315,
            0.9052123335393004, 0.9182504179860157, 0.9076859892431115,
            0.8975999350561377
        ],
    },
    "regression": {
        "ci": [
            0.11288050126353227, 0.10176855815570625, 0.10211161210518177,
            0.0994377262724353, 0.1017021332479831, 0.10149439502380606,
            0.09973737286597319, 0.09833020862163552, 0.09873855242418533,
            0.09715985767458338
        ],
        "rmse": [
            0.9633209286029129, 0.9585890192427874, 0.9754788115079528,
            0.9532564163921954, 0.9402877206170244, 0.9452537537310004,
            0.9303289438777111, 0.9422659113632939, 0.9502611342439012,
            0.9514754175814535
        ],
    },
    "tuned": {
        "gp": [0.01, 0.01, 3.0, 3.0, 3.0, 3.0, 3.0, 1.0, 3.0, 3.0],
        "ridge": [1000.0, 1.0, 0.3, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
    },
}

FIGURE4_DIGESTS = {
    "csv": "ca1712ebfd12159aff09bec7411d2adaf22a2175a765044bc0a5b6e24fb1e4f6",
    "md": "c2ba981f576452331c7687f1f62fb351b41f1a46a3c162fa2f721801add7153b",
}


# How far another CPU's float rounding moved a recorded value: 1 ulp of the
# ridge/GP baselines' CIs on an AVX-512 machine (relative 1e-16). Numbers
# must agree to this; where they agree to the last bit, the written files
# must too.
CROSS_MACHINE_RTOL = 1e-9


def assert_reproduces(numbers, expected, digests, expected_digests):
    assert _nested_close(numbers, expected), (numbers, expected)
    if numbers == expected:
        assert digests == expected_digests


def _nested_close(a, b):
    if isinstance(b, dict):
        return isinstance(a, dict) and a.keys() == b.keys() and all(
            _nested_close(a[k], b[k]) for k in b)
    if isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_nested_close(x, y) for x, y in zip(a, b))
    if isinstance(b, float):
        return a == pytest.approx(b, rel=CROSS_MACHINE_RTOL, nan_ok=True)
    return a == b


def test_table1_slice_reproduces_bit_for_bit(tmp_path):
    record = table1_slice(str(tmp_path))
    assert_reproduces(table1_numbers(record), TABLE1_NUMBERS, file_digests(record),
                      TABLE1_DIGESTS)


def test_figure4_baselines_slice_reproduces_bit_for_bit(tmp_path):
    if not (SHARED_DATA / "movielens" / "ml-latest-small").is_dir():
        pytest.skip("ml-latest-small is not in ../shared/data")
    record = figure4_baselines_slice(str(tmp_path))
    assert_reproduces(figure4_numbers(record), FIGURE4_NUMBERS, file_digests(record),
                      FIGURE4_DIGESTS)


def _print_constants():
    """Prints the constants above from this code (run with --print)."""
    import pprint  # pylint: disable=g-import-not-at-top
    import tempfile  # pylint: disable=g-import-not-at-top
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory() as tmp:
        for name, run, numbers in (
                ("TABLE1", table1_slice, table1_numbers),
                ("FIGURE4", figure4_baselines_slice, figure4_numbers)):
            record = run(os.path.join(tmp, name))
            print(f"{name}_NUMBERS = {pprint.pformat(numbers(record), width=90)}")
            print(f"{name}_DIGESTS = {pprint.pformat(file_digests(record), width=90)}")


if __name__ == "__main__":
    if "--print" in sys.argv:
        sys.exit(_print_constants())
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
