"""An ask/tell session over a pool of 100,000 items, every step timed.

    python -m trainers.session_at_scale [--model_dir=models/omniglot_lake_5way_1shot] \
        [--data_dir=data/omniglot-full] [--pool=100000] [--labels=50] [--seed=0] \
        [--output=session_at_scale.json]

The pool: `--pool` drawings of the Omniglot release this repository ships
(`data/omniglot-full`, 32,460 drawings), each of them in its four rotations
(129,840 items), drawn at random with `--seed`. The model: `--model_dir`'s
weights in a model with the scalable selector (`selector_features=
"scalable"`; same weights, the selection features read from the per-pool
index: `layers/selection_index.py`, clustered above 8,192 items), exported
as a SavedModel and driven through `ActiveSession` as any client would:
`begin` when the session opens, the selection index and `select_indexed`
on the first query, then `observe_select` for each answer (the label and the
next pick in one call, so the next query is answered from it).

The answers: each asked item's character number modulo the model's
`max_classes` (a stand-in person: the pool holds 1,623 x 4 classes, more
than a model's label slots). The command measures time and memory, not
accuracy; held-out accuracy with the scalable features is measured by
`trainers.select_scaling --fidelity_pool` and docs/results.md.

Prints a line per step (query, teach, their wall times), then the summary:
session open (begin), first query (index + select), p50/p99 of the later
query + teach steps, predict on 100 held-out drawings, peak memory.
"""

import dataclasses
import json
import os
import tempfile
import time

import numpy as np

import active_learning  # noqa: F401  (sets TensorFlow's log level before it loads)

from active_learning import checkpoints
from active_learning.data.omniglot import load_omniglot
from active_learning.model import ActiveMatchingNetwork
from active_learning.session import ActiveSession
from trainers.benchmark_scale import peak_memory_mib


def rotated_pool(data_dir, size, seed, held_out=100):
    """(pool `[size, 28, 28]`, its character ids, held-out drawings `[held_out, 28, 28]`)."""
    data = load_omniglot(data_dir)
    images = data.images.reshape(-1, data.images.shape[-2], data.images.shape[-1])
    per_character = data.images.shape[1]
    characters = np.repeat(np.arange(data.images.shape[0]), per_character)
    total = 4 * len(images)
    if size + held_out > total:
        raise SystemExit(f"--pool={size} (+{held_out} held out) exceeds the {total} rotated "
                         f"drawings of {data_dir}")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(total, size + held_out, replace=False)
    drawing, turns = chosen % len(images), chosen // len(images)
    items = np.stack([np.rot90(images[d], int(t)) for d, t in zip(drawing, turns)])
    # A turned character is a class of its own (the trainers' --rotate).
    labels = characters[drawing] * 4 + turns
    return items[:size], labels[:size], items[size:]


def scalable_copy(model_dir):
    """`model_dir`'s weights in a model with the scalable selector."""
    model, path = checkpoints.load_model(model_dir)
    config = dataclasses.replace(model.config, selector_features="scalable")
    scalable = ActiveMatchingNetwork(config)
    scalable.set_weights(model.get_weights())
    return scalable, path


def run(model_dir, data_dir, pool_size, labels, seed, log=print):
    """The per-step timings and summary (a JSON-ready dict)."""
    from export.saved_model import export_saved_model  # noqa: PLC0415
    start = time.perf_counter()
    pool, classes, held_out = rotated_pool(data_dir, pool_size, seed)
    log(f"pool of {len(pool)} items from {data_dir} ({time.perf_counter() - start:.1f} s)")
    model, checkpoint = scalable_copy(model_dir)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_saved_model(model, tmp, version=1, checkpoint=checkpoint)
        del model
        start = time.perf_counter()
        session = ActiveSession(path, pool, seed=seed)
        open_s = time.perf_counter() - start
        log(f"session open (begin over {len(pool)} items): {open_s:.2f} s, peak "
            f"{peak_memory_mib():.0f} MiB")
        steps = []
        for step in range(labels):
            start = time.perf_counter()
            (item,) = session.query()
            asked = time.perf_counter()
            session.teach(item, int(classes[item] % session.max_classes))
            taught = time.perf_counter()
            steps.append({"item": int(item), "query_s": asked - start,
                          "teach_s": taught - asked})
            log(f"step {step + 1:3d}: asked item {item:6d}, query {1e3 * (asked - start):8.1f} "
                f"ms, teach {1e3 * (taught - asked):6.1f} ms")
        start = time.perf_counter()
        probabilities = session.predict(held_out)
        predict_s = time.perf_counter() - start
    later = [s["query_s"] + s["teach_s"] for s in steps[1:]]
    summary = {
        "pool": len(pool), "labels": labels, "seed": seed, "model_dir": model_dir,
        "session_open_s": open_s, "first_query_s": steps[0]["query_s"],
        "step_p50_ms": float(np.percentile(later, 50) * 1e3) if later else None,
        "step_p99_ms": float(np.percentile(later, 99) * 1e3) if later else None,
        "predict_100_s": predict_s,
        "probabilities_sum_to_one": bool(np.allclose(probabilities.sum(-1), 1.0, atol=1e-4)),
        "distinct_items_asked": len({s["item"] for s in steps}),
        "peak_memory_mib": peak_memory_mib(),
    }
    log(f"session open {open_s:.1f} s; first query (index + select) "
        f"{summary['first_query_s']:.1f} s; later query + teach p50 "
        f"{summary['step_p50_ms']:.1f} ms, p99 {summary['step_p99_ms']:.1f} ms; predict on "
        f"{len(held_out)} held-out drawings {predict_s:.2f} s; peak memory "
        f"{summary['peak_memory_mib']:.0f} MiB")
    return {"summary": summary, "steps": steps}


def main(argv):
    from absl import flags  # noqa: PLC0415
    if len(argv) > 1:
        raise SystemExit(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    if f.pool < 2 or f.labels < 1 or f.labels >= f.pool:
        raise SystemExit(f"need --pool >= 2 and 1 <= --labels < --pool; got --pool={f.pool}, "
                         f"--labels={f.labels}")
    if not os.path.isdir(f.model_dir):
        raise SystemExit(f"--model_dir={f.model_dir} is not a directory (a trained model, "
                         "e.g. models/omniglot_lake_5way_1shot)")
    result = run(f.model_dir, f.data_dir, f.pool, f.labels, f.seed,
                 log=lambda m: print(m, flush=True))
    if f.output:
        with open(f.output, "w") as out:
            json.dump(result, out, indent=2)
            out.write("\n")


def define_flags():
    from absl import flags  # noqa: PLC0415
    flags.DEFINE_string("model_dir", "models/omniglot_lake_5way_1shot",
                        "A trained Omniglot model directory.")
    flags.DEFINE_string("data_dir", "data/omniglot-full", "The Omniglot release.")
    flags.DEFINE_integer("pool", 100_000, "Pool size (at most 4 x the drawings, less 100).")
    flags.DEFINE_integer("labels", 50, "Labels asked.")
    flags.DEFINE_integer("seed", 0, "Seed of the pool draw and the session.")
    flags.DEFINE_string("output", "", "Optional JSON of every step and the summary.")


if __name__ == "__main__":
    from absl import app  # noqa: PLC0415
    define_flags()
    app.run(main)
