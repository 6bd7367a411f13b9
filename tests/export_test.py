"""Tests of the SavedModel export: command, signatures, parity, input checks.

Two tiny models (classification and ratings) are saved as model directories
the way the trainers write them, exported once (the ratings one through the
`python -m export.saved_model` command), and every test reads those exports.
External tools (a bare TensorFlow process, `saved_model_cli`) run as
subprocesses started early, so they overlap with the in-process tests.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import active_learning  # noqa: F401,E402  (first: sets TensorFlow's log level)

import io
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap

from absl.testing import parameterized
import keras
import numpy as np
import pytest
import tensorflow as tf

from active_learning import checkpoints
from active_learning.config import ModelConfig
from active_learning.data.omniglot import area_downsample
from active_learning.model import ActiveMatchingNetwork
from export import saved_model as export_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAVED_MODEL_CLI = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
NUM_ITEMS = 30
VOCABULARY = np.arange(NUM_ITEMS, dtype=np.int64) * 7 + 100  # movieIds != indices
BATCH, POOL, QUERIES, STEPS = 2, 10, 4, 3
TOL = 1e-5
FORBIDDEN_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}


def make_model_dir(root, task, seed=0):
    """A trained-model directory as the trainers lay it out; (model, dir)."""
    keras.utils.set_random_seed(seed)
    if task == "classification":
        config = ModelConfig(embed_dim=16, units=16, max_classes=5)
    else:
        # With the per-item prior (the MovieLens trainer's --item_prior), so parity
        # covers its bias table and attention slot.
        config = ModelConfig(task="regression", embed_dim=16, units=16, num_items=NUM_ITEMS,
                             item_prior=True)
    model = ActiveMatchingNetwork(config)
    if task == "regression":
        # Distinct biases, so a prior read from the wrong item would show.
        model.item_bias.assign(np.linspace(-1.0, 1.0, NUM_ITEMS, dtype=np.float32))
    model_dir = os.path.join(root, task)
    checkpoints.save_model_config(model_dir, config)
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model),
                               os.path.join(model_dir, "checkpoints"), 1).save()
    if task == "regression":
        checkpoints.save_vocabulary(model_dir, VOCABULARY)
    return model, model_dir


def make_episode(task, seed=0):
    """Support, queries and the labels a person would give, as numpy."""
    rng = np.random.default_rng(seed)
    if task == "classification":
        support = (rng.random((BATCH, POOL, 28, 28, 1)) > 0.8).astype(np.float32)
        queries = (rng.random((BATCH, QUERIES, 28, 28, 1)) > 0.8).astype(np.float32)
        truth = rng.integers(0, 5, (BATCH, POOL)).astype(np.int32)
    else:
        support = np.stack([rng.choice(VOCABULARY, POOL, replace=False)
                            for _ in range(BATCH)])
        queries = rng.choice(VOCABULARY, (BATCH, QUERIES))
        truth = (rng.integers(1, 11, (BATCH, POOL)) / 2).astype(np.float32)
    return support, queries, truth


def dense(items):
    """MovieIds -> the model's dense item indices."""
    return np.searchsorted(VOCABULARY, items).astype(np.int32)


def reference_episode(task):
    """The shared episode computed by the in-Python model (cached)."""
    if task not in Shared.references:
        Shared.references[task] = python_episode(Shared.models[task], task,
                                                 *Shared.episodes[task])
    return Shared.references[task]


def python_episode(model, task, support, queries, truth):
    """An episode computed by the in-Python model: a dict of numpy arrays."""
    if task == "regression":
        support, queries = dense(support), dense(queries)
        labels = np.zeros(truth.shape, np.float32)
    else:
        labels = np.full(truth.shape, -1, np.int32)
    embeddings, state = model.begin(tf.constant(support))
    labeled = tf.zeros(truth.shape, tf.bool)
    labels = tf.constant(labels)
    out = {"embeddings": embeddings.numpy(), "probabilities": [], "index": []}
    for _ in range(STEPS):
        logits = model.select(embeddings, state, labels, labeled)
        probabilities = tf.where(labeled, 0.0, tf.nn.softmax(logits, -1))
        index = tf.argmax(tf.where(labeled, -1e30, logits), -1, output_type=tf.int32)
        out["probabilities"].append(probabilities.numpy())
        out["index"].append(index.numpy())
        label = tf.gather(tf.constant(truth), index, batch_dims=1)
        state, labels, labeled = model.observe(embeddings, state, labels, labeled,
                                               index, label)
    out["state"] = state.numpy()
    out["labels"] = labels.numpy()
    out["predictions"] = model.predict(embeddings, state, labels, labeled,
                                       tf.constant(queries)).numpy()
    return out


