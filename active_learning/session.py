"""An ask/tell active-learning session over one pool (like modAL or small-text).

    session = ActiveSession(model_or_path_or_url, pool, seed=0)
    for _ in range(budget):
        (i,) = session.query()              # the item the policy wants labelled
        session.teach(i, ask_a_person(i))   # its label
    session.predict(new_items)              # class probabilities or ratings

The model can be an in-memory `ActiveMatchingNetwork`, a SavedModel written
by `python -m export.saved_model` (its base directory or one version of it),
or a model served by TF Serving (`http://host:port/v1/models/NAME`, called
through `active_learning.rest_client`, standard library only). All three run
the same steps, `active_learning.steps` (begin, select, observe, predict): the
in-memory model calls them eagerly, the SavedModel's signatures were traced
from them (see `active_learning.backends`), so a session gives the same
answers whichever it uses. One exception: a scalable-selector model run in
process (in memory or a SavedModel) begins pools of
`COMPILED_BEGIN_MIN_POOL` items or more with `begin_compiled`, the context
encoder XLA-compiled, nine times faster over 100,000 items; its embeddings
equal `begin`'s (what TF Serving runs) up to float rounding.

`teach` sends its last label with `observe_select` where the model has it
(in memory always; exports since it exists, and TF Serving when its model
metadata lists it): the label and the next pick in one call, the same steps
as `observe` then `select`, so the same answers.

Pool items: images `[P, H, W, C]` in [0, 1] for classification, with the
channels the model was trained on (Omniglot models: `[P, 28, 28(, 1)]`, ink
= 1; other square sizes are area-resized), or feature vectors `[P, F]` for
a model with a feature encoder; for ratings, MovieLens movieIds for a
SavedModel or REST model, and for an in-memory model its dense item indices,
or movieIds when `vocabulary` (the movieId of each index) is given.

The session state (pool embeddings, controller state, labels, mask, skipped
items, seed and random-generator state) is small and saved with `save` /
`ActiveSession.load` as one .npz file, so a person can come back later.
"""

import io
import json
import os

from absl import logging
import numpy as np

from active_learning.backends import make_backend
from active_learning.backends import resolve_saved_model  # noqa: F401  (public here too)

# From this many pool items, in-process sessions of scalable models begin
# XLA-compiled: compiling takes about a second, what the plain BiLSTM spends
# on some 15,000 items here (docs/performance.md).
COMPILED_BEGIN_MIN_POOL = 20_000

# 2: the file records the model's fingerprint; 1 (older) files load without
# that check.
_FORMAT = 2
_FORMATS = (1, 2)


_SESSION_KEYS = ("format", "task", "pool", "embeddings", "state", "labels", "labeled",
                 "excluded", "history", "seed", "rng_state")


def _read_session_file(path):
    """The arrays of a session file, or a ValueError that says what is wrong."""
    problem = None
    try:
        with np.load(path, allow_pickle=False) as f:
            values = {key: f[key] for key in f.files}
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as e:  # noqa: BLE001  (whatever the bytes make numpy raise)
        # np.load reports an empty file as EOFError, a truncated one as
        # BadZipFile, other bytes as "pickled data" (ValueError); damaged zip
        # headers give NotImplementedError, struct.error and more.
        size = os.path.getsize(path) if os.path.exists(path) else 0
        problem = ("it is empty" if size == 0 else
                   f"it is truncated or corrupt ({type(e).__name__}: {e})")
    else:
        missing = [k for k in _SESSION_KEYS if k not in values]
        if missing:
            problem = f"it lacks {missing}"
        elif values["format"].shape != () or int(values["format"]) not in _FORMATS:
            problem = f"its format {values['format']} is not one of {list(_FORMATS)}"
        else:
            try:
                json.loads(str(values["rng_state"]))
            except ValueError as e:
                problem = f"its random-generator state is corrupt ({e})"
    if problem:
        raise ValueError(f"{path} is not a readable session file: {problem}. Session "
                         "files are written by ActiveSession.save; restore it from a "
                         "copy, or start a new session.")
    return values


