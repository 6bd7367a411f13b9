"""Tests of the paper's modules, one Keras layer each (paper 3.2).

Every layer is tiny and called eagerly: shapes, the weight-norm and
layer-norm reparameterisations, masking, and the six cosine features checked
against a numpy computation.
"""

import sys

from absl.testing import parameterized
import keras
import numpy as np
import pytest
import tensorflow as tf

from active_learning import layers as al_layers
from active_learning.layers import lstm as lstm_lib
from active_learning.layers import masked
from active_learning.layers import predictors
from active_learning.layers import selector as selector_lib
from active_learning.layers import weight_norm
from active_learning.model import ActiveMatchingNetwork
from tests import fakes

B, P, Q, D, U, C = 2, 5, 3, 8, 6, 4


def _numpy_similarity_features(cosine, labeled):
    """Reference: [max|mean|min] cosine to other labelled / unlabelled items."""
    batch, pool = labeled.shape
    out = np.zeros((batch, pool, 6), np.float32)
    for b in range(batch):
        for i in range(pool):
            others = [j for j in range(pool) if j != i]
            for k, group in enumerate(([j for j in others if labeled[b, j]],
                                       [j for j in others if not labeled[b, j]])):
                if group:
                    values = cosine[b, i, group]
                    out[b, i, 3 * k:3 * k + 3] = [values.max(), values.mean(), values.min()]
    return out


class WeightNormDenseTest(tf.test.TestCase):

    def _layer(self, units=4, in_dim=3, **kwargs):
        layer = al_layers.WeightNormDense(units, **kwargs)
        layer.build((None, in_dim))
        rng = np.random.RandomState(0)
        layer.gain.assign(rng.uniform(0.5, 2.0, units).astype(np.float32))
        if layer.use_bias:
            layer.bias.assign(rng.normal(size=units).astype(np.float32))
        return layer

    def test_output_shapes(self):
        layer = self._layer(units=7, in_dim=5)
        self.assertEqual(layer(tf.zeros([4, 5])).shape, (4, 7))
        self.assertEqual(layer(tf.zeros([2, 3, 5])).shape, (2, 3, 7))
        no_bias = self._layer(units=7, in_dim=5, use_bias=False)
        self.assertFalse(hasattr(no_bias, "bias"))
        self.assertLen(no_bias.trainable_variables, 2)  # direction and gain

    def test_kernel_is_gain_times_unit_direction(self):
        layer = self._layer()
        v = layer.direction.numpy()
        g = layer.gain.numpy()
        expected = g * v / np.linalg.norm(v, axis=0, keepdims=True)
        self.assertAllClose(layer.kernel(), expected, rtol=1e-5, atol=1e-6)
        # Column norms of the effective kernel are the gains.
        self.assertAllClose(np.linalg.norm(layer.kernel().numpy(), axis=0), g, rtol=1e-5)
        x = np.random.RandomState(1).normal(size=(5, 3)).astype(np.float32)
        self.assertAllClose(layer(x), x @ expected + layer.bias.numpy(), rtol=1e-5, atol=1e-5)

    def test_fixed_kernels_are_read_inside_their_context_only(self):
        keras.utils.set_random_seed(0)
        model = ActiveMatchingNetwork(fakes.small_config("classification"))
        support, _, _, _ = fakes.small_episode("classification")
        model.begin(support)  # builds the layers
        layers = [layer for layer in model._flatten_layers(include_self=False)
                  if isinstance(layer, al_layers.WeightNormDense) and layer.built]
        fixed = weight_norm.FixedKernels(model)
        self.assertLen(fixed.variables, len(layers))
        self.assertEqual([w.path for w in fixed.sources(fixed.variables[:1])],
                         [layers[0].direction.path, layers[0].gain.path])
        layer = layers[0]
        before = layer.kernel().numpy()
        self.assertAllEqual(fixed.get(layer), before)
        self.assertFalse(fixed.get(layer).trainable)
        layer.direction.assign(layer.direction * tf.range(1.0, before.shape[1] + 1.0))
        layer.gain.assign(layer.gain * 2.0)
        self.assertNotAllClose(layer.kernel(), before)  # live: the new weights
        with weight_norm.fixed_kernels(fixed):
            self.assertAllEqual(layer.kernel(), before)  # fixed: as they were
        self.assertNotAllClose(layer.kernel(), before)

    def test_scaling_direction_leaves_outputs_unchanged(self):
        layer = self._layer()
        x = np.random.RandomState(2).normal(size=(2, 6, 3)).astype(np.float32)
        before = layer(x).numpy()
        scales = np.array([0.01, 3.0, 250.0, 0.7], np.float32)  # one per column
        layer.direction.assign(layer.direction * scales[None, :])
        self.assertAllClose(layer(x), before, rtol=1e-5, atol=1e-5)
        # Scaling the gain does scale the output (the check above can fail).
        layer.gain.assign(layer.gain * 2.0)
        self.assertNotAllClose(layer(x), before)


