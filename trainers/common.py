"""The training loop shared by the Omniglot and MovieLens entry points.

Flags common to both tasks are defined here, and read only by the entry
points' `main()` (through the `*_from_flags` helpers), which turn them into a
`run_config.RunConfig`. `run_training(setup, run_config, strategy)` is a
library function: it takes a `TaskSetup` (model, samplers, evaluation
policies) built by an entry point and that config, and runs the loop: resumable checkpoints (model, optimizer, step, sampler and seed
generators), best checkpoint by validation metric, TensorBoard summaries,
progress lines with throughput and ETA, a NaN guard, a checkpoint on Ctrl-C or
SIGTERM, and a final `metrics.json` with held-out curves per policy.
"""

import contextlib
import dataclasses
import logging as pylogging
import os
import signal
import time
from typing import Callable, Dict, List, Optional

from absl import flags, logging
import numpy as np
import tensorflow as tf

from active_learning import checkpoints
from active_learning import evaluation
from active_learning import run_config as run_configs
from active_learning.policies import make_policy
from active_learning.run_config import LoopConfig, RunConfig
from active_learning.training import TrainConfig, Trainer
from trainers import model_dir as model_dirs
from trainers import multi_worker
from trainers import recovery

FLAGS = flags.FLAGS

flags.DEFINE_string("data_dir", None, "Directory with the dataset files.")
# One definition for every trainer (each reads its own kinds of source).
flags.DEFINE_string("data", None, "Data source. Classification: folder:PATH, npz:PATH, "
                    "csv:PATH, tfds:NAME[:SPLIT] or omniglot:PATH (default: Omniglot in "
                    "--data_dir). Ratings: csv:PATH, tsv:PATH, parquet:PATH, a GroupLens "
                    "MovieLens folder, or tfds:movielens/<variant>-ratings.")
flags.DEFINE_bool("download", False, "tfds: sources: let TFDS download and prepare a missing "
                  "data set (needs internet).")
flags.DEFINE_string("model_dir", None, "Where checkpoints, summaries and metrics go; "
                    "rerunning the same command resumes from here.")
flags.DEFINE_integer("train_steps", LoopConfig.train_steps, "Number of training updates.")
flags.DEFINE_integer("batch_size", LoopConfig.batch_size, "Episodes per update (global, all replicas).")
flags.DEFINE_integer("budget", None, "Labels requested per episode (T). Default: "
                     "ways * shots for Omniglot, 10 for MovieLens.")
flags.DEFINE_integer("query_batch", 1, "K: labels arrive in rounds of K. The policy picks "
                     "K items one after another, each seeing the earlier picks of the round "
                     "(pending, not labelled yet), a person labels them together; rewards "
                     "and GAE are per round, imitation targets the oracle's set for the "
                     "round. Must divide the budget. 1: one label at a time (the paper).")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
flags.DEFINE_bool("cosine_decay", True, "Decay the learning rate along a cosine over "
                  "--train_steps to a tenth of its start.")
flags.DEFINE_float("clip_norm", 5.0, "Global gradient-norm clip.")
flags.DEFINE_float("gae_gamma", 1.0, "GAE discount.")
flags.DEFINE_float("gae_lambda", 0.95, "GAE lambda.")
flags.DEFINE_float("entropy_weight", 0.01, "Entropy bonus weight.")
flags.DEFINE_float("value_weight", 0.5, "Value-function loss weight.")
flags.DEFINE_float("imitation_weight", 1.0, "Initial weight of the oracle imitation term.")
flags.DEFINE_float("imitation_final_weight", 0.1, "Weight after annealing.")
flags.DEFINE_integer("imitation_anneal_steps", 1000, "Steps of the linear anneal.")
flags.DEFINE_float("contrast_weight", 0.0, "Omniglot: weight of the pool contrastive term "
                   "(same-class pool items pulled together in the cosine geometry that "
                   "selection reads; the pool's labels are known in training). 0: off.")
flags.DEFINE_bool("slow_every_step", True, "Slow-predict the held-out items after every "
                  "label (anytime reward) rather than only after the last.")
flags.DEFINE_enum("rating_oracle", "closed_form", ["closed_form", "exact"],
                  "Ratings: how the imitation oracle scores each candidate. closed_form: "
                  "the candidate joins the current slow prediction's last softmax; "
                  "exact: a controller update and a slow prediction per candidate "
                  "(about 5x slower steps; how models trained before this flag learned).")