# ----------------------------------------------------------------- session
class ActiveSession:
    """One person's (or task's) active-learning episode, asked step by step.

    Args:
      model_or_path_or_url: an `ActiveMatchingNetwork`, a SavedModel path
        (a version directory or its base directory: the highest version) or
        an already loaded one (`tf.saved_model.load`), or a TF Serving REST
        URL `http://host:port/v1/models/NAME`.
      pool: the unlabelled items (see the module docstring).
      seed: seeds everything random in the session (breaking exact ties).
      signature_prefix: prepended to the signature names (for a SavedModel
        exported with prefixed names).
      vocabulary: in-memory ratings models only: the movieId of each dense
        index (or a `steps.ItemVocabulary`, the map a SavedModel's
        signatures use); the pool and queries are then movieIds.
    """

    def __init__(self, model_or_path_or_url, pool, seed=0, signature_prefix="",
                 vocabulary=None):
        self._backend = make_backend(model_or_path_or_url, signature_prefix, vocabulary)
        pool = self._backend.prepare_items(pool, "pool")
        if len(pool) == 0:
            raise ValueError("the pool must hold at least one item")
        size = len(pool)
        compiled = self._backend.compiled_begin and size >= COMPILED_BEGIN_MIN_POOL
        out = self._backend.call("begin_compiled" if compiled else "begin",
                                 {"support": pool[None]})
        if self.task == "classification":
            labels = np.full([size], -1, np.int32)
        else:
            labels = np.zeros([size], np.float32)
        self._set_state(pool, out["embeddings"][0], out["state"][0], labels,
                        np.zeros([size], np.int32), np.zeros([size], bool), [], int(seed),
                        np.random.default_rng(int(seed)))

    def _set_state(self, pool, embeddings, state, labels, labeled, excluded, history,
                   seed, rng):
        self._pool = pool
        self._embeddings = np.asarray(embeddings, np.float32)
        self._held_embeddings = self._backend.hold(self._embeddings[None])
        self._state = np.asarray(state, np.float32)
        self._labels = np.asarray(labels, self._label_dtype)
        self._labeled = np.asarray(labeled, np.int32)
        self._excluded = np.asarray(excluded, bool)
        self._history = [int(i) for i in history]
        self.seed = int(seed)
        self._rng = rng
        self._probabilities = None
        # A scalable model's selection index: a constant of the pool, built on
        # the first query (and again after `load`: it is not saved).
        self._index = None

    # ----------------------------------------------------------- properties
    @property
    def task(self):
        """"classification" or "regression" (ratings)."""
        return self._backend.task

    @property
    def _label_dtype(self):
        return np.int32 if self.task == "classification" else np.float32

    @property
    def pool_size(self):
        return len(self._pool)

    @property
    def pool(self):
        """The pool items as given (after conversion to numpy)."""
        return self._pool.copy()

    @property
    def max_classes(self):
        """Classification: how many classes labels may take (else None)."""
        return self._backend.max_classes if self.task == "classification" else None

    @property
    def rating_range(self):
        """Ratings: (lowest, highest) rating the model accepts (else None)."""
        if self.task == "classification":
            return None
        return (self._backend.rating_min, self._backend.rating_max)

    @property
    def labeled_indices(self):
        """Pool indices labelled so far, in the order they were taught."""
        return np.asarray(self._history, np.int64)

    @property
    def labels(self):
        """Labels of `labeled_indices`, in the same order."""
        return self._labels[self.labeled_indices]

    @property
    def skipped_indices(self):
        """Pool indices removed from consideration with `skip`."""
        return np.flatnonzero(self._excluded)

    @property
    def unlabeled_indices(self):
        """Pool indices neither labelled nor skipped."""
        return np.flatnonzero(self._candidates())

    def _candidates(self):
        return np.logical_and(self._labeled == 0, ~self._excluded)

    def _episode(self):
        return {"embeddings": self._held_embeddings, "state": self._state[None],
                "labels": self._labels[None], "labeled": self._labeled[None]}

    def _select(self, k):
        """The model's `select` with `k` picks; for a scalable model
        `select_indexed` with the pool's index, built once per session, so a
        step costs O(pool x labelled) rather than the index's work again."""
        if not self._backend.scalable:
            return self._backend.call("select", dict(self._episode(), k=np.int32(k)))
        return self._backend.call("select_indexed",
                                  dict(self._episode(), k=np.int32(k), **self._pool_index()))

    def _pool_index(self):
        if self._index is None:
            self._index = {key: self._backend.hold(value) for key, value in
                           self._backend.call("selection_index",
                                              {"embeddings": self._held_embeddings}).items()}
        return self._index

    # ---------------------------------------------------------------- steps
    def probabilities(self):
        """The model's current selection distribution over the pool `[P]`.

        0 on labelled and skipped items; sums to 1 over the rest (all zeros
        once nothing is left to ask).
        """
        if self._probabilities is None:
            self._keep_probabilities(self._select(1)["probabilities"][0]
                                     if self._candidates().any() else None)
        return self._probabilities.copy()

    def _keep_probabilities(self, model_probabilities):
        """Caches the model's selection distribution `[P]` (None: nothing to
        ask) as `probabilities` gives it: renormalised over the candidates."""
        candidates = self._candidates()
        if model_probabilities is None or not candidates.any():
            self._probabilities = np.zeros([self.pool_size], np.float32)
            return
        p = np.asarray(model_probabilities, np.float32)
        if not np.all(np.isfinite(p)):
            raise FloatingPointError(
                f"{self._backend.description} returned NaN selection "
                "probabilities; its weights or this session's state are not "
                "finite (check the model with a new session)")
        p = np.where(candidates, p, 0.0).astype(np.float32)
        total = p.sum()
        # Skipped items may have held all the mass (p underflows to
        # 0 far from the best item): fall back to uniform then.
        p = p / total if total > 0 else candidates / candidates.sum()
        self._probabilities = p.astype(np.float32)

    def query(self, k=1):
        """Pool indices of the `k` items to label next, in the order picked `[k]`.

        k = 1: the argmax of the selection distribution (exact ties broken at
        random with the session's seed). k > 1 (batch mode, labels given
        together afterwards with `teach`): the model's `select` with `k`, which
        picks the k one after another, each conditioned on the ones before it
        (pending, not labelled yet), so they spread over the pool as k single
        queries would, not the top k of one ranking. Skipped items: the model
        does not know about them, so the session asks for as many more picks
        as items were skipped and drops the skipped ones (later picks of the
        round have then also moved away from a skipped one that was picked).
        """
        k = int(k)
        candidates = self._candidates()
        left = int(candidates.sum())
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if k > left:
            raise ValueError(f"k={k} but only {left} unlabelled, unskipped items are left")
        if k == 1:
            p = np.where(candidates, self.probabilities(), -1.0)
            # Exact ties at the top broken at random with the session's seed:
            # the same draw (one number per pool item) as a full sort by
            # (probability, draw) would use, in O(P).
            tie_break = self._rng.random(self.pool_size)
            best = np.flatnonzero(p == p.max())
            return best[[np.argmin(tie_break[best])]].astype(np.int64)
        asked = k + int(self._excluded[self._labeled == 0].sum())
        out = self._select(asked)
        picks = np.asarray(out["top_k"][0], np.int64)
        return picks[candidates[picks]][:k]

    def _check_indices(self, indices, what):
        indices = np.atleast_1d(np.asarray(indices))
        if indices.ndim != 1 or (indices.size and indices.dtype.kind not in "iu"):
            raise ValueError(f"{what}: indices must be integers, got {indices!r}")
        indices = indices.astype(np.int64)
        bad = indices[(indices < 0) | (indices >= self.pool_size)]
        if bad.size:
            raise ValueError(f"{what}: indices {bad.tolist()} out of range "
                             f"0..{self.pool_size - 1}")
        if len(set(indices.tolist())) != len(indices):
            raise ValueError(f"{what}: repeated indices {indices.tolist()}")
        already = indices[self._labeled[indices] == 1]
        if already.size:
            raise ValueError(f"{what}: items {already.tolist()} are already labelled")
        return indices

    def _check_labels(self, labels, count):
        labels = np.atleast_1d(np.asarray(labels))
        if labels.shape != (count,):
            raise ValueError(f"teach: got {labels.size} labels for {count} indices")
        if self.task == "classification":
            if labels.size and labels.dtype.kind not in "iu":
                if not np.all(np.mod(labels, 1) == 0):
                    raise ValueError(f"teach: class labels must be integers, got {labels}")
            c = self._backend.max_classes
            bad = labels[(labels < 0) | (labels >= c)]
            if bad.size:
                raise ValueError(f"teach: labels {bad.tolist()} outside 0..{c - 1}")
            return labels.astype(np.int32)
        labels = labels.astype(np.float32)
        lo, hi = self._backend.rating_min, self._backend.rating_max
        bad = labels[~((labels >= lo) & (labels <= hi))]
        if bad.size:
            raise ValueError(f"teach: ratings {bad.tolist()} outside [{lo}, {hi}]")
        return labels

    def teach(self, indices, labels):
        """Gives the label of one item or of several (read in the given order).

        Raises:
          ValueError: an index out of range, repeated or already labelled, or
            a label outside the model's classes / rating scale. Nothing is
            taught then.
        """
        indices = self._check_indices(indices, "teach")
        labels = self._check_labels(labels, len(indices))
        for position, (index, label) in enumerate(zip(indices, labels)):
            inputs = dict(self._episode(), index=np.array([index], np.int32),
                          label=np.array([label], self._label_dtype))
            # The last label and the next pick in one call where the backend
            # has it: one request and one set of input checks per label
            # (docs/performance.md).
            fused = (self._backend.fused_observe_select and position == len(indices) - 1
                     and int((self._labeled == 0).sum()) >= 2)
            if fused and self._backend.scalable:
                inputs.update(self._pool_index())
            out = self._backend.call("observe_select" if fused else "observe", inputs)
            self._state = np.asarray(out["state"][0], np.float32)
            self._labels = np.asarray(out["labels"][0], self._label_dtype)
            self._labeled = np.asarray(out["labeled"][0], np.int32)
            self._excluded[index] = False
            self._history.append(int(index))
            self._probabilities = None
            if fused:
                self._keep_probabilities(out["probabilities"][0])

    def skip(self, indices):
        """Removes items from consideration without a label (e.g. unseen).

        The model never reads a skipped item; `query` and `probabilities`
        leave it out; teaching it later is allowed.
        """
        indices = self._check_indices(indices, "skip")
        self._excluded[indices] = True
        self._probabilities = None

    def predict(self, items=None):
        """Predictions for `items` (default: the pool) from the labels so far.

        Returns class probabilities `[Q, max_classes]` or ratings `[Q]`.
        """
        items = self._pool if items is None else self._backend.prepare_items(items, "items")
        out = self._backend.call("predict", dict(self._episode(), queries=items[None]))
        key = "probabilities" if self.task == "classification" else "ratings"
        return np.asarray(out[key][0], np.float32)

    # ---------------------------------------------------------- persistence
    def save(self, path):
        """Writes the session state to `path` (.npz) atomically."""
        path = os.fspath(path)
        buffer = io.BytesIO()
        np.savez(buffer, format=np.int64(_FORMAT), task=np.str_(self.task),
                 fingerprint=np.str_(self._backend.fingerprint),
                 pool=self._pool, embeddings=self._embeddings, state=self._state,
                 labels=self._labels, labeled=self._labeled, excluded=self._excluded,
                 history=np.asarray(self._history, np.int64), seed=np.int64(self.seed),
                 rng_state=np.str_(json.dumps(self._rng.bit_generator.state)))
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(buffer.getvalue())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path, model_or_path_or_url, signature_prefix="", vocabulary=None,
             allow_other_model=False):
        """Restores a session saved by `save`, to run on the given model.

        The model must be the one the session was started with (or an export
        of it): the file records the model's fingerprint (configuration and
        weights) and another model is refused, since the saved embeddings
        and state mean nothing to it. `allow_other_model=True` skips that
        check (e.g. after re-exporting the same weights under another
        configuration). The pool is stored as given, so use the same kind of
        source (movieIds vs dense indices) for `predict()` on the pool.

        Raises:
          ValueError: the file is not a readable session file (empty,
            truncated, corrupt, another format), or was written with
            another model.
        """
        path = os.fspath(path)
        values = _read_session_file(path)
        backend = make_backend(model_or_path_or_url, signature_prefix, vocabulary)
        if str(values["task"]) != backend.task:
            raise ValueError(f"{path} holds a {values['task']} session but the model is "
                             f"a {backend.task} model")
        embeddings, state = values["embeddings"], values["state"]
        if embeddings.shape[-1] != backend.embed_dim or state.shape != (backend.state_size,):
            raise ValueError(f"{path} was saved with another model (embeddings "
                             f"{embeddings.shape}, state {state.shape}; this model has "
                             f"embed_dim={backend.embed_dim}, "
                             f"state_size={backend.state_size})")
        saved = str(values.get("fingerprint", ""))
        if saved and backend.fingerprint and saved != backend.fingerprint \
                and not allow_other_model:
            raise ValueError(
                f"{path} was saved with another model (fingerprint {saved}; "
                f"{backend.description} has {backend.fingerprint}): its embeddings and "
                "state mean nothing to this one. Load it with the model that wrote it, "
                "or pass allow_other_model=True to load it anyway.")
        if not (saved and backend.fingerprint):
            logging.warning("%s: the model that wrote this session cannot be checked (no "
                            "fingerprint in the %s)", path,
                            "session file" if not saved else "model's metadata")
        session = cls.__new__(cls)
        session._backend = backend
        rng = np.random.default_rng()
        rng.bit_generator.state = json.loads(str(values["rng_state"]))
        session._set_state(values["pool"], embeddings, state, values["labels"],
                           values["labeled"], values["excluded"], values["history"].tolist(),
                           int(values["seed"]), rng)
        return session

    def __repr__(self):
        return (f"ActiveSession({self._backend.description}, task={self.task}, "
                f"pool={self.pool_size}, labelled={len(self._history)}, "
                f"skipped={int(self._excluded.sum())})")
