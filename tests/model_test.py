"""Tests of `ActiveMatchingNetwork`, its config and its checkpoints.

Tiny models, called eagerly, on both tasks: classification (images, int
labels) and regression (item ids, float ratings).
"""

import dataclasses
import json
import os
import sys
import tempfile

from absl.testing import parameterized
import keras
import numpy as np
import pytest
import tensorflow as tf

from active_learning import checkpoints
from active_learning.config import ModelConfig
from active_learning.model import LOG_LIKELIHOOD_EPS, ActiveMatchingNetwork
from tests import fakes

B, P, Q, N = 2, 6, 3, 3
NUM_ITEMS = 40
TASKS = ("classification", "regression")


make_config = fakes.small_config
make_episode = fakes.small_episode


class ModelTest(tf.test.TestCase, parameterized.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        keras.utils.set_random_seed(1)
        cls.models = {task: ActiveMatchingNetwork(make_config(task)) for task in TASKS}

    def _begin(self, task):
        model = self.models[task]
        support, support_labels, queries, query_labels = make_episode(task)
        embeddings, state = model.begin(support)
        return model, embeddings, state, support_labels, queries, query_labels

    @parameterized.parameters(*TASKS)
    def test_shapes(self, task):
        model, emb, state, labels, queries, _ = self._begin(task)
        labeled = tf.constant([[True, False, True, False, False, False]] * B)
        self.assertEqual(emb.shape, (B, P, 16))
        self.assertEqual(state.shape, (B, 32))
        self.assertEqual(model.select(emb, state, labels, labeled).shape, (B, P))
        self.assertEqual(model.value(state).shape, (B,))
        fast = model.fast_predict(emb, state, labels, labeled)
        slow = model.predict(emb, state, labels, labeled, queries)
        slow_again, attention = model.predict(emb, state, labels, labeled, queries,
                                              return_attention=True)
        self.assertAllClose(slow_again, slow)
        self.assertEqual(attention.shape, (B, Q, P))
        if task == "classification":
            self.assertEqual(fast.shape, (B, P, 5))
            self.assertEqual(slow.shape, (B, Q, 5))
        else:
            self.assertEqual(fast.shape, (B, P))
            self.assertEqual(slow.shape, (B, Q))
        keras_out = model((make_episode(task)[0], labels, queries))
        self.assertEqual(keras_out.shape, slow.shape)

    @parameterized.parameters(*TASKS)
    def test_observe(self, task):
        model, emb, state, true_labels, _, _ = self._begin(task)
        labels = tf.zeros_like(true_labels) - tf.ones_like(true_labels)  # -1: unknown
        labeled = tf.constant([[False, True, False, False, False, False]] * B)
        index = tf.constant([4, 0])
        new_label = tf.gather(true_labels, index, batch_dims=1)
        new_state, new_labels, new_labeled = model.observe(emb, state, labels, labeled,
                                                           index, new_label)
        self.assertEqual(new_state.shape, state.shape)
        self.assertNotAllClose(new_state, state)
        expected_labeled = labeled.numpy().copy()
        expected_labeled[0, 4] = expected_labeled[1, 0] = True
        self.assertAllEqual(new_labeled, expected_labeled)
        expected_labels = labels.numpy().copy()
        expected_labels[0, 4], expected_labels[1, 0] = new_label.numpy()
        self.assertAllEqual(new_labels, expected_labels)
        self.assertEqual(new_labels.dtype, labels.dtype)
        # The new state depends on the label read, not only on the item.
        other_state, _, _ = model.observe(emb, state, labels, labeled, index,
                                          (new_label + 1) % 5 if task == "classification"
                                          else 6.0 - new_label)
        self.assertNotAllClose(other_state, new_state)

    @parameterized.parameters(*TASKS)
    def test_selection_probabilities(self, task):
        model, emb, state, labels, _, _ = self._begin(task)
        rng = np.random.RandomState(3)
        for n_labeled in (0, 1, 3, P - 1):
            labeled = np.zeros((B, P), bool)
            for b in range(B):
                labeled[b, rng.choice(P, n_labeled, replace=False)] = True
            probs = tf.nn.softmax(model.select(emb, state, labels, tf.constant(labeled))).numpy()
            self.assertAllEqual(probs[labeled], np.zeros(B * n_labeled))
            self.assertAllGreater(probs[~labeled], 0.0)
            self.assertAllClose(probs.sum(-1), np.ones(B), atol=1e-6)

    @parameterized.parameters(*TASKS)
    def test_predictions_use_labelled_labels_only(self, task):
        model, emb, state, labels, queries, _ = self._begin(task)
        labeled = tf.constant([[True, False, True, False, True, False],
                               [False, True, False, False, False, True]])
        if task == "classification":
            scrambled = tf.where(labeled, labels, (labels + 2) % 5)
            scrambled_minus = tf.where(labeled, labels, -1)
        else:
            scrambled = tf.where(labeled, labels, 5.0 - labels + 0.25)
            scrambled_minus = tf.where(labeled, labels, -1.0)
        for fn in (lambda l: model.fast_predict(emb, state, l, labeled),
                   lambda l: model.predict(emb, state, l, labeled, queries)):
            base = fn(labels)
            self.assertAllEqual(fn(scrambled), base)
            self.assertAllEqual(fn(scrambled_minus), base)
        fast = model.fast_predict(emb, state, labels, labeled).numpy()
        slow = model.predict(emb, state, labels, labeled, queries).numpy()
        lab = labeled.numpy()
        if task == "classification":
            for pred in (fast, slow):
                self.assertAllClose(pred.sum(-1), np.ones(pred.shape[:-1]), atol=1e-5)
                self.assertAllGreaterEqual(pred, 0.0)
                for b in range(B):
                    unseen = sorted(set(range(5)) - set(labels.numpy()[b][lab[b]]))
                    # Every item has another labelled item here, so no prior mass.
                    self.assertAllClose(pred[b][..., unseen], np.zeros(pred[b][..., unseen].shape),
                                        atol=1e-6)
        else:
            for pred in (fast, slow):
                for b in range(B):
                    visible = labels.numpy()[b][lab[b]]
                    self.assertAllInRange(pred[b], visible.min() - 1e-5, visible.max() + 1e-5)

    def test_class_probabilities_are_distributions(self):
        model, emb, state, labels, queries, _ = self._begin("classification")
        rng = np.random.RandomState(4)
        for trial in range(8):
            labeled = np.zeros((B, P), bool)
            for b in range(B):
                labeled[b, rng.choice(P, 1 + trial % P, replace=False)] = True
            labeled = tf.constant(labeled)
            for pred in (model.fast_predict(emb, state, labels, labeled),
                         model.predict(emb, state, labels, labeled, queries)):
                self.assertAllGreaterEqual(pred, 0.0)
                self.assertAllClose(tf.reduce_sum(pred, -1), tf.ones(pred.shape[:-1]),
                                    atol=1e-5)

    @parameterized.parameters(*TASKS)
    def test_nothing_labelled_gives_prior(self, task):
        model, emb, state, labels, queries, _ = self._begin(task)
        none = tf.zeros([B, P], tf.bool)
        fast = model.fast_predict(emb, state, labels, none)
        slow = model.predict(emb, state, labels, none, queries)
        prior = model.prior().numpy()
        if task == "classification":
            self.assertAllClose(prior, np.full(5, 0.2))
            self.assertAllClose(fast, np.broadcast_to(prior, (B, P, 5)))
            self.assertAllClose(slow, np.broadcast_to(prior, (B, Q, 5)))
        else:
            self.assertAllClose(prior, [3.5])
            self.assertAllClose(fast, np.full((B, P), 3.5))
            self.assertAllClose(slow, np.full((B, Q), 3.5))

    @parameterized.parameters(*TASKS)
    def test_one_labelled_item(self, task):
        model, emb, state, labels, queries, _ = self._begin(task)
        one = tf.constant([[False, False, True, False, False, False],
                           [True, False, False, False, False, False]])
        fast = model.fast_predict(emb, state, labels, one).numpy()
        slow = model.predict(emb, state, labels, one, queries).numpy()
        for b, j in ((0, 2), (1, 0)):
            y = labels.numpy()[b, j]
            others = [i for i in range(P) if i != j]
            if task == "classification":
                target = np.eye(5)[y]
                self.assertAllClose(fast[b, others], np.tile(target, (P - 1, 1)), atol=1e-6)
                self.assertAllClose(fast[b, j], np.full(5, 0.2), atol=1e-6)  # no other
                self.assertAllClose(slow[b], np.tile(target, (Q, 1)), atol=1e-6)
            else:
                self.assertAllClose(fast[b, others], np.full(P - 1, y), atol=1e-5)
                self.assertAllClose(fast[b, j], 3.5, atol=1e-6)
                self.assertAllClose(slow[b], np.full(Q, y), atol=1e-5)

    def test_log_likelihood(self):
        model = self.models["classification"]
        probs = tf.constant([[[0.5, 0.25, 0.25, 0.0, 0.0]]])
        got = model.log_likelihood(probs, tf.constant([[1]])).numpy()
        c, eps = 5, LOG_LIKELIHOOD_EPS
        self.assertAllClose(got, [[np.log((0.25 + eps) / (1 + c * eps))]])
        zero = model.log_likelihood(probs, tf.constant([[3]])).numpy()
        self.assertTrue(np.isfinite(zero).all())
        self.assertLess(zero[0, 0], got[0, 0])
        reg = self.models["regression"]
        self.assertAllClose(reg.log_likelihood(tf.constant([[3.0, 1.0]]),
                                               tf.constant([[4.0, 1.0]])), [[-1.0, 0.0]])

    def test_regression_item_table(self):
        table = np.random.RandomState(0).normal(size=(NUM_ITEMS, 8)).astype(np.float32)
        model = ActiveMatchingNetwork(make_config("regression"), item_embeddings=table)
        self.assertAllEqual(model.encoder.table, table)
        trainable = [v.path for v in model.trainable_variables]
        self.assertIn(model.encoder.table.path, trainable)
        frozen = ActiveMatchingNetwork(make_config("regression", train_item_table=False))
        self.assertNotIn(frozen.encoder.table.path, [v.path for v in frozen.trainable_variables])
        with self.assertRaisesRegex(ValueError, "item_table_dim"):
            ActiveMatchingNetwork(make_config("regression"),
                                  item_embeddings=np.zeros((NUM_ITEMS, 5)))


class ItemPriorTest(tf.test.TestCase):
    """`item_prior`: a per-item prior rating and an attention slot on it."""

    def _model(self, biases=None):
        keras.utils.set_random_seed(0)
        config = dataclasses.replace(fakes.small_config("regression"), item_prior=True)
        return ActiveMatchingNetwork(config, item_biases=biases)

    def test_nothing_labelled_predicts_each_items_prior(self):
        biases = np.linspace(-1, 1, fakes.NUM_ITEMS).astype(np.float32)
        model = self._model(biases)
        support, labels, queries, _ = fakes.small_episode("regression")
        embeddings, state = model.begin(support)
        none = tf.zeros(labels.shape, tf.bool)
        predictions = model.predict(embeddings, state, labels, none, queries)
        self.assertAllClose(predictions, model.config.rating_prior + biases[queries.numpy()])

    def test_prediction_lies_between_the_prior_and_the_labelled_ratings(self):
        model = self._model()
        support, labels, queries, _ = fakes.small_episode("regression")
        embeddings, state = model.begin(support)
        labeled = tf.constant([[True, True] + [False] * (fakes.P - 2)] * fakes.B)
        observed = tf.where(labeled, tf.fill(labels.shape, 5.0), 0.0)
        predictions, attention = model.predict(embeddings, state, observed, labeled, queries,
                                               return_attention=True)
        mass = tf.reduce_sum(attention, -1)
        # Items' attention and the prior slot share one softmax: the slot gets
        # 1 - mass > 0, and the prediction is that convex combination.
        self.assertAllGreater(mass, 0.0)
        self.assertAllLess(mass, 1.0)
        self.assertAllClose(predictions, 5.0 * mass + model.config.rating_prior * (1 - mass))
        self.assertAllEqual(tf.boolean_mask(attention, ~labeled[:, None, :]
                                            & tf.ones_like(attention, tf.bool)),
                            tf.zeros([fakes.B * fakes.Q * (fakes.P - 2)]))

    def test_gradients_reach_the_bias_and_the_slot(self):
        model = self._model()
        support, labels, queries, targets = fakes.small_episode("regression")
        labeled = tf.constant([[True] + [False] * (fakes.P - 1)] * fakes.B)
        with tf.GradientTape() as tape:
            embeddings, state = model.begin(support)
            predictions = model.predict(embeddings, state, tf.where(labeled, labels, 0.0),
                                        labeled, queries)
            loss = tf.reduce_sum(tf.square(predictions - targets))
        wanted = [model.item_bias] + model.slow_predictor.prior_logit.trainable_variables
        for v, g in zip(wanted, tape.gradient(loss, wanted)):
            self.assertGreater(float(tf.reduce_max(tf.abs(tf.convert_to_tensor(g)))), 0.0,
                               v.path)

    def test_classification_and_wrong_shapes_are_rejected(self):
        with self.assertRaisesRegex(ValueError, "regression"):
            ModelConfig(item_prior=True)
        with self.assertRaisesRegex(ValueError, "one per item"):
            self._model(np.zeros(3))


class CheckpointTest(tf.test.TestCase, parameterized.TestCase):

    def _save(self, task, config=None):
        keras.utils.set_random_seed(2)
        config = config or make_config(task)
        model = ActiveMatchingNetwork(config)
        model_dir = tempfile.mkdtemp(dir=self.get_temp_dir())
        checkpoints.save_model_config(model_dir, config)
        manager = tf.train.CheckpointManager(
            tf.train.Checkpoint(model=model),
            os.path.join(model_dir, checkpoints.CHECKPOINTS), max_to_keep=1)
        path = manager.save()
        return model, model_dir, path

    @parameterized.parameters(*TASKS)
    def test_every_weight_is_checkpointed_and_restored(self, task):
        model, model_dir, path = self._save(task)
        names = [name for name, _ in tf.train.list_variables(path)
                 if name.startswith("model/") and name.endswith("VARIABLE_VALUE")]
        self.assertLen(names, len(model.weights), msg="\n".join(sorted(names)))
        self.assertEqual(len(model.weights), len({w.path for w in model.weights}))
        keras.utils.set_random_seed(99)
        loaded, loaded_path = checkpoints.load_model(model_dir)  # falls back to checkpoints/
        self.assertEqual(loaded_path, path)
        self.assertEqual(loaded.config, model.config)
        # Paths of the model's own weights start with its unique name.
        strip = lambda m: [w.path.replace(m.name + "/", "") for w in m.weights]  # noqa: E731
        self.assertEqual(strip(loaded), strip(model))
        # The loaded model was initialised from another seed, so equal values
        # can only come from the checkpoint.
        for saved, restored in zip(model.weights, loaded.weights):
            self.assertAllEqual(restored, saved, msg=saved.path)
        support, labels, queries, _ = make_episode(task)
        self.assertAllEqual(loaded((support, labels, queries)), model((support, labels, queries)))

    def test_config_mismatch_names_model_config(self):
        model, model_dir, _ = self._save("regression")
        for change in (dict(embed_dim=8), dict(item_table_dim=4),
                       dict(task="classification", num_items=0, item_table_dim=0)):
            values = json.loads(model.config.to_json())
            values.update(change)
            checkpoints.save_model_config(model_dir, ModelConfig.from_dict(values))
            with self.assertRaisesRegex(ValueError, "model_config.json", msg=str(change)):
                checkpoints.load_model(model_dir, "latest")

    def test_missing_files(self):
        empty = tempfile.mkdtemp(dir=self.get_temp_dir())
        with self.assertRaisesRegex(FileNotFoundError, "model_config.json"):
            checkpoints.load_model(empty)
        checkpoints.save_model_config(empty, make_config("classification"))
        with self.assertRaisesRegex(FileNotFoundError, "no checkpoint"):
            checkpoints.load_model(empty)
        with self.assertRaisesRegex(ValueError, "best' or 'latest"):
            checkpoints.find_checkpoint(empty, "newest")


class ModelConfigTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.named_parameters(
        ("bad_task", dict(task="ranking"), "task must be one of"),
        ("regression_without_items", dict(task="regression"), "num_items"),
        ("one_class", dict(max_classes=1), "max_classes"),
        ("no_embedding", dict(embed_dim=0), "embed_dim"),
        ("no_units", dict(units=0), "units"),
        ("no_matching_steps", dict(matching_steps=0), "matching_steps"),
        ("zero_temperature", dict(labelled_mass_temperatures=(0.1, 0.0)),
         "labelled_mass_temperatures must be > 0"),
    )
    def test_validation(self, values, message):
        with self.assertRaisesRegex(ValueError, message):
            ModelConfig(**values)

    def test_json_round_trip_and_unknown_keys(self):
        config = make_config("regression", train_item_table=False)
        self.assertEqual(ModelConfig.from_json(config.to_json()), config)
        masses = make_config("classification", labelled_mass_temperatures=[0.1, 0.3])
        self.assertEqual(masses.labelled_mass_temperatures, (0.1, 0.3))
        self.assertEqual(ModelConfig.from_json(masses.to_json()), masses)
        # Configs written before the field existed read as the paper's features.
        old = json.loads(masses.to_json())
        del old["labelled_mass_temperatures"]
        self.assertEqual(ModelConfig.from_dict(old).labelled_mass_temperatures, ())
        with self.assertRaisesRegex(ValueError, "unknown model config keys \\['colour'\\]"):
            ModelConfig.from_dict({"task": "classification", "colour": "red"})


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
