"""A user's own classification data: readers, episode shape checks, training, serving.

The end-to-end test is the own-data acceptance check: a generated folder of
RGB 32x32 images in 40 class subfolders trains 30 steps with the generic
trainer, exports, and the SavedModel answers begin/select/observe/predict on
RGB input (and names the problem when given grey images).
"""

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
from active_learning.config import ModelConfig  # noqa: E402
from active_learning.data import readers, splits  # noqa: E402
from active_learning.data.episodes import ClassEpisodeSampler  # noqa: E402
from active_learning.model import ActiveMatchingNetwork  # noqa: E402
from tests import own_data  # noqa: E402

FLAGS = flags.FLAGS


@pytest.fixture(autouse=True)
def _parsed_flags():
    from trainers import classification  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    if not FLAGS.is_parsed():
        FLAGS(["own_data_test"])


def _train(tmp_path, data, steps=30, **extra):
    from trainers import classification  # pylint: disable=g-import-not-at-top
    model_dir = str(tmp_path / "run")
    values = dict(data=data, model_dir=model_dir, train_steps=steps, batch_size=8,
                  eval_interval=steps, checkpoint_interval=steps, log_interval=steps,
                  eval_episodes=8, final_eval_episodes=8, jit_compile=False, seed=0,
                  cache_dir=str(tmp_path / "cache"))
    values.update(extra)
    with flagsaver.flagsaver(**values):
        classification.main([])
    return model_dir


# ------------------------------------------------------------------ readers
def test_folder_reader_keeps_folder_names_groups_and_pixels(tmp_path):
    root = own_data.write_image_folder(str(tmp_path / "f"), num_classes=6, per_class=3,
                                       size=8, channels=3, groups=2)
    data = readers.load_class_data(f"folder:{root}", cache_dir=str(tmp_path / "c"))
    assert data.kind == "image" and data.item_shape == (8, 8, 3)
    assert data.class_names[:2] == ("group0/class000", "group0/class002")
    assert set(data.groups) == {"group0", "group1"}
    assert data.class_counts.tolist() == [3] * 6
    # PNG stores 8 bits: the decoded pixels are the generated ones to 1/255.
    images = own_data.class_images(6, 3, 8, 3)
    first = data.class_names.index("group1/class001")
    start = data.class_starts[first]
    np.testing.assert_allclose(data.items[start:start + 3], images[1], atol=0.5 / 255)
    # A second read comes from the cache and is the same.
    again = readers.load_class_data(f"folder:{root}", cache_dir=str(tmp_path / "c"))
    np.testing.assert_array_equal(again.items, data.items)


def test_split_holds_out_whole_groups(tmp_path):
    root = own_data.write_image_folder(str(tmp_path / "f"), num_classes=24, per_class=2,
                                       size=8, channels=1, groups=6)
    data = readers.load_class_data(f"folder:{root}", cache_dir=str(tmp_path / "c"))
    split = splits.split_classes(data, "alphabets", seed=0, min_held_out=4)
    parts = [{data.groups[i] for i in part} for part in (split.train, split.validation,
                                                         split.test)]
    assert all(parts) and not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])


def test_empty_class_folder_is_named(tmp_path):
    root = own_data.write_image_folder(str(tmp_path / "f"), num_classes=3, per_class=2, size=8)
    os.makedirs(tmp_path / "f" / "empty_one")
    with pytest.raises(ValueError, match="empty class folder.*empty_one"):
        readers.load_class_data(f"folder:{root}")


def test_truncated_image_is_named(tmp_path):
    root = own_data.write_image_folder(str(tmp_path / "f"), num_classes=3, per_class=2, size=8)
    bad = tmp_path / "f" / "class001" / "001.png"
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(ValueError, match="class001/001.png"):
        readers.load_class_data(f"folder:{root}", cache_dir=str(tmp_path / "c"))


