"""What `trainers.data_summary` prints for the Omniglot release: sizes, the
class split and the in-graph sampler's throughput."""

import os
import time

import numpy as np
import tensorflow as tf

from active_learning.data.omniglot import EpisodeSampler, load_omniglot
from active_learning.data.splits import split_classes


def measure_throughput(sampler, batch_size=32, ways=5, seconds=2.0):
    """Episodes per second of `sampler.sample(batch_size, ways)`."""
    tf.nest.map_structure(lambda t: t.numpy(),
                          sampler.sample(batch_size, ways))   # Trace first.
    calls, start = 0, time.perf_counter()
    while True:
        batch = sampler.sample(batch_size, ways)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and calls >= 3:
            break
    # Reading a result waits for any queued device work.
    batch["query_labels"].numpy()
    elapsed = time.perf_counter() - start
    return calls * batch_size / elapsed


def summarize(data_dir, cache_dir=None, split="auto", test_alphabets=None,
              validation_alphabets=None, validation_characters=100, seed=0,
              benchmark_seconds=2.0):
    """Loads, splits and benchmarks `data_dir`.

    Returns:
      (lines, record): human-readable summary lines, and a JSON-ready dict.
    """
    start = time.perf_counter()
    data = load_omniglot(data_dir, cache_dir=cache_dir)
    load_seconds = time.perf_counter() - start
    classes = split_classes(
        data, split=split, test_alphabets=test_alphabets,
        validation_alphabets=validation_alphabets,
        validation_characters=validation_characters, seed=seed)
    described = classes.describe()
    pool = classes.train if len(classes.train) >= 5 else np.arange(
        data.num_characters)
    sampler = EpisodeSampler(data, pool, ways=5, seed=seed)
    rate = measure_throughput(sampler, 32, 5, benchmark_seconds)
    alphabets = data.alphabet_names
    lines = [
        "Omniglot in %s" % data_dir,
        "  sources: %s" % ", ".join(data.sources),
        "  alphabets: %d (%d background, %d evaluation)" % (
            len(alphabets),
            len(set(a for a, b in zip(data.alphabets, data.background) if b)),
            len(set(a for a, b in zip(data.alphabets, data.background)
                    if not b))),
        "  characters: %d, images: %d of %dx%d" % (
            data.num_characters, data.num_images, data.images.shape[2],
            data.images.shape[3]),
        "  loaded in %.2f s" % load_seconds,
        "  split %s: train %d, validation %d, test %d characters" % (
            classes.name, len(classes.train), len(classes.validation),
            len(classes.test)),
        "    test alphabets: %s" % (", ".join(classes.test_alphabets)
                                    or "none"),
        "    validation alphabets: %s" % (
            ", ".join(classes.validation_alphabets) or "none"),
    ]
    # The named splits this data also supports, so one command shows every
    # size a user can pick with --split (both paper splits on the full release).
    others = {}
    for name in ("vinyals", "lake"):
        if name == classes.name:
            continue
        try:
            other = split_classes(data, split=name,
                                  validation_characters=validation_characters,
                                  seed=seed)
        except ValueError:
            continue  # e.g. vinyals on a subset of the release
        others[name] = {k: v for k, v in other.describe().items()
                        if k.endswith("_characters")}
        lines.append("  split %s (--split=%s): train %d, validation %d, test %d "
                     "characters" % (name, name, len(other.train),
                                     len(other.validation), len(other.test)))
    lines.append("  sampler: %.0f 5-way episodes/s at batch 32 (%s)" % (
        rate, "train classes" if pool is classes.train else "all classes"))
    record = {
        "data_dir": os.fspath(data_dir),
        "sources": list(data.sources),
        "alphabets": len(alphabets),
        "characters": int(data.num_characters),
        "images": int(data.num_images),
        "load_seconds": round(load_seconds, 3),
        "episodes_per_second": round(rate, 1),
    }
    record.update(described)
    record["other_splits"] = others
    return lines, record
