"""Encoder pretraining (`active_learning.pretraining`, `trainers.pretrain_encoder`)
and handing the encoder to a trainer (`--init_encoder_from`)."""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import flags  # noqa: E402
from absl.testing import flagsaver  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from active_learning import checkpoints  # noqa: E402
from active_learning import pretraining  # noqa: E402
from active_learning.config import ModelConfig  # noqa: E402
from active_learning.data.episodes import ClassEpisodeSampler  # noqa: E402
from active_learning.model import ActiveMatchingNetwork  # noqa: E402
from tests import own_data  # noqa: E402

FLAGS = flags.FLAGS


@pytest.fixture(autouse=True)
def _parsed_flags():
    from trainers import pretrain_encoder  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    if not FLAGS.is_parsed():
        FLAGS(["pretraining_test"])


def test_prototype_logits_are_minus_squared_distances_to_class_means():
    rng = np.random.default_rng(0)
    support = rng.normal(size=(2, 6, 4)).astype(np.float32)
    labels = np.array([[0, 1, 2, 0, 1, 2], [2, 2, 0, 1, 0, 1]], np.int32)
    queries = rng.normal(size=(2, 5, 4)).astype(np.float32)
    logits = pretraining.prototype_logits(tf.constant(support), tf.constant(labels),
                                          tf.constant(queries), 3).numpy()
    for b in range(2):
        means = np.stack([support[b][labels[b] == n].mean(0) for n in range(3)])
        expected = -np.square(queries[b][:, None] - means[None]).sum(-1)
        np.testing.assert_allclose(logits[b], expected, rtol=1e-5, atol=1e-5)


def test_loss_and_accuracy_follow_the_logits():
    logits = tf.constant([[[5.0, 0.0, 0.0], [0.0, 0.0, 5.0]]])
    loss, accuracy = pretraining.prototypical_loss(logits, tf.constant([[0, 1]]))
    assert float(accuracy) == 0.5
    expected = np.mean([np.log1p(2 * np.exp(-5.0)), np.log(2 + np.exp(5.0))])
    assert float(loss) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("options, message", [
    (dict(ways=1), "ways must be >= 2"), (dict(shots=0), "shots must be >= 1"),
    (dict(queries=0), "queries must be >= 1"), (dict(learning_rate=0.0), "learning_rate"),
])
def test_config_is_checked(options, message):
    with pytest.raises(ValueError, match=message):
        pretraining.PretrainConfig(**options)


def _sampler(ways=4, shots=1, queries=2, seed=0, classes=None):
    images = own_data.class_images(num_classes=12, per_class=5, size=28, channels=1)
    items = images.reshape(-1, 28, 28, 1)
    return ClassEpisodeSampler(items, np.arange(12) * 5, np.full(12, 5),
                               classes if classes is not None else np.arange(12), ways=ways,
                               items_per_class=shots, queries_per_class=queries, seed=seed)


def test_step_moves_every_encoder_weight_and_nothing_else():
    tf.keras.utils.set_random_seed(0)
    model = ActiveMatchingNetwork(ModelConfig(embed_dim=8, units=8))
    before = {v.path: v.numpy().copy() for v in model.variables}
    pretrainer = pretraining.EncoderPretrainer(
        model, pretraining.PretrainConfig(ways=4, shots=2, queries=2), jit_compile=False)
    sampler = _sampler(shots=2)  # held: `sample` keeps a weak reference to its sampler
    metrics = pretrainer.train_step(sampler.sample(2))
    assert float(metrics["finite"]) == 1.0 and int(pretrainer.step.numpy()) == 1
    encoder = {v.path for v in model.encoder.trainable_variables}
    assert encoder and all(p.startswith("encoder/") for p in encoder)
    for v in model.variables:
        moved = not np.array_equal(v.numpy(), before[v.path])
        assert moved == (v.path in encoder), v.path


