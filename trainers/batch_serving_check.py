"""Batch queries through an exported SavedModel, against one label at a time.

    python -m trainers.batch_serving_check --export_dir=EXPORT \\
        [--data_dir=../shared/data/omniglot-full] [--ways=5] [--budget=5] \\
        [--query_batch=5] [--episodes=1000] [--seed=0] [--session_episodes=200]

On held-out Omniglot episodes of the split the model was trained with (its
`metadata`'s training config), through the SavedModel's signatures only:

- batch: `begin`, then rounds of `select(k=query_batch)` whose `top_k` a
  person labels together (`observe` in the order picked), then `predict`;
- sequential: `begin`, then `select(k=1)` / `observe` one label at a time;
- session: `ActiveSession(export).query(k=query_batch)` on the pool of the
  first `--session_episodes` episodes: how many distinct classes its k hold.

Prints distinct classes labelled and held-out accuracy of both, and the
session's share of queries with k different classes. Same seed, same episodes
as `python -m trainers.evaluate --split=test`.
"""

from absl import app, flags, logging
import numpy as np

import active_learning  # noqa: F401  (sets TensorFlow's log level before it loads)

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("export_dir", None, "Exported SavedModel (a version or its base).")
    flags.DEFINE_string("data_dir", None, "Omniglot data (default: the run's).")
    flags.DEFINE_integer("ways", 5, "Classes per episode.")
    flags.DEFINE_integer("budget", None, "Labels per episode (default: --ways).")
    flags.DEFINE_integer("query_batch", 5, "k: labels per round.")
    flags.DEFINE_integer("episodes", 1000, "Held-out episodes.")
    flags.DEFINE_integer("batch_size", 50, "Episodes per signature call.")
    flags.DEFINE_integer("session_episodes", 200, "Episodes asked through ActiveSession.")
    flags.DEFINE_integer("seed", 0, "Seed of the episodes.")


def run_signatures(signatures, batch, budget, k):
    """(distinct classes [B], accuracy [B]) after `budget` labels in rounds of k."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    support_labels = batch["support_labels"].numpy()
    out = signatures["begin"](support=batch["support"])
    embeddings, state = out["embeddings"], out["state"]
    labels = tf.fill(support_labels.shape, -1)
    labeled = tf.zeros(support_labels.shape, tf.int32)
    for _ in range(budget // k):
        picks = signatures["select"](embeddings=embeddings, state=state, labels=labels,
                                     labeled=labeled, k=tf.constant(k))["top_k"].numpy()
        for j in range(k):
            index = picks[:, j]
            label = np.take_along_axis(support_labels, index[:, None], 1)[:, 0]
            out = signatures["observe"](embeddings=embeddings, state=state, labels=labels,
                                        labeled=labeled, index=tf.constant(index, tf.int32),
                                        label=tf.constant(label, tf.int32))
            state, labels, labeled = out["state"], out["labels"], out["labeled"]
    probabilities = signatures["predict"](embeddings=embeddings, state=state, labels=labels,
                                          labeled=labeled,
                                          queries=batch["queries"])["probabilities"]
    hits = np.argmax(probabilities.numpy(), -1) == batch["query_labels"].numpy()
    mask = labeled.numpy() == 1
    distinct = np.array([len(set(row[m].tolist())) for row, m in zip(support_labels, mask)])
    return distinct, hits.mean(-1)


def main(argv):
    del argv
    import json  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from active_learning import evaluation  # pylint: disable=g-import-not-at-top
    from active_learning import run_config as run_configs  # pylint: disable=g-import-not-at-top
    from active_learning.session import ActiveSession, resolve_saved_model  # noqa

    tf.get_logger().setLevel("ERROR")
    path = resolve_saved_model(FLAGS.export_dir)
    loaded = tf.saved_model.load(path)
    signatures = loaded.signatures
    meta = signatures["metadata"](dummy=tf.constant(0))
    run_config = run_configs.from_record(
        json.loads(meta["training_config"].numpy().decode("utf-8") or "{}"), path)
    data_dir = evaluation.resolve_data_dir(FLAGS.data_dir, run_config, path)
    episodes = evaluation.class_episodes(run_config, data_dir)
    budget = FLAGS.budget or FLAGS.ways
    k = FLAGS.query_batch
    if budget % k:
        raise app.UsageError(f"--query_batch={k} must divide the budget {budget}")
    sampler = episodes.make_sampler("test", FLAGS.ways, FLAGS.seed)()
    results = {"batch": ([], []), "sequential": ([], [])}
    session_distinct = []
    done = 0
    while done < FLAGS.episodes:
        batch = sampler.sample(FLAGS.batch_size)
        for name, step in (("batch", k), ("sequential", 1)):
            distinct, accuracy = run_signatures(signatures, batch, budget, step)
            results[name][0].append(distinct)
            results[name][1].append(accuracy)
        images = batch["support"].numpy()[..., 0]
        labels = batch["support_labels"].numpy()
        for b in range(len(images)):
            if done + b >= FLAGS.session_episodes:
                break
            picks = ActiveSession(loaded, images[b], seed=FLAGS.seed).query(k)
            session_distinct.append(len(set(labels[b, picks].tolist())))
        done += FLAGS.batch_size
        logging.info("%d/%d episodes", min(done, FLAGS.episodes), FLAGS.episodes)
    n = FLAGS.episodes
    print(f"{path}: {n} test episodes, {FLAGS.ways}-way, {budget} labels")
    for name, (distinct, accuracy) in results.items():
        distinct = np.concatenate(distinct)[:n]
        accuracy = np.concatenate(accuracy)[:n]
        mean, ci = evaluation.mean_and_ci(accuracy)
        rounds = f"{budget // k} x select(k={k})" if name == "batch" else \
            f"{budget} x select(k=1)"
        print(f"  {name:<10} {rounds:<18} distinct classes {distinct.mean():.3f}  "
              f"accuracy {100 * mean:.2f}% +- {100 * ci:.2f}")
    session_distinct = np.asarray(session_distinct)
    print(f"  ActiveSession.query(k={k}) on {len(session_distinct)} pools: "
          f"{np.mean(session_distinct == k) * 100:.1f}% with {k} different classes, "
          f"{session_distinct.mean():.3f} classes on average")


if __name__ == "__main__":
    define_flags()
    flags.mark_flags_as_required(["export_dir"])
    app.run(main)
