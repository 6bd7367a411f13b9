"""Train the active Matching Network on N-way episodes of any classification data.

    python -m trainers.classification --data=folder:PATH --model_dir=runs/mine
    python -m trainers.classification --data=npz:PATH --ways=5 --shots=1 ...
    python -m trainers.classification --data=csv:PATH --label_col=species ...
    python -m trainers.classification --data=tfds:NAME[:SPLIT] --download ...

`--data` takes a folder of class subfolders, an `.npz` of arrays, a table of
feature vectors or a TFDS data set (active_learning/data/readers.py, and
docs/own_data.md for a walk-through). Omniglot is a preset of this trainer
(`trainers.omniglot`, `--data=omniglot:PATH`). Episodes are meta-training
tasks: each draws N classes and `--items_per_class` items of each into the
pool, plus one held-out item per class; classes are split into train /
validation / test by whole groups (parent folders, `groups` arrays,
Omniglot's alphabets) so the model is judged on classes it never saw.

Rerunning the same command resumes from the newest checkpoint in --model_dir.
"""

import json

from absl import app, flags, logging
import keras
import numpy as np

import active_learning  # noqa: F401  (sets TensorFlow's log level before it loads)
from active_learning.config import OMNIGLOT_LABELLED_MASS_TEMPERATURES, ModelConfig
from active_learning.data import readers
from active_learning.data import splits
from active_learning.data.episodes import ClassEpisodeSampler
from active_learning.model import ActiveMatchingNetwork
from active_learning.run_config import (EPISODE_CLASSES, ClassEpisodeConfig, ClassificationData,
                                        episode_seed)
from trainers import common

FLAGS = flags.FLAGS

flags.DEFINE_integer("image_size", None, "Side images are resampled to (default: the data's "
                     "own size; Omniglot 28).")
flags.DEFINE_integer("image_channels", None, "1 (grey) or 3 (RGB); converts every image "
                     "(default: the data's own, an error if a folder mixes them).")
flags.DEFINE_bool("invert", False, "Images are dark drawings on light paper: use 1 - pixel "
                  "so that ink = 1, as in Omniglot.")
flags.DEFINE_string("label_col", "label", "Label column of a feature table (csv:).")
flags.DEFINE_string("group_col", None, "Group column of a feature table (csv:); whole "
                    "groups are held out for validation and test.")
flags.DEFINE_integer("ways", 5, "Classes per episode (N).")
flags.DEFINE_integer("shots", 1, "Labels per class the budget allows: budget = N * shots.")
flags.DEFINE_list("ways_choices", [], "Mixed training: draw N per step from these "
                  "(e.g. 5,10,15,20); evaluation uses --eval_ways.")
flags.DEFINE_integer("eval_ways", None, "N for validation episodes (default: --ways, or the "
                     "largest of --ways_choices).")
flags.DEFINE_integer("items_per_class", 5, "Pool items per class (paper: 5).")
flags.DEFINE_enum("episode_classes", "random", list(EPISODE_CLASSES),
                  "How the N classes of training and validation episodes are drawn: from "
                  "the whole split (the paper), or all from one alphabet (Lake et al.'s "
                  "within-alphabet protocol; needs the data's groups).")
flags.DEFINE_integer("max_classes", 20, "Width of one-hot labels: the largest N the model reads.")
flags.DEFINE_enum("split", "auto", ["auto", "vinyals", "lake", "alphabets"],
                  "Class split (auto: vinyals for the full Omniglot release, else held-out "
                  "groups; 'alphabets' holds out whole groups of any data).")
flags.DEFINE_list("test_alphabets", None, "Groups (Omniglot alphabets) held out for test.")
flags.DEFINE_list("validation_alphabets", None, "Groups held out for validation.")
flags.DEFINE_bool("rotate", None, "Rotation augmentation, as in Matching Networks: each "
                  "training class turned by 0/90/180/270 degrees is a class of its own "
                  "(x4 classes). Default: on for Omniglot, off for other data.")
flags.DEFINE_float("affine_jitter", 0.0, "Strength of a random affine distortion of every "
                   "training drawing (0: none; 1: Koch et al.'s ranges, rotation +-10 deg, "
                   "shear +-0.3 rad, scale 0.8-1.2, shift 2% of the side). Images only; "
                   "validation and test episodes are never distorted.")