def test_non_finite_step_is_not_applied():
    model = ActiveMatchingNetwork(ModelConfig(embed_dim=8, units=8))
    before = [v.numpy().copy() for v in model.encoder.variables]
    pretrainer = pretraining.EncoderPretrainer(
        model, pretraining.PretrainConfig(ways=4, shots=1, queries=2), jit_compile=False)
    sampler = _sampler()
    episode = dict(sampler.sample(1))
    episode["queries"] = tf.tensor_scatter_nd_update(
        episode["queries"], [[0, 0, 0, 0, 0]], [np.nan])
    assert float(pretrainer.train_step(episode)["finite"]) == 0.0
    for v, old in zip(model.encoder.variables, before):
        np.testing.assert_array_equal(v.numpy(), old)


def test_one_shot_accuracy_is_nearest_neighbour_by_cosine_and_repeatable():
    model = ActiveMatchingNetwork(ModelConfig(embed_dim=8, units=8))
    first = pretraining.one_shot_accuracy(model.encoder, _sampler(queries=1, seed=3), 10, 4)
    assert first == pretraining.one_shot_accuracy(model.encoder, _sampler(queries=1, seed=3),
                                                   10, 4)
    sampler = _sampler(queries=1, seed=3)
    episode = sampler.sample(4)
    support = model.encoder(episode["support"]).numpy()
    queries = model.encoder(episode["queries"]).numpy()
    hits = []
    for b in range(4):
        s = support[b] / np.linalg.norm(support[b], axis=-1, keepdims=True)
        q = queries[b] / np.linalg.norm(queries[b], axis=-1, keepdims=True)
        nearest = np.argmax(q @ s.T, axis=1)
        hits += list(episode["support_labels"].numpy()[b][nearest]
                     == episode["query_labels"].numpy()[b])
    # The first 4 of the 10 episodes are these four.
    partial = pretraining.one_shot_accuracy(model.encoder, _sampler(queries=1, seed=3), 4, 4)
    assert partial == pytest.approx(np.mean(hits))


def _save(model, model_dir):
    checkpoints.save_model_config(model_dir, model.config)
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model),
                               os.path.join(model_dir, checkpoints.BEST), 1).save()


def test_initialize_encoder_from_copies_the_encoder_only(tmp_path):
    tf.keras.utils.set_random_seed(1)
    source = ActiveMatchingNetwork(ModelConfig(embed_dim=8, units=8))
    _save(source, str(tmp_path / "source"))
    tf.keras.utils.set_random_seed(2)
    target = ActiveMatchingNetwork(ModelConfig(embed_dim=8, units=8))
    others = {v.path: v.numpy().copy() for v in target.variables
              if not v.path.startswith("encoder/")}
    checkpoints.initialize_encoder_from(target, str(tmp_path / "source"))
    for ours, theirs in zip(target.encoder.variables, source.encoder.variables):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    for v in target.variables:
        if v.path in others:
            np.testing.assert_array_equal(v.numpy(), others[v.path])
    deeper = ActiveMatchingNetwork(ModelConfig(embed_dim=8, units=8, encoder_residual_blocks=1))
    with pytest.raises(ValueError, match="encoder_residual_blocks .it has 0, this model 1"):
        checkpoints.initialize_encoder_from(deeper, str(tmp_path / "source"))


def _pretrain(tmp_path, data, model_dir, steps, **extra):
    from trainers import pretrain_encoder  # pylint: disable=g-import-not-at-top
    values = dict(data=data, model_dir=model_dir, train_steps=steps, eval_interval=2,
                  checkpoint_interval=2, log_interval=1, pretrain_ways=5, pretrain_queries=2,
                  ways=5, eval_one_shot_episodes=8, batch_size=4, jit_compile=False, seed=0,
                  embed_dim=8, units=8, learning_rate=1e-3,
                  cache_dir=str(tmp_path / "cache"))
    values.update(extra)
    with flagsaver.flagsaver(**values):
        pretrain_encoder.main([])