flags.DEFINE_string("policy", "learned", "Selection policy during training: learned, or a "
                    "fixed heuristic (random, min_max_cos, popular_entropy, entropy, "
                    "gp_variance) that drives the same architecture; the best checkpoint "
                    "is then the one that policy does best with.")
flags.DEFINE_integer("embed_dim", 64, "Item embedding width.")
flags.DEFINE_integer("units", 64, "LSTM and controller width.")
flags.DEFINE_integer("seed", 0, "Seed of every random choice (episodes, rollouts, init).")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"],
                  "tf.distribute strategy.")
flags.DEFINE_bool("jit_compile", True, "Compile the step after the item encoder (context "
                  "encoder, rollout, loss, gradients) with XLA: about 1.2x faster steps on "
                  "CPU. Single-replica only: off under --strategy=mirrored/multi_worker.")
flags.DEFINE_string("init_from", None, "Start a new run from the best weights of this trained "
                    "model directory (same architecture; e.g. fine-tune a 5-way model on "
                    "20-way episodes). Ignored when --model_dir already holds a checkpoint.")
flags.DEFINE_string("init_encoder_from", None, "Then copy the image encoder's weights "
                    "from this model directory (e.g. one written by "
                    "trainers.pretrain_encoder); every other weight stays --init_from's, or "
                    "fresh. Ignored when --model_dir already holds a checkpoint.")
flags.DEFINE_integer("log_interval", LoopConfig.log_interval, "Steps between progress lines and summaries.")
flags.DEFINE_integer("eval_interval", LoopConfig.eval_interval, "Steps between validation evaluations.")
flags.DEFINE_integer("checkpoint_interval", LoopConfig.checkpoint_interval, "Steps between checkpoints.")
flags.DEFINE_integer("eval_episodes", LoopConfig.eval_episodes, "Validation episodes per evaluation.")
flags.DEFINE_integer("final_eval_episodes", LoopConfig.final_eval_episodes, "Episodes per policy in metrics.json.")
flags.DEFINE_integer("keep_checkpoints", LoopConfig.keep_checkpoints, "Recent checkpoints kept.")


@dataclasses.dataclass
class TaskSetup:
    """What an entry point hands the loop.

    `train_sampler` is a tf.Module with `sample(batch_size, ...)` and an
    `rng`; `make_eval_sampler()` returns a freshly seeded validation sampler
    (so every evaluation sees the same episodes). `step_arguments(step)` gives
    per-step sampler kwargs and the label budget (mixed-way training).
    """

    name: str
    model: object
    train_sampler: object
    make_eval_sampler: Callable[[], object]
    eval_policies: List[str]
    num_steps: int
    higher_is_better: bool
    metric_name: str
    item_scores: Optional[np.ndarray] = None
    step_arguments: Optional[Callable[[int], Dict]] = None
    # Facts about the data found when the run starts (data summary, class
    # split, latent-factor fit): `recorded` in run_config.json.
    recorded: Dict = dataclasses.field(default_factory=dict)
    # Called with the model when a run starts (fresh or --init_from), not on
    # resume: sets what comes from this run's data rather than from training
    # or from the source model (the feature encoder's standardisation).
    on_new_run: Optional[Callable[[object], None]] = None
    # Files the task keeps in the model directory (MovieLens: latent factors,
    # vocabulary), written only once the directory is known to be this run's.
    write_files: Optional[Callable[[str], None]] = None
    query_batch: int = 1


def make_strategy(name):
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        try:
            return multi_worker.make_strategy()
        except multi_worker.TFConfigError as e:
            raise SystemExit(f"--strategy=multi_worker: {e}") from None
    return tf.distribute.get_strategy()


def train_config_from_flags(num_steps):
    return TrainConfig(
        num_steps=num_steps, learning_rate=FLAGS.learning_rate, clip_norm=FLAGS.clip_norm,
        decay_steps=FLAGS.train_steps if FLAGS.cosine_decay else 0,
        gae_gamma=FLAGS.gae_gamma, gae_lambda=FLAGS.gae_lambda,
        entropy_weight=FLAGS.entropy_weight, value_weight=FLAGS.value_weight,
        imitation_weight=FLAGS.imitation_weight,
        imitation_final_weight=FLAGS.imitation_final_weight,
        imitation_anneal_steps=FLAGS.imitation_anneal_steps,
        contrast_weight=FLAGS.contrast_weight,
        slow_every_step=FLAGS.slow_every_step, policy=FLAGS.policy, seed=FLAGS.seed,
        jit_compile=jit_compile_from_flags(), query_batch=FLAGS.query_batch,
        rating_oracle=FLAGS.rating_oracle)