flags.DEFINE_string("cache_dir", None, "Where decoded images are cached.")
flags.DEFINE_enum("selector_features", "exact", ["exact", "scalable"],
                  "exact: the selector's item-item features from the full cosine matrix "
                  "every step (O(pool^2)). scalable: from a per-episode index, O(pool x "
                  "labelled) per step, for large pools (docs/performance.md).")
flags.DEFINE_integer("selector_neighbours", 32, "Scalable selector features: nearest and "
                     "farthest neighbours kept per item.")
flags.DEFINE_integer("encoder_residual_blocks", 0, "Image encoder: residual 3x3 blocks "
                     "after the paper's three convolutions (0, the paper's encoder). They "
                     "start at zero, so --init_from a paper-encoder model begins as that "
                     "model (docs/results.md lists the variants tried).", lower_bound=0)
flags.DEFINE_list("labelled_mass_temperatures",
                  [str(t) for t in OMNIGLOT_LABELLED_MASS_TEMPERATURES],
                  "Selector features beyond the paper's: per temperature, the share of an "
                  "item's softmax attention over the pool that falls on labelled items. "
                  "Empty ('') for the paper's six cosine features only.")

# `--help` lists the loop's flags too (--data_dir, --model_dir, --train_steps...),
# not only this module's: they are what a user sets most.
flags.adopt_module_key_flags(common)

# Held-out items per class in every episode (the paper's 1).
QUERIES_PER_CLASS = 1


def _check_flags():
    """Episode-shape flags, checked before any data is read; returns the
    training N choices, their N list, the validation N, the budget and the
    selector temperatures."""
    common.check_common_flags()
    problems = []
    try:
        choices = [int(w) for w in FLAGS.ways_choices]
    except ValueError:
        raise flags.ValidationError(
            f"--ways_choices must be comma-separated integers (e.g. 5,10,15,20), got "
            f"{','.join(FLAGS.ways_choices)!r}") from None
    all_ways = choices or [FLAGS.ways]
    eval_ways = FLAGS.eval_ways or max(all_ways)
    pool_per_class = FLAGS.items_per_class
    for w in all_ways + [eval_ways]:
        if w < 2 or w > FLAGS.max_classes:
            problems.append(f"ways {w} must lie in [2, --max_classes={FLAGS.max_classes}]")
    if FLAGS.shots < 1:
        problems.append(f"--shots must be >= 1, got {FLAGS.shots}")
    if FLAGS.budget is not None and choices:
        problems.append("--budget is fixed per run; with --ways_choices the budget is "
                        "N * --shots for each drawn N")
    budget = FLAGS.budget or eval_ways * FLAGS.shots
    if budget > eval_ways * pool_per_class:
        problems.append(f"label budget {budget} exceeds the pool of {eval_ways} x "
                        f"{pool_per_class} = {eval_ways * pool_per_class} items")
    for total in sorted({w * FLAGS.shots for w in all_ways} | {budget}):
        if total % FLAGS.query_batch:
            problems.append(f"--query_batch={FLAGS.query_batch} must divide the label "
                            f"budget {total} (labels arrive in whole rounds)")
    if FLAGS.shots > pool_per_class:
        problems.append(f"--shots {FLAGS.shots} exceeds --items_per_class {pool_per_class}")
    try:
        temperatures = tuple(float(t) for t in FLAGS.labelled_mass_temperatures)
    except ValueError:
        temperatures = ()
        problems.append("--labelled_mass_temperatures must be comma-separated numbers, got "
                        f"{','.join(FLAGS.labelled_mass_temperatures)}")
    if any(not t > 0 for t in temperatures):
        problems.append("--labelled_mass_temperatures must all be > 0, got "
                        f"{','.join(FLAGS.labelled_mass_temperatures)}")
    if FLAGS.image_channels not in (None, 1, 3):
        problems.append(f"--image_channels must be 1 or 3, got {FLAGS.image_channels}")
    if problems:
        raise flags.ValidationError("; ".join(problems))
    return choices, all_ways, eval_ways, budget, temperatures