def test_mixed_channels_need_a_choice_then_are_converted_and_counted(tmp_path):
    root = own_data.write_image_folder(str(tmp_path / "f"), num_classes=3, per_class=2,
                                       size=8, channels=3)
    own_data.write_image_folder(str(tmp_path / "g"), num_classes=1, per_class=2, size=8,
                                channels=1)
    os.rename(tmp_path / "g" / "class000", tmp_path / "f" / "grey")
    with pytest.raises(ValueError, match="mixes grey-scale.*--image_channels"):
        readers.load_class_data(f"folder:{root}", cache_dir=str(tmp_path / "c"))
    data = readers.load_class_data(f"folder:{root}", image_channels=3,
                                   cache_dir=str(tmp_path / "c"))
    assert data.item_shape == (8, 8, 3)
    assert data.notes == {"images converted to 3 channel(s)": 2}


def test_npz_rules_and_errors(tmp_path):
    path = str(tmp_path / "a.npz")
    images = (np.random.RandomState(0).rand(12, 6, 6) * 255).astype(np.uint8)
    np.savez(path, images=images, labels=np.repeat(["a", "b", "c"], 4))
    data = readers.load_class_data(f"npz:{path}")
    assert data.item_shape == (6, 6, 1) and data.items.max() <= 1.0
    assert data.notes == {"uint8 images scaled by 1/255": 12}
    np.savez(path, images=images.astype(np.float32), labels=np.repeat(["a", "b", "c"], 4))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\].*divide 0-255"):
        readers.load_class_data(f"npz:{path}")
    np.savez(path, features=np.ones((4, 3)), labels=np.zeros(4))
    with pytest.raises(ValueError, match="1 class.*at least 2 classes"):
        readers.load_class_data(f"npz:{path}")


def test_feature_table_names_the_bad_line_and_missing_column(tmp_path):
    path = own_data.write_features_csv(str(tmp_path / "t.csv"), num_classes=3, per_class=2,
                                       width=3)
    data = readers.load_class_data(f"csv:{path}", label_col="species")
    assert data.kind == "features" and data.item_shape == (3,) and data.num_classes == 3
    with pytest.raises(ValueError, match="no column 'label'.*'species'"):
        readers.load_class_data(f"csv:{path}")
    lines = open(path, encoding="utf-8").read().splitlines()
    lines[4] = "abc," + lines[4].split(",", 1)[1]
    open(path, "w", encoding="utf-8").write("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="line 5: column 'f0' holds 'abc'"):
        readers.load_class_data(f"csv:{path}", label_col="species")


# ------------------------------------------------------------------ episodes
def test_uneven_classes_give_only_their_own_items():
    counts = np.array([3, 7, 4, 9, 5])
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    # Item value = its class * 100 + its position: both are read back below.
    items = np.concatenate([k * 100 + np.arange(n) for k, n in enumerate(counts)])
    items = items.astype(np.float32)[:, None]
    sampler = ClassEpisodeSampler(items, starts, counts, np.arange(5), ways=4,
                                  items_per_class=2, queries_per_class=1, seed=3)
    for _ in range(20):
        batch = sampler.sample(16)
        support = batch["support"].numpy()[..., 0]
        queries = batch["queries"].numpy()[..., 0]
        for b in range(16):
            values = np.concatenate([support[b], queries[b]]).astype(int)
            classes, positions = values // 100, values % 100
            assert (positions < counts[classes]).all()
            assert len(set(values.tolist())) == len(values)  # no item twice
            labels = np.concatenate([batch["support_labels"][b], batch["query_labels"][b]])
            # One episode label per class, the same for all its items.
            assert len({(c, l) for c, l in zip(classes, labels)}) == 4


def test_episode_shape_is_checked_against_each_class():
    counts = np.array([6, 2, 6])
    with pytest.raises(ValueError, match="cats has 2 items; episodes of 5 pool \\+ 1 "
                                         "held-out items per class need 6"):
        ClassEpisodeSampler(np.zeros((14, 2), np.float32), [0, 6, 8], counts, [0, 1, 2],
                            ways=2, items_per_class=5, class_names=["dogs", "cats", "owls"])


# ------------------------------------------------------------------ warm start
def _save(model, model_dir):
    checkpoints.save_model_config(model_dir, model.config)
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model),
                               os.path.join(model_dir, checkpoints.BEST), 1).save()