def jit_compile_from_flags():
    if FLAGS.jit_compile and FLAGS.strategy != "default":
        logging.info("--jit_compile is off under --strategy=%s (XLA cannot compile the "
                     "cross-replica reductions in the loss)", FLAGS.strategy)
        return False
    return FLAGS.jit_compile


def loop_config_from_flags():
    return LoopConfig(
        model_dir=FLAGS.model_dir, train_steps=FLAGS.train_steps, batch_size=FLAGS.batch_size,
        log_interval=FLAGS.log_interval, eval_interval=FLAGS.eval_interval,
        checkpoint_interval=FLAGS.checkpoint_interval, eval_episodes=FLAGS.eval_episodes,
        final_eval_episodes=FLAGS.final_eval_episodes,
        keep_checkpoints=FLAGS.keep_checkpoints, init_from=FLAGS.init_from,
        init_encoder_from=FLAGS.init_encoder_from)


def run_config_from_flags(task, episodes, data, dataset=None):
    """The run's `RunConfig`: the loop and objective flags, the task's
    episode shape and data (built by the entry point from its own flags)."""
    try:
        return RunConfig(task=task, dataset=dataset or task, loop=loop_config_from_flags(),
                         train_config=train_config_from_flags(episodes.budget),
                         episodes=episodes, data=data)
    except ValueError as e:
        raise flags.ValidationError(str(e)) from None


def check_common_flags():
    """Rejects inconsistent values before any data is read."""
    problems = []
    if not FLAGS.model_dir:
        problems.append("--model_dir is required (where checkpoints go)")
    for name in ("train_steps", "batch_size", "log_interval", "eval_interval",
                 "checkpoint_interval", "eval_episodes", "final_eval_episodes"):
        if getattr(FLAGS, name) < 1:
            problems.append(f"--{name} must be >= 1, got {getattr(FLAGS, name)}")
    if FLAGS.budget is not None and FLAGS.budget < 1:
        problems.append(f"--budget must be >= 1, got {FLAGS.budget}")
    if FLAGS.keep_checkpoints < 1:
        problems.append(f"--keep_checkpoints must be >= 1 (the newest checkpoint is what a "
                        f"rerun resumes from), got {FLAGS.keep_checkpoints}")
    if FLAGS.query_batch < 1:
        problems.append(f"--query_batch must be >= 1, got {FLAGS.query_batch}")
    elif FLAGS.budget is not None and FLAGS.budget % FLAGS.query_batch:
        problems.append(f"--query_batch={FLAGS.query_batch} must divide --budget="
                        f"{FLAGS.budget} (labels arrive in whole rounds)")
    if problems:
        raise flags.ValidationError("; ".join(problems))


def check_model_dir(run_config: RunConfig):
    """Refuses a --model_dir that holds another run, before any data is read."""
    try:
        model_dirs.check(run_config.loop.model_dir, run_config)
    except model_dirs.ModelDirMismatch as e:
        raise flags.ValidationError(str(e)) from None


class _StopRequested(Exception):
    pass