def data_spec():
    """`--data`, or Omniglot in `--data_dir` (the preset's flagfiles)."""
    if FLAGS.data:
        return FLAGS.data
    if not FLAGS.data_dir:
        raise flags.ValidationError(
            "--data is required: folder:PATH, npz:PATH, csv:PATH, tfds:NAME or "
            "omniglot:PATH (or --data_dir with the Omniglot zips, e.g. data/omniglot)")
    # `--data_dir=tfds[:DIR]` is Omniglot's TFDS copy, as before.
    return "omniglot:" + FLAGS.data_dir


def run_config_from_flags():
    """The run's `RunConfig` from the flags, checked before any data is read."""
    common.check_common_flags()
    _, all_ways, eval_ways, budget, _ = _check_flags()
    spec = data_spec()
    omniglot = spec.startswith("omniglot:")
    try:
        data = ClassificationData(
            source=spec, image_size=FLAGS.image_size, image_channels=FLAGS.image_channels,
            invert=FLAGS.invert, label_col=FLAGS.label_col, group_col=FLAGS.group_col,
            rotate=FLAGS.rotate if FLAGS.rotate is not None else omniglot,
            jitter=FLAGS.affine_jitter, split=FLAGS.split, test_alphabets=FLAGS.test_alphabets,
            validation_alphabets=FLAGS.validation_alphabets)
        episodes = ClassEpisodeConfig(ways=all_ways, eval_ways=eval_ways, shots=FLAGS.shots,
                                      items_per_class=FLAGS.items_per_class, budget=budget,
                                      episode_classes=FLAGS.episode_classes)
    except ValueError as e:
        raise flags.ValidationError(str(e)) from None
    return common.run_config_from_flags("omniglot" if omniglot else "classification",
                                        episodes, data)


def model_options_from_flags():
    """The ModelConfig fields the flags set (the data set the rest)."""
    temperatures = _check_flags()[4]
    return dict(max_classes=FLAGS.max_classes, embed_dim=FLAGS.embed_dim, units=FLAGS.units,
                labelled_mass_temperatures=temperatures,
                selector_features=FLAGS.selector_features,
                selector_neighbours=FLAGS.selector_neighbours,
                encoder_residual_blocks=FLAGS.encoder_residual_blocks)


def build_setup(run, model_options, cache_dir=None, download=False):
    """The model config and the `TaskSetup` fields of `run` (a `RunConfig`).

    Reads no flags: `model_options` are ModelConfig fields, `cache_dir` where
    decoded images are cached, `download` lets TFDS fetch a missing data set.
    """
    episodes, options = run.episodes, run.data
    all_ways, eval_ways = list(episodes.ways), episodes.eval_ways
    pool_per_class, budget = episodes.items_per_class, episodes.budget
    spec, rotate = options.source, options.rotate
    # A directory of another task or episode shape is refused before any data
    # is read; the model config is compared once the model is built.
    common.check_model_dir(run)
    data, split = load_data_and_split(run, cache_dir, download)
    description = split.describe()
    train_classes = len(split.train) * (4 if rotate else 1)
    if max(all_ways) > train_classes:
        raise flags.ValidationError(f"ways {max(all_ways)} exceeds the {train_classes} "
                                    "training classes of this split")
    if eval_ways > len(split.validation):
        raise flags.ValidationError(f"eval ways {eval_ways} exceeds the "
                                    f"{len(split.validation)} validation classes")

    within_group = episodes.episode_classes == "within_alphabet"

    def sampler(classes, ways, seed, rotate_classes, jitter=0.0):
        return ClassEpisodeSampler(
            data.items, data.class_starts, data.class_counts, classes, ways=ways,
            items_per_class=pool_per_class, queries_per_class=QUERIES_PER_CLASS,
            rotate=rotate_classes, seed=seed, class_names=data.class_names,
            class_groups=data.groups, within_group=within_group, jitter=jitter)

    try:
        # The episode shape against the data, before anything is written.
        train_sampler = sampler(split.train, max(all_ways),
                                episode_seed(run.seed, "train"), rotate, options.jitter)
        sampler(split.validation, eval_ways, 0, False)
    except ValueError as e:
        raise flags.ValidationError(str(e)) from e

    def make_eval_sampler():
        return sampler(split.validation, eval_ways, episode_seed(run.seed, "selection"),
                       False)

    # One N: every step asks `budget` labels (setup.num_steps).
    step_arguments = None
    if episodes.mixed:
        def step_arguments(step):
            # A function of the step alone, so a resumed run draws the same N.
            w = int(np.random.RandomState([run.seed, step]).choice(all_ways))
            return {"ways": w, "num_steps": w * episodes.shots}

    inputs = item_inputs(data)
    try:  # e.g. --encoder_residual_blocks with feature-vector data
        config = ModelConfig(task="classification", **model_options, **inputs)
    except ValueError as e:
        raise flags.ValidationError(f"{e} (from the flags and the data at {spec})") from None
    on_new_run = None
    if data.kind == "features":
        rows = np.concatenate([np.arange(s, s + n) for s, n in zip(
            data.class_starts[split.train], data.class_counts[split.train])])

        def on_new_run(model):
            # Training classes only: validation and test stay unseen.
            model.encoder.set_standardization(data.items[rows])

    recorded = {"data_summary": data.describe(), "split": description}
    return config, dict(
        name=run.task, train_sampler=train_sampler, make_eval_sampler=make_eval_sampler,
        eval_policies=["greedy", "random", "min_max_cos", "oracle"], num_steps=budget,
        higher_is_better=True, metric_name="accuracy", step_arguments=step_arguments,
        recorded=recorded, on_new_run=on_new_run)