def test_init_from_copies_what_fits_and_names_the_rest(tmp_path):
    grey = ActiveMatchingNetwork(ModelConfig(embed_dim=8, units=8))
    _save(grey, str(tmp_path / "grey"))
    rgb = ActiveMatchingNetwork(ModelConfig(embed_dim=8, units=8, image_channels=3))
    _, fresh, differ = checkpoints.initialize_from(rgb, str(tmp_path / "grey"))
    assert fresh == ["encoder/conv1/kernel"]
    assert differ == {"image_channels": (1, 3)}
    source = {v.path: v.numpy() for v in grey.variables}
    for v in rgb.variables:
        if v.path not in fresh:
            np.testing.assert_array_equal(v.numpy(), source[v.path])
    ratings = ActiveMatchingNetwork(ModelConfig(task="regression", num_items=5, embed_dim=8,
                                                units=8))
    with pytest.raises(ValueError, match="cannot initialise a regression model"):
        checkpoints.initialize_from(ratings, str(tmp_path / "grey"))


def test_residual_encoder_warm_starts_as_the_paper_encoder(tmp_path):
    # `--encoder_residual_blocks` (a stronger embedding, not in the paper):
    # --init_from a paper-encoder model copies every weight but the new
    # blocks', and the deeper model then computes exactly the same pool
    # embeddings and controller state; training reaches the new blocks.
    tf.keras.utils.set_random_seed(0)
    paper = ActiveMatchingNetwork(ModelConfig(embed_dim=8, units=8))
    _save(paper, str(tmp_path / "paper"))
    deeper = ActiveMatchingNetwork(ModelConfig(embed_dim=8, units=8, encoder_residual_blocks=2))
    _, fresh, differ = checkpoints.initialize_from(deeper, str(tmp_path / "paper"))
    assert sorted(fresh) == [f"encoder/residual{i}/{w}" for i in (1, 2) for w in ("bias", "kernel")]
    assert differ == {"encoder_residual_blocks": (0, 2)}
    images = tf.cast(tf.random.uniform([2, 6, 28, 28, 1], seed=1) > 0.8, tf.float32)
    for ours, theirs in zip(deeper.begin(images), paper.begin(images)):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    residual = [v for v in deeper.trainable_variables if "residual" in v.path]
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(deeper.begin(images)[0]))
    assert len(residual) == 4
    for variable, grad in zip(residual, tape.gradient(loss, residual)):
        assert grad is not None and np.abs(grad.numpy()).max() > 0, variable.path
    assert json.loads(deeper.config.to_json())["encoder_residual_blocks"] == 2
    assert "encoder_residual_blocks" not in json.loads(paper.config.to_json())


@pytest.mark.parametrize("options, message", [
    (dict(encoder_residual_blocks=-1), "encoder_residual_blocks must be >= 0"),
    (dict(encoder="mlp", feature_size=4, encoder_residual_blocks=1),
     "encoder_residual_blocks is for the conv"),
])
def test_residual_blocks_are_checked(options, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**options)


