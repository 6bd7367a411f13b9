"""Tests of the prior-aware rating predictor (`rating_predictor="prior"`).

It must start as the classic ridge fold-in around the movie-bias prior
(`baselines.RidgeRegression`), predict each item's prior with no rating,
move predictions without flattening them after one rating, score the rating
oracle's candidates exactly in closed form, learn through the variables that
should learn, and serve through the SavedModel signatures as it predicts in
Python.
"""

import sys
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from active_learning import baselines
from active_learning import policies
from active_learning.config import ModelConfig
from active_learning.layers import prior_predictor
from active_learning.model import ActiveMatchingNetwork

M, T = 40, 8          # items, latent width
B, P, Q = 4, 12, 5    # episodes, pool, queries
BETA = 3.5
# Float32 against float64: measured differences up to 1.5e-7 (predictions)
# and 4.8e-7 (oracle scores) on these sizes; 1e-4 leaves room for other
# vector units while a wrong term (a rating-sized error) still fails.
ATOL = 1e-4


def make_model(seed=0):
    rng = np.random.default_rng(seed)
    vectors = (0.5 * rng.normal(size=(M, T))).astype(np.float32)
    bias = (0.3 * rng.normal(size=M)).astype(np.float32)
    keras.utils.set_random_seed(seed)
    config = ModelConfig(task="regression", num_items=M, item_table_dim=T, embed_dim=16,
                         units=16, rating_prior=BETA, rating_predictor="prior")
    return ActiveMatchingNetwork(config, item_embeddings=vectors, item_biases=bias), vectors, bias


def make_episode(seed=0):
    rng = np.random.default_rng(seed + 1)
    items = np.stack([rng.permutation(M)[:P + Q] for _ in range(B)]).astype(np.int32)
    ratings = rng.choice(np.arange(0.5, 5.01, 0.5), size=(B, P + Q)).astype(np.float32)
    return items[:, :P], ratings[:, :P], items[:, P:], ratings[:, P:]


def labelled(count):
    mask = np.zeros((B, P), bool)
    mask[:, :count] = True
    return mask


def test_config_checks():
    with pytest.raises(ValueError, match="regression"):
        ModelConfig(task="classification", rating_predictor="prior")
    with pytest.raises(ValueError, match="choose one"):
        ModelConfig(task="regression", num_items=3, item_prior=True, rating_predictor="prior")
    with pytest.raises(ValueError, match="rating_predictor must be one of"):
        ModelConfig(task="regression", num_items=3, rating_predictor="mean")
    config = ModelConfig(task="regression", num_items=3, item_table_dim=8, embed_dim=16,
                         rating_predictor="prior")
    assert config.embedding_width == 16 + 1 + 8
    assert ModelConfig.from_json(config.to_json()) == config
    # The paper's default is left out of the JSON: older files stay the same.
    assert "rating_predictor" not in ModelConfig(task="regression", num_items=3).to_json()


@pytest.mark.parametrize("count", [0, 1, 3, 7])
def test_starts_as_the_ridge_fold_in(count):
    model, vectors, bias = make_model()
    support, ratings, queries, _ = make_episode()
    embeddings, state = model.begin(support)
    assert embeddings.shape == (B, P, model.config.embedding_width)
    predictions = model.predict(embeddings, state, tf.constant(ratings),
                                tf.constant(labelled(count)), queries).numpy()
    if count == 0:
        np.testing.assert_allclose(predictions, BETA + bias[queries], atol=1e-6)
        return
    ridge = baselines.RidgeRegression(prior_predictor.INITIAL_L2).fit_predict(
        vectors[support[:, :count]], ratings[:, :count], vectors[queries],
        BETA + bias[support[:, :count]], BETA + bias[queries])
    np.testing.assert_allclose(predictions, ridge, atol=ATOL)


def test_one_rating_moves_predictions_without_flattening_them():
    model, _, bias = make_model()
    support, _, queries, _ = make_episode()
    embeddings, state = model.begin(support)
    ratings = np.full((B, P), 4.5, np.float32)
    predictions = model.predict(embeddings, state, tf.constant(ratings),
                                tf.constant(labelled(1)), queries).numpy()
    # Not all equal to the one rating (the paper's predictor gives 4.5 everywhere)...
    assert np.all(predictions.std(axis=1) > 1e-2)
    # ...and moved from the prior towards it on average.
    assert np.all((predictions - (BETA + bias[queries])).mean(axis=1) > 0)


def test_unlabelled_ratings_are_ignored():
    model, _, _ = make_model()
    support, ratings, queries, _ = make_episode()
    embeddings, state = model.begin(support)
    mask = tf.constant(labelled(3))
    other = np.where(labelled(3), ratings, 0.5 + 4.5 * np.random.default_rng(5).random((B, P)))
    for fn in (lambda r: model.predict(embeddings, state, r, mask, queries),
               lambda r: model.fast_predict(embeddings, state, r, mask)):
        np.testing.assert_allclose(fn(tf.constant(ratings)), fn(tf.constant(other, tf.float32)),
                                   atol=1e-6)