def load_data_and_split(run, cache_dir=None, download=False):
    """The run's classes (`ClassData`) and their train / validation / test split.

    Reads no flags; errors name the file, folder or line, or the flag to change.
    """
    options = run.data
    spec, omniglot = options.source, options.omniglot
    data = readers.load_class_data(  # Its errors name the file, folder or line.
        spec, cache_dir=cache_dir, download=download, **options.reader_kwargs())
    if data.kind == "image" and options.image_size and \
            data.item_shape[0] != options.image_size:
        raise flags.ValidationError(f"--image_size {options.image_size}: Omniglot is decoded "
                                    f"at {data.item_shape[0]}x{data.item_shape[0]}")
    if options.rotate and data.kind != "image":
        raise flags.ValidationError("--rotate needs images; this data holds feature vectors")
    if options.jitter and data.kind != "image":
        raise flags.ValidationError("--affine_jitter needs images; this data holds feature "
                                    "vectors")
    split = splits.split_classes(data, split=options.split,
                                 test_alphabets=_list(options.test_alphabets),
                                 validation_alphabets=_list(options.validation_alphabets),
                                 seed=run.seed,
                                 # Omniglot keeps its published split sizes.
                                 min_held_out=20 if omniglot else run.episodes.eval_ways)
    logging.info("%s: %s; split %s", spec, json.dumps(data.describe()),
                 json.dumps(split.describe()))
    return data, split


def item_inputs(data):
    """The ModelConfig fields the data sets: image shape and ink, or the feature size."""
    if data.kind == "image":
        size, _, channels = data.item_shape
        return dict(image_size=size, image_channels=channels, ink_images=data.ink)
    return dict(encoder="mlp", feature_size=data.item_shape[0])


def _list(values):
    return None if values is None else list(values)


def setup_from_flags():
    """`main()`'s reading of the flags: the RunConfig, model config and setup."""
    run = run_config_from_flags()
    config, kwargs = build_setup(run, model_options_from_flags(), cache_dir=FLAGS.cache_dir,
                                 download=FLAGS.download)
    return run, config, kwargs


def main(argv):
    del argv
    common.quiet_logs()
    # First: multi-worker collectives must be set up before any TF op runs.
    strategy = common.make_strategy(FLAGS.strategy)
    run, config, kwargs = setup_from_flags()
    keras.utils.set_random_seed(run.seed)  # weight initialisation
    with strategy.scope():
        model = ActiveMatchingNetwork(config)
    setup = common.TaskSetup(model=model, **kwargs)
    common.run_training(setup, run, strategy)


if __name__ == "__main__":
    flags.mark_flags_as_required(["model_dir"])
    app.run(main)