def format_eta(seconds):
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:d}h{(seconds % 3600) // 60:02d}m{seconds % 60:02d}s"


def _write_run_config(model_dir, run_config):
    old = run_configs.load_run_config(model_dir)
    if old is not None and old.seed != run_config.seed:
        logging.warning("resuming %s with a different --seed than it was started with",
                        model_dir)
    run_configs.write_run_config(model_dir, run_config)


_ROLLOUT_FNS = {}


def evaluate_setup(setup, model, num_episodes, batch_size, seed):
    """Held-out curves for each evaluation policy on the validation episodes."""
    results = {}
    for name in setup.eval_policies:
        # One compiled rollout per (model, policy, budget): periodic
        # evaluations reuse it instead of tracing anew each time.
        key = (id(model), name, setup.num_steps, setup.query_batch)
        if key not in _ROLLOUT_FNS:
            policy = make_policy(name, model.config.task, item_scores=setup.item_scores)
            _ROLLOUT_FNS[key] = (policy, evaluation.make_rollout_fn(
                model, policy, setup.num_steps, setup.query_batch))
        policy, run = _ROLLOUT_FNS[key]
        sampler = setup.make_eval_sampler()
        results[name] = evaluation.evaluate_policy(
            model, sampler.sample, policy, setup.num_steps, num_episodes, batch_size,
            seed=seed, rollout_fn=run, query_batch=setup.query_batch)
    return results


class Interrupted(SystemExit):
    """SIGTERM or SIGINT stopped an unfinished run (after saving a checkpoint).

    A SystemExit with code 128 + the signal number, the shell's convention,
    so that a scheduler or script sees that the run did not finish.
    """


@contextlib.contextmanager
def stop_requests():
    """Within the block, SIGTERM and SIGINT set `stop["signal"]` instead of
    killing the process, so a loop can save a checkpoint and stop cleanly."""
    stop = {"signal": None}

    def request_stop(signum, _frame):
        stop["signal"] = signum

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def is_eval_step(step, loop: LoopConfig):
    return step > 0 and (step % loop.eval_interval == 0 or step == loop.train_steps)


def run_training(setup: TaskSetup, run_config: RunConfig, strategy):
    """The resumable training loop. Returns the final metrics dict.

    Writes `run_config` (with `setup.recorded`) as the directory's
    run_config.json, and reads nothing else: no flags.

    Raises:
      SystemExit: the model directory holds another run (nothing written),
        no checkpoint restores, the loss went non-finite, or a signal stopped
        the run (`Interrupted`, after a checkpoint was saved).
    """
    if setup.name != run_config.task:
        raise ValueError(f"the setup is a {setup.name!r} task, the run config a "
                         f"{run_config.task!r} one")
    loop, train_config = run_config.loop, run_config.train_config
    model_dir = loop.model_dir
    model = setup.model
    try:
        model_dirs.check(model_dir, run_config, model.config)
    except model_dirs.ModelDirMismatch as e:
        raise SystemExit(str(e)) from e
    tf.io.gfile.makedirs(model_dir)
    worker = multi_worker.Worker(strategy, model_dir)  # only the chief writes model_dir
    if setup.write_files and worker.is_chief:
        setup.write_files(model_dir)
    if train_config.query_batch != setup.query_batch:
        # Validation (and so the best checkpoint) asks in the rounds training uses.
        setup = dataclasses.replace(setup, query_batch=train_config.query_batch)
    if setup.query_batch > 1 and "top_k" not in setup.eval_policies:
        setup = dataclasses.replace(setup, eval_policies=list(setup.eval_policies) + ["top_k"])
    trainer = Trainer(model, train_config, strategy=strategy, item_scores=setup.item_scores)
    if worker.is_chief:
        checkpoints.save_model_config(model_dir, model.config)
        _write_run_config(model_dir, dataclasses.replace(
            run_config, recorded={**run_config.recorded, **setup.recorded}))
        recovery.clean_temporary_files(model_dir)
    state = tf.train.Checkpoint(model=model, optimizer=trainer.optimizer, step=trainer.step,
                                trainer_rng=trainer.rng, sampler_rng=setup.train_sampler.rng)
    checkpoint_dir = os.path.join(model_dir, checkpoints.CHECKPOINTS)
    best_dir = os.path.join(model_dir, checkpoints.BEST)
    restored = worker.restore(state, checkpoint_dir, best_dir, trainer.step)
    manager = worker.checkpoint_manager(state, checkpoint_dir, loop.keep_checkpoints)
    best_manager = worker.checkpoint_manager(
        tf.train.Checkpoint(model=model, step=trainer.step), best_dir, 1)
    best_path = os.path.join(model_dir, "best.json")
    best = (checkpoints.read_json(best_path)
            if worker.is_chief and os.path.exists(best_path) else None)
    if best is not None and not best_manager.latest_checkpoint:
        logging.warning("%s names step %s but %s holds no checkpoint; the best is chosen "
                        "anew", best_path, best.get("step"), best_dir)
        best = None

    total = loop.train_steps
    if restored:
        logging.info("resumed from %s at step %d", restored, int(trainer.step.numpy()))
    elif loop.init_from:
        try:
            source, fresh, differ = checkpoints.initialize_from(model, loop.init_from)
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(f"--init_from: {e}") from e
        logging.info("starting a new run in %s from the weights of %s", model_dir, source)
        if fresh:
            logging.warning(
                "--init_from: the model config differs from %s in %s; %d of %d weights "
                "copied, re-initialised (shape or name differs): %s", loop.init_from,
                ", ".join(f"{k} ({a!r} -> {b!r})" for k, (a, b) in differ.items()),
                len(model.variables) - len(fresh), len(model.variables), ", ".join(fresh))
    else:
        logging.info("starting a new run in %s", model_dir)
    if not restored and loop.init_encoder_from:
        try:
            source = checkpoints.initialize_encoder_from(model, loop.init_encoder_from)
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(f"--init_encoder_from: {e}") from e
        logging.info("image encoder from %s", source)
    if not restored and setup.on_new_run is not None:
        setup.on_new_run(model)

    writer = worker.summary_writer(os.path.join(model_dir, "train"))
    eval_writer = worker.summary_writer(os.path.join(model_dir, "validation"))
    start_step = int(trainer.step.numpy())
    # A run that died after saving an evaluation step's checkpoint but before
    # recording that evaluation evaluates it now, as the uninterrupted run did.
    evaluated = best.get("evaluated_step", best["step"]) if best else 0
    if worker.from_chief(is_eval_step(start_step, loop) and evaluated < start_step):
        logging.info("step %d was saved but not evaluated; evaluating it now", start_step)
        best = _evaluate_and_keep_best(setup, model, start_step, eval_writer, best_manager,
                                       best, best_path, run_config, worker)

    window_start, window_step = time.time(), start_step
    last_saved = manager.latest_checkpoint
    with stop_requests() as stop:
        try:
            while int(trainer.step.numpy()) < total:
                step = int(trainer.step.numpy())
                extra = setup.step_arguments(step) if setup.step_arguments else {}
                budget = extra.pop("num_steps", setup.num_steps)
                batch = setup.train_sampler.sample(loop.batch_size, **extra)
                metrics = trainer.train_step(batch, num_steps=budget)
                step += 1
                if metrics["finite"].numpy() < 1.0:
                    raise SystemExit(
                        f"non-finite loss at step {step} (loss={float(metrics['loss'])}); "
                        f"training stopped. Last good checkpoint: {last_saved or 'none'}. "
                        "Lower --learning_rate or --clip_norm and resume from it.")
                if step % loop.log_interval == 0 or step == total:
                    now = time.time()
                    rate = (step - window_step) / max(now - window_start, 1e-9)
                    window_start, window_step = now, step
                    values = {k: float(v) for k, v in metrics.items()}
                    with writer.as_default(step=step):
                        for k, v in values.items():
                            tf.summary.scalar(k, v)
                        tf.summary.scalar("steps_per_second", rate)
                    logging.info(
                        "step %d/%d  loss %.4f  reward %.3f  %s@T %.3f  distinct %.2f  "
                        "entropy %.3f  %.2f steps/s  %.1f episodes/s  ETA %s",
                        step, total, values["loss"], values["reward"], setup.metric_name,
                        values["final_query_metric"], values["final_distinct_labels"],
                        values["entropy"], rate, rate * loop.batch_size,
                        format_eta((total - step) / max(rate, 1e-9)))
                if step % loop.checkpoint_interval == 0 or step == total:
                    last_saved = manager.save(checkpoint_number=step)
                if is_eval_step(step, loop):
                    best = _evaluate_and_keep_best(setup, model, step, eval_writer, best_manager,
                                                   best, best_path, run_config, worker)
                if worker.any(stop["signal"] is not None):
                    raise _StopRequested()
        except _StopRequested:
            path = manager.save(checkpoint_number=int(trainer.step.numpy()))
            signum = stop["signal"] or signal.SIGTERM  # another worker's signal
            message = (f"stopped by signal {signal.Signals(signum).name} at step "
                       f"{int(trainer.step.numpy())}/{total}; saved {path}. Rerun the same "
                       "command to resume.")
            logging.warning("%s", message)
            raise Interrupted(128 + signum) from None

    if not worker.is_chief:
        worker.cleanup()
        return None
    return write_final_metrics(setup, run_config, model)


def _evaluate_and_keep_best(setup, model, step, writer, best_manager, best, best_path,
                            run_config, worker):
    """Validation on the chief; every worker joins the best-checkpoint save."""
    if not worker.is_chief:
        if worker.from_chief(False):
            best_manager.save(checkpoint_number=step)
        return best
    # A model trained with a fixed heuristic is judged by that heuristic: its
    # selector never learns, so the greedy policy would pick the best weights
    # by an untrained selector's choices.
    train_policy = run_config.train_config.policy
    policy = "greedy" if train_policy == "learned" else train_policy
    result = evaluate_setup(
        dataclasses.replace(setup, eval_policies=[policy]), model,
        run_config.loop.eval_episodes, run_config.loop.batch_size,
        seed=run_config.seed)[policy]
    value = result["metric"][-1]
    with writer.as_default(step=step):
        for t, m, d in zip(result["labels"], result["metric"], result["distinct_labels"]):
            tf.summary.scalar(f"{setup.metric_name}_after_{t}_labels", m)
            tf.summary.scalar(f"distinct_after_{t}_labels", d)
    improved = best is None or (value > best["value"] if setup.higher_is_better
                                else value < best["value"])
    logging.info("validation step %d: %s after %d labels = %.4f, distinct labels %.2f%s",
                 step, setup.metric_name, setup.num_steps, value,
                 result["distinct_labels"][-1], " (best so far)" if improved else "")
    if worker.from_chief(improved):
        best_manager.save(checkpoint_number=step)
        best = {"step": step, "value": value, "metric": setup.metric_name, "policy": policy}
    # `evaluated_step` tells a resumed run which evaluations already happened
    # (written last: a run killed before it evaluates the step again).
    best = dict(best, evaluated_step=step)
    checkpoints.write_json_atomic(best_path, best)
    return best


def write_final_metrics(setup, run_config, model):
    """Evaluates every comparison policy with the best weights; metrics.json."""
    loop = run_config.loop
    model_dir = loop.model_dir
    best_path = tf.train.latest_checkpoint(os.path.join(model_dir, checkpoints.BEST))
    if not best_path:
        raise SystemExit(f"{model_dir} has no best checkpoint to evaluate (best/ is empty); "
                         "rerun the same command to evaluate the last checkpoint")
    tf.train.Checkpoint(model=model).restore(best_path).expect_partial()
    logging.info("final evaluation of %s: %d episodes per policy", best_path,
                 loop.final_eval_episodes)
    # The rollouts' draws (not the episodes, which the eval sampler fixes)
    # differ from the periodic evaluations'.
    results = evaluate_setup(setup, model, loop.final_eval_episodes, loop.batch_size,
                             seed=run_config.seed + 1)
    record = {"task": setup.name, "metric": setup.metric_name, "split": "validation",
              "checkpoint": best_path, "query_batch": setup.query_batch,
              "labels": list(range(setup.query_batch, setup.num_steps + 1,
                                   setup.query_batch)),
              "policies": results}
    checkpoints.write_json_atomic(os.path.join(model_dir, checkpoints.METRICS), record)
    print(format_curves(record))
    return record


def format_curves(record):
    """A small text table: metric per label count for each policy."""
    labels = record["labels"]
    shown = labels if len(labels) <= 10 else labels[::max(1, len(labels) // 10)]
    header = f"{'policy':<16}" + "".join(f"{t:>9d}" for t in shown)
    lines = [f"held-out {record['metric']} by labels requested ({record['split']}):", header]
    position = {t: i for i, t in enumerate(labels)}
    for name, res in record["policies"].items():
        lines.append(f"{name:<16}" + "".join(f"{res['metric'][position[t]]:9.3f}"
                                             for t in shown))
    for key, title in (("distinct_labels", "distinct labels found:"),
                       ("found_all", "fraction of episodes with every label value found:")):
        if not all(key in res for res in record["policies"].values()):
            continue
        lines.append(title)
        for name, res in record["policies"].items():
            lines.append(f"{name:<16}" + "".join(f"{res[key][position[t]]:9.2f}"
                                                 for t in shown))
    return "\n".join(lines)


class _DropLibraryInfo(pylogging.Filter):
    """Drops INFO lines that TensorFlow's own modules send through absl."""

    def filter(self, record):
        return record.levelno >= pylogging.WARNING or "/tensorflow/" not in record.pathname


def quiet_logs():
    """TensorFlow's Python logger at ERROR; absl progress lines stay visible."""
    tf.get_logger().setLevel("ERROR")
    logging.set_verbosity(logging.INFO)
    logging.get_absl_handler().addFilter(_DropLibraryInfo())

