"""Pretrain the active learner's image encoder with a prototypical loss.

    python -m trainers.pretrain_encoder --flagfile=trainers/configs/omniglot_full_5way_1shot.cfg \\
        --init_from=models/omniglot_full_5way_1shot --model_dir=runs/encoder_vinyals \\
        --pretrain_ways=60 --train_steps=4000 --learning_rate=5e-4
    python -m trainers.omniglot --flagfile=trainers/configs/omniglot_full_5way_1shot.cfg \\
        --init_from=runs/encoder_vinyals --model_dir=runs/omniglot_5way_pretrained

Only `model.encoder` learns (`active_learning.pretraining`): each step is one
episode of `--pretrain_ways` training classes (rotations and
`--affine_jitter` as the trainers apply them; `--episode_classes=within_alphabet`
draws them from one alphabet), `--pretrain_shots` drawings forming each
class's prototype and `--pretrain_queries` scored against them. Every other
weight is copied from `--init_from` (or freshly initialised without it), so
the output folder is a model directory any trainer starts from with
`--init_from`, and `trainers.evaluate` or the export read like any other.

Validation is the encoder's own one-shot accuracy on validation classes
(nearest neighbour by cosine, `--eval_ways`-way, or `--ways`), every
`--eval_interval` steps; `best/` keeps the best. Rerunning the same command
resumes from the newest checkpoint in `--model_dir/pretrain_checkpoints`
(another folder than a trainer's `checkpoints/`, so that a trainer pointed
here by mistake starts afresh instead of reading them); Ctrl-C or SIGTERM
saves one first.
"""

import dataclasses
import json
import os
import signal
import time

from absl import app, flags, logging
import keras
import tensorflow as tf

import active_learning  # noqa: F401  (sets TensorFlow's log level before it loads)
from active_learning import checkpoints
from active_learning.config import ModelConfig
from active_learning.data.episodes import ClassEpisodeSampler
from active_learning.model import ActiveMatchingNetwork
from active_learning.pretraining import EncoderPretrainer, PretrainConfig, one_shot_accuracy
from active_learning.run_config import episode_seed
from trainers import classification
from trainers import common
from trainers import model_dir as model_dirs
from trainers import recovery

FLAGS = flags.FLAGS

flags.DEFINE_integer("pretrain_ways", PretrainConfig.ways, "Classes per pretraining episode "
                     "(Snell et al.: 60 for 5- and 20-way tests).")
flags.DEFINE_integer("pretrain_shots", PretrainConfig.shots, "Drawings per class that form "
                     "its prototype.")
flags.DEFINE_integer("pretrain_queries", PretrainConfig.queries, "Held-out drawings per "
                     "class the loss scores.")
flags.DEFINE_integer("eval_one_shot_episodes", 1000, "Validation episodes per evaluation "
                     "(the same seeded episodes every time).")
flags.adopt_module_key_flags(classification)

CHECKPOINTS = "pretrain_checkpoints"
RECORD = "pretrain.json"


def pretrain_config_from_flags():
    try:
        return PretrainConfig(ways=FLAGS.pretrain_ways, shots=FLAGS.pretrain_shots,
                              queries=FLAGS.pretrain_queries,
                              learning_rate=FLAGS.learning_rate, clip_norm=FLAGS.clip_norm)
    except ValueError as e:
        raise flags.ValidationError(str(e)) from None


def check_model_dir(model_dir):
    """Refuses a trainer's run directory: its checkpoints would no longer match."""
    if tf.io.gfile.exists(os.path.join(model_dir, checkpoints.RUN_CONFIG)):
        raise flags.ValidationError(
            f"--model_dir={model_dir} holds a training run ({checkpoints.RUN_CONFIG}); "
            "pretraining writes a folder of its own. Use a new --model_dir and pass this "
            "one as --init_from.")


def build_model(run, data, init_from):
    """The model, its weights from `init_from` (config included) or fresh."""
    if init_from:
        try:
            config = checkpoints.load_model_config(init_from)
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(f"--init_from: {e}") from e
        if config.item_shape != tuple(data.item_shape):
            raise SystemExit(f"--init_from={init_from} reads items of shape "
                             f"{config.item_shape}, the data's are {data.item_shape}")
    else:
        config = ModelConfig(task="classification", **classification.model_options_from_flags(),
                             **classification.item_inputs(data))
    if config.encoder != "conv":
        raise SystemExit("pretraining trains the image encoder; this data holds feature "
                         "vectors")
    keras.utils.set_random_seed(run.seed)
    model = ActiveMatchingNetwork(config)
    return model


def make_samplers(run, data, split, config: PretrainConfig, eval_ways):
    """The training sampler and a maker of the (same every time) validation one."""
    within = run.episodes.episode_classes == "within_alphabet"

    def sampler(classes, ways, items, queries, seed, rotate, jitter=0.0):
        return ClassEpisodeSampler(
            data.items, data.class_starts, data.class_counts, classes, ways=ways,
            items_per_class=items, queries_per_class=queries, rotate=rotate, seed=seed,
            class_names=data.class_names, class_groups=data.groups, within_group=within,
            jitter=jitter)

    try:
        train = sampler(split.train, config.ways, config.shots, config.queries,
                        episode_seed(run.seed, "train"), run.data.rotate, run.data.jitter)
        sampler(split.validation, eval_ways, 1, 1, 0, False)
    except ValueError as e:
        raise flags.ValidationError(f"{e} (--pretrain_ways, --eval_ways)") from e
    return train, lambda: sampler(split.validation, eval_ways, 1, 1,
                                  episode_seed(run.seed, "selection"), False)


