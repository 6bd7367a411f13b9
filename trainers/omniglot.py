"""Train the active Matching Network on N-way Omniglot episodes (paper 4.1).

    python -m trainers.omniglot --flagfile=trainers/configs/omniglot_5way_1shot.cfg

Rerunning the same command resumes from the newest checkpoint in --model_dir.
"""

import json

from absl import app, flags, logging
import keras
import numpy as np

import active_learning  # noqa: F401  (quiet TensorFlow start-up)
from active_learning.config import OMNIGLOT_LABELLED_MASS_TEMPERATURES, ModelConfig
from active_learning.data import omniglot
from active_learning.model import ActiveMatchingNetwork
from trainers import common

FLAGS = flags.FLAGS

flags.DEFINE_integer("ways", 5, "Classes per episode (N).")
flags.DEFINE_integer("shots", 1, "Labels per class the budget allows: budget = N * shots.")
flags.DEFINE_list("ways_choices", [], "Mixed training: draw N per step from these "
                  "(e.g. 5,10,15,20); evaluation uses --eval_ways.")
flags.DEFINE_integer("eval_ways", None, "N for validation episodes (default: --ways, or the "
                     "largest of --ways_choices).")
flags.DEFINE_integer("items_per_class", 5, "Pool items per class (paper: 5).")
flags.DEFINE_integer("max_classes", 20, "Width of one-hot labels: the largest N the model reads.")
flags.DEFINE_enum("split", "auto", ["auto", "vinyals", "lake", "alphabets"],
                  "Class split (auto: vinyals for the full release, else held-out alphabets).")
flags.DEFINE_list("test_alphabets", None, "Alphabets held out for test (alphabets split).")
flags.DEFINE_list("validation_alphabets", None, "Alphabets held out for validation.")
flags.DEFINE_bool("rotate", True, "Rotation augmentation, as in Matching Networks: each "
                  "training character turned by 0/90/180/270 degrees is a class of its "
                  "own (x4 classes). --norotate turns it off.")
flags.DEFINE_string("cache_dir", None, "Where decoded images are cached.")
flags.DEFINE_list("labelled_mass_temperatures",
                  [str(t) for t in OMNIGLOT_LABELLED_MASS_TEMPERATURES],
                  "Selector features beyond the paper's: per temperature, the share of an "
                  "item's softmax attention over the pool that falls on labelled items. "
                  "Empty ('') for the paper's six cosine features only.")


def build_setup():
    common.check_common_flags()
    if not FLAGS.data_dir:
        raise flags.ValidationError("--data_dir is required: a directory with the Omniglot "
                                    "zips (images_background.zip, ...) or 'tfds'")
    choices = [int(w) for w in FLAGS.ways_choices]
    all_ways = choices or [FLAGS.ways]
    eval_ways = FLAGS.eval_ways or max(all_ways)
    pool_per_class = FLAGS.items_per_class
    problems = []
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
    if problems:
        raise flags.ValidationError("; ".join(problems))

    data = omniglot.load_omniglot(FLAGS.data_dir, cache_dir=FLAGS.cache_dir)
    split = omniglot.split_classes(data, split=FLAGS.split,
                                   test_alphabets=FLAGS.test_alphabets,
                                   validation_alphabets=FLAGS.validation_alphabets,
                                   seed=FLAGS.seed)
    description = split.describe()
    logging.info("omniglot: %d characters; split %s", data.num_characters,
                 json.dumps(description))
    train_classes = len(split.train) * (4 if FLAGS.rotate else 1)
    if max(all_ways) > train_classes:
        raise flags.ValidationError(f"ways {max(all_ways)} exceeds the {train_classes} "
                                    "training classes of this split")
    if eval_ways > len(split.validation):
        raise flags.ValidationError(f"eval ways {eval_ways} exceeds the "
                                    f"{len(split.validation)} validation classes")

    train_sampler = omniglot.EpisodeSampler(
        data, split.train, ways=FLAGS.ways if not choices else max(choices),
        items_per_class=pool_per_class, rotate=FLAGS.rotate, seed=FLAGS.seed)

    def make_eval_sampler():
        return omniglot.EpisodeSampler(data, split.validation, ways=eval_ways,
                                       items_per_class=pool_per_class,
                                       seed=FLAGS.seed + 1_000_003)

    step_arguments = None
    if choices:
        def step_arguments(step):
            # A function of the step alone, so a resumed run draws the same N.
            w = int(np.random.RandomState([FLAGS.seed, step]).choice(choices))
            return {"ways": w, "num_steps": w * FLAGS.shots}
    elif FLAGS.budget is not None:
        def step_arguments(step):
            del step
            return {"num_steps": budget}

    config = ModelConfig(task="classification", max_classes=FLAGS.max_classes,
                         embed_dim=FLAGS.embed_dim, units=FLAGS.units,
                         labelled_mass_temperatures=temperatures)
    run_config = {"dataset": "omniglot", "data_dir": FLAGS.data_dir, "split": description,
                  "ways": all_ways, "eval_ways": eval_ways, "shots": FLAGS.shots,
                  "items_per_class": pool_per_class, "budget": budget,
                  "rotate": FLAGS.rotate, "query_batch": FLAGS.query_batch}
    return config, dict(
        name="omniglot", train_sampler=train_sampler, make_eval_sampler=make_eval_sampler,
        eval_policies=["greedy", "random", "min_max_cos", "oracle"], num_steps=budget,
        higher_is_better=True, metric_name="accuracy", step_arguments=step_arguments,
        run_config=run_config)


def main(argv):
    del argv
    common.quiet_logs()
    config, kwargs = build_setup()
    strategy = common.make_strategy(FLAGS.strategy)
    keras.utils.set_random_seed(FLAGS.seed)  # weight initialisation
    with strategy.scope():
        model = ActiveMatchingNetwork(config)
    setup = common.TaskSetup(model=model, **kwargs)
    common.run_training(setup, common.train_config_from_flags(setup.num_steps), strategy)


if __name__ == "__main__":
    flags.mark_flags_as_required(["data_dir", "model_dir"])
    app.run(main)