# ------------------------------------------------------------------ end to end
@pytest.mark.heavy(67)
def test_rgb_folder_trains_exports_and_serves(tmp_path):
    from export import saved_model as export_lib  # pylint: disable=g-import-not-at-top
    root = own_data.write_image_folder(str(tmp_path / "rgb"), num_classes=40, per_class=8,
                                       size=32, channels=3)
    model_dir = _train(tmp_path, f"folder:{root}", steps=10)
    metrics = json.load(open(os.path.join(model_dir, checkpoints.METRICS)))
    config = checkpoints.load_model_config(model_dir)
    assert (config.image_size, config.image_channels, config.ink_images) == (32, 3, False)
    run = json.load(open(os.path.join(model_dir, checkpoints.RUN_CONFIG)))
    assert run["dataset"] == "classification" and run["data"]["rotate"] is False
    assert run["recorded"]["data_summary"]["classes"] == 40
    assert "greedy" in json.dumps(metrics)

    export_dir = str(tmp_path / "export")
    export_lib.export_model_dir(model_dir, export_dir)
    loaded = tf.saved_model.load(os.path.join(export_dir, "1"))
    sig = loaded.signatures
    meta = sig["metadata"](dummy=tf.constant(0))
    assert int(meta["image_channels"]) == 3 and int(meta["image_size"]) == 32
    pool = own_data.class_images(40, 8, 32, 3, seed=0)[:5, :5].reshape(1, 25, 32, 32, 3)
    out = sig["begin"](support=tf.constant(pool))
    labels, labeled = tf.fill([1, 25], -1), tf.zeros([1, 25], tf.int32)
    for _ in range(5):
        chosen = sig["select"](embeddings=out["embeddings"], state=out["state"],
                               labels=labels, labeled=labeled, k=tf.constant(1))
        index = int(chosen["index"][0])
        assert int(labeled[0, index]) == 0
        np.testing.assert_allclose(tf.reduce_sum(chosen["probabilities"]), 1.0, atol=1e-5)
        step = sig["observe"](embeddings=out["embeddings"], state=out["state"], labels=labels,
                              labeled=labeled, index=tf.constant([index]),
                              label=tf.constant([index // 5]))
        out = {"embeddings": out["embeddings"], "state": step["state"]}
        labels, labeled = step["labels"], step["labeled"]
    predicted = sig["predict"](embeddings=out["embeddings"], state=out["state"], labels=labels,
                               labeled=labeled, queries=tf.constant(pool[:, :4]))
    probabilities = predicted["probabilities"].numpy()
    assert probabilities.shape == (1, 4, config.max_classes)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="3-channel \\(RGB\\) images"):
        sig["begin"](support=tf.constant(pool[..., :1]))


def test_feature_table_trains_an_mlp_model_standardised_on_training_classes(tmp_path):
    path = own_data.write_features_csv(str(tmp_path / "t.csv"), num_classes=30, per_class=8,
                                       width=16)
    model_dir = _train(tmp_path, f"csv:{path}", steps=4, label_col="species")
    config = checkpoints.load_model_config(model_dir)
    assert (config.encoder, config.feature_size) == ("mlp", 16)
    model, _ = checkpoints.load_model(model_dir)
    # The standardisation came from the data (not the zeros/ones it starts at).
    assert np.abs(model.encoder.mean.numpy()).max() > 0.1
    assert not np.allclose(model.encoder.scale.numpy(), 1.0)


def test_tfds_image_classification_set(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")

    def as_dataset(self, split, **kwargs):
        del self, split, kwargs
        rng = np.random.RandomState(0)
        return tf.data.Dataset.from_tensor_slices({
            "image": (rng.rand(24, 28, 28, 1) * 255).astype(np.uint8),
            "label": np.repeat(np.arange(6), 4).astype(np.int64)})

    with tfds.testing.mock_data(as_dataset_fn=as_dataset, data_dir=str(tmp_path)):
        data = readers.load_class_data("tfds:mnist:train", image_size=14)
    assert data.item_shape == (14, 14, 1) and data.num_classes == 6
    assert data.class_counts.tolist() == [4] * 6
    assert data.class_names == tuple(str(k) for k in range(6))  # mnist's label names
    assert data.notes == {"uint8 images scaled by 1/255": 24}


def test_served_feature_model_names_the_wrong_width(tmp_path):
    from export import serving  # pylint: disable=g-import-not-at-top
    model = ActiveMatchingNetwork(ModelConfig(encoder="mlp", feature_size=6, embed_dim=8,
                                              units=8))
    module = serving.ServingModule(model)
    out = module.begin(tf.zeros([1, 4, 6]))
    assert out["embeddings"].shape == (1, 4, 8)
    with pytest.raises(tf.errors.InvalidArgumentError, match="feature vectors of width 6"):
        module.begin(tf.zeros([1, 4, 5]))


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