# A client with nothing but TensorFlow and numpy: runs the same episode
# through `tf.saved_model.load(path).signatures` and saves what it saw.
EPISODE_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf

    def episode(path, inputs_path, outputs_path):
        inputs = np.load(inputs_path)
        sigs = tf.saved_model.load(path).signatures
        support, queries, truth = inputs["support"], inputs["queries"], inputs["truth"]
        out = sigs["begin"](support=tf.constant(support))
        embeddings, state = out["embeddings"], out["state"]
        if truth.dtype == np.int32:
            labels = tf.fill(truth.shape, -1)
        else:
            labels = tf.zeros(truth.shape, tf.float32)
        labeled = tf.zeros(truth.shape, tf.int32)
        probabilities, indices = [], []
        for _ in range(int(inputs["steps"])):
            chosen = sigs["select"](embeddings=embeddings, state=state, labels=labels,
                                    labeled=labeled, k=tf.constant(2))
            index = chosen["index"]
            probabilities.append(chosen["probabilities"].numpy())
            indices.append(index.numpy())
            label = tf.gather(tf.constant(truth), index, batch_dims=1)
            out = sigs["observe"](embeddings=embeddings, state=state, labels=labels,
                                  labeled=labeled, index=index, label=label)
            state, labels, labeled = out["state"], out["labels"], out["labeled"]
        out = sigs["predict"](embeddings=embeddings, state=state, labels=labels,
                              labeled=labeled, queries=tf.constant(queries))
        predictions = out["probabilities" if "probabilities" in out else "ratings"]
        np.savez(outputs_path, probabilities=np.stack(probabilities),
                 index=np.stack(indices), state=state.numpy(),
                 predictions=predictions.numpy())

    args = sys.argv[1:]
    for i in range(0, len(args), 3):
        episode(*args[i:i + 3])
    # Nothing of this package was needed.
    assert not any(m.startswith(("active_learning", "export")) for m in sys.modules)
""")



def clean_env():
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return env


def graph_op_types(concrete_function):
    """Op types of a function's graph and of every function it calls."""
    graph_def = concrete_function.graph.as_graph_def()
    types = {node.op for node in graph_def.node}
    for function in graph_def.library.function:
        types.update(node.op for node in function.node_def)
    return types


class Shared:
    """Models, model directories and exports shared by every test here."""

    root = None


def start(name, args, **kwargs):
    """Starts a background check; a test collects it with `collect(name)`."""
    Shared.jobs[name] = subprocess.Popen(args, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True, **kwargs)


def collect(name):
    """(returncode, stdout, stderr) of a background check."""
    proc = Shared.jobs[name]
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def setUpModule():
    # Subprocesses (the export command, saved_model_cli, a bare TensorFlow
    # client) each spend seconds importing TensorFlow: they are started as
    # early as their inputs exist and run beside the in-process work.
    Shared.root = root = tempfile.mkdtemp(prefix="export_test_")
    Shared.jobs, Shared.references, Shared.runs = {}, {}, {}
    Shared.models, Shared.model_dirs, Shared.exports = {}, {}, {}
    for task in ("classification", "regression"):
        Shared.models[task], Shared.model_dirs[task] = make_model_dir(root, task)
    base = os.path.join(root, "export_regression")
    start("command", [sys.executable, "-m", "export.saved_model",
                      f"--model_dir={Shared.model_dirs['regression']}",
                      f"--export_dir={base}"], cwd=REPO)

    Shared.exports["classification"] = path = export_lib.export_saved_model(
        Shared.models["classification"], os.path.join(root, "export_classification"),
        version=3, run_config={"task": "omniglot", "note": "test"})
    Shared.episodes = {task: make_episode(task) for task in ("classification", "regression")}
    cli = os.path.join(root, "cli")
    os.makedirs(cli)
    for name, value in cli_inputs().items():
        np.save(os.path.join(cli, f"{name}.npy"), value)
    start("cli_show", [SAVED_MODEL_CLI, "show", "--all", "--dir", path], env=clean_env())
    start("cli_run", [SAVED_MODEL_CLI, "run", "--dir", path, "--tag_set", "serve",
                      "--signature_def", "select",
                      "--inputs", ";".join(f"{n}={n}.npy" for n in CLI_INPUTS),
                      "--input_exprs", "k=3", "--outdir", "out"], cwd=cli, env=clean_env())

    Shared.command_result = collect("command")
    Shared.exports["regression"] = os.path.join(base, "1")
    Shared.loaded = {task: tf.saved_model.load(p) for task, p in Shared.exports.items()
                     if os.path.isdir(p)}
    external = os.path.join(root, "external")
    os.makedirs(external)
    args = []
    for task, p in Shared.exports.items():
        support, queries, truth = Shared.episodes[task]
        inputs = os.path.join(external, f"{task}_inputs.npz")
        np.savez(inputs, support=support, queries=queries, truth=truth, steps=STEPS)
        args += [p, inputs, os.path.join(external, f"{task}_outputs.npz")]
    start("episodes", [sys.executable, "-c", EPISODE_SCRIPT] + args, cwd=external,
          env=clean_env())


