"""Property tests (Hypothesis): every generated input gets a named error or a
correct answer, never NaN output or a failure deep inside a layer.

Over the serving signatures (`begin`, `select`, `observe` of both tasks, run
in-process: the same validated functions the SavedModel exports) and over the
files loaders read (session files, `model_config.json`, ratings files).
Example counts are small so the file runs in seconds; the properties, not
the counts, are the point.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import active_learning  # noqa: F401,E402

import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from active_learning import checkpoints  # noqa: E402
from active_learning.config import MAX_MEAN_PIXEL, ModelConfig  # noqa: E402
from active_learning.data import movielens  # noqa: E402
from active_learning.model import ActiveMatchingNetwork  # noqa: E402
from active_learning.session import ActiveSession  # noqa: E402
from export.serving import ServingModule  # noqa: E402

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])
VOCABULARY = np.arange(12, dtype=np.int64) * 10 + 1
SPECIAL = [np.nan, np.inf, -np.inf, -0.5, 1.5, 255.0, 0.0, 1.0]


@pytest.fixture(scope="module")
def modules():
    keras.utils.set_random_seed(3)
    classification = ActiveMatchingNetwork(ModelConfig(embed_dim=8, units=8, max_classes=4))
    ratings = ActiveMatchingNetwork(ModelConfig(task="regression", embed_dim=8, units=8,
                                                num_items=len(VOCABULARY)))
    return {"classification": ServingModule(classification),
            "regression": ServingModule(ratings, vocabulary=VOCABULARY)}


def _answer_or_named_error(call, prefix):
    """(outputs as numpy, None) or (None, message of an error naming an input)."""
    try:
        return {k: v.numpy() for k, v in call().items()}, None
    except tf.errors.InvalidArgumentError as e:
        assert prefix in e.message, e.message[:500]
        return None, e.message


@st.composite
def image_batches(draw):
    batch, pool = draw(st.integers(0, 2)), draw(st.integers(0, 3))
    size = draw(st.sampled_from([28, 14]))
    rng = np.random.RandomState(draw(st.integers(0, 2**31 - 1)))
    images = (rng.rand(batch, pool, size, size, 1) > 0.8).astype(np.float32)
    kind = draw(st.sampled_from(["ink", "ink", "0-255", "inverted", "noise"]))
    if kind == "0-255":
        images *= 255.0
    elif kind == "inverted":
        images = 1.0 - images
    elif kind == "noise":
        images = rng.normal(0.2, 0.6, images.shape).astype(np.float32)
    for _ in range(draw(st.integers(0, 2))):
        if images.size:
            images.flat[draw(st.integers(0, images.size - 1))] = draw(st.sampled_from(SPECIAL))
    return images


def _valid_images(x):
    if x.shape[0] == 0 or x.shape[1] == 0 or not np.all(np.isfinite(x)):
        return False
    means = x.reshape(x.shape[0], x.shape[1], -1).mean(-1)
    return x.min() >= 0 and x.max() <= 1 and np.all(means <= MAX_MEAN_PIXEL)


@SETTINGS
@given(images=image_batches())
def test_begin_on_images(modules, images):
    out, error = _answer_or_named_error(
        lambda: modules["classification"].begin(tf.constant(images)), "begin: input `support`")
    assert (error is None) == _valid_images(images), (images.shape, error)
    if out is not None:
        assert out["embeddings"].shape == images.shape[:2] + (8,)
        assert np.all(np.isfinite(out["embeddings"])) and np.all(np.isfinite(out["state"]))


@st.composite
def id_batches(draw):
    batch, pool = draw(st.integers(0, 2)), draw(st.integers(0, 5))
    known = st.sampled_from(VOCABULARY.tolist())
    ids = st.one_of(known, known, known, st.integers(-5, 200))
    return np.asarray(draw(st.lists(st.lists(ids, min_size=pool, max_size=pool),
                                    min_size=batch, max_size=batch)),
                      np.int64).reshape(batch, pool)


@SETTINGS
@given(ids=id_batches())
def test_begin_on_movie_ids(modules, ids):
    out, error = _answer_or_named_error(
        lambda: modules["regression"].begin(tf.constant(ids)), "begin: input `support`")
    valid = (ids.size > 0 and np.isin(ids, VOCABULARY).all()
             and all(len(set(row)) == len(row) for row in ids.tolist()))
    assert (error is None) == valid, (ids.tolist(), error)
    if out is not None:
        assert np.all(np.isfinite(out["embeddings"])) and np.all(np.isfinite(out["state"]))


POOL = 5


@pytest.fixture(scope="module")
def episodes(modules):
    rng = np.random.RandomState(0)
    images = (rng.rand(2, POOL, 28, 28, 1) > 0.8).astype(np.float32)
    ids = np.stack([rng.choice(VOCABULARY, POOL, replace=False) for _ in range(2)])
    out = {}
    for task, items in (("classification", images), ("regression", ids)):
        begun = modules[task].begin(tf.constant(items))
        out[task] = (begun["embeddings"].numpy(), begun["state"].numpy())
    return out


@st.composite
def select_inputs(draw):
    task = draw(st.sampled_from(["classification", "regression"]))
    labeled = np.asarray(draw(st.lists(st.sampled_from([0, 0, 0, 1, 1, 2, -1]),
                                       min_size=2 * POOL, max_size=2 * POOL)),
                         np.int32).reshape(2, POOL)
    if task == "classification":
        label_values = st.integers(-2, 5)
    else:
        label_values = st.sampled_from([0.0, 0.5, 3.5, 5.0, 7.0, -1.0, np.nan])
    labels = np.asarray(draw(st.lists(label_values, min_size=2 * POOL, max_size=2 * POOL)),
                        np.int32 if task == "classification" else np.float32).reshape(2, POOL)
    k = draw(st.integers(-1, POOL + 1))
    poison = draw(st.sampled_from([None, None, None, "embeddings", "state"]))
    return task, labels, labeled, k, poison


def _valid_episode(task, labels, labeled, poison):
    if poison or not np.isin(labeled, [0, 1]).all():
        return False
    known = labels[labeled == 1]
    if task == "classification":
        return bool(np.all((known >= 0) & (known < 4)))
    return bool(np.all(np.isfinite(labels)) and np.all((known >= 0.5) & (known <= 5.0)))


def _poisoned(episodes, task, poison):
    embeddings, state = (x.copy() for x in episodes[task])
    if poison == "embeddings":
        embeddings[1, 2, 3] = np.nan
    if poison == "state":
        state[0, 1] = np.inf
    return embeddings, state


@SETTINGS
@given(inputs=select_inputs())
def test_select(modules, episodes, inputs):
    task, labels, labeled, k, poison = inputs
    embeddings, state = _poisoned(episodes, task, poison)
    out, error = _answer_or_named_error(lambda: modules[task].select(
        tf.constant(embeddings), tf.constant(state), tf.constant(labels),
        tf.constant(labeled), tf.constant(k, tf.int32)), "select: input `")
    unlabelled = (labeled == 0).sum(-1)
    valid = _valid_episode(task, labels, labeled, poison) and 1 <= k <= unlabelled.min()
    assert (error is None) == valid, (task, labels, labeled, k, poison, error)
    if out is not None:
        p = out["probabilities"]
        assert np.all(np.isfinite(p)) and np.all(p[labeled == 1] == 0)
        np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
        assert np.all(np.take_along_axis(labeled, out["index"][:, None], 1) == 0)


@SETTINGS
@given(inputs=select_inputs(), index=st.lists(st.integers(-1, POOL), min_size=2, max_size=2),
       label=st.sampled_from([0, 3, 4, -1]))
def test_observe(modules, episodes, inputs, index, label):
    task, labels, labeled, _, poison = inputs
    embeddings, state = _poisoned(episodes, task, poison)
    value = label if task == "classification" else [3.5, 0.0, 5.0, np.nan][[0, 3, 4, -1]
                                                                            .index(label)]
    new = np.full([2], value, np.int32 if task == "classification" else np.float32)
    out, error = _answer_or_named_error(lambda: modules[task].observe(
        tf.constant(embeddings), tf.constant(state), tf.constant(labels),
        tf.constant(labeled), tf.constant(index, tf.int32), tf.constant(new)),
        "observe: input `")
    index = np.asarray(index)
    in_range = np.all((index >= 0) & (index < POOL))
    new_ok = (0 <= value < 4) if task == "classification" else (0.5 <= value <= 5.0)
    valid = (_valid_episode(task, labels, labeled, poison) and in_range and new_ok
             and np.all(labeled[np.arange(2), np.clip(index, 0, POOL - 1)] == 0))
    assert (error is None) == bool(valid), (task, labels, labeled, index, value, error)
    if out is not None:
        assert np.all(np.isfinite(out["state"]))
        assert np.all(out["labeled"][np.arange(2), index] == 1)


# ------------------------------------------------------------------ loaders
@pytest.fixture(scope="module")
def session_file(modules):
    root = tempfile.mkdtemp(prefix="property_test_")
    model = modules["regression"].model
    session = ActiveSession(model, VOCABULARY[:6], vocabulary=VOCABULARY)
    session.teach(2, 4.0)
    path = os.path.join(root, "session.npz")
    session.save(path)
    with open(path, "rb") as f:
        content = f.read()
    yield root, model, content
    shutil.rmtree(root, ignore_errors=True)


@SETTINGS
@given(data=st.data())
def test_session_file_damage_is_named(session_file, data):
    root, model, content = session_file
    how = data.draw(st.sampled_from(["truncate", "flip", "insert"]))
    at = data.draw(st.integers(0, len(content) - 1))
    if how == "truncate":
        damaged = content[:at]
    elif how == "flip":
        damaged = content[:at] + bytes([content[at] ^ data.draw(st.integers(1, 255))]) \
            + content[at + 1:]
    else:
        damaged = content[:at] + data.draw(st.binary(min_size=1, max_size=8)) + content[at:]
    path = os.path.join(root, "damaged.npz")
    with open(path, "wb") as f:
        f.write(damaged)
    try:
        session = ActiveSession.load(path, model, vocabulary=VOCABULARY)
    except ValueError as e:
        assert "session file" in str(e) or "saved with another model" in str(e) \
            or "session but the model is" in str(e), str(e)
        return
    # Some bytes (zip comments, padding) carry nothing: then it loads whole.
    assert session.labeled_indices.tolist() == [2]
    assert np.all(np.isfinite(session.probabilities()))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 100) | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(["task", "embed_dim", "units", "max_classes",
                                       "num_items", "labelled_mass_temperatures", "x"]),
                      children, max_size=4),
    max_leaves=8)


@SETTINGS
@given(value=json_values, raw=st.booleans())
def test_model_config_file_is_read_or_named(value, raw):
    root = tempfile.mkdtemp(prefix="property_test_")
    try:
        path = os.path.join(root, checkpoints.MODEL_CONFIG)
        with open(path, "w") as f:
            f.write(json.dumps(value)[:-1] if raw else json.dumps(value))
        try:
            config = checkpoints.load_model_config(root)
        except ValueError as e:
            assert path in str(e), str(e)
            return
        assert isinstance(config, ModelConfig)
    finally:
        shutil.rmtree(root, ignore_errors=True)


cells = st.one_of(st.integers(-3, 300).map(str), st.sampled_from(["", "x", "3.5", "nan",
                                                                  "1e9", "4.0", " 2 "]))


@SETTINGS
@given(rows=st.lists(st.lists(cells, min_size=2, max_size=5), max_size=6),
       header=st.booleans())
def test_ratings_file_is_read_or_named(rows, header):
    root = tempfile.mkdtemp(prefix="property_test_")
    try:
        path = os.path.join(root, "ratings.csv")
        lines = (["userId,movieId,rating,timestamp"] if header else []) + \
            [",".join(row) for row in rows]
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        try:
            frame = movielens.read_ratings_file(path)
        except ValueError as e:
            assert path in str(e), str(e)
            return
        assert len(frame) > 0
        assert np.all(np.isfinite(frame["rating"].to_numpy(np.float64)))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