def _latest(model_dir):
    """The model of the newest pretraining checkpoint."""
    from trainers import pretrain_encoder  # pylint: disable=g-import-not-at-top
    model = ActiveMatchingNetwork(checkpoints.load_model_config(model_dir))
    path = tf.train.latest_checkpoint(os.path.join(model_dir, pretrain_encoder.CHECKPOINTS))
    tf.train.Checkpoint(model=model).restore(path).expect_partial()
    return model


@pytest.mark.heavy(40)
def test_pretrainer_resumes_exactly_and_hands_its_encoder_to_a_trainer(tmp_path):
    from trainers import classification  # pylint: disable=g-import-not-at-top
    root = own_data.write_image_folder(str(tmp_path / "images"), num_classes=40, per_class=6,
                                       size=16, channels=1, groups=4)
    data = f"folder:{root}"
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    _pretrain(tmp_path, data, straight, 4)
    _pretrain(tmp_path, data, resumed, 2)
    _pretrain(tmp_path, data, resumed, 4)
    a, b = _latest(straight), _latest(resumed)
    for x, y in zip(a.variables, b.variables):
        np.testing.assert_array_equal(x.numpy(), y.numpy(), err_msg=x.path)
    record = json.load(open(os.path.join(straight, "pretrain.json")))
    assert [e["step"] for e in record["validation"]] == [0, 2, 4]
    assert record == json.load(open(os.path.join(resumed, "pretrain.json")))
    best, _ = checkpoints.load_model(straight)
    assert all(0.0 <= e["accuracy"] <= 1.0 for e in record["validation"])
    assert record["best"]["value"] == max(e["accuracy"] for e in record["validation"])

    # Resuming with another model is refused before anything is written.
    before = open(os.path.join(straight, checkpoints.MODEL_CONFIG)).read()
    with pytest.raises(SystemExit, match="embed_dim"):
        _pretrain(tmp_path, data, straight, 6, embed_dim=16)
    assert open(os.path.join(straight, checkpoints.MODEL_CONFIG)).read() == before

    # A trainer's run directory is refused before anything is written.
    os.makedirs(str(tmp_path / "run"))
    open(str(tmp_path / "run" / checkpoints.RUN_CONFIG), "w").write("{}")
    with pytest.raises(flags.ValidationError, match="holds a training run"):
        _pretrain(tmp_path, data, str(tmp_path / "run"), 2)

    # --init_encoder_from: the trainer starts from the pretrained encoder (a
    # learning rate of 1e-9 keeps one Adam step within 1e-6 of it) and keeps
    # its other weights from --init_from.
    tf.keras.utils.set_random_seed(5)
    other = ActiveMatchingNetwork(best.config)
    _save(other, str(tmp_path / "other"))
    trained = str(tmp_path / "trained")
    with flagsaver.flagsaver(data=data, model_dir=trained, train_steps=1, batch_size=4,
                             eval_interval=1, checkpoint_interval=1, log_interval=1,
                             eval_episodes=4, final_eval_episodes=4, jit_compile=False, seed=0,
                             embed_dim=8, units=8, ways=5, learning_rate=1e-9,
                             init_from=str(tmp_path / "other"), init_encoder_from=straight,
                             cache_dir=str(tmp_path / "cache")):
        classification.main([])
    after, _ = checkpoints.load_model(trained, "latest")
    for ours, theirs in zip(after.encoder.variables, best.encoder.variables):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-6, err_msg=ours.path)
    moved = {v.path for v in after.variables if v.path.startswith("encoder/")}
    for ours, theirs in zip(after.variables, other.variables):
        if ours.path not in moved:
            np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-6,
                                       err_msg=ours.path)
    run = json.load(open(os.path.join(trained, checkpoints.RUN_CONFIG)))
    assert run["loop"]["init_encoder_from"] == straight


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