class LayerNormLSTMCellTest(tf.test.TestCase):

    def _cell(self, units=U, in_dim=D):
        keras.utils.set_random_seed(0)
        cell = al_layers.LayerNormLSTMCell(units)
        cell.build((None, in_dim))
        return cell

    def test_state_width_and_shapes(self):
        cell = self._cell()
        self.assertEqual(cell.state_size, 2 * U)
        state = cell.zero_state(B)
        self.assertEqual(state.shape, (B, 2 * U))
        h, new_state = cell(tf.random.normal([B, D], seed=1), state)
        self.assertEqual(h.shape, (B, U))
        self.assertEqual(new_state.shape, (B, 2 * U))
        self.assertAllEqual(h, new_state[:, :U])
        # Any leading shape works (the slow predictor runs [B, Q, ...]).
        h3, s3 = cell(tf.zeros([B, Q, D]), tf.zeros([B, Q, 2 * U]))
        self.assertEqual(h3.shape, (B, Q, U))
        self.assertEqual(s3.shape, (B, Q, 2 * U))

    def test_hidden_bounded(self):
        cell = self._cell()
        state = tf.random.normal([B, 2 * U], stddev=50.0, seed=3)
        for _ in range(4):
            h, state = cell(tf.random.normal([B, D], stddev=1e3, seed=4), state)
            self.assertAllLess(tf.abs(h), 1.0)
            self.assertTrue(np.all(np.isfinite(state.numpy())))

    def test_gate_preactivations_are_layer_normalised(self):
        # From a zero state only W_x x feeds the gates; layer norm makes the
        # step invariant to the scale of x (up to LayerNormalization's eps).
        cell = self._cell()
        x = tf.random.normal([B, D], stddev=10.0, seed=5)
        zero = cell.zero_state(B)
        h1, s1 = cell(x, zero)
        h2, s2 = cell(7.0 * x, zero)
        self.assertAllClose(h1, h2, atol=1e-4)
        self.assertAllClose(s1, s2, atol=1e-4)

    def test_scan_lstm_matches_stepwise(self):
        cell = self._cell()
        x = tf.random.normal([B, 4, D], seed=6)
        init = tf.random.normal([B, 2 * U], seed=7)
        outputs, final = lstm_lib.scan_lstm(cell, x, init)
        self.assertEqual(outputs.shape, (B, 4, U))
        self.assertEqual(final.shape, (B, 2 * U))
        state = init
        for t in range(4):
            h, state = cell(x[:, t], state)
            self.assertAllClose(outputs[:, t], h, atol=1e-5)
        self.assertAllClose(final, state, atol=1e-5)