CLI_INPUTS = ("embeddings", "state", "labels", "labeled")


def cli_inputs():
    """Inputs of the `select` call run by saved_model_cli (classification)."""
    support, _, _ = Shared.episodes["classification"]
    embeddings, state = Shared.models["classification"].begin(tf.constant(support))
    labels = np.full((BATCH, POOL), -1, np.int32)
    labeled = np.zeros((BATCH, POOL), np.int32)
    labels[:, 2], labeled[:, 2] = 4, 1
    return {"embeddings": embeddings.numpy(), "state": state.numpy(), "labels": labels,
            "labeled": labeled}


def tearDownModule():
    for proc in getattr(Shared, "jobs", {}).values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    if Shared.root:
        shutil.rmtree(Shared.root, ignore_errors=True)


class ExportTest(tf.test.TestCase, parameterized.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        for name in ("root", "models", "model_dirs", "exports", "loaded", "episodes"):
            setattr(cls, name, getattr(Shared, name))

    def collect(self, name):
        returncode, out, err = collect(name)
        self.assertEqual(returncode, 0, f"{name} failed:\n{out}\n{err[-3000:]}")
        return out

    # ------------------------------------------------------------ the command
    def test_command_writes_next_version(self):
        returncode, out, err = Shared.command_result
        self.assertEqual(returncode, 0, f"{out}\n{err}")
        self.assertIn("exported", out)
        self.assertTrue(os.path.isfile(os.path.join(self.exports["regression"],
                                                    "saved_model.pb")))
        self.assertEqual(export_lib.next_version(os.path.dirname(self.exports["regression"])),
                         2)

    def test_refuses_to_overwrite_a_version(self):
        with self.assertRaisesRegex(FileExistsError, "refusing to overwrite"):
            export_lib.export_saved_model(self.models["classification"],
                                          os.path.dirname(self.exports["classification"]),
                                          version=3)

    def test_versions_and_latest(self):
        base = os.path.join(self.root, "versions")
        for name in ("1", "3", "tmp", ".tmp-4-1"):
            os.makedirs(os.path.join(base, name))
        self.assertEqual(export_lib.existing_versions(base), [1, 3])
        self.assertEqual(export_lib.next_version(base), 4)
        self.assertEqual(export_lib.next_version(os.path.join(self.root, "none")), 1)
        self.assertEqual(export_lib.latest_export(
            os.path.dirname(self.exports["classification"])), self.exports["classification"])

    def test_concurrent_exports_claim_distinct_versions(self):
        # Exports started at once into one base directory each get their own
        # version instead of one dying on the other's folder.
        import threading
        base = os.path.join(self.root, "concurrent")
        os.makedirs(os.path.join(base, "2"))
        claimed, barrier = [], threading.Barrier(8)

        def claim():
            barrier.wait()
            claimed.append(export_lib.claim_version(base))

        threads = [threading.Thread(target=claim) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertCountEqual(claimed, range(3, 11))
        self.assertEqual(export_lib.next_version(base), 11)  # claims count as taken
        with self.assertRaisesRegex(FileExistsError, "another export is writing .*5"):
            export_lib.claim_version(base, 5)
        for version in claimed:
            export_lib._release(base, version)
        self.assertEqual(export_lib.next_version(base), 3)
        self.assertEqual(export_lib.claim_version(base, 5), 5)

    def test_missing_checkpoint_fails_clearly(self):
        # The command's body in-process (the flag wiring is covered by the
        # subprocess run of the command above).
        model_dir = os.path.join(self.root, "untrained")
        checkpoints.save_model_config(model_dir, self.models["classification"].config)
        out, err = io.StringIO(), io.StringIO()
        status = export_lib.run_command(model_dir, os.path.join(self.root, "never"),
                                        stdout=out, stderr=err)
        self.assertEqual(status, 1)
        self.assertIn("export failed", err.getvalue())
        self.assertIn("no checkpoint", err.getvalue())
        self.assertEqual(out.getvalue(), "")
        self.assertFalse(os.path.exists(os.path.join(self.root, "never", "1")))

    def test_mismatched_checkpoint_is_rejected(self):
        model_dir = os.path.join(self.root, "mismatch")
        shutil.copytree(self.model_dirs["classification"], model_dir)
        config = json.loads(self.models["classification"].config.to_json())
        config["embed_dim"] = 8
        checkpoints.save_model_config(model_dir, ModelConfig.from_dict(config))
        with self.assertRaisesRegex(ValueError, "does not match"):
            export_lib.export_model_dir(model_dir, os.path.join(self.root, "never2"))

    # ----------------------------------------------------------- the graphs
    @parameterized.parameters("classification", "regression")
    def test_only_core_ops(self, task):
        signatures = self.loaded[task].signatures
        self.assertEqual(set(signatures), {"begin", "select", "observe", "observe_select",
                                           "predict", "metadata"})
        for name, function in signatures.items():
            types = graph_op_types(function)
            self.assertEmpty(types & FORBIDDEN_OPS, f"{task}/{name}: {types & FORBIDDEN_OPS}")
            self.assertNotEmpty(types)

    @parameterized.parameters("classification", "regression")
    def test_signatures_read_fixed_kernels_and_the_export_keeps_their_weights(self, task):
        # The weight-normalised kernels are computed once, at export
        # (`weight_norm.fixed_kernels`), not at every call; the weights they
        # came from stay in the export, for a model rebuilt from it.
        loaded = self.loaded[task]
        read = {v.name for f in loaded.signatures.values() for v in f.variables}
        self.assertNotEmpty({n for n in read if "fixed_kernel" in n})
        self.assertEmpty({n for n in read if "direction" in n or n.startswith("gain")}, read)
        kept = {v.name for v in loaded.model_variables}
        self.assertNotEmpty({n for n in kept if "direction" in n})
        self.assertEmpty({n for n in kept if "fixed_kernel" in n})

    @parameterized.parameters("classification", "regression")
    def test_metadata(self, task):
        meta = {k: v.numpy() for k, v in
                self.loaded[task].signatures["metadata"](dummy=tf.constant(0)).items()}
        self.assertEqual(meta["task"].decode(), task)
        self.assertEqual(meta["embed_dim"], 16)
        self.assertEqual(meta["state_size"], 32)
        self.assertIn("support", meta["input_spec"].decode())
        self.assertEqual(json.loads(meta["model_config"].decode())["task"], task)
        if task == "classification":
            self.assertEqual(meta["max_classes"], 5)
            self.assertEqual(meta["export_version"], 3)
            self.assertEqual(json.loads(meta["training_config"].decode())["note"], "test")
        else:
            self.assertEqual((meta["rating_min"], meta["rating_max"]), (0.5, 5.0))
            self.assertEqual(meta["export_version"], 1)
            self.assertIn("checkpoints", meta["checkpoint"].decode())
            self.assertAllEqual(self.loaded[task].vocabulary.numpy(), VOCABULARY)

    # ---------------------------------------------------------------- parity
    def run_exported(self, task, k=3):
        """The episode through the loaded signatures (in this process; cached)."""
        if (task, k) not in Shared.runs:
            Shared.runs[task, k] = self._run_exported(task, k)
        return Shared.runs[task, k]

    def begun(self, task):
        """(signatures, truth, embeddings, state, labels, labeled) of the task's
        episode after the loaded `begin`, nothing labelled yet."""
        sigs = self.loaded[task].signatures
        support, _, truth = self.episodes[task]
        out = sigs["begin"](support=tf.constant(support))
        labels = tf.constant(np.full(truth.shape, -1, np.int32) if task == "classification"
                             else np.zeros(truth.shape, np.float32))
        return (sigs, truth, out["embeddings"], out["state"], labels,
                tf.zeros(truth.shape, tf.int32))

    def _run_exported(self, task, k):
        sigs, truth, embeddings, state, labels, labeled = self.begun(task)
        queries = self.episodes[task][1]
        result = {"embeddings": embeddings.numpy(), "probabilities": [], "index": [],
                  "top_k": []}
        for _ in range(STEPS):
            chosen = sigs["select"](embeddings=embeddings, state=state, labels=labels,
                                    labeled=labeled, k=tf.constant(k))
            for key in ("probabilities", "index", "top_k"):
                result[key].append(chosen[key].numpy())
            label = tf.gather(tf.constant(truth), chosen["index"], batch_dims=1)
            out = sigs["observe"](embeddings=embeddings, state=state, labels=labels,
                                  labeled=labeled, index=chosen["index"], label=label)
            state, labels, labeled = out["state"], out["labels"], out["labeled"]
        out = sigs["predict"](embeddings=embeddings, state=state, labels=labels,
                              labeled=labeled, queries=tf.constant(queries))
        result["predictions"] = out["probabilities" if task == "classification"
                                    else "ratings"].numpy()
        result.update(state=state.numpy(), labels=labels.numpy(), labeled=labeled.numpy())
        return result

    @parameterized.parameters("classification", "regression")
    def test_observe_select_is_observe_then_select(self, task):
        # One call per label: the same state, labels and mask as `observe`,
        # and the same next pick and distribution as `select` after it.
        sigs, truth, embeddings, state, labels, labeled = self.begun(task)
        index = sigs["select"](embeddings=embeddings, state=state, labels=labels,
                               labeled=labeled, k=tf.constant(1))["index"]
        for _ in range(STEPS):
            episode = dict(embeddings=embeddings, state=state, labels=labels, labeled=labeled,
                           index=index, label=tf.gather(tf.constant(truth), index, batch_dims=1))
            fused = sigs["observe_select"](**episode)
            observed = sigs["observe"](**episode)
            following = sigs["select"](embeddings=embeddings, state=observed["state"],
                                       labels=observed["labels"], labeled=observed["labeled"],
                                       k=tf.constant(1))
            self.assertAllClose(fused["state"], observed["state"], atol=TOL, rtol=0)
            self.assertAllEqual(fused["labels"], observed["labels"])
            self.assertAllEqual(fused["labeled"], observed["labeled"])
            self.assertAllClose(fused["probabilities"], following["probabilities"], atol=TOL,
                                rtol=0)
            self.assertAllEqual(fused["index"], following["index"])
            state, labels, labeled, index = (fused["state"], fused["labels"], fused["labeled"],
                                             fused["index"])
        # The last unlabelled item of a pool goes through `observe`.
        last = np.ones(truth.shape, np.int32)
        last[:, 0] = 0
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                    "observe_select: every episode must keep an unlabelled"):
            sigs["observe_select"](**dict(
                episode, index=tf.zeros([BATCH], tf.int32), labeled=tf.constant(last),
                labels=tf.constant(np.where(last == 1, truth, labels.numpy()))))

    @parameterized.parameters("classification", "regression")
    def test_parity_with_the_python_model(self, task):
        expected = reference_episode(task)
        got = self.run_exported(task)
        self.assertAllClose(got["embeddings"], expected["embeddings"], atol=TOL, rtol=0)
        for t in range(STEPS):
            self.assertAllClose(got["probabilities"][t], expected["probabilities"][t],
                                atol=TOL, rtol=0)
            self.assertAllEqual(got["index"][t], expected["index"][t])
            self.assertAllEqual(got["top_k"][t][:, 0], got["index"][t])
        self.assertAllClose(got["state"], expected["state"], atol=TOL, rtol=0)
        self.assertAllClose(got["labels"], expected["labels"], atol=TOL, rtol=0)
        self.assertAllClose(got["predictions"], expected["predictions"], atol=TOL, rtol=0)
        self.assertEqual(got["labeled"].dtype, np.int32)
        self.assertAllEqual(got["labeled"].sum(-1), [STEPS] * BATCH)
        if task == "classification":
            self.assertEqual(got["predictions"].shape, (BATCH, QUERIES, 5))
        else:
            self.assertEqual(got["predictions"].shape, (BATCH, QUERIES))

    @parameterized.parameters("classification", "regression")
    def test_select_outputs(self, task):
        got = self.run_exported(task)
        for t in range(STEPS):
            p = got["probabilities"][t]
            self.assertAllClose(p.sum(-1), np.ones(BATCH), atol=1e-6)
            top_k = got["top_k"][t]
            self.assertEqual(top_k.shape, (BATCH, 3))
            self.assertEqual(top_k.dtype, np.int32)
            for b in range(BATCH):
                # Items labelled before step t carry exactly 0 and are never picked.
                earlier = [got["index"][s][b] for s in range(t)]
                self.assertAllEqual(p[b, earlier], np.zeros(len(earlier)))
                self.assertEmpty(set(top_k[b]) & set(earlier))
                # Chosen jointly, not by rank: k distinct items, the first the argmax.
                self.assertLen(set(top_k[b].tolist()), 3)
                self.assertEqual(top_k[b, 0], got["index"][t][b])
                self.assertEqual(top_k[b, 0], np.argmax(p[b]))

    @parameterized.parameters("classification", "regression")
    def test_subprocess_with_only_tensorflow(self, task):
        self.collect("episodes")
        got = np.load(os.path.join(self.root, "external", f"{task}_outputs.npz"))
        expected = reference_episode(task)
        self.assertAllClose(got["probabilities"], np.stack(expected["probabilities"]),
                            atol=TOL, rtol=0)
        self.assertAllEqual(got["index"], np.stack(expected["index"]))
        self.assertAllClose(got["state"], expected["state"], atol=TOL, rtol=0)
        self.assertAllClose(got["predictions"], expected["predictions"], atol=TOL, rtol=0)

    def test_large_images_are_area_resized(self):
        rng = np.random.default_rng(1)
        big = (rng.random((1, 3, 105, 105, 1)) > 0.7).astype(np.float32)
        small = area_downsample(big[0, ..., 0])[None, ..., None]
        begin = self.loaded["classification"].signatures["begin"]
        self.assertAllClose(begin(support=tf.constant(big))["embeddings"],
                            begin(support=tf.constant(small))["embeddings"], atol=TOL, rtol=0)

    # ------------------------------------------------------- saved_model_cli
    def test_saved_model_cli_show(self):
        out = self.collect("cli_show")
        for name in ("begin", "select", "observe", "predict", "metadata"):
            self.assertIn(f"signature_def['{name}']", out)
        self.assertIn("inputs['labeled']", out)
        self.assertIn("outputs['top_k']", out)

    def test_saved_model_cli_run(self):
        self.collect("cli_run")
        inputs = {name: tf.constant(value) for name, value in cli_inputs().items()}
        expected = self.loaded["classification"].signatures["select"](
            **inputs, k=tf.constant(3))
        for key in ("probabilities", "index", "top_k"):
            self.assertAllClose(
                np.load(os.path.join(self.root, "cli", "out", f"{key}.npy")),
                expected[key], atol=TOL, rtol=0)


class BadInputTest(tf.test.TestCase, parameterized.TestCase):
    """Every malformed input fails with InvalidArgumentError naming it."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.sigs, cls.episode = {}, {}
        for task in ("classification", "regression"):
            sigs = Shared.loaded[task].signatures
            support, queries, _ = Shared.episodes[task]
            out = sigs["begin"](support=tf.constant(support))
            labeled = np.zeros((BATCH, POOL), np.int32)
            labeled[:, 3] = 1
            if task == "classification":
                labels = np.full((BATCH, POOL), -1, np.int32)
                labels[:, 3] = 2
            else:
                labels = np.zeros((BATCH, POOL), np.float32)
                labels[:, 3] = 3.5
            cls.sigs[task] = sigs
            cls.episode[task] = dict(embeddings=out["embeddings"], state=out["state"],
                                     labels=tf.constant(labels), labeled=tf.constant(labeled))
            cls.episode[task + "_items"] = (support, queries)

    def call(self, task, signature, **changes):
        inputs = dict(self.episode[task])
        if signature == "select":
            inputs["k"] = tf.constant(1)
        if signature == "observe":
            inputs["index"] = tf.constant([0, 1])
            inputs["label"] = tf.constant([1, 2] if task == "classification" else [4.0, 2.5])
        if signature == "predict":
            inputs["queries"] = tf.constant(self.episode[task + "_items"][1])
        if signature == "begin":
            inputs = {"support": tf.constant(self.episode[task + "_items"][0])}
        for name, value in changes.items():
            inputs[name] = value(inputs[name]) if callable(value) else value
        return self.sigs[task][signature](**inputs)

    def assert_fails(self, pattern, task, signature, **changes):
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, pattern):
            self.call(task, signature, **changes)

    def test_valid_calls_pass(self):
        for task in ("classification", "regression"):
            for signature in ("begin", "select", "observe", "predict"):
                self.call(task, signature)

    @parameterized.product(task=["classification", "regression"],
                           signature=["select", "observe", "predict"])
    def test_wrong_rank(self, task, signature):
        self.assert_fails("input `embeddings` must have rank 3", task, signature,
                          embeddings=lambda e: e[0])
        self.assert_fails("input `state` must have rank 2", task, signature,
                          state=lambda s: s[:, None])
        self.assert_fails("input `labeled` must have rank 2", task, signature,
                          labeled=lambda m: m[0])

    @parameterized.parameters("classification", "regression")
    def test_wrong_rank_of_items_and_scalars(self, task):
        self.assert_fails("input `support` must have rank", task, "begin",
                          support=lambda s: s[0])
        self.assert_fails("input `queries` must have rank", task, "predict",
                          queries=lambda q: q[0])
        self.assert_fails("input `k` must have rank 0", task, "select",
                          k=tf.constant([1]))
        self.assert_fails("input `index` must have rank 1", task, "observe",
                          index=tf.constant([[0, 1]]))

    @parameterized.product(task=["classification", "regression"],
                           signature=["select", "observe", "predict"])
    def test_pool_size_mismatch(self, task, signature):
        self.assert_fails("input `labels` must be \\[batch, pool\\] like `embeddings`",
                          task, signature, labels=lambda l: l[:, :-1])
        self.assert_fails("input `labeled` must be \\[batch, pool\\] like `embeddings`",
                          task, signature, labeled=lambda m: m[:, :-1])
        self.assert_fails("input `embeddings` must be \\[batch, pool, 16\\]",
                          task, signature, embeddings=lambda e: e[:, :, :8])
        self.assert_fails("input `state` must be \\[batch, 32\\]",
                          task, signature, state=lambda s: s[:1])

    @parameterized.parameters("classification", "regression")
    def test_index_checks(self, task):
        self.assert_fails("input `index` must lie in 0..pool-1", task, "observe",
                          index=tf.constant([0, POOL]))
        self.assert_fails("input `index` must lie in 0..pool-1", task, "observe",
                          index=tf.constant([-1, 0]))
        self.assert_fails("input `index` names an item that is already labelled",
                          task, "observe", index=tf.constant([0, 3]))
        self.assert_fails("input `index` must be \\[batch\\]", task, "observe",
                          index=tf.constant([0]))

    def test_label_range(self):
        self.assert_fails("input `label` must be a class in 0..4", "classification",
                          "observe", label=tf.constant([1, 5]))
        self.assert_fails("input `label` must be a class in 0..4", "classification",
                          "observe", label=tf.constant([-1, 0]))
        self.assert_fails("input `label` must be a rating in \\[0.5, 5.0\\]", "regression",
                          "observe", label=tf.constant([5.5, 3.0]))
        self.assert_fails("input `label` must be a rating in \\[0.5, 5.0\\]", "regression",
                          "observe", label=tf.constant([np.nan, 3.0], tf.float32))
        self.assert_fails("input `labels` must hold a class in 0..4 wherever",
                          "classification", "select",
                          labels=lambda l: tf.where(tf.equal(l, 2), 9, l))
        self.assert_fails("input `labels` must hold a rating", "regression", "predict",
                          labels=lambda l: l * 0.0)
        self.assert_fails("input `labeled` must be a 0/1 mask", "regression", "select",
                          labeled=lambda m: m * 2)

    @parameterized.parameters("classification", "regression")
    def test_k_checks(self, task):
        self.assert_fails("input `k` must not exceed the number of unlabelled items",
                          task, "select", k=tf.constant(POOL))
        self.assert_fails("input `k` must be >= 1", task, "select", k=tf.constant(0))

    def test_unknown_movie_ids(self):
        self.assert_fails("input `support` holds item ids unknown to the model "
                          "vocabulary:.*\\[12345 3\\]", "regression", "begin",
                          support=tf.constant([[100, 12345, 3]], tf.int64))
        self.assert_fails("input `queries` holds item ids unknown.*\\[99\\]", "regression",
                          "predict", queries=lambda q: tf.concat(
                              [q[:, :1], tf.constant([[99], [100]], tf.int64)], 1))

    def test_image_checks(self):
        self.assert_fails("input `support` must hold square images", "classification",
                          "begin", support=tf.zeros([1, 2, 28, 30, 1]))
        self.assert_fails("input `queries` must hold single-channel \\(grey-scale\\) images",
                          "classification", "predict", queries=tf.zeros([2, 2, 28, 28, 3]))
        self.assert_fails("input `support` must hold at least one item", "classification",
                          "begin", support=tf.zeros([1, 0, 28, 28, 1]))
        self.assert_fails("input `queries` must have the batch of `embeddings`",
                          "classification", "predict", queries=tf.zeros([3, 2, 28, 28, 1]))

    @parameterized.parameters(("begin", "support"), ("predict", "queries"))
    def test_pixel_values(self, signature, name):
        contract = ("looks like 0-255 or inverted ink: images are float32 in \\[0, 1\\], "
                    "ink = 1")
        nan_pixel = lambda x: tf.tensor_scatter_nd_update(  # noqa: E731
            x, [[0, 0, 3, 3, 0]], [np.nan])
        self.assert_fails(f"input `{name}` holds NaN or Inf pixels", "classification",
                          signature, **{name: nan_pixel})
        self.assert_fails(f"input `{name}` has pixels outside \\[0, 1\\].*{contract}",
                          "classification", signature, **{name: lambda x: x * 255.0})
        self.assert_fails(f"input `{name}` has images whose mean pixel exceeds 0.5.*"
                          f"{contract}", "classification", signature,
                          **{name: lambda x: 1.0 - x})

    @parameterized.product(task=["classification", "regression"],
                           signature=["select", "observe", "predict"])
    def test_non_finite_episode_values(self, task, signature):
        poison = lambda x: tf.tensor_scatter_nd_update(  # noqa: E731
            x, [[0] * len(x.shape)], [np.inf if task == "regression" else np.nan])
        self.assert_fails("input `embeddings` holds NaN or Inf", task, signature,
                          embeddings=poison)
        self.assert_fails("input `state` holds NaN or Inf", task, signature, state=poison)
        if task == "regression":
            # An unknown rating is ignored, but NaN * 0 is still NaN.
            self.assert_fails("input `labels` holds NaN or Inf ratings", task, signature,
                              labels=lambda l: tf.tensor_scatter_nd_update(
                                  l, [[0, 0]], [np.nan]))

    def test_repeated_item_in_a_pool(self):
        self.assert_fails("input `support` repeats an item within a pool.*"
                          "\\[107\\]", "regression", "begin",
                          support=tf.constant([[100, 107, 114], [107, 114, 107]], tf.int64))
        # Held-out queries may repeat an item: they are not asked about.
        queries = self.episode["regression_items"][1]
        self.call("regression", "predict",
                  queries=tf.constant(np.concatenate([queries[:, :1], queries[:, :1]], 1)))

    @parameterized.parameters("classification", "regression")
    def test_empty_batch_and_query_set_are_refused_by_name(self, task):
        support = self.episode[task + "_items"][0]
        self.assert_fails("input `support` holds an empty batch", task, "begin",
                          support=tf.constant(support[:0]))
        self.assert_fails("input `embeddings` holds an empty batch", task, "select",
                          embeddings=lambda e: e[:0], state=lambda s: s[:0],
                          labels=lambda l: l[:0], labeled=lambda m: m[:0])
        self.assert_fails("input `queries` must hold at least one item", task, "predict",
                          queries=lambda q: q[:, :0])

    def test_metadata_fingerprint_is_the_model_fingerprint(self):
        from active_learning.fingerprint import model_fingerprint
        for task in ("classification", "regression"):
            meta = self.sigs[task]["metadata"](dummy=tf.constant(0))
            self.assertEqual(meta["fingerprint"].numpy().decode(),
                             model_fingerprint(Shared.models[task]))
        self.assertNotEqual(model_fingerprint(Shared.models["classification"]),
                            model_fingerprint(Shared.models["regression"]))

    def test_wrong_dtype_is_rejected_by_the_signature(self):
        # The dtype is part of the signature: TensorFlow refuses the call
        # before the graph runs (its message gives the input's position).
        with self.assertRaisesRegex((tf.errors.InvalidArgumentError, TypeError, ValueError),
                                    "int32|float"):
            self.call("classification", "select", labels=tf.zeros([BATCH, POOL]))


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
