"""Describe a data set before training on it: counts, class split, episode throughput.

    python -m trainers.data_summary --data=data/omniglot-full
    python -m trainers.data_summary --data=folder:PATH [--image_size=32]
    python -m trainers.data_summary --data=csv:PATH --label_col=species

Omniglot gets its release summary (both named splits on the full release);
other classification data the reader's summary (classes, items per class,
groups, the rules applied while reading), the held-out-group split the
trainer would use and the sampler's speed. The last line is one JSON object.
"""

import json
import time

from absl import app, flags

import active_learning  # noqa: F401  (sets TensorFlow's log level before it loads)
from active_learning.data import omniglot_summary
from active_learning.data import readers
from active_learning.data import splits
from active_learning.data.episodes import ClassEpisodeSampler

FLAGS = flags.FLAGS

def summarize(spec):
    """(lines, record) for any classification data spec."""
    start = time.perf_counter()
    data = readers.load_class_data(
        spec, image_size=FLAGS.image_size, image_channels=FLAGS.image_channels,
        invert=FLAGS.invert, label_col=FLAGS.label_col, group_col=FLAGS.group_col,
        cache_dir=FLAGS.cache_dir, download=FLAGS.download)
    load_seconds = time.perf_counter() - start
    split = splits.split_classes(data, split=FLAGS.split, test_alphabets=FLAGS.test_alphabets,
                                 validation_alphabets=FLAGS.validation_alphabets,
                                 seed=FLAGS.seed, min_held_out=FLAGS.ways)
    sampler = ClassEpisodeSampler(data.items, data.class_starts, data.class_counts,
                                  split.train, ways=FLAGS.ways, items_per_class=1,
                                  seed=FLAGS.seed, class_names=data.class_names)
    rate = omniglot_summary.measure_throughput(sampler, 32, FLAGS.ways, FLAGS.benchmark_seconds)
    record = dict(data.describe(), load_seconds=round(load_seconds, 3),
                  episodes_per_second=round(rate, 1), **split.describe())
    counts = record["items_per_class"]
    lines = [f"{spec}: {data.kind} items of shape {data.item_shape}",
             f"  classes: {data.num_classes} in {record['groups']} groups, items: "
             f"{data.num_items} ({counts['min']} to {counts['max']} per class, median "
             f"{counts['median']:g})",
             f"  loaded in {load_seconds:.2f} s"]
    for rule, count in data.notes.items():
        lines.append(f"  rule applied: {rule}: {count}")
    lines += [f"  split {split.name}: train {len(split.train)}, validation "
              f"{len(split.validation)}, test {len(split.test)} classes (whole groups held out)",
              f"  sampler: {rate:.0f} {FLAGS.ways}-way episodes/s at batch 32"]
    return lines, record


def main(argv):
    if len(argv) > 1:
        raise SystemExit(f"unexpected arguments: {argv[1:]}")
    scheme, rest = readers.parse_spec(FLAGS.data)
    if scheme == "omniglot":
        lines, record = omniglot_summary.summarize(
            rest, cache_dir=FLAGS.cache_dir, split=FLAGS.split,
            test_alphabets=FLAGS.test_alphabets,
            validation_alphabets=FLAGS.validation_alphabets,
            validation_characters=FLAGS.validation_characters, seed=FLAGS.seed,
            benchmark_seconds=FLAGS.benchmark_seconds)
    else:
        lines, record = summarize(FLAGS.data)
    print("\n".join(lines))
    print(json.dumps(record))


def define_flags():
    """This command's flags (defined when it runs, so importing it beside the
    trainers, which define --data and --seed too, does not clash)."""
    flags.DEFINE_string("data", None, "Data to describe: a folder of Omniglot zips, "
                        "folder:PATH, npz:PATH, csv:PATH, tfds:NAME[:SPLIT] or omniglot:PATH.")
    flags.DEFINE_string("cache_dir", None, "Cache of decoded arrays (default ~/.cache/...).")
    flags.DEFINE_enum("split", "auto", ["auto", "vinyals", "lake", "alphabets"], "Class split.")
    flags.DEFINE_list("test_alphabets", None, "Groups (alphabets) held out for test.")
    flags.DEFINE_list("validation_alphabets", None, "Groups held out for validation.")
    flags.DEFINE_integer("validation_characters", 100, "Validation size (vinyals, lake).")
    flags.DEFINE_integer("ways", 5, "N of the episodes timed, and the smallest held-out split.")
    flags.DEFINE_integer("image_size", None, "Side images are resampled to.")
    flags.DEFINE_integer("image_channels", None, "1 or 3: convert every image.")
    flags.DEFINE_bool("invert", False, "Use 1 - pixel (dark ink on light paper).")
    flags.DEFINE_string("label_col", "label", "Label column of a table.")
    flags.DEFINE_string("group_col", None, "Group column of a table.")
    flags.DEFINE_bool("download", False, "Let TFDS download a missing data set.")
    flags.DEFINE_integer("seed", 0, "Seed of the split and the sampler.")
    flags.DEFINE_float("benchmark_seconds", 2.0, "How long to time the sampler.")


if __name__ == "__main__":
    define_flags()
    flags.mark_flag_as_required("data")
    app.run(main)