class EncoderTest(tf.test.TestCase):

    def test_conv_encoder_shapes_and_independence(self):
        keras.utils.set_random_seed(0)
        encoder = al_layers.ConvEncoder(D)
        encoder.build((None, 28, 28, 1))
        images = tf.random.uniform([B, 3, 28, 28, 1], seed=1)
        out = encoder(images)
        self.assertEqual(out.shape, (B, 3, D))
        self.assertEqual(encoder(images[0]).shape, (3, D))
        # Context-free: an image's code does not depend on its neighbours.
        self.assertAllClose(encoder(images[1, 2:3]), out[1, 2:3], atol=1e-5)
        self.assertNotAllClose(out[0, 0], out[0, 1])
        self.assertEqual(encoder.conv1.strides, (2, 2))
        self.assertEqual(encoder.conv2.strides, (2, 2))
        self.assertEqual(encoder.project.direction.shape, (7 * 7 * 64, D))

    def test_embedding_encoder_shapes(self):
        encoder = al_layers.EmbeddingEncoder(10, D, table_dim=3)
        encoder.build()
        self.assertEqual(encoder.table.shape, (10, 3))
        self.assertEqual(encoder(tf.constant([[1, 2, 3], [4, 5, 9]])).shape, (2, 3, D))

    def test_embedding_encoder_uses_initial_embeddings(self):
        init = np.random.RandomState(0).normal(size=(6, 3)).astype(np.float32)
        encoder = al_layers.EmbeddingEncoder(6, D, initial_embeddings=init)
        encoder.build()
        self.assertAllEqual(encoder.table, init)
        items = tf.constant([[5, 0, 2]])
        expected = init[[5, 0, 2]] @ encoder.project.kernel().numpy() + encoder.project.bias.numpy()
        self.assertAllClose(encoder(items)[0], expected, atol=1e-5)

    def test_embedding_encoder_errors(self):
        init = np.zeros((6, 3), np.float32)
        with self.assertRaisesRegex(ValueError, "6 rows.*7 items"):
            al_layers.EmbeddingEncoder(7, D, initial_embeddings=init)
        with self.assertRaisesRegex(ValueError, "width 3.*table_dim is 5"):
            al_layers.EmbeddingEncoder(6, D, initial_embeddings=init, table_dim=5)

    def test_embedding_encoder_frozen_table(self):
        encoder = al_layers.EmbeddingEncoder(6, D, table_dim=3, train_table=False)
        encoder.build()
        self.assertNotIn(encoder.table.path, [v.path for v in encoder.trainable_variables])
        self.assertIn(encoder.table.path, [v.path for v in encoder.weights])

    def test_context_encoder(self):
        keras.utils.set_random_seed(0)
        encoder = al_layers.ContextEncoder(U, D)
        encoder.build((None, None, D))
        x = tf.random.normal([B, P, D], seed=1)
        contextual, state = encoder(x)
        self.assertEqual(contextual.shape, (B, P, D))
        self.assertEqual(state.shape, (B, 2 * U))
        self.assertAllLess(tf.abs(state[:, :U]), 1.0)
        # Context-sensitive both ways: the last item reaches the first through
        # the backward LSTM, the first reaches the last through the forward one.
        changed_last = tf.concat([x[:, :-1], x[:, -1:] + 1.0], 1)
        changed_first = tf.concat([x[:, :1] + 1.0, x[:, 1:]], 1)
        self.assertNotAllClose(encoder(changed_last)[0][:, 0], contextual[:, 0])
        self.assertNotAllClose(encoder(changed_first)[0][:, -1], contextual[:, -1])
        # s_0 is the backward LSTM's final state, which has read every item.
        self.assertNotAllClose(encoder(changed_last)[1], state)
        # Episodes in a batch do not mix.
        self.assertAllClose(encoder(x[1:])[0][0], contextual[1], atol=1e-5)


class ModuleTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters("classification", "regression")
    def test_reader_and_controller(self, task):
        keras.utils.set_random_seed(0)
        reader = al_layers.Reader(U, task, max_classes=C)
        item = tf.random.normal([B, D], seed=1)
        if task == "classification":
            labels, other = tf.constant([0, 3]), tf.constant([1, 3])
            self.assertAllEqual(reader.label_features(labels), np.eye(C)[[0, 3]])
        else:
            labels, other = tf.constant([0.5, 4.0]), tf.constant([5.0, 4.0])
            self.assertEqual(reader.label_features(labels).shape, (B, 1 + 8))
        read = reader(item, labels)
        self.assertEqual(read.shape, (B, U))
        changed = reader(item, other)
        self.assertNotAllClose(changed[0], read[0])  # the label is read
        self.assertAllClose(changed[1], read[1])
        controller = al_layers.Controller(U)
        state = tf.random.normal([B, 2 * U], seed=2)
        new_state = controller(read, state)
        self.assertEqual(new_state.shape, (B, 2 * U))
        self.assertAllEqual(controller.hidden(new_state), new_state[:, :U])
        self.assertAllLess(tf.abs(controller.hidden(new_state)), 1.0)

    def test_reader_rejects_unknown_task(self):
        with self.assertRaisesRegex(ValueError, "task"):
            al_layers.Reader(U, "ranking")

    def test_selector_masks_labelled(self):
        keras.utils.set_random_seed(0)
        selector = al_layers.Selector(D, U)
        emb = tf.random.normal([B, P, D], seed=1)
        cosine = masked.cosine_matrix(emb)
        labeled = tf.constant([[True, False, False, True, False],
                               [False, False, False, False, False]])
        logits = selector(emb, tf.random.normal([B, U], seed=2), cosine, labeled)
        self.assertEqual(logits.shape, (B, P))
        self.assertAllEqual(tf.equal(logits, masked.NEG_INF), labeled)
        unlabeled_logits = tf.boolean_mask(logits, tf.logical_not(labeled)).numpy()
        self.assertTrue(np.all(np.isfinite(unlabeled_logits)))
        self.assertAllGreater(unlabeled_logits, -1e3)
        probs = tf.nn.softmax(logits)
        self.assertAllEqual(tf.boolean_mask(probs, labeled), [0.0, 0.0])

    def test_selector_labelled_mass_enters_the_logit_directly(self):
        keras.utils.set_random_seed(0)
        temperatures = (0.1, 0.3)
        emb = tf.random.normal([B, P, D], seed=1)
        cosine = masked.cosine_matrix(emb)
        control = tf.random.normal([B, U], seed=2)
        labeled = tf.constant([[True, False, False, True, False],
                               [False, True, False, False, False]])
        plain = al_layers.Selector(D, U)
        massed = al_layers.Selector(D, U, mass_temperatures=temperatures)
        massed(emb, control, cosine, labeled)
        self.assertAllEqual(massed.mass_logit_weights, [selector_lib.MASS_LOGIT_INIT] * 2)
        # With the gated score switched off, the logit is the weighted masses.
        massed.score.gain.assign(tf.zeros_like(massed.score.gain))
        logits = massed(emb, control, cosine, labeled)
        masses = sum(selector_lib.labelled_mass(cosine, labeled, t) for t in temperatures)
        unlabelled = tf.logical_not(labeled)
        self.assertAllClose(tf.boolean_mask(logits, unlabelled),
                            tf.boolean_mask(selector_lib.MASS_LOGIT_INIT * masses, unlabelled),
                            atol=1e-5)
        with tf.GradientTape() as tape:
            total = tf.reduce_sum(tf.boolean_mask(
                massed(emb, control, cosine, labeled), unlabelled))
        self.assertNotAllClose(tape.gradient(total, massed.mass_logit_weights), [0.0, 0.0])
        plain(emb, control, cosine, labeled)
        self.assertFalse(hasattr(plain, "mass_logit_weights"))
        self.assertLen(massed.trainable_variables, len(plain.trainable_variables) + 1)

    def test_similarity_features_match_numpy(self):
        rng = np.random.RandomState(0)
        emb = rng.normal(size=(3, 6, 4)).astype(np.float32)
        labeled = rng.rand(3, 6) < 0.5
        labeled[0] = [True, False, False, False, False, False]  # one labelled
        cosine = masked.cosine_matrix(tf.constant(emb)).numpy()
        norm = emb / np.linalg.norm(emb, axis=-1, keepdims=True)
        self.assertAllClose(cosine, norm @ norm.transpose(0, 2, 1), atol=1e-5)
        feats = selector_lib.similarity_features(tf.constant(cosine), tf.constant(labeled))
        self.assertEqual(feats.shape, (3, 6, 6))
        self.assertAllClose(feats, _numpy_similarity_features(cosine, labeled), atol=1e-6)

    def test_similarity_features_empty_sets_are_zero(self):
        rng = np.random.RandomState(1)
        cosine = masked.cosine_matrix(tf.constant(rng.normal(size=(1, 4, 3)), tf.float32))
        nothing = selector_lib.similarity_features(cosine, tf.zeros([1, 4], tf.bool))
        self.assertTrue(np.all(np.isfinite(nothing.numpy())))
        self.assertAllEqual(nothing[..., :3], np.zeros((1, 4, 3)))
        self.assertNotAllClose(nothing[..., 3:], np.zeros((1, 4, 3)))
        # Item 2 is the only unlabelled one: no *other* unlabelled item.
        rest = selector_lib.similarity_features(cosine, tf.constant([[True, True, False, True]]))
        self.assertTrue(np.all(np.isfinite(rest.numpy())))
        self.assertAllEqual(rest[0, 2, 3:], [0.0, 0.0, 0.0])
        self.assertNotAllClose(rest[0, 2, :3], [0.0, 0.0, 0.0])

    def test_labelled_mass_matches_numpy_and_bounds(self):
        rng = np.random.RandomState(2)
        emb = rng.normal(size=(2, 7, 5)).astype(np.float32)
        cosine = masked.cosine_matrix(tf.constant(emb)).numpy()
        labeled = np.zeros((2, 7), bool)
        labeled[0, [1, 4]] = True
        labeled[1, :6] = True  # every item but the last labelled
        feats = selector_lib.similarity_features(tf.constant(cosine), tf.constant(labeled),
                                                 mass_temperatures=(0.1, 0.5)).numpy()
        self.assertEqual(feats.shape, (2, 7, 8))
        self.assertAllClose(feats[..., :6], _numpy_similarity_features(cosine, labeled),
                            atol=1e-6)
        for k, tau in enumerate((0.1, 0.5)):
            for b in range(2):
                for i in range(7):
                    others = [j for j in range(7) if j != i]
                    weights = np.exp(cosine[b, i, others] / tau)
                    expected = weights[labeled[b, others]].sum() / weights.sum()
                    self.assertAllClose(feats[b, i, 6 + k], expected, atol=1e-5)
        self.assertAllInRange(feats[..., 6:], 0.0, 1.0)
        # All others labelled: the whole attention is on labelled items.
        self.assertAllClose(feats[1, 6, 6:], [1.0, 1.0], atol=1e-6)
        # Nothing labelled: no mass anywhere.
        none = selector_lib.labelled_mass(tf.constant(cosine), tf.zeros([2, 7], tf.bool), 0.1)
        self.assertAllEqual(none, np.zeros((2, 7)))

    def test_labelled_mass_ranks_an_unlabelled_class_below_an_odd_member(self):
        # Two labelled classes A, B; an odd drawing of A (far from its exemplar
        # in absolute terms) and a tight unlabelled class C. Min-max-cos picks
        # the odd drawing; the labelled mass picks class C.
        cosine = np.array([
            # a0    a1    a2    b0    c0    c1
            [1.00, 0.90, 0.05, 0.00, 0.20, 0.20],   # a0 labelled
            [0.90, 1.00, 0.50, 0.00, 0.10, 0.10],   # a1
            [0.05, 0.50, 1.00, 0.00, 0.10, 0.10],   # a2, the odd one
            [0.00, 0.00, 0.00, 1.00, 0.20, 0.20],   # b0 labelled
            [0.20, 0.10, 0.10, 0.20, 1.00, 0.90],   # c0
            [0.20, 0.10, 0.10, 0.20, 0.90, 1.00],   # c1
        ], np.float32)[None]
        labeled = tf.constant([[True, False, False, True, False, False]])
        feats = selector_lib.similarity_features(tf.constant(cosine), labeled, (0.1,))
        unlabelled = [1, 2, 4, 5]
        max_to_labelled = tf.gather(feats[0, :, 0], unlabelled).numpy()
        mass = tf.gather(feats[0, :, 6], unlabelled).numpy()
        self.assertEqual(unlabelled[int(np.argmin(max_to_labelled))], 2)
        self.assertIn(unlabelled[int(np.argmin(mass))], (4, 5))

    def test_masked_softmax(self):
        logits = tf.constant([[1.0, 5.0, 2.0], [3.0, 1.0, 0.0]])
        mask = tf.constant([[True, False, True], [False, False, False]])
        weights = masked.masked_softmax(logits, mask).numpy()
        self.assertAllClose(weights[0], [np.exp(1) / (np.exp(1) + np.exp(2)), 0.0,
                                         np.exp(2) / (np.exp(1) + np.exp(2))])
        self.assertAllEqual(weights[1], [0.0, 0.0, 0.0])

    def test_masked_softmax_gradient_is_finite_under_xla(self):
        # An all-masked row has no weights and no gradient, compiled or not.
        logits = tf.constant([[1.0, 5.0, 2.0], [3.0, 1.0, 0.0]])
        mask = tf.constant([[True, False, True], [False, False, False]])
        upstream = tf.constant([[0.3, -1.0, 2.0], [1.5, -0.5, 0.7]])

        def gradient(logits):
            with tf.GradientTape() as tape:
                tape.watch(logits)
                loss = tf.reduce_sum(masked.masked_softmax(logits, mask) * upstream)
            return tape.gradient(loss, logits)

        plain = tf.function(gradient)(logits)
        compiled = tf.function(gradient, jit_compile=True)(logits)
        self.assertTrue(np.all(np.isfinite(compiled.numpy())))
        self.assertAllClose(plain, compiled, atol=1e-6)
        self.assertAllEqual(compiled[1], [0.0, 0.0, 0.0])

    @parameterized.parameters(1, 3)
    def test_fast_predictor(self, label_width):
        keras.utils.set_random_seed(0)
        fast = al_layers.FastPredictor(D, U)
        emb = tf.random.normal([B, P, D], seed=1)
        cosine = masked.cosine_matrix(emb)
        labeled = tf.constant([[True, False, True, False, False],
                               [False, True, False, False, False]])
        vectors = tf.random.uniform([B, P, label_width], seed=2)
        prior = tf.fill([label_width], 0.25)
        pred, attention = fast(emb, tf.random.normal([B, U], seed=3), cosine, labeled,
                               vectors, prior)
        self.assertEqual(pred.shape, (B, P, label_width))
        self.assertEqual(attention.shape, (B, P, P))
        a = attention.numpy()
        self.assertAllEqual(a * ~labeled.numpy()[:, None, :], np.zeros_like(a))
        self.assertAllEqual(np.diagonal(a, axis1=1, axis2=2), np.zeros((B, P)))
        # Rows with another labelled item sum to 1; the only labelled item of
        # episode 1 has none and falls back to the prior.
        sums = a.sum(-1)
        self.assertAllClose(sums[0], np.ones(P), atol=1e-6)
        self.assertAllClose(sums[1], [1, 0, 1, 1, 1], atol=1e-6)
        self.assertAllClose(pred[1, 1], prior)

    def test_blend_with_prior_never_negative(self):
        # Attention that sums to 1 + 2**-23 in float32 (rounding in a softmax).
        attention = tf.constant([[[0.5, 0.5 + 2.0 ** -23, 0.0]]])
        self.assertGreater(tf.reduce_sum(attention).numpy(), 1.0)
        prior = tf.fill([C], 1.0 / C)
        blended = predictors.blend_with_prior(attention, tf.one_hot([[0, 1, 2]], C), prior)
        self.assertAllGreaterEqual(blended, 0.0)
        self.assertAllEqual(blended[0, 0, 2:], [0.0, 0.0])
        # No attention at all: exactly the prior.
        self.assertAllClose(predictors.blend_with_prior(tf.zeros([1, 1, 3]),
                                                        tf.one_hot([[0, 1, 2]], C), prior)[0, 0],
                            prior)

    def test_slow_predictor(self):
        keras.utils.set_random_seed(0)
        slow = al_layers.SlowPredictor(U, D, U, steps=3)
        queries = tf.random.normal([B, Q, D], seed=1)
        support = tf.random.normal([B, P, D], seed=2)
        labeled = tf.constant([[True, False, True, False, False],
                               [False, False, False, False, False]])
        vectors = tf.one_hot([[0, 1, 2, 3, 0], [1, 1, 1, 1, 1]], C)
        prior = tf.fill([C], 1.0 / C)
        pred, attention = slow(queries, tf.random.normal([B, U], seed=3), support, labeled,
                               vectors, prior)
        self.assertEqual(pred.shape, (B, Q, C))
        self.assertEqual(attention.shape, (B, Q, P))
        self.assertAllClose(tf.reduce_sum(attention[0], -1), np.ones(Q), atol=1e-6)
        self.assertAllEqual(attention[0][:, 1], np.zeros(Q))
        self.assertAllEqual(attention[1], np.zeros((Q, P)))
        self.assertAllClose(pred[1], np.full((Q, C), 1.0 / C))
        # Only classes 0 and 2 are labelled in episode 0.
        self.assertAllEqual(pred[0][:, 1], np.zeros(Q))
        self.assertAllEqual(pred[0][:, 3], np.zeros(Q))
        with self.assertRaisesRegex(ValueError, "matching steps"):
            al_layers.SlowPredictor(U, D, U, steps=0)

    def _slow_inputs(self, steps, prior_slot):
        """(a slow predictor, queries, support, control), seeded."""
        keras.utils.set_random_seed(0)
        return (al_layers.SlowPredictor(U, D, U, steps=steps, prior_slot=prior_slot),
                tf.random.normal([B, Q, D], seed=1), tf.random.normal([B, P, D], seed=2),
                tf.random.normal([B, U], seed=3))

    @parameterized.parameters(False, True)
    def test_slow_query_projection_is_the_same_function(self, prior_slot):
        # Training hands the slow predictor the queries' projection once per
        # episode; the split projection must compute the recorded function,
        # values and gradients, up to float rounding.
        slow, queries, support, control = self._slow_inputs(3, prior_slot)
        labeled = tf.constant([[True, False, True, False, False],
                               [False, True, True, True, False]])
        vectors = tf.one_hot(tf.constant([[0, 1, 2, 0, 1], [2, 2, 0, 1, 0]]), 3)
        results = []
        for split in (False, True):
            with tf.GradientTape() as tape:
                tape.watch([queries, control])
                projection = slow.project_queries(queries) if split else None
                out, attention = slow(queries, control, support, labeled, vectors,
                                      tf.zeros([1]), query_projection=projection)
                loss = tf.reduce_sum(tf.sin(3.0 * out))
            grads = tape.gradient(loss, [queries, control] + slow.trainable_variables)
            results.append((out, attention, grads))
        (out0, att0, g0), (out1, att1, g1) = results
        self.assertAllClose(out0, out1, atol=1e-5)
        self.assertAllClose(att0, att1, atol=1e-5)
        for a, b in zip(g0, g1):
            self.assertIsNotNone(b)
            self.assertAllClose(a, b, atol=1e-4 * (1.0 + float(tf.reduce_max(tf.abs(a)))))

    @parameterized.parameters(False, True)
    def test_slow_lookahead_equals_labelling_the_candidate(self, prior_slot):
        # With one matching step the query's matched embedding does not depend
        # on the labelled set, so adding candidate p to the last softmax is
        # exactly the slow prediction with p labelled (same control state).
        slow, queries, support, control = self._slow_inputs(1, prior_slot)
        labeled = np.array([[True, False, True, False, False],
                            [False, False, False, False, False]])
        ratings = np.random.RandomState(4).uniform(0.5, 5.0, (B, P)).astype(np.float32)
        vectors = lambda mask: tf.constant((ratings * mask)[..., None])  # noqa: E731
        prior = tf.constant([3.0])
        ahead = slow.lookahead(queries, control, support, tf.constant(labeled),
                               vectors(labeled), prior, tf.constant(ratings[..., None]))
        self.assertEqual(ahead.shape, (B, P, Q, 1))
        for p in range(P):
            now = labeled.copy()
            now[:, p] = True
            expected, _ = slow(queries, control, support, tf.constant(now), vectors(now), prior)
            for b in np.flatnonzero(~labeled[:, p]):  # the oracle skips labelled items
                self.assertAllClose(ahead[b, p], expected[b], atol=1e-5)
        # With three matching steps the read moves with the labelled set, so
        # the lookahead is an approximation: a convex blend of the current
        # prediction and the candidate's rating, strictly between them.
        slow3 = al_layers.SlowPredictor(U, D, U, steps=3, prior_slot=prior_slot)
        ahead = slow3.lookahead(queries, control, support, tf.constant(labeled),
                                vectors(labeled), prior, tf.constant(ratings[..., None]))
        current, _ = slow3(queries, control, support, tf.constant(labeled), vectors(labeled),
                           prior)
        low = np.minimum(current.numpy()[:, None], ratings[:, :, None, None])
        high = np.maximum(current.numpy()[:, None], ratings[:, :, None, None])
        self.assertTrue(np.all((ahead.numpy() > low - 1e-6) & (ahead.numpy() < high + 1e-6)))
        self.assertTrue(np.all(np.abs(ahead.numpy() - current.numpy()[:, None]) > 0))

    def test_value_head(self):
        head = al_layers.ValueHead(U)
        values = head(tf.random.normal([B, U], seed=1))
        self.assertEqual(values.shape, (B,))
        self.assertNotAllClose(values[0], values[1])


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
