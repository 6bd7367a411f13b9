"""Tests of `ActiveSession` over an in-memory model, a SavedModel and REST.

The REST path runs against a tiny stand-in for `tensorflow_model_server`: an
`http.server` on 127.0.0.1 in a thread that answers `:predict` requests (TF
Serving's columnar JSON format) by calling the loaded SavedModel's
signatures. It stops itself after a while even if a test forgets to.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import active_learning  # noqa: F401,E402  (first: sets TensorFlow's log level)

import http.server
import json
import shutil
import sys
import tempfile
import threading
from unittest import mock

from absl.testing import parameterized
import keras
import numpy as np
import pytest
import tensorflow as tf

from active_learning.backends import RestBackend
from active_learning.config import ModelConfig
from active_learning.model import ActiveMatchingNetwork
from active_learning.session import ActiveSession
from active_learning import rest_client as client_lib
from export import saved_model as export_lib

NUM_ITEMS = 30
VOCABULARY = np.arange(NUM_ITEMS, dtype=np.int64) * 7 + 100
POOL, STEPS = 8, 3
TOL = 1e-5
TASKS = ("classification", "regression")


class FakeServing:
    """Serves a loaded SavedModel's signatures like TF Serving's REST API."""

    def __init__(self, loaded, name="active_learner", lifetime_s=120.0):
        self.requests = 0
        self.signatures = []  # the signature of each :predict request, in order
        serving = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def reply(self, status, body):
                data = json.dumps(body).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path.rstrip("/") == f"/v1/models/{name}":
                    self.reply(200, {"model_version_status": [
                        {"version": "1", "state": "AVAILABLE"}]})
                elif self.path.rstrip("/") == f"/v1/models/{name}/metadata":
                    # TF Serving's model metadata: the signature definitions.
                    self.reply(200, {"model_spec": {"name": name, "version": "1"},
                                     "metadata": {"signature_def": {"signature_def": {
                                         key: {} for key in loaded.signatures}}}})
                else:
                    self.reply(404, {"error": f"no such path {self.path}"})

            def do_POST(self):
                serving.requests += 1
                if self.path != f"/v1/models/{name}:predict":
                    return self.reply(404, {"error": f"no such path {self.path}"})
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                signature = body.get("signature_name", "serving_default")
                serving.signatures.append(signature)
                inputs = body.get("inputs")
                if signature not in loaded.signatures:
                    return self.reply(400, {"error": f"no signature {signature}"})
                if not inputs:
                    # As TF Serving: a request needs at least one input.
                    return self.reply(400, {"error": "Failed to get input map for "
                                                     f"signature: {signature}"})
                function = loaded.signatures[signature]
                specs = function.structured_input_signature[1]
                if set(inputs) != set(specs):
                    return self.reply(400, {"error": f"inputs {sorted(inputs)} do not "
                                                     f"match {sorted(specs)}"})
                try:
                    args = {key: tf.constant(np.asarray(value), specs[key].dtype)
                            for key, value in inputs.items()}
                    outputs = function(**args)
                except (tf.errors.OpError, TypeError, ValueError) as e:
                    return self.reply(400, {"error": getattr(e, "message", str(e))})
                values = {}
                for key, value in outputs.items():
                    value = value.numpy()
                    values[key] = (value.decode() if isinstance(value, bytes)
                                   else value.tolist())
                # TF Serving returns a lone output without its name.
                if len(values) == 1:
                    return self.reply(200, {"outputs": next(iter(values.values()))})
                return self.reply(200, {"outputs": values})

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/models/{name}"
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        # Bounded: the server shuts itself down after `lifetime_s`.
        self.timer = threading.Timer(lifetime_s, self.server.shutdown)
        self.timer.daemon = True
        self.timer.start()

    def close(self):
        self.timer.cancel()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


class Shared:
    root = None


def setUpModule():
    Shared.root = tempfile.mkdtemp(prefix="session_test_")
    Shared.models, Shared.exports, Shared.loaded, Shared.servers = {}, {}, {}, {}
    for task in TASKS:
        keras.utils.set_random_seed(1)
        if task == "classification":
            config = ModelConfig(embed_dim=16, units=16, max_classes=5)
        else:
            config = ModelConfig(task="regression", embed_dim=16, units=16,
                                 num_items=NUM_ITEMS)
        model = ActiveMatchingNetwork(config)
        base = os.path.join(Shared.root, task)
        Shared.models[task] = model
        Shared.exports[task] = export_lib.export_saved_model(
            model, base, vocabulary=VOCABULARY if task == "regression" else None)
        Shared.loaded[task] = tf.saved_model.load(Shared.exports[task])
        Shared.servers[task] = FakeServing(Shared.loaded[task])
    rng = np.random.default_rng(0)
    Shared.pools = {
        "classification": (rng.random((POOL, 28, 28)) > 0.8).astype(np.float32),
        "regression": rng.choice(VOCABULARY, POOL, replace=False),
    }
    Shared.queries = {
        "classification": (rng.random((3, 28, 28, 1)) > 0.8).astype(np.float32),
        "regression": rng.choice(VOCABULARY, 3),
    }
    Shared.truth = {"classification": rng.integers(0, 5, POOL).astype(np.int32),
                    "regression": (rng.integers(1, 11, POOL) / 2).astype(np.float32)}


def tearDownModule():
    for server in getattr(Shared, "servers", {}).values():
        server.close()
    if Shared.root:
        shutil.rmtree(Shared.root, ignore_errors=True)


def source(task, kind):
    """What ActiveSession is built from, and its keyword arguments."""
    if kind == "memory":
        kwargs = {"vocabulary": VOCABULARY} if task == "regression" else {}
        return Shared.models[task], kwargs
    if kind == "saved_model":
        return os.path.dirname(Shared.exports[task]), {}  # base dir: latest version
    return Shared.servers[task].url, {}


def run_session(task, kind, seed=0, steps=STEPS):
    """A scripted session; what it asked, what it saw, what it predicts."""
    model, kwargs = source(task, kind)
    session = ActiveSession(model, Shared.pools[task], seed=seed, **kwargs)
    asked, probabilities = [], []
    for _ in range(steps):
        probabilities.append(session.probabilities())
        (index,) = session.query()
        asked.append(int(index))
        session.teach(index, Shared.truth[task][index])
    return session, {"asked": asked, "probabilities": np.stack(probabilities),
                     "predictions": session.predict(Shared.queries[task]),
                     "pool_predictions": session.predict()}


class ActiveSessionTest(tf.test.TestCase, parameterized.TestCase):

    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(dir=Shared.root)

    def assert_same_run(self, got, expected):
        self.assertEqual(got["asked"], expected["asked"])
        for key in ("probabilities", "predictions", "pool_predictions"):
            self.assertAllClose(got[key], expected[key], atol=TOL, rtol=0)

    @parameterized.product(task=TASKS, kind=["saved_model", "rest"])
    def test_backends_agree(self, task, kind):
        _, expected = run_session(task, "memory")
        session, got = run_session(task, kind)
        self.assert_same_run(got, expected)
        self.assertEqual(session.task, task)
        if task == "classification":
            self.assertEqual(got["predictions"].shape, (3, 5))
            self.assertAllClose(got["predictions"].sum(-1), np.ones(3), atol=1e-5)
        else:
            self.assertEqual(got["predictions"].shape, (3,))

    def test_rest_calls_the_server(self):
        before = Shared.servers["regression"].requests
        run_session("regression", "rest", steps=1)
        self.assertGreater(Shared.servers["regression"].requests, before)

    def test_rest_sessions_of_scalable_models_send_one_request_per_label(self):
        # Where the served export has `observe_select` (TF Serving's metadata
        # says so), each label is one request that also answers the next
        # query; the picks and predictions are the in-memory session's.
        import dataclasses  # noqa: PLC0415
        keras.utils.set_random_seed(2)
        model = ActiveMatchingNetwork(dataclasses.replace(
            ModelConfig(embed_dim=16, units=16, max_classes=5),
            selector_features="scalable", selector_neighbours=4))
        loaded = tf.saved_model.load(export_lib.export_saved_model(
            model, os.path.join(self.tmp, "scalable")))
        server = FakeServing(loaded)
        try:
            pool, truth = Shared.pools["classification"], Shared.truth["classification"]
            sessions = [ActiveSession(model, pool, seed=3), ActiveSession(server.url, pool, seed=3)]
            self.assertTrue(sessions[1]._backend.fused_observe_select)
            for _ in range(STEPS):
                picks = [s.query() for s in sessions]
                self.assertAllEqual(picks[1], picks[0])
                for s in sessions:
                    s.teach(picks[0], truth[picks[0]])
            self.assertAllClose(sessions[1].predict(Shared.queries["classification"]),
                                sessions[0].predict(Shared.queries["classification"]),
                                atol=TOL, rtol=0)
            asked = [name for name in server.signatures if name != "metadata"]
            self.assertEqual(asked[:3 + STEPS], ["begin", "selection_index", "select_indexed"]
                             + ["observe_select"] * STEPS)
            # An export without the signature, or a server whose metadata
            # cannot be read: two requests a label, as before.
            backend = RestBackend(server.url)
            self.assertFalse(backend._serves("no_such_signature"))
            with mock.patch.object(client_lib.RestClient, "model_metadata",
                                   side_effect=client_lib.ServingError("not found", 404)):
                self.assertFalse(RestBackend(server.url).fused_observe_select)
        finally:
            server.close()

    def test_in_memory_dense_indices_match_movie_ids(self):
        _, expected = run_session("regression", "memory")
        model = Shared.models["regression"]
        pool = np.searchsorted(VOCABULARY, Shared.pools["regression"])
        session = ActiveSession(model, pool)
        for index in expected["asked"]:
            session.teach(index, Shared.truth["regression"][index])
        self.assertAllClose(session.predict(np.searchsorted(VOCABULARY,
                                                            Shared.queries["regression"])),
                            expected["predictions"], atol=TOL, rtol=0)
        with self.assertRaisesRegex(ValueError, "item indices must lie in"):
            session.predict([NUM_ITEMS])
        with self.assertRaisesRegex(ValueError, "unknown to the model's vocabulary"):
            ActiveSession(model, [100, 5], vocabulary=VOCABULARY)

    @parameterized.parameters(*TASKS)
    def test_query_k_is_the_joint_choice_of_select(self, task):
        session = ActiveSession(Shared.exports[task], Shared.pools[task])
        session.teach(2, Shared.truth[task][2])
        top = session.query(3)
        p = session.probabilities()
        self.assertLen(set(top.tolist()), 3)
        self.assertNotIn(2, top)
        # The first of the k is the single best item; the others are picked
        # given it (pending), not by their rank in `p`.
        self.assertEqual(session.query(1)[0], top[0])
        self.assertEqual(p[2], 0.0)
        self.assertAllClose(p.sum(), 1.0, atol=1e-6)
        # The same choice as the exported `select` signature's top_k.
        episode = session._episode()
        expected = Shared.loaded[task].signatures["select"](
            **{k: tf.constant(v) for k, v in episode.items()}, k=tf.constant(3))
        self.assertAllEqual(top, expected["top_k"][0])
        with self.assertRaisesRegex(ValueError, "k must be >= 1"):
            session.query(0)
        with self.assertRaisesRegex(ValueError, "only 7 unlabelled"):
            session.query(POOL)

    @parameterized.parameters(*TASKS)
    def test_teach_rejects_bad_input_and_changes_nothing(self, task):
        session = ActiveSession(Shared.models[task], Shared.pools[task],
                                **source(task, "memory")[1])
        session.teach(1, Shared.truth[task][1])
        before = session.probabilities()
        bad_label = 5 if task == "classification" else 5.5
        cases = [
            ((POOL, Shared.truth[task][0]), "out of range"),
            ((-1, Shared.truth[task][0]), "out of range"),
            ((1, Shared.truth[task][0]), "already labelled"),
            (([0, 0], Shared.truth[task][:2]), "repeated"),
            (([0, 1], Shared.truth[task][:2]), "already labelled"),
            ((0, bad_label), "outside"),
            (([0, 2], Shared.truth[task][:1]), "labels for 2 indices"),
        ]
        for (indices, labels), message in cases:
            with self.assertRaisesRegex(ValueError, message):
                session.teach(indices, labels)
        self.assertAllEqual(session.labeled_indices, [1])
        self.assertAllClose(session.probabilities(), before)

    @parameterized.parameters(*TASKS)
    def test_teach_many_equals_one_by_one(self, task):
        truth = Shared.truth[task]
        one = ActiveSession(Shared.models[task], Shared.pools[task], **source(task, "memory")[1])
        many = ActiveSession(Shared.models[task], Shared.pools[task],
                             **source(task, "memory")[1])
        for i in (4, 0, 6):
            one.teach(i, truth[i])
        many.teach([4, 0, 6], truth[[4, 0, 6]])
        self.assertAllEqual(many.labeled_indices, [4, 0, 6])
        self.assertAllClose(many.labels, truth[[4, 0, 6]])
        self.assertAllClose(many.probabilities(), one.probabilities(), atol=TOL)
        self.assertAllClose(many.predict(), one.predict(), atol=TOL)

    def test_skip_leaves_items_out(self):
        session = ActiveSession(Shared.exports["regression"], Shared.pools["regression"])
        (first,) = session.query()
        session.skip(first)
        self.assertNotIn(first, session.query(POOL - 1))
        self.assertEqual(session.probabilities()[first], 0.0)
        self.assertAllClose(session.probabilities().sum(), 1.0, atol=1e-6)
        self.assertAllEqual(session.skipped_indices, [first])
        self.assertNotIn(first, session.unlabeled_indices)
        session.teach(first, 4.0)  # a skipped item may still be taught later
        self.assertAllEqual(session.skipped_indices, [])
        for i in session.unlabeled_indices:
            session.skip(i)
        self.assertAllEqual(session.probabilities(), np.zeros(POOL))
        with self.assertRaisesRegex(ValueError, "only 0 unlabelled"):
            session.query()

    @parameterized.parameters(("classification", "memory", "saved_model"),
                              ("regression", "saved_model", "rest"))
    def test_save_and_load_resume_the_session(self, task, first, second):
        _, expected = run_session(task, "memory", seed=5, steps=4)
        model, kwargs = source(task, first)
        session = ActiveSession(model, Shared.pools[task], seed=5, **kwargs)
        for index in expected["asked"][:2]:
            self.assertEqual(session.query()[0], index)
            session.teach(index, Shared.truth[task][index])
        path = os.path.join(self.tmp, "session.npz")
        session.save(path)
        model, kwargs = source(task, second)
        restored = ActiveSession.load(path, model, **kwargs)
        self.assertEqual(restored.seed, 5)
        self.assertAllEqual(restored.labeled_indices, expected["asked"][:2])
        for index in expected["asked"][2:]:
            self.assertEqual(restored.query()[0], index)
            restored.teach(index, Shared.truth[task][index])
        self.assertAllClose(restored.predict(Shared.queries[task]), expected["predictions"],
                            atol=TOL, rtol=0)
        other = "regression" if task == "classification" else "classification"
        with self.assertRaisesRegex(ValueError, f"holds a {task} session"):
            ActiveSession.load(path, Shared.exports[other])

    def test_damaged_session_files_are_named(self):
        session = ActiveSession(Shared.models["regression"], Shared.pools["regression"],
                                vocabulary=VOCABULARY)
        path = os.path.join(self.tmp, "good.npz")
        session.save(path)
        with open(path, "rb") as f:
            good = f.read()
        damaged = {"empty": b"", "truncated": good[:len(good) // 2],
                   "corrupt": b"\x93NUMPY garbage" + bytes(range(256)),
                   "json": b'{"not": "a session"}'}
        for name, content in damaged.items():
            bad = os.path.join(self.tmp, f"{name}.npz")
            with open(bad, "wb") as f:
                f.write(content)
            with self.assertRaisesRegex(ValueError, f"{bad} is not a readable session file",
                                        msg=name):
                ActiveSession.load(bad, Shared.models["regression"], vocabulary=VOCABULARY)
        with self.assertRaisesRegex(ValueError, "lacks \\['task'"):
            np.savez(os.path.join(self.tmp, "partial.npz"), format=np.int64(2))
            ActiveSession.load(os.path.join(self.tmp, "partial.npz"),
                               Shared.models["regression"], vocabulary=VOCABULARY)

    def test_session_loads_only_into_the_model_that_wrote_it(self):
        keras.utils.set_random_seed(7)
        other = ActiveMatchingNetwork(Shared.models["regression"].config)  # same shapes
        session = ActiveSession(Shared.exports["regression"], Shared.pools["regression"])
        session.teach(0, 4.0)
        path = os.path.join(self.tmp, "session.npz")
        session.save(path)
        # The in-memory model the export came from is the same model.
        ActiveSession.load(path, Shared.models["regression"], vocabulary=VOCABULARY)
        with self.assertRaisesRegex(ValueError, "saved with another model \\(fingerprint "
                                    ".*allow_other_model=True"):
            ActiveSession.load(path, other, vocabulary=VOCABULARY)
        restored = ActiveSession.load(path, other, vocabulary=VOCABULARY,
                                      allow_other_model=True)
        self.assertAllEqual(restored.labeled_indices, [0])

    def test_pool_values_are_checked(self):
        images = Shared.pools["classification"]
        model = Shared.models["classification"]
        contract = "looks like 0-255 or inverted ink: images are float32 in \\[0, 1\\]"
        with self.assertRaisesRegex(ValueError, f"outside \\[0, 1\\].*{contract}"):
            ActiveSession(model, images * 255)
        with self.assertRaisesRegex(ValueError, f"mean pixel exceeds 0.5.*{contract}"):
            ActiveSession(model, 1.0 - images)
        with self.assertRaisesRegex(ValueError, "NaN or Inf pixels"):
            ActiveSession(model, np.where(np.arange(POOL)[:, None, None] == 2, np.nan, images))
        pool = Shared.pools["regression"].copy()
        pool[3] = pool[5]
        with self.assertRaisesRegex(ValueError, f"the pool repeats item ids \\[{pool[5]}\\]"):
            ActiveSession(Shared.exports["regression"], pool)
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "repeats an item"):
            # The signature checks it too, for clients other than this one.
            Shared.loaded["regression"].signatures["begin"](support=tf.constant(pool[None]))

    def test_seed_breaks_ties(self):
        def order(seed):
            session = ActiveSession(Shared.models["regression"], Shared.pools["regression"],
                                    seed=seed, vocabulary=VOCABULARY)
            picks = []
            for _ in range(POOL):  # one at a time: k > 1 is the model's joint choice
                session._probabilities = np.full(POOL, 1.0 / POOL, np.float32)  # all tied
                (index,) = session.query(1)
                picks.append(int(index))
                session.skip(index)
            return picks

        self.assertEqual(order(0), order(0))
        self.assertNotEqual(order(0), order(1))
        self.assertCountEqual(order(2), range(POOL))

    def test_bad_sources(self):
        with self.assertRaisesRegex(FileNotFoundError, "neither a SavedModel"):
            ActiveSession(self.tmp, Shared.pools["regression"])
        with self.assertRaisesRegex(ValueError, "REST model URL"):
            client_lib.RestClient("http://127.0.0.1:1/predict")
        with self.assertRaisesRegex(ValueError, "square grey-scale images"):
            ActiveSession(Shared.models["classification"], np.zeros((3, 28, 20)))
        with self.assertRaisesRegex(ValueError, "at least one item"):
            ActiveSession(Shared.exports["regression"], np.zeros([0], np.int64))

    def test_rest_errors_name_the_input(self):
        client = client_lib.RestClient(Shared.servers["regression"].url)
        meta = client.metadata()
        self.assertEqual(meta["task"], "regression")
        self.assertEqual(meta["state_size"], 32)
        with self.assertRaises(client_lib.ServingError) as caught:
            client.predict("begin", {"support": [[100, 12345]]})
        self.assertEqual(caught.exception.status, 400)
        self.assertIn("input `support` holds item ids unknown", caught.exception.message)
        self.assertIn("12345", caught.exception.message)
        with self.assertRaisesRegex(client_lib.ServingError, "unknown.*12345"):
            ActiveSession(Shared.servers["regression"].url, [100, 12345])
        dead = client_lib.RestClient("http://127.0.0.1:9/v1/models/x", timeout=2)
        with self.assertRaisesRegex(client_lib.ServingError, "cannot reach"):
            dead.status()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