def run_pretraining(model, config, run, train_sampler, make_eval_sampler, eval_ways,
                    eval_episodes):
    """The resumable loop; returns the record written to `pretrain.json`."""
    loop = run.loop
    model_dir = loop.model_dir
    try:  # a folder pretrained for another model is refused before any write
        model_dirs.check(model_dir, run, model.config)
    except model_dirs.ModelDirMismatch as e:
        raise SystemExit(str(e)) from e
    tf.io.gfile.makedirs(model_dir)
    checkpoints.save_model_config(model_dir, model.config)
    pretrainer = EncoderPretrainer(model, config, jit_compile=run.train_config.jit_compile)
    pretrainer.optimizer.build(model.encoder.trainable_variables)
    state = tf.train.Checkpoint(model=model, optimizer=pretrainer.optimizer,
                                step=pretrainer.step, sampler_rng=train_sampler.rng)
    checkpoint_dir = os.path.join(model_dir, CHECKPOINTS)
    best_dir = os.path.join(model_dir, checkpoints.BEST)
    recovery.clean_temporary_files(model_dir, (CHECKPOINTS, checkpoints.BEST))
    restored = recovery.restore_newest(state, checkpoint_dir)
    manager = tf.train.CheckpointManager(state, checkpoint_dir, loop.keep_checkpoints)
    best_manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(model=model, step=pretrainer.step), best_dir, 1)
    record_path = os.path.join(model_dir, RECORD)
    record = (checkpoints.read_json(record_path) if restored and tf.io.gfile.exists(record_path)
              else {"config": dataclasses.asdict(config), "init_from": loop.init_from,
                    "eval_ways": eval_ways, "eval_episodes": eval_episodes,
                    "validation": [], "best": None})

    def evaluate(step):
        value = one_shot_accuracy(model.encoder, make_eval_sampler(), eval_episodes,
                                  loop.batch_size)
        best = record["best"]
        improved = best is None or value > best["value"]
        logging.info("validation step %d: %d-way one-shot accuracy of the encoder %.4f%s",
                     step, eval_ways, value, " (best so far)" if improved else "")
        if improved:
            best_manager.save(checkpoint_number=step)
            record["best"] = {"step": step, "value": value}
        record["validation"].append({"step": step, "accuracy": value})
        checkpoints.write_json_atomic(record_path, record)  # after the best checkpoint

    step = int(pretrainer.step.numpy())
    if restored:
        logging.info("resumed from %s at step %d", restored, step)
    else:
        logging.info("pretraining the encoder in %s%s", model_dir,
                     f" from the weights of {loop.init_from}" if loop.init_from else "")
        evaluate(0)
    done = {e["step"] for e in record["validation"]}
    if common.is_eval_step(step, loop) and step not in done:
        evaluate(step)  # saved at an evaluation step, killed before evaluating it
    window_start, window_step = time.time(), step
    last_saved = manager.latest_checkpoint
    with common.stop_requests() as stop:
        while step < loop.train_steps:
            metrics = pretrainer.train_step(train_sampler.sample(1))
            step += 1
            if metrics["finite"].numpy() < 1.0:
                raise SystemExit(f"non-finite loss at step {step}; the update was not "
                                 f"applied. Last good checkpoint: {last_saved or 'none'}. "
                                 "Lower --learning_rate and resume from it.")
            if step % loop.log_interval == 0 or step == loop.train_steps:
                now = time.time()
                rate = (step - window_step) / max(now - window_start, 1e-9)
                window_start, window_step = now, step
                logging.info("step %d/%d  loss %.4f  episode accuracy %.3f  %.2f steps/s  "
                             "ETA %s", step, loop.train_steps, float(metrics["loss"]),
                             float(metrics["accuracy"]), rate,
                             common.format_eta((loop.train_steps - step) / max(rate, 1e-9)))
            # Saved before its evaluation: a run killed in between evaluates it on resume.
            if common.is_eval_step(step, loop) or step % loop.checkpoint_interval == 0:
                last_saved = manager.save(checkpoint_number=step)
            if common.is_eval_step(step, loop):
                evaluate(step)
            if stop["signal"] is not None:
                path = manager.save(checkpoint_number=step)
                logging.warning("stopped by signal %s at step %d/%d; saved %s. Rerun the "
                                "same command to resume.", signal.Signals(stop["signal"]).name,
                                step, loop.train_steps, path)
                raise common.Interrupted(128 + stop["signal"])
    print(json.dumps({"best": record["best"], "validation": record["validation"][-3:]}))
    return record


def main(argv):
    del argv
    common.quiet_logs()
    run = classification.run_config_from_flags()
    config = pretrain_config_from_flags()
    check_model_dir(run.loop.model_dir)
    data, split = classification.load_data_and_split(run, FLAGS.cache_dir, FLAGS.download)
    eval_ways = run.episodes.eval_ways
    train_sampler, make_eval_sampler = make_samplers(run, data, split, config, eval_ways)
    model = build_model(run, data, run.loop.init_from)
    restoring = tf.train.latest_checkpoint(os.path.join(run.loop.model_dir, CHECKPOINTS))
    if run.loop.init_from and not restoring:
        try:
            checkpoints.initialize_from(model, run.loop.init_from)
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(f"--init_from: {e}") from e
    run_pretraining(model, config, run, train_sampler, make_eval_sampler, eval_ways,
                    FLAGS.eval_one_shot_episodes)


if __name__ == "__main__":
    flags.mark_flags_as_required(["model_dir"])
    app.run(main)