def test_oracle_scores_equal_trying_every_candidate():
    model, _, _ = make_model()
    support, ratings, queries, query_ratings = make_episode()
    embeddings, state = model.begin(support)
    mask = labelled(3)
    scores = model.fold_in_scores(embeddings, tf.constant(ratings), tf.constant(mask),
                                  tf.constant(ratings), queries,
                                  tf.constant(query_ratings)).numpy()
    for c in range(3, P):
        with_c = mask.copy()
        with_c[:, c] = True
        predictions = model.predict(embeddings, state, tf.constant(ratings),
                                    tf.constant(with_c), queries).numpy()
        np.testing.assert_allclose(scores[:, c],
                                   -np.mean((predictions - query_ratings) ** 2, -1), atol=ATOL)
    # The oracle policy uses them: its target is the best unlabelled candidate.
    ctx = policies.StepContext(model, embeddings, state, tf.constant(ratings), tf.constant(mask),
                               model.similarities(embeddings), tf.zeros((B, P)),
                               tf.constant(support), tf.constant(ratings), tf.constant(queries),
                               tf.constant(query_ratings))
    target = policies.OraclePolicy("regression").target_mask(ctx).numpy()
    np.testing.assert_array_equal(target.argmax(-1), 3 + scores[:, 3:].argmax(-1))


def test_gradients_reach_what_should_learn():
    model, _, _ = make_model()
    support, ratings, queries, query_ratings = make_episode()
    # A correction that already counts: the gates' gradient then reaches the
    # matching and fast predictors too.
    model.fold_in.slow_gate.assign(0.5)
    model.fold_in.fast_gate.assign(0.5)
    with tf.GradientTape() as tape:
        embeddings, state = model.begin(support)
        state, labels, mask = model.observe(embeddings, state, tf.zeros((B, P)),
                                            tf.constant(labelled(2)), tf.fill([B], 5),
                                            tf.constant(ratings[:, 5]))
        labels = tf.where(tf.constant(labelled(2)), ratings, labels)
        slow = model.predict(embeddings, state, labels, mask, queries)
        fast = model.fast_predict(embeddings, state, labels, mask)
        loss = tf.reduce_mean(tf.square(slow - query_ratings)) + tf.reduce_mean(
            tf.square(fast - ratings))
    trainable = model.trainable_variables
    grads = dict(zip([v.path for v in trainable], tape.gradient(loss, trainable)))
    for name in ("item_bias", "encoder/table", "fold_in/slow_gate", "fold_in/fast_gate",
                 "slow_predictor/log_temperature", "slow_predictor/prior_logit",
                 "fast_predictor/temperature_map", "reader/project", "controller"):
        hits = [g for path, g in grads.items() if name in path]
        assert hits, f"no trainable variable matches {name}"
        assert any(g is not None and float(tf.reduce_max(tf.abs(tf.convert_to_tensor(g)))) > 0
                   for g in hits), f"no gradient reaches {name}"
    # The penalties stay what validation chose (see prior_predictor's docstring).
    assert not any("log_l2" in v.path for v in trainable)


def test_saved_model_predicts_as_in_python():
    from export.serving import ServingModule  # noqa: PLC0415
    model, _, _ = make_model()
    support, ratings, queries, _ = make_episode()
    ids = np.arange(M, dtype=np.int64) * 10 + 7   # movieIds, not row numbers
    module = ServingModule(model, vocabulary=ids)
    with tempfile.TemporaryDirectory() as path:
        tf.saved_model.save(module, path, signatures=module.signatures())
        served = tf.saved_model.load(path).signatures
        begun = served["begin"](support=tf.constant(ids[support]))
        assert begun["embeddings"].shape[-1] == model.config.embedding_width
        labels = np.full((B, P), -1.0, np.float32)
        labeled = np.zeros((B, P), np.int32)
        state = begun["state"]
        observed = served["observe"](embeddings=begun["embeddings"], state=state,
                                     labels=tf.constant(labels), labeled=tf.constant(labeled),
                                     index=tf.zeros([B], tf.int32),
                                     label=tf.constant(ratings[:, 0]))
        answer = served["predict"](embeddings=begun["embeddings"], state=observed["state"],
                                   labels=observed["labels"], labeled=observed["labeled"],
                                   queries=tf.constant(ids[queries]))["ratings"].numpy()
    embeddings, state = model.begin(support)
    state, labels, mask = model.observe(embeddings, state, tf.constant(labels),
                                        tf.constant(labeled == 1), tf.zeros([B], tf.int32),
                                        tf.constant(ratings[:, 0]))
    expected = model.predict(embeddings, state, labels, mask, queries).numpy()
    np.testing.assert_allclose(answer, expected, atol=1e-5)
    # After one rating the served predictions differ across movies.
    assert np.all(answer.std(axis=1) > 1e-2)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
